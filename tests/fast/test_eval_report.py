"""`thrifty eval`'s labels and tables: short distinct names, readable at 80 columns."""

import io

import pytest
from rich.console import Console

from thrifty.assets.models import ModelRef
from thrifty.compress import eval_report
from thrifty.core import output
from thrifty.core.errors import BadInput


def refs(*specs: tuple[str, str]) -> list[ModelRef]:
    return [ModelRef(kind, name, name if kind != "builtin" else f"/home/m/{name}")
            for kind, name in specs]


def test_labels_are_the_folder_names_and_stay_distinct():
    models = refs(("builtin", "smollm2-135m"), ("local", "/data/runs/a/model"),
                  ("local", "/data/runs/b/model"), ("hub", "org/Llama-3.2-1B"))
    assert eval_report.short_labels(models) == ["smollm2-135m", "a/model", "b/model",
                                                "Llama-3.2-1B"]
    twins = refs(("local", "/x/m"), ("local", "/x/m"))
    assert eval_report.short_labels(twins) == ["x/m#1", "x/m#2"]
    hub = refs(("hub", "org-a/model"), ("hub", "org-b/model"))
    assert eval_report.short_labels(hub) == ["org-a/model", "org-b/model"]


def test_a_model_with_and_without_an_adapter_gets_two_plain_labels():
    models = refs(("builtin", "smollm2-135m"), ("local", "/q/w8a8"), ("builtin", "smollm2-135m"))
    labels = eval_report.short_labels(models, (), ["+chem", "+chem", ""])
    assert labels == ["smollm2-135m+chem", "w8a8+chem", "smollm2-135m"]


def test_given_labels_must_match_the_models_one_to_one():
    models = refs(("builtin", "smollm2-135m"), ("local", "/q/gptq"))
    assert eval_report.short_labels(models, ("base", "gptq")) == ["base", "gptq"]
    with pytest.raises(BadInput, match="--label was given 1 times for 2 models"):
        eval_report.short_labels(models, ("base",))
    with pytest.raises(BadInput, match="must differ"):
        eval_report.short_labels(models, ("x", "x"))


def row(label: str, ppl: float, vs: dict | None = None, refused: str | None = None) -> dict:
    return {"label": label, "model": label, "path": f"/very/long/path/to/{label}",
            "perplexity": ppl, "perplexity_ci95": [ppl * 0.8, ppl * 1.2], "prefix_ids": [],
            "scored_tokens": 8191, "eval_tokens": 8192, "weights_bytes": 10 * 2**20,
            "eval_s": 12.3, "vs_base": vs, "vs_base_refused": refused}


def comparison(delta: float, delta_interval: list[float] | None) -> dict:
    return {"kld_mean": 0.1234, "kld_mean_ci95": [0.11, 0.14], "kld_p90": 0.3, "kld_p99": 1.2,
            "top1_agreement_pct": 88.8, "top1_agreement_pct_ci95": [87.0, 90.0],
            "delta_log_ppl": delta, "delta_log_ppl_ci95": delta_interval,
            "delta_log_ppl_within_noise": (delta_interval[0] <= 0 <= delta_interval[1]
                                           if delta_interval else None),
            "interval": "95% block bootstrap (1000 resamples of 128-token blocks)"}


def printed_tables(monkeypatch, rows: list[dict]) -> list[str]:
    buffer = io.StringIO()
    monkeypatch.setattr(output, "stdout", Console(file=buffer, width=80))
    eval_report.print_tables(eval_report.with_deltas(rows), "enwiki", 1024, None)
    return buffer.getvalue().splitlines()


def line_of(lines: list[str], label: str, tables: int = 2) -> str:
    """The comparison-table line of `label`; its label is whole in each table (a label wrapped
    onto two lines would start no line)."""
    found = [line for line in lines if line.startswith(f"│ {label} ")]
    assert len(found) == tables, f"{label!r} is not whole on one line:\n" + "\n".join(lines)
    return found[-1]


def test_each_model_is_one_whole_row_and_noise_is_marked(monkeypatch, capsys):
    lines = printed_tables(monkeypatch, [
        row("smollm2-135m", 20.0), row("gptq-w4a16-g64", 21.0, comparison(0.05, [0.04, 0.06])),
        row("rtn-w4a16-g64", 20.1, comparison(0.005, [-0.01, 0.02])),
        row("other-vocab", 30.0, refused="the vocabularies differ (5 and 6 entries)")])
    gptq, rtn = line_of(lines, "gptq-w4a16-g64"), line_of(lines, "rtn-w4a16-g64")
    assert "0.123 ±0.015" in gptq and "88.8% ±1.5" in gptq and "+0.050 ±0.010" in gptq
    assert "≈" not in gptq and "+0.005 ±0.015 ≈" in rtn
    other = line_of(lines, "other-vocab", tables=1)
    assert "+50.0%" not in other  # no Δ ppl beside a perplexity over other tokens
    notes = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in notes)
    assert "No KL divergence for other-vocab: the vocabularies differ" in " ".join(notes)
    assert "  gptq-w4a16-g64 = /very/long/path/to/gptq-w4a16-g64" in notes


def test_a_figure_without_an_interval_is_shown_alone(monkeypatch):
    lines = printed_tables(monkeypatch, [
        row("base", 20.0), row("short", 21.0, comparison(0.05, None))])
    short = line_of(lines, "short")
    assert "+0.050 " in short and "±0.0" not in short.split("+0.050")[1]
