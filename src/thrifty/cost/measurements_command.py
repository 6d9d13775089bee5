"""`thrifty cost check --measurements FILE`: predict published vLLM measurements (one row per
load stage) with the cost model and report the error per row, per model and per metric."""

from pathlib import Path

import click

from thrifty.core.files import check_output_free, write_json
from thrifty.core.output import emit_json, table
from thrifty.core.progress import stderr
from thrifty.cost import catalog, measurements
from thrifty.cost import measurement_check as check
from thrifty.cost.perf_model import Efficiency, efficiency_for


def run_check(measurements_file: str, configs: str | None, eff: Efficiency | None,
              catalog_file: str | None, horizon_s: float | None, out: str | None,
              force: bool, as_json: bool) -> None:
    path = Path(measurements_file)
    if out:
        check_output_free(Path(out), force)
    cat = catalog.load(catalog_file)
    rows = measurements.read(path, cat, Path(configs) if configs else None)
    gpus = {r.scenario.gpu.id for r in rows}
    used = {g: eff or efficiency_for(cat.find(g), list(cat.gpus.values())) for g in gpus}
    results = []
    with stderr.status("replaying the measured runs") as status:
        for gpu, gpu_eff in sorted(used.items()):
            chosen = [r for r in rows if r.scenario.gpu.id == gpu]
            results += check.check_rows(chosen, gpu_eff, horizon_s, progress=lambda n, g=gpu:
                                        status.update(f"replaying runs on {g}: {n} experiments"))
    report = {"measurements": str(path), "horizon_s": horizon_s,
              "efficiency": {g: e.as_dict() for g, e in used.items()},
              "summary": check.summarize_errors(results), "rows": results}
    if out:
        write_json(Path(out), report)
    if as_json:
        emit_json(report)
        return
    print_summary(report)
    if out:
        click.echo(f"Per-row results: {out}")


def print_summary(report: dict) -> None:
    summary = report["summary"]
    for gpu, eff in report["efficiency"].items():
        click.echo(f"{gpu}: memory efficiency {eff['memory']:.3f}, compute {eff['compute']:.3f}, "
                   f"step overhead {eff['overhead_ms']:.2f} ms, request lag "
                   f"{eff['lag_ms']:.2f} ms ({eff['source']})")
    rows = [[metric, s["rows"], f"{s['median_abs_pct']:.1f}%", f"{s['p90_abs_pct']:.1f}%",
             f"{s['median_signed_pct']:+.1f}%"] for metric, s in summary["metrics"].items()]
    table(f"Modelled vs measured over {summary['rows_checked']} rows (absolute error)",
          ["metric", "rows", "median", "p90", "median signed"], rows)
    per_model = [[model, *(f"{stats[m]['median_signed_pct']:+.1f}%" if m in stats else "–"
                           for m in ("ttft_ms_mean", "tpot_ms", "e2e_ms_mean"))]
                 for model, stats in summary["per_model"].items()]
    table("Per model (median signed error)", ["model", "TTFT mean", "per-token", "E2E mean"],
          per_model)
    sat = summary["saturation"]
    click.echo(f"Saturated rows predicted saturated: {sat['predicted_saturated']} of "
               f"{sat['rows']}; rows predicted saturated that were not: {sat['false_alarms']}.")
    if summary["skipped"]:
        listed = ", ".join(f"{s['row_id']} ({s['reason']})" for s in summary["skipped"])
        click.echo(f"Skipped {len(summary['skipped'])} row(s): {listed}")
