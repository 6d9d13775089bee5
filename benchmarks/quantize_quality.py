"""Quantization benchmark on SmolLM2-135M: quality and size per method, and thrifty's overhead.

1. Quantize the default model with RTN, GPTQ and AWQ at 4 and 3 bits (group 64), plus GPTQ
   without act-order and GPTQ with dampening 0.1 at 4 bits, all through `thrifty quantize`
   with the same calibration set; evaluate every checkpoint and the base model on the same
   enwiki evaluation tokens with `thrifty eval`.
2. Time `thrifty quantize` against a bare llm-compressor script with the same settings, run
   alternately in one sitting, and report the ratio.

Writes results/quantize.json and results/quantize.md. Run from the repository root:
    .venv/bin/python benchmarks/quantize_quality.py [--quick]
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
from common import thrifty

HERE = Path(__file__).resolve().parent
MODEL = "smollm2-135m"
ROWS = [  # name, extra quantize args
    ("RTN 4-bit g64", ["--method", "rtn"]),
    ("GPTQ 4-bit g64", ["--method", "gptq"]),
    ("AWQ 4-bit g64", ["--method", "awq", "--scheme", "W4A16_ASYM"]),
    ("RTN 3-bit g64", ["--method", "rtn", "--bits", "3"]),
    ("GPTQ 3-bit g64", ["--method", "gptq", "--bits", "3"]),
    ("AWQ 3-bit g64", ["--method", "awq", "--scheme", "W4A16_ASYM", "--bits", "3"]),
    ("GPTQ 4-bit g64, no act-order", ["--method", "gptq", "--no-actorder"]),
    ("GPTQ 4-bit g64, dampening 0.1", ["--method", "gptq", "--dampening", "0.1"]),
]


def timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def quality(work: Path, samples: int, seq_len: int, eval_tokens: int) -> dict:
    checkpoints, manifests = [], {}
    for name, extra in ROWS:
        out = work / name.replace(" ", "_").replace(",", "")
        print(f"quantizing: {name}", flush=True)
        manifests[name] = thrifty("quantize", MODEL, "--out", str(out), "--force", "--no-verify",
                                  "--group-size", "64", "--num-samples", str(samples),
                                  "--seq-len", str(seq_len), *extra)
        checkpoints.append(str(out))
    print("evaluating", flush=True)
    evaluated = thrifty("eval", MODEL, *checkpoints, "--max-tokens", str(eval_tokens))
    rows = []
    for label, row in zip(["base (fp32)", *[n for n, _ in ROWS]], evaluated["rows"], strict=True):
        m = manifests.get(label, {})
        rows.append({"name": label, "perplexity": row["perplexity"],
                     "perplexity_delta_pct": row["perplexity_delta_pct"],
                     "weights_bytes": row["weights_bytes"],
                     "bytes_per_param": row["bytes_per_param"],
                     "quantize_s": m.get("quantize_s"), "calibrate_s": m.get("calibrate_s"),
                     "tokens_sha256": row["tokens_sha256"]})
    return {"rows": rows, "eval_run": evaluated["run"], "eval_tokens": eval_tokens,
            "calibration": {"samples": samples, "seq_len": seq_len}}


def overhead(work: Path, repeats: int, samples: int, seq_len: int) -> dict:
    from thrifty.assets import corpora, models
    from thrifty.core import engines

    python = engines.python_for("compress")
    calib = str(corpora.enwiki_dir() / "calibration.jsonl")
    model_dir = str(models.prepared_dir(MODEL))
    bare = [python, str(HERE / "bare_llmcompressor_gptq.py"), model_dir, calib,
            str(work / "bare"), str(samples), str(seq_len), "64"]
    ours = [sys.executable, "-m", "thrifty", "quantize", MODEL, "--out", str(work / "ours"),
            "--force", "--no-verify", "--group-size", "64", "--num-samples", str(samples),
            "--seq-len", str(seq_len)]
    times = {"bare_s": [], "thrifty_s": []}
    for i in range(repeats):
        print(f"overhead round {i + 1}/{repeats}", flush=True)
        shutil.rmtree(work / "bare", ignore_errors=True)
        times["bare_s"].append(round(timed(bare), 2))
        times["thrifty_s"].append(round(timed(ours), 2))
    ratios = [t / b for t, b in zip(times["thrifty_s"], times["bare_s"], strict=True)]
    return {**times, "ratios": [round(r, 3) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 3),
            "settings": {"method": "gptq", "bits": 4, "group_size": 64, "samples": samples,
                         "seq_len": seq_len}}


def markdown(result: dict) -> str:
    q, o = result["quality"], result["overhead"]
    lines = [
        "# Quantization benchmark: SmolLM2-135M", "",
        f"Calibration: {q['calibration']['samples']} samples x {q['calibration']['seq_len']} "
        f"tokens from the enwiki calibration split. Evaluation: the first {q['eval_tokens']} "
        "tokens of the enwiki evaluation split (the same tokens for every row), "
        "non-overlapping 1024-token windows. Machine: " + result["machine"] + ".", "",
        "RTN and GPTQ rows are symmetric (W4A16, `--bits 3` for 3-bit); AWQ rows use zero "
        "points (W4A16_ASYM), as AWQ is usually run. The calibration set is small to keep the "
        "whole benchmark within an hour on 2 CPU cores; GPTQ in particular is known to need "
        "more data than this, so read its rows as a lower bound.", "",
        "| model | perplexity | Δ vs base | weights | bytes/param | quantize time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in q["rows"]:
        qs = f"{r['quantize_s']:.0f} s" if r["quantize_s"] else ""
        lines.append(f"| {r['name']} | {r['perplexity']:.2f} "
                     f"| {r['perplexity_delta_pct']:+.1f}% | {r['weights_bytes'] / 2**20:.1f} MiB "
                     f"| {r['bytes_per_param']:.3f} | {qs} |")
    lines += [
        "", "## thrifty's overhead against a bare llm-compressor script", "",
        f"GPTQ 4-bit g64, {o['settings']['samples']} samples x {o['settings']['seq_len']} "
        f"tokens, alternating runs (wall time of the whole process, model load to saved output):",
        "", "| round | bare llm-compressor | thrifty quantize | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for i, (b, t, r) in enumerate(zip(o["bare_s"], o["thrifty_s"], o["ratios"], strict=True), 1):
        lines.append(f"| {i} | {b:.1f} s | {t:.1f} s | {r:.3f} |")
    lines += ["", f"Median ratio thrifty / bare: **{o['median_ratio']:.3f}**", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny settings, to try the script")
    parser.add_argument("--work", default="/tmp/thrifty-quantize-bench")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite results/quantize.md from results/quantize.json")
    args = parser.parse_args()
    if args.render_only:
        result = json.loads((HERE / "results" / "quantize.json").read_text())
        (HERE / "results" / "quantize.md").write_text(markdown(result))
        return
    samples, seq_len, eval_tokens, repeats = (4, 64, 1024, 1) if args.quick else (16, 256, 8192, 3)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fp = common.fingerprint()
    result = {
        "machine": common.machine_text(fp), "fingerprint": fp,
        "quality": quality(work, samples, seq_len, eval_tokens),
        "overhead": overhead(work, repeats, 16, 256),
    }
    name = "quantize-quick" if args.quick else "quantize"
    (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "results" / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
