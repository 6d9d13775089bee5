"""The GPU catalog: shipped data, user overrides, lookups and bad catalog files."""

import datetime
import math

import pytest

from thrifty.core.errors import BadInput
from thrifty.cost import catalog

REQUIRED = ["h200", "h100-sxm", "h100-pcie", "a100-80gb", "a100-40gb", "l40s", "l4", "a10g",
            "t4", "rtx-4090", "rtx-6000-ada", "b200", "mi300x"]


def test_shipped_catalog_has_every_required_gpu_with_sane_specs(isolated_home):
    cat = catalog.load()
    assert set(REQUIRED) <= set(cat.gpus)
    for gpu in cat.gpus.values():
        assert 10 < gpu.memory_gib < 200 and 200 < gpu.bandwidth_gb_s < 9000, gpu.id
        # 8-bit tensor math is never slower; only Blackwell lacks a rate vLLM's INT8 W8A8 uses
        assert (gpu.int8_tops or math.inf) >= gpu.bf16_tflops, gpu.id
        assert gpu.int8_tops is not None or gpu.id == "b200"
        if gpu.fp8_tflops:
            assert gpu.fp8_tflops == pytest.approx(2 * gpu.bf16_tflops, rel=0.05), gpu.id
        assert gpu.spec_source.startswith("http"), gpu.id
    # dense, not 2:4-sparse, figures: H100 SXM is 989 TFLOPs bf16 dense (1,979 sparse)
    assert cat.find("h100").bf16_tflops == 989


def test_every_shipped_price_is_dated_sourced_and_positive(isolated_home):
    cat = catalog.load()
    assert len(cat.prices) >= 30
    assert {p.kind for p in cat.prices} == set(catalog.PRICE_KINDS)
    for price in cat.prices:
        assert price.usd_per_gpu_hour > 0 and isinstance(price.date, datetime.date)
        assert price.source.startswith("http") and price.provider
        assert price.date <= datetime.date(2026, 11, 23)
    priced = {p.gpu for p in cat.prices}
    assert set(REQUIRED) - priced == {"rtx-6000-ada"}  # no dated public price was found


def test_find_accepts_aliases_and_suggests_near_misses(isolated_home):
    cat = catalog.load()
    assert cat.find("H100").id == "h100-sxm"
    assert cat.find("RTX 4090").id == "rtx-4090"
    with pytest.raises(BadInput, match=r"'h1000' is not in the catalog\. Did you mean 'h100'"):
        cat.find("h1000")


def test_override_file_adds_a_gpu_and_replaces_a_price(isolated_home, tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text('''
[[gpu]]
id = "h100-sxm"
bandwidth_gb_s = 3000

[[gpu]]
id = "my-card"
name = "My card"
vendor = "acme"
memory_gib = 32
bandwidth_gb_s = 500
bf16_tflops = 100
int8_tops = 200
tdp_w = 200
interconnect = "PCIe Gen4 x16"
interconnect_gb_s = 64
spec_source = "https://acme.example/card"

[[price]]
gpu = "h100-sxm"
provider = "RunPod Community Cloud"
kind = "on-demand"
usd_per_gpu_hour = 1.11
date = 2026-11-01
source = "https://example.com/quote"

[[price]]
gpu = "my-card"
provider = "acme"
kind = "spot"
usd_per_gpu_hour = 0.2
date = 2026-11-01
source = "https://acme.example/prices"
''')
    shipped = catalog.load()
    cat = catalog.load(extra)
    assert cat.find("h100-sxm").bandwidth_gb_s == 3000
    assert cat.find("h100-sxm").bf16_tflops == 989  # fields not named are kept
    assert cat.find("my-card").memory_gib == 32
    assert cat.cheapest("h100-sxm", "on-demand").usd_per_gpu_hour == 1.11
    assert len(cat.prices) == len(shipped.prices) + 1  # one replaced, one added
    assert cat.cheapest("my-card", "spot").origin == str(extra)


def test_user_catalog_in_thrifty_home_is_read(isolated_home):
    isolated_home.mkdir(parents=True)
    (isolated_home / "gpus.toml").write_text(
        '[[price]]\ngpu = "l4"\nprovider = "me"\nkind = "reserved"\nterm = "1 year"\n'
        'usd_per_gpu_hour = 0.3\ndate = 2026-10-01\nsource = "contract"\n')
    assert catalog.load().cheapest("l4", "reserved").usd_per_gpu_hour == 0.3


@pytest.mark.parametrize("text, phrases", [
    ('[[price]]\ngpu = "l4"\nprovider = "x"\nkind = "on-demand\n', ["not valid TOML", "line 4"]),
    ('[[price]]\ngpu = "l4"\nprovider = "x"\nkind = "on-demand"\nusd_per_gpu_hour = -1\n'
     'date = 2026-01-01\nsource = "s"\n', ["line 5", "must be positive"]),
    ('\n[[price]]\ngpu = "l4"\nprovider = "x"\nkind = "weekly"\nusd_per_gpu_hour = 1\n'
     'date = 2026-01-01\nsource = "s"\n', ["line 5", "'weekly' is not one of"]),
    ('[[price]]\ngpu = "l4"\nprovider = "x"\nkind = "on-demand"\nusd_per_gpu_hour = 1\n'
     'date = "last year"\nsource = "s"\n', ["line 6", "a date like 2026-05-01"]),
    ('[[gpu]]\nid = "l4"\nbandwith_gb_s = 1\n', ["line 3", "unknown field 'bandwith_gb_s'",
                                                  "did you mean 'bandwidth_gb_s'"]),
    ('[[gpu]]\nid = "new-card"\nmemory_gib = 10\n', ["line 1", "is new", "missing name"]),
    ('[[price]]\ngpu = "l4"\nprovider = "x"\nkind = "on-demand"\n',
     ["line 1", "missing usd_per_gpu_hour, date, source"]),
    ('[[price]]\ngpu = "nope"\nprovider = "x"\nkind = "spot"\nusd_per_gpu_hour = 1\n'
     'date = 2026-01-01\nsource = "s"\n', ["'nope'", "no [[gpu]] table"]),
    ('[[price]]\ngpu = "l4"\nprovider = "x"\nkind = "reserved"\nusd_per_gpu_hour = 1\n'
     'date = 2026-01-01\nsource = "s"\n', ["needs its term"]),
])
def test_malformed_override_file_names_the_line(isolated_home, tmp_path, text, phrases):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(BadInput) as error:
        catalog.load(bad)
    for phrase in phrases:
        assert phrase in str(error.value)
    assert str(bad) in str(error.value)


def test_missing_override_file(isolated_home, tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        catalog.load(tmp_path / "nope.toml")


def test_stale_prices_are_found_by_date(isolated_home):
    cat = catalog.load()
    stale = cat.stale_prices(datetime.date(2026, 11, 23))
    assert stale and all((datetime.date(2026, 11, 23) - p.date).days > 365 for p in stale)
    assert not cat.stale_prices(datetime.date(2025, 1, 1))


def test_gpus_command_lists_the_catalog_and_warns_of_old_prices(isolated_home, run_cli,
                                                                 tmp_path):
    old = tmp_path / "old.toml"
    old.write_text('[[price]]\ngpu = "t4"\nprovider = "Old cloud"\nkind = "on-demand"\n'
                   'usd_per_gpu_hour = 0.05\ndate = 2023-02-01\nsource = "https://old"\n')
    result = run_cli("gpus", "--catalog", old)
    assert result.exit_code == 0, result.output
    assert "GPU catalog" in result.output and "spot" in result.output
    assert "more than a year old" in result.output and "2023-02-01" in result.output
    listed = run_cli("gpus", "--json", "--gpu", "l4")
    assert listed.exit_code == 0
    assert '"id": "l4"' in listed.output and '"source":' in listed.output


def test_gpus_command_unknown_gpu_suggests(isolated_home, run_cli):
    result = run_cli("gpus", "--gpu", "a100-80")
    assert result.exit_code == 1
    assert "Did you mean" in result.output and "Traceback" not in result.output


def test_gpus_command_bad_catalog_is_one_paragraph(isolated_home, run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gpu]]\nid = "l4"\nmemory_gib = "lots"\n')
    result = run_cli("gpus", "--catalog", bad)
    assert result.exit_code == 1
    assert "line 3" in result.output and "memory_gib should be a number" in result.output
    assert "Traceback" not in result.output
