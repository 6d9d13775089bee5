"""Fit the roofline's efficiencies to a `thrifty bench` run, and predict bench runs with them.

A bench run's result.json holds every request (lengths, send times) and each load point's
measured TTFT, TPOT and throughput. Calibration replays each point through the scheduler
simulation and searches the three efficiencies (memory, compute, per-step overhead) that make
the predicted medians and throughput closest to the measured ones (least squares on log ratios,
Nelder-Mead), together with the lag from a client's send to the engine's queue. The fitted
efficiencies describe how well this engine uses this kind of hardware.
"""

import math
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.cost.model_shape import ModelShape
from thrifty.cost.perf_model import Efficiency, Hardware, decode_step, prefill_step, step_seconds
from thrifty.cost.simulate import Workload, simulate, summarize
from thrifty.formats import calibration as calibration_file
from thrifty.formats.bench_result import load_bench

FITTED_METRICS = ("ttft_ms_p50", "tpot_ms_p50", "output_throughput_tokens_per_s")
REPORTED_METRICS = ("ttft_ms_p50", "tpot_ms_p50", "e2e_ms_p50", "output_throughput_tokens_per_s")


def read_bench(run: str | Path) -> tuple[dict, Path]:
    """The bench dict of a run (formats/bench_result.load_bench) and its folder; it must have a
    successful request to calibrate on."""
    where, bench = load_bench(str(run))
    if not any(r.get("ok") for r in bench.get("requests", [])):
        raise BadInput(f"The bench run {run} has no successful request to calibrate on.")
    folder = Path(where)
    return bench, folder if folder.is_dir() else folder.parent


def point_workloads(bench: dict, kv_tokens: int | None = None) -> list[tuple[dict, Workload]]:
    """Each numeric load point of a bench run as a workload to replay."""
    kv = kv_tokens or (bench.get("memory") or {}).get("kv_cache_tokens")
    out = []
    for point in bench["points"]:
        if not isinstance(point.get("load"), (int, float)):
            continue  # a rate of "inf" sends everything at once; not replayed here
        records = sorted((r for r in bench["requests"]
                          if r["point"] == point["index"] and r.get("ok")),
                         key=lambda r: r["started_s"])
        if not records:
            continue
        lengths = [(r["input_tokens"], r["output_tokens"]) for r in records]
        if point["kind"] == "concurrency":
            work = Workload(lengths, concurrency=int(point["load"]), kv_tokens=kv)
        else:
            start = records[0]["started_s"]
            work = Workload(lengths, arrivals_s=[r["started_s"] - start for r in records],
                            kv_tokens=kv)
        out.append((point, work))
    return out


def predict(bench: dict, shape: ModelShape, hw: Hardware, eff: Efficiency) -> list[dict]:
    """For each load point: the measured and the predicted headline metrics."""
    rows = []
    for point, work in point_workloads(bench):
        predicted = summarize(simulate(shape, hw, eff, work))
        measured = point["summary"]
        rows.append({"load": point["load"], "kind": point["kind"],
                     "measured": {k: measured.get(k) for k in REPORTED_METRICS},
                     "predicted": {k: predicted[k] for k in REPORTED_METRICS},
                     "error_pct": {k: _error_pct(predicted[k], measured.get(k))
                                   for k in REPORTED_METRICS}})
    return rows


def _error_pct(predicted: float, measured: float | None) -> float | None:
    if not measured:
        return None
    return round((predicted - measured) / measured * 100, 1)


PRIOR_WEIGHT = 1e-4  # against squared log-ratio errors of ~1e-2 per metric in a good fit


def fit(bench: dict, shape: ModelShape, hw: Hardware, label: str) -> tuple[Efficiency, dict]:
    """Efficiencies that best reproduce the bench run, and how well they do."""
    workloads = point_workloads(bench)
    if not workloads:
        raise BadInput("The bench run has no numeric load point with successful requests.")
    ttft_s, tpot_s = _lowest_load_medians(workloads)
    # The step overhead cannot exceed the time of one decode step, nor the lag the whole TTFT:
    # bounding them keeps the search out of the valley where a huge lag and free steps
    # reproduce the throughput alone (a fit that once predicted 0.8 ms per token for 42).
    bounds = (tpot_s * 1000, ttft_s * 1000)

    def efficiency(x: list[float]) -> Efficiency:
        return Efficiency(math.exp(x[0]), math.exp(x[1]), bounds[0] * _sigmoid(x[2]), label,
                          bounds[1] * _sigmoid(x[3]))

    def loss(x: list[float]) -> float:
        eff = efficiency(x)
        # A faint pull of both efficiencies towards 1: a side of the roofline that no measured
        # step reaches (every step compute-bound on a CPU without bf16 hardware) is otherwise
        # free to drift (a fit once reported a memory efficiency of 1.3e10) without changing
        # a single prediction.
        total = PRIOR_WEIGHT * (x[0] ** 2 + x[1] ** 2)
        for point, work in workloads:
            predicted = summarize(simulate(shape, hw, eff, work))
            for key in FITTED_METRICS:
                measured = point["summary"].get(key)
                if measured and predicted[key] > 0:
                    total += math.log(predicted[key] / measured) ** 2
        return total

    # Several starts, each splitting the measured step differently between overhead and the
    # roofline; the search is in log space for efficiencies, so the probe's absolute scale
    # (a CPU's bf16 matmul rate can be far from what vLLM's kernels reach) does not matter.
    runs = [nelder_mead(loss, x0, step=0.7, iterations=150)
            for x0 in _starting_points(workloads[0][1], shape, hw, ttft_s, tpot_s)]
    best = min(runs, key=loss)
    best = nelder_mead(loss, best, step=0.2, iterations=100)  # restart: the simplex collapses
    eff = efficiency(best)
    rows = predict(bench, shape, hw, eff)
    worst = max((abs(e) for r in rows for e in r["error_pct"].values() if e is not None),
                default=None)
    return eff, {"points": rows, "worst_error_pct": worst}


def _lowest_load_medians(workloads: list[tuple[dict, Workload]]) -> tuple[float, float]:
    """Median TTFT and TPOT (seconds) at the lightest load point that measured both."""
    for point, _ in sorted(workloads, key=lambda pw: pw[0]["load"]):
        ttft, tpot = (point["summary"].get(k) for k in ("ttft_ms_p50", "tpot_ms_p50"))
        if ttft and tpot:
            return ttft / 1000, tpot / 1000
    raise BadInput("The bench run has no load point with a measured TTFT and per-token time "
                   "(requests of at least 2 output tokens) to calibrate on.")


def _starting_points(work: Workload, shape: ModelShape, hw: Hardware, ttft_s: float,
                     tpot_s: float) -> list[list[float]]:
    """Efficiencies that would put a lone request's decode step and prefill near the measured
    ones, with the decode step split between roofline and overhead in two ways."""
    prompt = round(sum(i for i, _ in work.lengths) / len(work.lengths))
    decode_memory_s = _roofline_s(shape, hw, decode_step(1, prompt), memory=True)
    prefill_compute_s = _roofline_s(shape, hw, prefill_step(prompt), memory=False)
    starts = []
    for roofline_share in (0.4, 0.9):
        overhead_s = (1 - roofline_share) * tpot_s
        lag_s = 0.1 * ttft_s
        prefill_s = max(ttft_s - lag_s - overhead_s, 0.1 * ttft_s)
        starts.append([math.log(decode_memory_s / (roofline_share * tpot_s)),
                       math.log(prefill_compute_s / prefill_s),
                       _logit(overhead_s / tpot_s), _logit(lag_s / ttft_s)])
    return starts


def _roofline_s(shape: ModelShape, hw: Hardware, step, memory: bool) -> float:
    """The memory (or compute) time of a step at full efficiency, the other side free."""
    eff = Efficiency(1.0, 1e12, 0.0) if memory else Efficiency(1e12, 1.0, 0.0)
    return step_seconds(shape, hw, eff, step)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-max(-60.0, min(60.0, x))))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def nelder_mead(f, x0: list[float], step: float, iterations: int) -> list[float]:
    """Minimise f from x0 (a small, dependency-free Nelder-Mead)."""
    n = len(x0)
    simplex = [list(x0)] + [[x0[j] + (step if j == i else 0.0) for j in range(n)]
                            for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(iterations):
        order = sorted(range(n + 1), key=values.__getitem__)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        centroid = [sum(x[j] for x in simplex[:-1]) / n for j in range(n)]

        worst = simplex[-1]
        reflected = _toward(centroid, worst, -1.0)
        fr = f(reflected)
        if fr < values[0]:
            expanded = _toward(centroid, worst, -2.0)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = _toward(centroid, worst, 0.5)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink toward the best point
                simplex = [simplex[0]] + [[b + 0.5 * (x - b) for b, x in
                                           zip(simplex[0], p, strict=True)] for p in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    return simplex[min(range(n + 1), key=values.__getitem__)]


def _toward(centroid: list[float], worst: list[float], t: float) -> list[float]:
    return [c + t * (w - c) for c, w in zip(centroid, worst, strict=True)]


# --- calibration files (format and loader: formats/calibration.py)

def save(eff: Efficiency, hardware: dict, shape: ModelShape, run: Path, report: dict,
         out: Path | None = None) -> Path:
    return calibration_file.save({
        "hardware": hardware, "model": shape.name, "precision": shape.precision,
        "bench_run": str(run), "efficiency": eff.as_dict(), "fit": report},
        out or calibration_file.default_path(hardware["name"], shape.precision))


load = calibration_file.load


def efficiency_of(calibration: dict) -> Efficiency:
    e = calibration["efficiency"]
    return Efficiency(e["memory"], e["compute"], e["overhead_ms"], e["source"],
                      e.get("lag_ms", 0.0))


saved = calibration_file.saved
