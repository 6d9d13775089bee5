"""The HTML benchmark report: self-contained, escaped, robust to missing values, and drawn
by a real browser (headless Chromium)."""

import copy
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from thrifty.benchmark.html_report import render_html, write_html

PLOT_KINDS = ("latency", "tpot", "throughput", "adapters", "memory")


def summary(load: float, errors: int = 0, slo: bool = True) -> dict:
    """Plausible metrics for a load point: latency and throughput grow with the load."""
    completed = 40 - errors
    values = {
        "requests_count": 40, "completed_count": completed, "errors_count": errors,
        "duration_s": 20.0 / load, "input_tokens_count": 128 * completed,
        "output_tokens_count": 48 * completed,
        "request_throughput_per_s": 2.0 * load, "output_throughput_tokens_per_s": 96.0 * load,
        "total_throughput_tokens_per_s": 352.0 * load,
    }
    for metric, base in (("ttft_ms", 50.0), ("tpot_ms", 7.0), ("itl_ms", 6.5), ("e2e_ms", 400.0)):
        for pct, factor in (("p50", 1.0), ("p90", 1.3), ("p99", 1.8), ("mean", 1.1)):
            values[f"{metric}_{pct}"] = round(base * factor * (1 + 0.4 * load), 3)
    if slo:
        values |= {"slo_attainment_pct": 100.0 - 5 * load, "goodput_requests_per_s": 1.9 * load}
    return values


def point(index: int, load: int, adapters: tuple[str, ...] = ("base", "history")) -> dict:
    errors = 2 if load == 4 else 0
    return {
        "index": index, "kind": "concurrency", "load": load, "label": f"concurrency {load}",
        "interrupted": False, "summary": summary(load, errors),
        "per_adapter": {name: summary(load + i * 0.5) for i, name in enumerate(adapters)},
        "errors": {"HTTP 500: boom": errors} if errors else {},
        "server": {"kv_cache_usage_peak_pct": 3.1 * load, "preemptions_count": 0,
                   "running_requests_peak_count": load, "waiting_requests_peak_count": 0,
                   "server_rss_peak_gib": 2.1, "gpu_memory_peak_gib": None,
                   "metrics_scrapes_count": 40},
        "slo_met": load <= 2,
    }


def realistic_bench() -> dict:
    """Three concurrency points, two adapters, memory known (schema version 1)."""
    return {
        "bench_schema_version": 1, "label": "smollm2-135m", "interrupted": False,
        "target": {"url": "http://127.0.0.1:8000/v1", "base_model": "smollm2-135m",
                   "started_by_thrifty": True},
        "hardware": "2-core CPU, no GPU",
        "workload": {"source": "synthetic", "input_tokens": "128",
                     "output_tokens": "uniform(32,64)", "prompts_file": None,
                     "requests_per_point": 40, "duration_s_per_point": None,
                     "warmup_requests": 2, "seed": 0, "ignore_eos": True,
                     "adapter_mix": {"base": 0.5, "history": 0.5}},
        "profile": {"kind": "concurrency", "loads": [1, 2, 4], "max_concurrency": None},
        "slo": {"limits": {"ttft_ms": 500.0, "tpot_ms": 50.0}, "attainment_pct": 90.0},
        "slo_best_load": 2,
        "memory": {"weights_gib": 0.16, "kv_cache_gib": 1.0, "kv_cache_tokens": 46592,
                   "max_concurrency_ratio": 22.75, "max_model_len_tokens": 2048,
                   "server_rss_peak_gib": 2.1, "gpu_memory_peak_gib": None,
                   "gpu_total_gib": None},
        "points": [point(0, 1), point(1, 2), point(2, 4)],
        "requests": [{"point": 0, "model": "smollm2-135m", "adapter": "base", "started_s": 0.01,
                      "ok": True, "error": None, "input_tokens": 128, "output_tokens": 64,
                      "ttft_s": 0.05, "e2e_s": 0.5, "itl_s": [0.007] * 63, "scheduled_s": None,
                      "tpot_s": 0.007}],
    }


def figures(page: str) -> dict[str, str]:
    """data-plot kind -> the figure's opening tag."""
    return {m.group(1): m.group(0)
            for m in re.finditer(r'<figure class="plot" data-plot="(\w+)"[^>]*>', page)}


def test_report_has_one_figure_per_plot_kind():
    page = render_html(realistic_bench())
    kinds = re.findall(r'<figure class="plot" data-plot="(\w+)"', page)
    assert sorted(kinds) == sorted(PLOT_KINDS)
    for kind in PLOT_KINDS:
        body = page.split(f'data-plot="{kind}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in body and 'class="mark"' in body, kind
    assert "Figures are measured by thrifty bench" in page and "schema version 1" in page
    assert "HTTP 500: boom" in page  # the errors table
    assert "SLO best: 2" in page


def test_report_needs_no_network():
    page = render_html(realistic_bench())
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page.lower()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page


def test_user_strings_are_escaped():
    bench = realistic_bench()
    bench["label"] = "<b>x</b>"
    bench["hardware"] = '"><script>alert(1)</script>'
    bench["points"][0]["errors"] = {"<img src=x onerror=alert(1)>": 3}
    bench["workload"]["adapter_mix"] = {"base": 0.5, "<i>evil</i>": 0.5}
    bench["points"][2]["per_adapter"] = {"base": summary(4), "<i>evil</i>": summary(4)}
    page = render_html(bench)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "<i>evil" not in page
    assert page.count("<script>") == 1  # only the report's own check


def test_missing_metrics_do_not_crash():
    bench = realistic_bench()
    failed = bench["points"][1]
    failed["summary"] = {key: (None if isinstance(value, float) else value)
                         for key, value in failed["summary"].items()}
    failed["per_adapter"] = {}
    bench["points"].append({"index": 3, "kind": "concurrency", "load": 8, "label": "concurrency 8",
                            "interrupted": True, "summary": {}, "per_adapter": {},
                            "errors": {}, "server": None, "slo_met": None})
    bench["memory"] = {"weights_gib": None}
    bench["slo_best_load"] = None
    page = render_html(bench)
    assert "concurrency 8 (interrupted)" in page
    assert "No memory figure was reported" in page and "not reported" in page


def test_all_requests_failed_draws_empty_charts():
    bench = realistic_bench()
    for p in bench["points"]:
        p["summary"] = {"requests_count": 40, "completed_count": 0, "errors_count": 40}
        p["per_adapter"] = {}
    page = render_html(bench)
    assert "no values to plot" in page
    assert "No adapter mix in this run" in page


def test_single_adapter_is_noted_instead_of_a_figure():
    bench = realistic_bench()
    bench["workload"]["adapter_mix"] = None
    bench["points"] = [point(0, 1, adapters=("base",))]
    page = render_html(bench)
    assert 'data-plot="adapters"' not in page
    assert "No adapter mix in this run" in page
    assert page.count('class="mark"') > 0  # a single load point is still drawn


def test_interrupted_run_shows_a_banner():
    bench = realistic_bench()
    assert 'class="banner"' not in render_html(bench)
    bench["interrupted"] = True
    page = render_html(bench)
    assert 'class="banner"' in page and "This run was interrupted" in page


def test_write_html_is_atomic(tmp_path):
    target = tmp_path / "reports" / "bench.html"
    write_html(realistic_bench(), target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["bench.html"]

    broken = copy.deepcopy(realistic_bench())
    broken["points"] = "not a list"
    with pytest.raises(AttributeError):
        write_html(broken, target)
    assert [p.name for p in target.parent.iterdir()] == ["bench.html"]  # old report kept
    assert "smollm2-135m" in target.read_text()


# --- a real browser ------------------------------------------------------------------------

def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is not installed: run `make test` (its chromium target installs "
                    "it with scripts/ensure_chromium.sh).")
    return found


def run_chromium(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path)}  # Chromium writes a profile under HOME
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=2000", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env,
                          check=False)


def png_pixel_bytes(path) -> tuple[int, int, bytes]:
    """(width, height, filtered scanlines) of an 8-bit RGB(A) PNG, decoded with zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed, width, height, channels = 8, b"", 0, 0, 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        position += 12 + length  # length, type, body, CRC
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            compressed += body
    pixels = zlib.decompress(compressed)
    assert len(pixels) == height * (1 + width * channels)  # one filter byte per row
    return width, height, pixels


def test_html_report_renders_in_chromium(tmp_path):
    browser = chromium_path()
    report = tmp_path / "bench.html"
    write_html(realistic_bench(), report)

    dom = run_chromium(browser, tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = figures(dom.stdout)
    assert sorted(drawn) == sorted(PLOT_KINDS), dom.stdout[-2000:]
    for kind, tag in drawn.items():
        assert 'data-drawn="yes"' in tag, f"{kind} was not drawn: {tag}"
        marks = re.search(r'data-marks="(\d+)"', tag)
        assert marks and int(marks.group(1)) > 0, tag

    screenshot = tmp_path / "bench.png"
    shot = run_chromium(browser, tmp_path, f"--screenshot={screenshot}",
                        "--window-size=1200,3000", report.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    width, height, pixels = png_pixel_bytes(screenshot)
    assert (width, height) == (1200, 3000)
    # A blank page decodes to a handful of distinct bytes; text and coloured charts to hundreds.
    assert len(set(pixels)) > 64
