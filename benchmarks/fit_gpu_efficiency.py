"""Fit one GPU's efficiencies (memory, step overhead, request lag) and the NVLink all-reduce
latency to published vLLM measurements on that GPU, across every model in the file.

    .venv/bin/python benchmarks/fit_gpu_efficiency.py [--horizon-s 20] [--iterations 90]

The fit replays each experiment of benchmarks/data/h100-measurements (stages cut to the
horizon, prefix cache in its steady state) and minimises the squared log error of mean TTFT,
per-token time and mean E2E over the rows flagged ok. Whatever it fits is a property of the GPU
and of vLLM: one set for every model. It also fits leaving each model out in turn, so the
error on a model the fit never saw is known. Writes benchmarks/results/gpu_efficiency_fit.json.

The compute efficiency is not fitted: these runs cycle through 100 prompts with prefix caching
on, so after the first pass no step is compute-bound and the error does not change with it
(the same loss to five digits from 0.4 to 1.0). It stays at the default and says so.
"""

import argparse
import json
import math
import time
from pathlib import Path

from common import fingerprint

from thrifty.cost import calibrate, catalog, measurements
from thrifty.cost import measurement_check as check
from thrifty.cost.perf_model import DEFAULT_GPU_EFFICIENCY, Efficiency

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "h100-measurements" / "h100-measurements.csv"
OUT = ROOT / "benchmarks" / "results" / "gpu_efficiency_fit.json"
FITTED = ("ttft_ms_mean", "tpot_ms", "e2e_ms_mean")
START = [math.log(0.75), math.log(3.0), math.log(5.0), math.log(8.0)]
COMPUTE = DEFAULT_GPU_EFFICIENCY.compute  # not identified by this data (see above)


def decode(x: list[float]) -> tuple[Efficiency, float]:
    e = [math.exp(v) for v in x]
    return Efficiency(min(e[0], 1.0), COMPUTE, e[1], "fit", e[2]), e[3]


def loss_of(rows, horizon_s: float):
    def loss(x: list[float]) -> float:
        eff, latency_us = decode(x)
        replays, total = {}, 0.0
        for row in rows:
            key = row.scenario.key()
            if key not in replays:
                replays[key] = check.replay(row.scenario, eff, horizon_s, latency_us)
            predicted = check.predict_row(row, replays[key])
            for metric in FITTED:
                if row.measured.get(metric):
                    total += math.log(predicted[metric] / row.measured[metric]) ** 2
        return total / len(rows)
    return loss


def fit(rows, horizon_s: float, iterations: int) -> dict:
    loss = loss_of(rows, horizon_s)
    best = calibrate.nelder_mead(loss, START, step=0.5, iterations=iterations)
    eff, latency_us = decode(best)
    return {"memory": round(eff.memory, 4), "compute": eff.compute, "compute_fitted": False,
            "overhead_ms": round(eff.overhead_ms, 3), "lag_ms": round(eff.lag_ms, 3),
            "nvlink_allreduce_us": round(latency_us, 2), "loss": round(loss(best), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--horizon-s", type=float, default=20.0)
    parser.add_argument("--iterations", type=int, default=90)
    parser.add_argument("--no-holdout", action="store_true", help="skip the per-model holdouts")
    args = parser.parse_args()
    started = time.time()
    rows = [r for r in measurements.read(DATA, catalog.load()) if r.flag == "ok"]
    result = {"fingerprint": fingerprint(), "data": str(DATA.relative_to(ROOT)),
              "rows": len(rows), "horizon_s": args.horizon_s, "iterations": args.iterations,
              "fitted_metrics": FITTED, "all_models": fit(rows, args.horizon_s, args.iterations)}
    print("all models:", result["all_models"], flush=True)
    if not args.no_holdout:
        result["leave_one_model_out"] = {}
        for model in sorted({r.scenario.model for r in rows}):
            kept = [r for r in rows if r.scenario.model != model]
            result["leave_one_model_out"][model] = fit(kept, args.horizon_s, args.iterations)
            print("without", model, result["leave_one_model_out"][model], flush=True)
    result["seconds"] = round(time.time() - started)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
