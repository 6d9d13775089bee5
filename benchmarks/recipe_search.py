"""Which settings make the best 4-bit and the best W8A8 checkpoint of SmolLM2-135M: a search.

Each recipe is a list of `thrifty quantize` arguments. All of them are made once (kept in
--work and reused when their arguments match), then one `thrifty eval` measures every
checkpoint against the bf16 base on the same enwiki tokens: KL divergence, top-1 agreement,
Δ log-perplexity, with 95% intervals. For the 4-bit recipes the table also gives the share of
same-scheme RTN's KL divergence each one keeps away; W8A16 (weights alone at 8 bits) shows how
much of W8A8's loss comes from its 8-bit weights and how much from its 8-bit activations.

Writes results/recipe_search.json and .md (with the run fingerprint). Run from the repository
root on an otherwise idle machine:
    .venv/bin/python benchmarks/recipe_search.py [--only 'LABEL;LABEL'] [--seeds 3]
        [--eval-tokens 4096]
"""

import argparse
import json
import time
from pathlib import Path

import common
from common import PERCENT, thrifty

MODEL = "smollm2-135m"
SMALL = ["--num-samples", "16", "--seq-len", "256"]  # as quantize_quality.py's seeds
ASYM = ["--scheme", "W4A16_ASYM", "--group-size", "64"]
SEEDS = (0, 1, 2)  # calibration draws of the multi-seed recipes
W8A8 = ["--scheme", "W8A8"]
RECIPES = {
    # 4-bit, asymmetric (the best scheme in quantize_quality.md); RTN is the yardstick
    "w4-asym rtn": [*ASYM, "--method", "rtn"],
    "w4-asym gptq 16x256": [*ASYM, "--method", "gptq", *SMALL],
    "w4-asym gptq 128x512 (defaults)": [*ASYM, "--method", "gptq"],
    "w4-asym gptq 128x512 no act-order": [*ASYM, "--method", "gptq", "--no-actorder"],
    "w4-asym gptq 128x512 dampening 0.1": [*ASYM, "--method", "gptq", "--dampening", "0.1"],
    # AWQ's scaling, then GPTQ with activation-weighted (importance-matrix) scale search
    **{f"w4-asym awq-gptq imatrix 64x256 seed {seed}": [
        *ASYM, "--method", "awq-gptq", "--observer", "imatrix-mse", "--num-samples", "64",
        "--seq-len", "256", "--seed", str(seed)] for seed in SEEDS},
    # 8-bit
    "w8a16 rtn": ["--scheme", "W8A16", "--method", "rtn"],
    "w8a8 rtn, no smoothquant": [*W8A8, "--method", "rtn", "--smoothquant", "0"],
    "w8a8 rtn, smoothquant 0.8": [*W8A8, "--method", "rtn", "--smoothquant", "0.8"],
    "w8a8 gptq 16x256, no smoothquant": [*W8A8, "--smoothquant", "0", *SMALL],
    "w8a8 gptq 16x256, smoothquant 0.5": [*W8A8, "--smoothquant", "0.5", *SMALL],
    "w8a8 gptq 16x256, smoothquant 0.8": [*W8A8, "--smoothquant", "0.8", *SMALL],
    "w8a8 gptq 128x512, smoothquant 0.8 (defaults)": [*W8A8],
}


def make(work: Path, label: str, args: list[str]) -> dict:
    out = work / label.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    kept = out / "thrifty-quantize.json"
    if kept.is_file() and json.loads(kept.read_text()).get("bench_args") == args:
        print(f"reusing {label}", flush=True)
        return {"path": str(out), **json.loads(kept.read_text())}
    print(f"quantizing {label}", flush=True)
    start = time.monotonic()
    manifest = thrifty("quantize", MODEL, "--out", str(out), "--force", "--no-verify", *args)
    manifest["bench_args"] = args  # what this script asked for, to reuse it on a rerun
    manifest["bench_seconds"] = round(time.monotonic() - start, 1)
    kept.write_text(json.dumps(manifest, indent=2) + "\n")
    return {"path": str(out), **manifest}


def markdown(result: dict) -> str:
    rows = {row["label"]: row for row in result["eval"]["rows"]}
    rtn = rows["w4-asym rtn"]["vs_base"]["kld_mean"]
    lines = [
        "# Recipe search: SmolLM2-135M, 4-bit asymmetric and 8-bit", "",
        f"Measured on {result['machine']}. Command: `{result['command']}`. Every checkpoint "
        f"made by `thrifty quantize` with the arguments shown; one `thrifty eval` against bf16 "
        f"on {result['eval_tokens']:,} enwiki tokens (eval run {result['eval']['run']}); 95% "
        "intervals in brackets. Kept away: the share of same-scheme RTN's mean KL divergence "
        "the recipe removes (4-bit rows only).", "",
        "| recipe | arguments | KLD | top-1 % | Δ log-ppl | kept away | quantize s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, made in result["recipes"].items():
        vs = rows[label]["vs_base"]
        kept = f"{1 - vs['kld_mean'] / rtn:.0%}" if label.startswith("w4") else ""
        top1 = common.interval(vs["top1_agreement_pct"], vs["top1_agreement_pct_ci95"], PERCENT)
        lines.append(
            f"| {label} | `{' '.join(made['bench_args'])}` "
            f"| {common.interval(vs['kld_mean'], vs['kld_mean_ci95'], '{:.4f}')} "
            f"| {top1} "
            f"| {vs['delta_log_ppl']:+.4f} | {kept} | {made.get('bench_seconds', '')} |")
    return "\n".join(lines + seeds_summary(rows, rtn)) + "\n"


def seeds_summary(rows: dict, rtn: float) -> list[str]:
    """Recipes run with several calibration seeds: the mean and range of what they keep away."""
    groups: dict[str, list[float]] = {}
    for label, row in rows.items():
        if " seed " in label:
            groups.setdefault(label.split(" seed ")[0], []).append(row["vs_base"]["kld_mean"])
    lines = []
    for name, klds in groups.items():
        kept = [1 - k / rtn for k in klds]
        mean = sum(klds) / len(klds)
        lines.append(f"\n{name}, {len(klds)} calibration seeds: KLD mean {mean:.4f}"
                     f" (range {min(klds):.4f}–{max(klds):.4f}); keeps "
                     f"{sum(kept) / len(kept):.0%} of same-scheme RTN's KLD away (range "
                     f"{min(kept):.0%}–{max(kept):.0%}).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="labels separated by ';' (default: all)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS),
                        help="how many of the multi-seed recipes' seeds to run (from 0)")
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--work", default=str(Path.home() / ".cache/thrifty/work/recipes"))
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the .md from the committed .json")
    args = parser.parse_args()
    if args.render_only:
        common.render_again("recipe_search", markdown)
        return
    wanted = [label.strip() for label in args.only.split(";") if label.strip()]
    chosen = [label for label in RECIPES if (not wanted or label in wanted)
              and not (" seed " in label and int(label.rsplit(" ", 1)[1]) >= args.seeds)]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fp = common.fingerprint()
    made = {label: make(work, label, RECIPES[label]) for label in chosen}
    eval_args = [MODEL, *[m["path"] for m in made.values()], "--max-tokens",
                 str(args.eval_tokens)]
    for label in ["base", *made]:
        eval_args += ["--label", label]
    print(f"evaluating {len(made) + 1} models", flush=True)
    result = {"machine": common.machine_text(fp), "fingerprint": fp,
              "command": "benchmarks/recipe_search.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if k in ("only", "eval_tokens", "seeds") and v),
              "eval_tokens": args.eval_tokens, "recipes": made,
              "eval": thrifty("eval", *eval_args)}
    common.write_result("recipe_search", result, markdown)


if __name__ == "__main__":
    main()
