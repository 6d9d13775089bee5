"""Quantization quality on SmolLM2-135M, with error bars: which method when.

1. `thrifty quantize` RTN, GPTQ and AWQ at 4 and 3 bits, group 64, each symmetric (W4A16) and
   asymmetric (W4A16_ASYM), so that every method is compared with RTN of the same scheme; GPTQ
   and AWQ once per calibration seed (`--seed`: another draw of the same number of samples).
2. `thrifty eval` of the base and every checkpoint on the same enwiki evaluation tokens: KL
   divergence from the base (mean, p90, p99), top-1 agreement and Δ log-perplexity, each with
   its 95% interval; per method, the mean and the spread (min–max) over the seeds, and the share
   of same-scheme RTN's KL divergence the method keeps away.
3. Optionally (`--mmlu N`), MMLU on N questions through `thrifty eval --task` for the base and
   the best 4-bit recipe; (`--overhead-rounds N`) `thrifty quantize` timed against a bare
   llm-compressor script (bare_llmcompressor_gptq.py) with the same GPTQ settings.

Checkpoints are kept in --work and reused when their settings match, so an interrupted run
resumes. Writes results/quantize_quality.json and .md (with the run fingerprint). Run from the
repository root:
    .venv/bin/python benchmarks/quantize_quality.py [--quick] [--seeds 3] [--mmlu 100]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
from common import PERCENT, thrifty

HERE = Path(__file__).resolve().parent
MODEL = "smollm2-135m"
SCHEMES = {"sym": "W4A16", "asym": "W4A16_ASYM"}
METHODS = ("rtn", "gptq", "awq")


def configs(seeds: dict[int, int], calibration: tuple[int, int],
            large: tuple[int, int] | None) -> list[dict]:
    """One checkpoint per method, bits, scheme and (for calibrated methods) seed; with `large`,
    also 4-bit GPTQ of each scheme calibrated on that many samples x tokens (one seed: GPTQ at
    `thrifty quantize`'s default calibration; AWQ's grid search at that size takes over an
    hour on two CPU cores)."""
    out = []
    for bits, bits_seeds in seeds.items():
        for sym, scheme in SCHEMES.items():
            for method in METHODS:
                for seed in range(1 if method == "rtn" else bits_seeds):
                    label = f"{method}-w{bits}-{sym}" + ("" if method == "rtn" else f"-s{seed}")
                    out.append({"label": label, "method": method, "bits": bits, "sym": sym,
                                "scheme": scheme, "seed": seed, "calibration": calibration})
    for sym, scheme in SCHEMES.items() if large else ():
        out.append({"label": f"gptq-w4-{sym}-c{large[0]}x{large[1]}", "method": "gptq",
                    "bits": 4, "sym": sym, "scheme": scheme, "seed": 0, "calibration": large})
    return out


def quantize_all(work: Path, todo: list[dict]) -> dict[str, dict]:
    manifests = {}
    for number, config in enumerate(todo, start=1):
        out = work / config["label"]
        samples, seq_len = config["calibration"]
        args = ["--method", config["method"], "--scheme", config["scheme"], "--bits",
                str(config["bits"]), "--group-size", "64", "--num-samples", str(samples),
                "--seq-len", str(seq_len), "--seed", str(config["seed"])]
        kept = out / "thrifty-quantize.json"
        if kept.is_file() and json.loads(kept.read_text()).get("bench_args") == args:
            print(f"[{number}/{len(todo)}] reusing {config['label']}", flush=True)
            manifests[config["label"]] = json.loads(kept.read_text())
            continue
        print(f"[{number}/{len(todo)}] quantizing {config['label']}", flush=True)
        manifest = thrifty("quantize", MODEL, "--out", str(out), "--force", "--no-verify", *args)
        manifest["bench_args"] = args  # what this script asked for, to reuse it on a rerun
        kept.write_text(json.dumps(manifest, indent=2) + "\n")
        manifests[config["label"]] = manifest
    return manifests


def evaluate_all(work: Path, todo: list[dict], eval_tokens: int) -> dict:
    labels = ["base", *[c["label"] for c in todo]]
    print(f"evaluating {len(labels)} models", flush=True)
    args = [MODEL, *[str(work / c["label"]) for c in todo], "--max-tokens", str(eval_tokens)]
    for label in labels:
        args += ["--label", label]
    return thrifty("eval", *args)


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "values": values}


def summarize(todo: list[dict], rows: list[dict]) -> list[dict]:
    """Per method, bits and scheme: the mean and spread over seeds of every measure, and the
    share of same-scheme RTN's mean KL divergence the method keeps away."""
    by_label = {row["label"]: row for row in rows}
    groups: dict[tuple, list[dict]] = {}
    for config in todo:
        key = (config["bits"], config["sym"], config["method"], tuple(config["calibration"]))
        groups.setdefault(key, []).append({**config, "row": by_label[config["label"]]})
    out = []
    for (bits, sym, method, calibration), members in groups.items():
        vs = [m["row"]["vs_base"] for m in members]
        summary = {"bits": bits, "sym": sym, "method": method, "seeds": len(members),
                   "calibration": list(calibration),
                   "labels": [m["label"] for m in members],
                   "perplexity": spread([m["row"]["perplexity"] for m in members])}
        for key in ("kld_mean", "kld_p90", "kld_p99", "top1_agreement_pct", "delta_log_ppl"):
            summary[key] = spread([v[key] for v in vs])
        summary["kld_mean_ci95_per_seed"] = [v["kld_mean_ci95"] for v in vs]
        out.append(summary)
    for summary in out:
        rtn = next(s for s in out if s["method"] == "rtn" and s["bits"] == summary["bits"]
                   and s["sym"] == summary["sym"])
        summary["rtn_kld_kept_away_pct"] = 100 * (1 - summary["kld_mean"]["mean"]
                                                  / rtn["kld_mean"]["mean"])
    return out


def best_four_bit(summaries: list[dict]) -> dict:
    return min((s for s in summaries if s["bits"] == 4 and s["method"] != "rtn"),
               key=lambda s: s["kld_mean"]["mean"])


def mmlu(work: Path, best: dict, questions: int) -> dict:
    label = best["labels"][0]
    print(f"MMLU on {questions} questions: base and {label}", flush=True)
    result = thrifty("eval", MODEL, str(work / label), "--label", "base", "--label", label,
                     "--max-tokens", "256", "--task", f"mmlu:{questions}")
    return {"questions": questions, "rows": result["task_rows"], "run": result["run"]}


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def overhead(work: Path, rounds: int, samples: int, seq_len: int) -> dict:
    """`thrifty quantize` against a bare llm-compressor script with the same GPTQ settings,
    run alternately, wall time of the whole process (model load to saved output)."""
    from thrifty.assets import corpora, models
    from thrifty.core import engines

    calib = str(corpora.enwiki_dir() / "calibration.jsonl")
    bare = [engines.python_for("compress"), str(HERE / "bare_llmcompressor_gptq.py"),
            str(models.prepared_dir(MODEL)), calib, str(work / "bare"), str(samples),
            str(seq_len), "64"]
    ours = [sys.executable, "-m", "thrifty", "quantize", MODEL, "--out", str(work / "ours"),
            "--force", "--no-verify", "--group-size", "64", "--num-samples", str(samples),
            "--seq-len", str(seq_len)]
    times: dict[str, list[float]] = {"bare_s": [], "thrifty_s": []}
    for number in range(rounds):
        print(f"overhead round {number + 1}/{rounds}", flush=True)
        shutil.rmtree(work / "bare", ignore_errors=True)
        times["bare_s"].append(round(timed(bare), 2))
        times["thrifty_s"].append(round(timed(ours), 2))
    ratios = [t / b for t, b in zip(times["thrifty_s"], times["bare_s"], strict=True)]
    return {**times, "ratios": [round(r, 3) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 3),
            "settings": {"method": "gptq", "bits": 4, "group_size": 64, "samples": samples,
                         "seq_len": seq_len}}


def _range(s: dict, spec: str) -> str:
    if len(s["values"]) == 1:
        return spec.format(s["mean"])
    return f"{spec.format(s['mean'])} ({spec.format(s['min'])}–{spec.format(s['max'])})"


def markdown(result: dict) -> str:
    s = result["settings"]
    base = result["eval_rows"][0]
    lines = [
        "# Quantization quality: SmolLM2-135M", "",
        f"Calibration: {s['samples']} samples × {s['seq_len']} tokens from the enwiki "
        f"calibration split, drawn with seeds 0–{s['seeds'] - 1} (`thrifty quantize --seed`)"
        + (f"; at 3 bits {s['seeds_3bit']} seed(s)" if s.get("seeds_3bit") not in
           (None, s["seeds"]) else "") + ". "
        f"Evaluation: `thrifty eval` on the first {base['eval_tokens']:,} tokens of the enwiki "
        f"evaluation split ({base['scored_tokens']:,} scored, windows of 1024, prefix "
        f"{base['prefix_ids'] or 'none'}), the same tokens for every model; base perplexity "
        f"{base['perplexity']:.2f}. Group size 64 (128 does not divide SmolLM2's widths). "
        f"Measured on {result['machine']}.", "",
        "KLD: mean KL divergence from the base's next-token distribution (nats); top-1: tokens "
        "whose most likely next token is the base's; RTN kept away: the share of same-scheme "
        "RTN's KLD the method avoids. Calibrated methods: mean over seeds (min–max).", "",
        "| bits | scheme | method | calibration | seeds | KLD | RTN kept away | top-1 % "
        "| Δ log-ppl | perplexity |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for g in result["summaries"]:
        calibration = "none" if g["method"] == "rtn" else "{} × {}".format(*g["calibration"])
        lines.append(
            f"| {g['bits']} | {SCHEMES[g['sym']]} | {g['method'].upper()} | {calibration} "
            f"| {g['seeds']} "
            f"| {_range(g['kld_mean'], '{:.3f}')} | {g['rtn_kld_kept_away_pct']:.0f}% "
            f"| {_range(g['top1_agreement_pct'], '{:.1f}')} "
            f"| {_range(g['delta_log_ppl'], '{:+.3f}')} | {_range(g['perplexity'], '{:.2f}')} |")
    best = result["best_four_bit"]
    lines += ["", f"Best 4-bit recipe: {best['method'].upper()} {SCHEMES[best['sym']]}, "
              "calibrated on {} samples × {} tokens, keeping ".format(*best["calibration"]) +
              f"{best['rtn_kld_kept_away_pct']:.0f}% of same-scheme RTN's KLD away.", "",
              "## Every checkpoint, with 95% intervals (block bootstrap)", "",
              "| checkpoint | KLD mean | p90 | p99 | top-1 % | Δ log-ppl | perplexity |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["eval_rows"][1:]:
        vs = row["vs_base"]
        top1 = common.interval(vs["top1_agreement_pct"], vs["top1_agreement_pct_ci95"], PERCENT)
        lines.append(
            f"| {row['label']} | {common.interval(vs['kld_mean'], vs['kld_mean_ci95'], '{:.3f}')} "
            f"| {vs['kld_p90']:.3f} | {vs['kld_p99']:.3f} | {top1} "
            f"| {common.interval(vs['delta_log_ppl'], vs['delta_log_ppl_ci95'], '{:+.3f}')} "
            f"| {row['perplexity']:.2f} |")
    if result.get("mmlu"):
        lines += ["", f"## MMLU, {result['mmlu']['questions']} questions (0-shot, lm-eval "
                  "0.4.13)", "", "| model | accuracy | ± stderr | recovery |",
                  "| --- | ---: | ---: | ---: |"]
        for row in result["mmlu"]["rows"]:
            recovery = row.get("recovery_pct")
            lines.append(f"| {row['model']} | {100 * row['accuracy']:.1f}% "
                         f"| {100 * row['accuracy_stderr']:.1f} "
                         f"| {'' if recovery is None else f'{recovery:.0f}%'} |")
        lines += ["", "Chance is 25%: an accuracy within 2 standard errors of it says nothing "
                  "about what quantization kept."]
    if result.get("overhead"):
        o = result["overhead"]
        lines += ["", "## thrifty's overhead against a bare llm-compressor script", "",
                  f"GPTQ 4-bit g64, {o['settings']['samples']} samples × "
                  f"{o['settings']['seq_len']} tokens, alternating runs, whole-process wall time:",
                  "", "| round | bare llm-compressor | thrifty quantize | ratio |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {i} | {b:.1f} s | {t:.1f} s | {r:.3f} |" for i, (b, t, r) in
                  enumerate(zip(o["bare_s"], o["thrifty_s"], o["ratios"], strict=True), 1)]
        lines += ["", f"Median ratio thrifty / bare: **{o['median_ratio']:.3f}**"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, to try the script")
    parser.add_argument("--seeds", type=int, default=3, help="calibration seeds per method")
    parser.add_argument("--seeds-3bit", type=int,
                        help="calibration seeds per method at 3 bits (default: --seeds)")
    parser.add_argument("--samples", type=int, default=16, help="calibration samples")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample")
    parser.add_argument("--large", default="128x512",
                        help="SAMPLESxTOKENS for the extra 4-bit GPTQ rows ('' for none)")
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--mmlu", type=int, default=0, help="MMLU questions (0: none)")
    parser.add_argument("--overhead-rounds", type=int, default=0,
                        help="rounds of thrifty quantize against bare llm-compressor (0: none)")
    parser.add_argument("--work", default=str(Path.home() / ".cache/thrifty/work/quant-quality"))
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the .md from the committed .json")
    args = parser.parse_args()
    name = "quantize_quality-quick" if args.quick else "quantize_quality"
    if args.render_only:
        common.render_again(name, markdown)
        return
    if args.quick:
        args.seeds, args.samples, args.seq_len, args.eval_tokens = 2, 4, 64, 1024
        args.large = "8x64"
    large = tuple(int(n) for n in args.large.split("x")) if args.large else None
    seeds = {4: args.seeds} if args.quick else {4: args.seeds, 3: args.seeds_3bit or args.seeds}
    todo = configs(seeds, (args.samples, args.seq_len), large)
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    fp = common.fingerprint()
    manifests = quantize_all(work, todo)
    evaluated = evaluate_all(work, todo, args.eval_tokens)
    summaries = summarize(todo, evaluated["rows"])
    best = best_four_bit(summaries)
    result = {"machine": common.machine_text(fp), "fingerprint": fp,
              "settings": {"samples": args.samples, "seq_len": args.seq_len,
                           "seeds": args.seeds, "seeds_3bit": seeds.get(3),
                           "eval_tokens": args.eval_tokens,
                           "large": args.large},
              "summaries": summaries, "best_four_bit": best, "eval_rows": evaluated["rows"],
              "eval_run": evaluated["run"],
              "quantize": {label: {k: m.get(k) for k in ("quantize_s", "calibrate_s",
                                                           "weights_bytes", "calibration")}
                           for label, m in manifests.items()},
              "mmlu": mmlu(work, best, args.mmlu) if args.mmlu else None,
              "overhead": (overhead(work, args.overhead_rounds, args.samples, args.seq_len)
                           if args.overhead_rounds else None)}
    common.write_result(name, result, markdown)


if __name__ == "__main__":
    main()
