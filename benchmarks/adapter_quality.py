"""What serving a LoRA adapter over a quantized base costs in quality, against merging it first.

For each demo adapter (trained on its own topical enwiki articles), on that adapter's own
text: the adapter over the bf16 base is the reference; against it, `thrifty eval` measures
the adapter unmerged over a W4A16_ASYM (GPTQ) and a W8A8 (SmoothQuant + GPTQ) base (`MODEL+ADAPTER`,
as vLLM serves many adapters over one base), the adapter merged into the bf16 weights and then
quantized to each scheme (`thrifty quantize --adapter`), and the base without the adapter (how
far the adapter moves the model: the scale the quantization losses are read against).

Checkpoints are kept in --work and reused when their settings match. Writes
results/adapter_quality.json and .md (with the run fingerprint). Run from the repository root:
    .venv/bin/python benchmarks/adapter_quality.py [--quick] [--adapters history,chemistry]
"""

import argparse
import json
from pathlib import Path

import common
from common import thrifty

from thrifty.assets import corpora
from thrifty.serve import demo_adapters

MODEL = "smollm2-135m"
SCHEMES = {"w4a16": ["--scheme", "W4A16_ASYM"], "w8a8": ["--scheme", "W8A8"]}


def quantized(out: Path, args: list[str]) -> str:
    """A checkpoint made once with these arguments, then reused."""
    kept = out / "thrifty-quantize.json"
    if not (kept.is_file() and json.loads(kept.read_text()).get("bench_args") == args):
        print(f"quantizing {out.name}", flush=True)
        manifest = thrifty("quantize", *args, "--out", str(out), "--force", "--no-verify")
        manifest["bench_args"] = args
        kept.write_text(json.dumps(manifest, indent=2) + "\n")
    return str(out)


def adapter_text(work: Path, name: str) -> Path:
    """The adapter's own articles as a .jsonl corpus for `thrifty eval --corpus`."""
    articles = corpora.enwiki_articles("calibration")
    out = work / f"{name}.jsonl"
    with out.open("w") as f:
        for title in demo_adapters.specs()[name]["titles"]:
            f.write(json.dumps({"text": articles[title]}) + "\n")
    return out


def measure(work: Path, name: str, calibration: list[str], bases: dict[str, str],
            eval_tokens: int) -> dict:
    adapter = str(demo_adapters.default_dir() / name)
    merged = {scheme: quantized(work / f"merged-{name}-{scheme}",
                                [MODEL, "--adapter", adapter, *args, *calibration])
              for scheme, args in SCHEMES.items()}
    models = {"bf16+adapter": f"{MODEL}+{adapter}",
              **{f"{s}+adapter": f"{path}+{adapter}" for s, path in bases.items()},
              **{f"merged, then {s}": path for s, path in merged.items()},
              "bf16, no adapter": MODEL}
    args = [*models.values(), "--corpus", str(adapter_text(work, name)), "--max-tokens",
            str(eval_tokens)]
    for label in models:
        args += ["--label", label]
    result = thrifty("eval", *args)
    return {"run": result["run"], "rows": result["rows"]}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Adapters over a quantized base: SmolLM2-135M and the demo adapters", "",
        f"Measured on {result['machine']}. Each adapter on its own articles (the first "
        f"{s['eval_tokens']:,} tokens), against the adapter over the bf16 base; calibration "
        f"{s['calibration']}. KLD: mean KL divergence (nats) with its 95% interval; top-1: "
        "tokens whose most likely next token is the reference's. The last row of each adapter "
        "is the base without it: how far the adapter itself moves the model.", ""]
    for name, measured in result["adapters"].items():
        lines += [f"## {name}", "", "| served as | KLD | top-1 % | Δ log-ppl |",
                  "| --- | ---: | ---: | ---: |"]
        for row in measured["rows"][1:]:
            vs = row["vs_base"]
            kld = common.interval(vs["kld_mean"], vs["kld_mean_ci95"], "{:.3f}")
            lines.append(f"| {row['label']} | {kld} | {vs['top1_agreement_pct']:.1f} "
                         f"| {vs['delta_log_ppl']:+.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, to try the script")
    parser.add_argument("--adapters", default="history,chemistry")
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--work", default=str(Path.home() / ".cache/thrifty/work/adapter-quality"))
    args = parser.parse_args()
    calibration = ["--num-samples", "32", "--seq-len", "256"]
    if args.quick:
        calibration, args.eval_tokens, args.adapters = ["--num-samples", "4", "--seq-len",
                                                        "64"], 512, "history"
    name = "adapter_quality-quick" if args.quick else "adapter_quality"
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    fp = common.fingerprint()
    thrifty("adapters", "demo")  # trains the demo adapters once, then reuses them
    bases = {scheme: quantized(work / f"base-{scheme}", [MODEL, *flags, *calibration])
             for scheme, flags in SCHEMES.items()}
    measured = {adapter: measure(work, adapter, calibration, bases, args.eval_tokens)
                for adapter in args.adapters.split(",")}
    result = {"machine": common.machine_text(fp), "fingerprint": fp,
              "settings": {"calibration": " ".join(calibration), "eval_tokens": args.eval_tokens},
              "adapters": measured}
    common.write_result(name, result, markdown)


if __name__ == "__main__":
    main()
