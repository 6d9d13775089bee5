"""`thrifty cost calibrate` and `thrifty cost check`: fit the throughput model to a bench run, and
predict a bench run with a calibration."""

from pathlib import Path

import click

from thrifty.core.errors import BadInput
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.progress import stderr
from thrifty.cost import calibrate, catalog, model_shape
from thrifty.cost.command_options import catalog_option
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
@click.argument("run")
@click.option("--calibration", "calibration_file", type=click.Path(dir_okay=False),
              required=True, help="A calibration from `thrifty cost calibrate`.")
@click.option("--model", help="The model the run served (default: read from the run).")
@click.option("--gpu", "gpu_name", help="The catalog GPU the run was measured on (default: this "
                                        "machine's probe).")
@catalog_option
@json_option
def cost_check(run: str, calibration_file: str, model: str | None, gpu_name: str | None,
               catalog_file: str | None, as_json: bool) -> None:
    """Predict a bench RUN from its workload alone and compare with what it measured."""
    bench, folder = calibrate.read_bench(run)
    eff = calibrate.efficiency_of(calibrate.load(calibration_file))
    hw, _ = _hardware_for(bench, gpu_name, catalog.load(catalog_file))
    points = calibrate.predict(bench, _bench_model(bench, model), hw, eff)
    if as_json:
        emit_json({"run": str(folder), "efficiency": eff.as_dict(), "points": points})
        return
    print_check(points, f"{folder.name}: measured vs modelled ({eff.source})")
