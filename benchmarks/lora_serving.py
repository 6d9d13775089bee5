"""Multi-LoRA serving on SmolLM2-135M (and its GPTQ W4A16 copy) with the demo adapters.

Measures, each configuration on a server of its own, one after the other in one run:
- hot-load latency (POST /v1/load_lora_adapter) p50/p95, and the time to first token of the
  first request to a freshly loaded adapter against a warm one;
- output-token throughput with mixed-adapter traffic against base-only traffic at the same
  concurrency (random 128-token prompts, 64 output tokens, concurrency 4, as in the bare
  `vllm bench serve` reference), under:
    plain        no LoRA at all (the base model's own speed)
    vllm-default LoRA with vLLM's defaults: --max-lora-rank 16, --max-loras 1
    rank-exact   --max-lora-rank 8 (the adapters' rank), --max-loras 1
    thrifty      the flags thrifty derives: --max-lora-rank 8, --max-loras 2 (plus traffic
                 for one adapter alone, to separate LoRA compute from adapter mixing)
    merged       the dominant adapter merged into a copy of the base, served without LoRA
    quantized    thrifty's flags over the GPTQ W4A16 base

Run: .venv/bin/python benchmarks/lora_serving.py [--quick]
Writes benchmarks/results/lora_serving.json and .md.
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import thrifty

from thrifty.assets import models, prepare
from thrifty.benchmark import load
from thrifty.core import hardware
from thrifty.core.execute import ensure_engine
from thrifty.serve import demo_adapters, server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RAW = RESULTS / "lora_serving.partial.json"  # rows so far, rewritten after each config
MIXED = ("history", "chemistry")  # the two adapters of the mixed traffic, round-robin
HOT = "arts"  # the adapter hot-loaded and unloaded repeatedly
VOCAB = 49152


def start(base: models.ModelRef, workdir: Path, adapter_paths: dict[str, Path],
          allow: list[str], **flags) -> server.ServerProcess:
    plan = server.make_plan(base, {n: str(p) for n, p in adapter_paths.items()}, None, allow,
                            "127.0.0.1", server.free_port("127.0.0.1", 0), dtype="auto",
                            max_model_len=1024, eager=True, tensor_parallel_size=1, **flags)
    process = server.ServerProcess(plan, ensure_engine("vllm"), workdir)
    process.start()
    process.wait_ready()
    return process


def throughput(process: server.ServerProcess, models_cycle: list[str], args) -> dict:
    prompts = load.random_token_prompts(args.requests + args.concurrency, 128, VOCAB, seed=0)
    warmup = [load.Request(models_cycle[i % len(models_cycle)], prompts[i], 8)
              for i in range(args.concurrency)]
    load.run_closed_loop(process.client, warmup, args.concurrency)
    measured = [load.Request(models_cycle[i % len(models_cycle)], prompts[args.concurrency + i],
                             64) for i in range(args.requests)]
    results, wall = load.run_closed_loop(process.client, measured, args.concurrency)
    return load.summarize(results, wall)


def hot_load(process: server.ServerProcess, path: Path, cycles: int) -> dict:
    """Load, query (cold, then warm), unload; under fresh names so every load reads the disk."""
    loads, cold, warm = [], [], []
    prompt = load.random_token_prompts(1, 128, VOCAB, seed=1)[0]
    for cycle in range(cycles):
        name = f"{HOT}-{cycle}"
        started = time.perf_counter()
        process.client.load_adapter(name, str(path))
        loads.append(time.perf_counter() - started)
        cold.append(process.client.stream(name, prompt, 8, ignore_eos=True).ttft_s)
        warm.append(process.client.stream(name, prompt, 8, ignore_eos=True).ttft_s)
        process.client.unload_adapter(name)

    def ms(values, pct):
        return round(load.percentile(values, pct) * 1000, 2)

    return {"cycles_count": cycles, "load_ms_p50": ms(loads, 50), "load_ms_p95": ms(loads, 95),
            "ttft_after_load_ms_p50": ms(cold, 50), "ttft_after_load_ms_p95": ms(cold, 95),
            "ttft_warm_ms_p50": ms(warm, 50), "ttft_warm_ms_p95": ms(warm, 95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and load cycles")
    parser.add_argument("--render-only", action="store_true",
                        help=f"write the reports again from {RAW.name}")
    args = parser.parse_args()
    if args.render_only:
        raw = json.loads(RAW.read_text())
        write(raw["rows"], argparse.Namespace(**raw["args"]))
        return
    args.concurrency = 4
    args.requests = 16 if args.quick else 48
    cycles = 5 if args.quick else 20

    base = prepare.ensure_model("smollm2-135m")
    demo = {m["name"]: Path(m["path"]) for m in demo_adapters.train()}
    work = Path(tempfile.mkdtemp(prefix="thrifty-bench-lora-"))
    merged_dir = work / "merged-history"
    thrifty("adapters", "merge", "smollm2-135m", str(demo["history"]),
                "--out", str(merged_dir))
    quantized_dir = work / "smollm2-gptq"
    thrifty("quantize", "smollm2-135m", "--method", "gptq", "--num-samples", "32",
                "--seq-len", "256", "--out", str(quantized_dir), "--no-verify")
    mixed = {n: demo[n] for n in MIXED}
    allow = [str(demo[HOT].parent)]
    configs = [
        ("plain", base, {}, {}, {"base": ["smollm2-135m"]}),
        ("vllm-default", base, mixed, {"max_lora_rank": 16, "max_loras": 1}, None),
        ("rank-exact", base, mixed, {"max_lora_rank": 8, "max_loras": 1}, None),
        ("thrifty", base, mixed, {}, None),
        ("merged", models.resolve(str(merged_dir)), {}, {}, {"merged": ["merged-history"]}),
        ("quantized", models.resolve(str(quantized_dir)), mixed, {}, None),
    ]
    rows = []
    for label, ref, adapter_paths, flags, traffic in configs:
        print(f"== {label}", flush=True)
        process = start(ref, work / label, adapter_paths, allow if adapter_paths else [],
                        **flags)
        try:
            plan = process.plan
            row = {"config": label, "base_model": plan.base_label, "lora": plan.lora_enabled,
                   "max_lora_rank": plan.max_lora_rank, "max_loras": plan.max_loras}
            if traffic is None:
                traffic = {"base": [plan.base_label], "mixed": list(MIXED)}
                if label == "thrifty":  # one adapter only: LoRA compute without adapter mixing
                    traffic["single"] = [MIXED[0]]
            for kind, cycle in traffic.items():
                row[kind] = throughput(process, cycle, args)
                print(f"   {kind}: {row[kind]['output_tokens_per_s']} tok/s", flush=True)
            if label in ("thrifty", "quantized"):
                row["hot_load"] = hot_load(process, demo[HOT], cycles)
                print(f"   hot load: {row['hot_load']}", flush=True)
        finally:
            process.stop()
        rows.append(row)
        RAW.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    write(rows, args)


def write(rows: list[dict], args) -> None:
    plain = next(r for r in rows if r["config"] == "plain")["base"]["output_tokens_per_s"]
    for row in rows:
        traffic = row.get("mixed") or row.get("merged") or row["base"]
        row["ratio_vs_plain_base"] = round(traffic["output_tokens_per_s"] / plain, 3)
        if "mixed" in row:
            row["mixed_vs_base_same_server_ratio"] = round(
                row["mixed"]["output_tokens_per_s"] / row["base"]["output_tokens_per_s"], 3)
    result = {"benchmark": "lora_serving", "hardware": hardware.describe(),
              "workload": {"prompt_tokens": 128, "output_tokens": 64,
                           "concurrency": args.concurrency, "requests_count": args.requests,
                           "dtype": "auto (bfloat16 on CPU)", "mixed_adapters": list(MIXED)},
              "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lora_serving.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Multi-LoRA serving on SmolLM2-135M", "",
             f"Random 128-token prompts, 64 output tokens, concurrency {args.concurrency}, "
             f"{args.requests} requests per traffic type; mixed = {' / '.join(MIXED)} "
             "round-robin. Output tokens/s.", "",
             "| config | max rank | max loras | base-only | mixed (merged: its adapter) | "
             "mixed / base (same server) | vs plain base |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        traffic = row.get("mixed") or row.get("merged") or row["base"]
        base_tps = row.get("base", {}).get("output_tokens_per_s", "")
        lines.append(f"| {row['config']} | {row['max_lora_rank'] or '-'} | "
                     f"{row['max_loras'] or '-'} | {base_tps} | "
                     f"{traffic['output_tokens_per_s']} | "
                     f"{row.get('mixed_vs_base_same_server_ratio', '')} | "
                     f"{row['ratio_vs_plain_base']} |")
    lines += ["", "| config | hot-load p50 ms | p95 ms | TTFT first request after load p50 ms "
              "| TTFT warm p50 ms |", "|---|---|---|---|---|"]
    for row in rows:
        if "hot_load" in row:
            h = row["hot_load"]
            lines.append(f"| {row['config']} | {h['load_ms_p50']} | {h['load_ms_p95']} | "
                         f"{h['ttft_after_load_ms_p50']} | {h['ttft_warm_ms_p50']} |")
    single = next((r["single"] for r in rows if "single" in r), None)
    if single:
        lines += ["", f"One adapter alone (thrifty flags): {single['output_tokens_per_s']} "
                  "output tokens/s."]
    lines += ["", "TTFT / TPOT p50 (ms) per traffic type:", "",
              "| config | traffic | TTFT p50 | TPOT p50 | errors |", "|---|---|---|---|---|"]
    for row in rows:
        for kind in ("base", "mixed", "single", "merged"):
            if kind in row:
                t = row[kind]
                lines.append(f"| {row['config']} | {kind} | {t['ttft_ms_p50']} | "
                             f"{t['tpot_ms_p50']} | {t['errors_count']} |")
    (RESULTS / "lora_serving.md").write_text("\n".join(lines) + "\n")
    RAW.unlink(missing_ok=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
