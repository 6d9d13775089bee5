"""How well the cost model predicts measured vLLM runs on H100 (public data, 9 models 7B-141B,
dense and MoE, TP 1-8, one FP8 checkpoint): `thrifty cost check --measurements` on the committed
file, with the efficiencies the catalog ships for the H100.

    .venv/bin/python benchmarks/cost_model_h100.py [--horizon-s S]

Writes benchmarks/results/cost_model_h100.json (the summary, the command, the run fingerprint)
and cost_model_h100.md (the table docs/cost.md quotes); the per-row predictions go to
benchmarks/results/cost_model_h100_rows.json. The measurements themselves are committed in
benchmarks/data/h100-measurements.
"""

import argparse
import json
from pathlib import Path

from common import fingerprint, thrifty

from thrifty.cost import catalog, measurements
from thrifty.cost import measurement_check as check
from thrifty.cost.perf_model import Efficiency

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "h100-measurements" / "h100-measurements.csv"
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("ttft_ms_mean", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms", "e2e_ms_mean", "e2e_ms_p90",
           "e2e_ms_p99")
HEADLINE = ("ttft_ms_mean", "tpot_ms", "e2e_ms_mean")


def markdown(report: dict, command: list[str], fp: dict) -> str:
    summary = report["summary"]
    eff = next(iter(report["efficiency"].values()))
    lines = [
        "# Cost model vs measured vLLM runs on H100 (modelled against measured)", "",
        f"Command: `{' '.join(command)}`; git {fp.get('git_revision')}.",
        f"Efficiencies: memory {eff['memory']}, compute {eff['compute']}, step overhead "
        f"{eff['overhead_ms']} ms, request lag {eff['lag_ms']} ms ({eff['source']}).",
        f"Rows checked: {summary['rows_checked']} of {summary['rows']}; saturated rows predicted "
        f"saturated: {summary['saturation']['predicted_saturated']} of "
        f"{summary['saturation']['rows']}; false alarms: {summary['saturation']['false_alarms']}.",
        "", "| metric | rows | median abs error | p90 abs error | median signed |",
        "| --- | --- | --- | --- | --- |"]
    for metric in METRICS:
        s = summary["metrics"].get(metric)
        if s:
            lines.append(f"| {metric} | {s['rows']} | {s['median_abs_pct']}% | "
                         f"{s['p90_abs_pct']}% | {s['median_signed_pct']:+}% |")
    lines += ["", "| model | rows | " + " | ".join(f"{m} median abs (signed)" for m in HEADLINE)
              + " |", "| --- | --- | " + " | ".join("---" for _ in HEADLINE) + " |"]
    for model, stats in summary["per_model"].items():
        cells = [f"{stats[m]['median_abs_pct']}% ({stats[m]['median_signed_pct']:+}%)"
                 if m in stats else "–" for m in HEADLINE]
        lines.append(f"| {model} | {stats['e2e_ms_mean']['rows']} | " + " | ".join(cells) + " |")
    skipped = ", ".join(f"{s['row_id']} ({s['reason']})" for s in summary["skipped"])
    lines += ["", f"Skipped: {skipped or 'none'}.", ""]
    return "\n".join(lines)


def holdout(horizon_s: float | None) -> dict:
    """Each model predicted with the efficiencies fitted without it
    (benchmarks/results/gpu_efficiency_fit.json): the error on a model the fit never saw."""
    fitted = json.loads((RESULTS / "gpu_efficiency_fit.json").read_text())
    rows = measurements.read(DATA, catalog.load())
    out = {}
    for model, f in fitted.get("leave_one_model_out", {}).items():
        eff = Efficiency(f["memory"], f["compute"], f["overhead_ms"], f"fit without {model}",
                         f["lag_ms"])
        chosen = [r for r in rows if r.scenario.model == model]
        results = check.check_rows(chosen, eff, horizon_s,
                                   allreduce_latency_us=f["nvlink_allreduce_us"])
        out[model] = check.summarize_errors(results)["metrics"]
        print("held out", model, {m: out[model][m]["median_abs_pct"] for m in HEADLINE
                                  if m in out[model]}, flush=True)
    return out


def holdout_markdown(held: dict) -> list[str]:
    lines = ["", "Each model predicted with the efficiencies fitted on the other eight "
             "(leave one model out; median absolute error, signed in brackets):", "",
             "| held-out model | " + " | ".join(HEADLINE) + " |",
             "| --- | " + " | ".join("---" for _ in HEADLINE) + " |"]
    for model, stats in held.items():
        lines.append(f"| {model} | " + " | ".join(
            f"{stats[m]['median_abs_pct']}% ({stats[m]['median_signed_pct']:+}%)"
            if m in stats else "–" for m in HEADLINE) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--horizon-s", type=float, help="cut each stage (default: full stages)")
    args = parser.parse_args()
    rows_file = RESULTS / "cost_model_h100_rows.json"
    command = ["thrifty", "cost", "check", "--measurements", str(DATA.relative_to(ROOT)),
               "--out", str(rows_file.relative_to(ROOT)), "--force"]
    if args.horizon_s:
        command += ["--horizon-s", str(args.horizon_s)]
    report = thrifty(*command[1:])
    fp = fingerprint()
    held = holdout(args.horizon_s)
    summary = {"command": command, "fingerprint": fp, "efficiency": report["efficiency"],
               "horizon_s": args.horizon_s, "summary": report["summary"],
               "leave_one_model_out": held}
    text = markdown(report, command, fp) + "\n".join(holdout_markdown(held)) + "\n"
    (RESULTS / "cost_model_h100.json").write_text(json.dumps(summary, indent=1) + "\n")
    (RESULTS / "cost_model_h100.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
