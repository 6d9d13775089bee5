"""`thrifty cost calibrate` and `thrifty cost check`: fit the throughput model to a bench run, and
predict a bench run with a calibration."""

from pathlib import Path

import click

from thrifty.core.errors import BadInput
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.progress import stderr
from thrifty.cost import calibrate, catalog, model_shape
from thrifty.cost.command_options import catalog_option
from thrifty.cost.measurements_command import run_check
from thrifty.cost.perf_model import Hardware
from thrifty.formats import probe


def _hardware_for(bench: dict, gpu_name: str | None, cat) -> tuple[Hardware, dict]:
    if gpu_name:
        gpu = cat.find(gpu_name)
        return Hardware.from_gpu(gpu), {"name": gpu.id, "device": "gpu"}
    measured = probe.load_probe()
    return Hardware.from_probe(measured), {
        "name": measured["hardware"], "device": measured["device"],
        "bandwidth_gb_per_s": measured["bandwidth_gb_per_s"],
        "bf16_tflop_per_s": measured["bf16_tflop_per_s"]}


def _bench_model(bench: dict, model: str | None) -> model_shape.ModelShape:
    target = bench.get("target") or {}
    path = model or target.get("model_path") or (target.get("flags") or {}).get("base_path")
    if not path:
        raise BadInput("The bench run does not say which model folder it served (it ran "
                       "against --url); give it with --model.")
    return model_shape.load(path)


@click.command("calibrate")
@click.argument("run")
@click.option("--model", help="The model the run served (default: read from the run).")
@click.option("--gpu", "gpu_name", help="The catalog GPU the run was measured on (default: this "
                                        "machine, using `thrifty doctor --probe`).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the calibration here (default: $THRIFTY_HOME/calibrations/).")
@catalog_option
@json_option
def cost_calibrate(run: str, model: str | None, gpu_name: str | None, out: str | None,
                   catalog_file: str | None, as_json: bool) -> None:
    """Fit the throughput model's efficiencies to a `thrifty bench` RUN.

    Replays each load point of the run through the model of vLLM's scheduler and fits the
    memory and compute efficiencies and the per-step overhead that reproduce the measured TTFT,
    TPOT and throughput. A run on a GPU calibrates the model for all catalog GPUs
    (`thrifty cost --calibration FILE`); a run on this CPU checks the model here.
    """
    bench, folder = calibrate.read_bench(run)
    cat = catalog.load(catalog_file)
    hw, hardware_info = _hardware_for(bench, gpu_name, cat)
    shape = _bench_model(bench, model)
    with stderr.status("fitting the throughput model to the bench run"):
        eff, report = calibrate.fit(bench, shape, hw, f"bench run {folder.name} on "
                                                      f"{hardware_info['name']}")
    path = calibrate.save(eff, hardware_info, shape, folder, report,
                          Path(out) if out else None)
    if as_json:
        emit_json({"calibration": str(path), "efficiency": eff.as_dict(), "fit": report})
        return
    click.echo(f"Fitted on {folder.name} ({hardware_info['name']}): memory efficiency "
               f"{eff.memory:.3f}, compute efficiency {eff.compute:.3f}, step overhead "
               f"{eff.overhead_ms:.2f} ms, request lag {eff.lag_ms:.2f} ms.")
    print_check(report["points"], "Calibration fit: measured vs modelled")
    click.echo(f"Calibration: {path}")


def print_check(points: list[dict], title: str) -> None:
    rows = []
    for p in points:
        for key in calibrate.REPORTED_METRICS:
            m, q, e = p["measured"][key], p["predicted"][key], p["error_pct"][key]
            rows.append([f"{p['kind']} {p['load']}", key, f"{m:.1f}" if m else "–",
                         f"{q:.1f}", f"{e:+.1f}%" if e is not None else "–"])
    table(title, ["load", "metric", "measured", "modelled", "error"], rows)


@click.command("check")
@click.argument("run", required=False)
@click.option("--calibration", "calibration_file", type=click.Path(dir_okay=False),
              help="A calibration from `thrifty cost calibrate` (needed with RUN; with "
                   "--measurements, replaces each GPU's efficiencies from the catalog).")
@click.option("--measurements", "measurements_file", type=click.Path(dir_okay=False),
              help="A CSV of measured vLLM runs, one row per load stage (the format of "
                   "benchmarks/data/h100-measurements): predict every row.")
@click.option("--configs", type=click.Path(file_okay=False),
              help="With --measurements: the folder of <org>__<name>/config.json files "
                   "(default: configs/ beside the file).")
@click.option("--horizon-s", type=click.FloatRange(min=1), default=None,
              help="With --measurements: replay each stage for at most this many seconds, "
                   "prompts already cached (faster; default: the full stages).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="With --measurements: write the per-row results as JSON here.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--model", help="The model the run served (default: read from the run).")
@click.option("--gpu", "gpu_name", help="The catalog GPU the run was measured on (default: this "
                                        "machine's probe).")
@catalog_option
@json_option
def cost_check(run: str | None, calibration_file: str | None, measurements_file: str | None,
               configs: str | None, horizon_s: float | None, out: str | None, force: bool,
               model: str | None, gpu_name: str | None, catalog_file: str | None,
               as_json: bool) -> None:
    """Predict a bench RUN, or every row of a --measurements file, from the workload alone and
    compare with what was measured.

    \b
    thrifty cost check RUN --calibration cal.json
    thrifty cost check --measurements benchmarks/data/h100-measurements/h100-measurements.csv
    """
    eff = calibrate.efficiency_of(calibrate.load(calibration_file)) if calibration_file else None
    if measurements_file:
        if run:
            raise BadInput("Give either a bench RUN or --measurements FILE, not both.")
        run_check(measurements_file, configs, eff, catalog_file, horizon_s, out, force, as_json)
        return
    if not run or eff is None:
        raise BadInput("Give a bench RUN with --calibration FILE (from `thrifty cost "
                       "calibrate`), or --measurements FILE to predict measured runs.")
    bench, folder = calibrate.read_bench(run)
    hw, _ = _hardware_for(bench, gpu_name, catalog.load(catalog_file))
    points = calibrate.predict(bench, _bench_model(bench, model), hw, eff)
    if as_json:
        emit_json({"run": str(folder), "efficiency": eff.as_dict(), "points": points})
        return
    print_check(points, f"{folder.name}: measured vs modelled ({eff.source})")
