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


def comparison(delta_interval: list[float]) -> dict:
    return {"kld_mean": 0.1234, "kld_mean_ci95": [0.11, 0.14], "kld_p90": 0.3, "kld_p99": 1.2,
            "top1_agreement_pct": 88.8, "top1_agreement_pct_ci95": [87.0, 90.0],
            "delta_log_ppl": 0.05, "delta_log_ppl_ci95": delta_interval,
            "delta_log_ppl_within_noise": delta_interval[0] <= 0 <= delta_interval[1]}


def test_tables_fit_80_columns_with_every_label_whole(monkeypatch, capsys):
    buffer = io.StringIO()
    monkeypatch.setattr(output, "stdout", Console(file=buffer, width=80))
    rows = eval_report.with_deltas([
        row("smollm2-135m", 20.0), row("gptq-w4a16-g64", 21.0, comparison([0.04, 0.06])),
        row("rtn-w4a16-g64", 20.5, comparison([-0.01, 0.02])),
        row("other-vocab", 30.0, refused="the vocabularies differ (5 and 6 entries)")])
    eval_report.print_tables(rows, "enwiki", 1024, None)
    printed = buffer.getvalue()
    assert max(map(len, printed.splitlines())) <= 80
    for label in ("smollm2-135m", "gptq-w4a16-g64", "rtn-w4a16-g64", "other-vocab"):
        assert label in printed
    assert "0.123 ±0.015" in printed and "88.8% ±1.5" in printed
    assert "+0.015 ±0.015 ≈" in printed or "≈" in printed.split("rtn-w4a16-g64")[2]
    notes = capsys.readouterr().out
    assert "No KL divergence for other-vocab: the vocabularies differ" in notes
    assert "gptq-w4a16-g64 = /very/long/path/to/gptq-w4a16-g64" in notes
