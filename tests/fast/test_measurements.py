"""`thrifty cost check --measurements`: the public H100 runs are read, replayed and compared;
a file it cannot use is refused with the row and the column."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from thrifty.cost import measurement_check as check
from thrifty.cost import measurements
from thrifty.cost.perf_model import efficiency_for

DATA = Path(__file__).parents[2] / "benchmarks" / "data" / "h100-measurements"
CSV = DATA / "h100-measurements.csv"


def _subset(tmp_path: Path, keep, edit=None, drop_column: str | None = None) -> Path:
    """A copy of the measurements with some rows (and the configs beside it)."""
    with CSV.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in reader.fieldnames if c != drop_column]
        rows = [r for r in reader if keep(r)]
    for row in rows:
        row.pop(drop_column, None)
        if edit:
            edit(row)
    out = tmp_path / "m.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    shutil.copytree(DATA / "configs", tmp_path / "configs")
    return out


def test_every_row_of_the_public_file_is_derived(cat):
    rows = measurements.read(CSV, cat)
    assert len(rows) == 120
    mixtral = next(r for r in rows if "Mixtral-8x7B" in r.scenario.model)
    assert mixtral.scenario.shape.is_moe and mixtral.scenario.tp == 2
    scout = next(r for r in rows if "Scout" in r.scenario.model)
    assert scout.scenario.shape.precision == "fp8"
    assert sum(r.saturated for r in rows) == 8


def test_an_overloaded_row_is_predicted_saturated_and_its_light_stage_is_not(cat):
    rows = [r for r in measurements.read(CSV, cat) if r.row_id in ("6", "5")]
    eff = efficiency_for(rows[0].scenario.gpu, list(cat.gpus.values()))
    results = {r["row_id"]: r for r in check.check_rows(rows, eff)}
    assert results["6"]["saturation"] == {"measured": True, "predicted": True}
    assert results["5"]["predicted_saturated"] is False


def test_the_command_reports_errors_per_metric_and_model(isolated_home, run_cli, tmp_path):
    path = _subset(tmp_path, lambda r: r["model"] == "meta-llama/Llama-3.1-8B-Instruct"
                   and r["workload_name"] == "general")
    out = tmp_path / "rows.json"
    result = run_cli("cost", "check", "--measurements", path, "--horizon-s", "15", "--out", out,
                     "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["summary"]["rows_checked"] == len(report["rows"]) > 3
    stats = report["summary"]["metrics"]["e2e_ms_mean"]
    assert 0 <= stats["median_abs_pct"] <= stats["p90_abs_pct"]
    assert list(report["summary"]["per_model"]) == ["meta-llama/Llama-3.1-8B-Instruct"]
    assert json.loads(out.read_text())["rows"] == report["rows"]
    again = run_cli("cost", "check", "--measurements", path, "--out", out)
    assert again.exit_code == 1 and "--force" in again.output


@pytest.mark.parametrize("keep, edit, drop, phrase", [
    (None, None, "max_num_batched_tokens", "lacks the column(s) max_num_batched_tokens"),
    (None, lambda r: r.update(gpu="H900"), None, "column gpu"),
    (None, lambda r: r.update(model="acme/unknown-7b"), None, "no config for acme/unknown-7b"),
    (None, lambda r: r.update(tp="two"), None, "column tp: 'two' is not a number"),
    (None, lambda r: r.update(stage_schedule="fast"), None, "column stage_schedule"),
    (lambda r: False, None, None, "has no rows"),
])
def test_a_file_it_cannot_use_is_refused_with_row_and_column(isolated_home, run_cli, tmp_path,
                                                              keep, edit, drop, phrase):
    path = _subset(tmp_path, keep or (lambda r: r["row_id"] in ("1", "2")), edit, drop)
    result = run_cli("cost", "check", "--measurements", path)
    assert result.exit_code == 1
    assert phrase in result.output and "Traceback" not in result.output
    if edit:
        assert "Row 1" in result.output
