"""Multi-LoRA serving on SmolLM2-135M (and its GPTQ W4A16 copy) with the demo adapters.

Measures, each configuration on a server of its own, one after the other in one run:
- hot-load latency (POST /v1/load_lora_adapter) p50/p95, and the time to first token of the
  first request to a freshly loaded adapter against a warm one;
- output-token throughput with mixed-adapter traffic against base-only traffic at the same
  concurrency (128-token prompts cut from the corpus, 64 output tokens, concurrency 4, closed
  loop, as in the bare `vllm bench serve` reference), sent by thrifty's own load generator
  (thrifty.benchmark.loadgen) to a server started as `thrifty bench --model` starts one
  (`thrifty serve ... --json` as a child process), under:
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

from common import fingerprint, thrifty

from thrifty.benchmark import metrics, workload
from thrifty.benchmark.loadgen import Job, LoadRun, Profile
from thrifty.benchmark.target import ServeProcess
from thrifty.core.stats import percentile
from thrifty.formats.openai_api import ServerClient
from thrifty.serve import demo_adapters

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RAW = RESULTS / "lora_serving.partial.json"  # rows so far, rewritten after each config
MIXED = ("history", "chemistry")  # the two adapters of the mixed traffic, round-robin
HOT = "arts"  # the adapter hot-loaded and unloaded repeatedly
BASE = "smollm2-135m"
INPUT_TOKENS, OUTPUT_TOKENS = 128, 64
TPS = "output_throughput_tokens_per_s"  # the load generator's summary key


def start(base: str, workdir: Path, adapter_paths: dict[str, Path], allow: list[str],
          **flags) -> tuple[ServeProcess, dict]:
    """`thrifty serve BASE ... --json` in a child process; its readiness line."""
    args = [base, "--port", "0", "--dtype", "auto", "--max-model-len", "1024", "--eager"]
    for name, path in adapter_paths.items():
        args += ["--adapter", f"{name}={path}"]
    for folder in allow:
        args += ["--allow-adapters-from", folder]
    for flag, value in flags.items():  # max_lora_rank, max_loras
        args += [f"--{flag.replace('_', '-')}", str(value)]
    process = ServeProcess(args, workdir)
    return process, process.start()


def throughput(url: str, models_cycle: list[str], prompts: list[workload.Prompt],
               args) -> dict:
    """A closed loop at args.concurrency over args.requests prompts (after one warm-up request
    per user, not recorded); the load generator's summary of the measured requests."""
    def jobs(chosen: list[workload.Prompt]) -> list[Job]:
        cycle = [models_cycle[i % len(models_cycle)] for i in range(len(chosen))]
        return [Job(model, model, prompt) for model, prompt in zip(cycle, chosen, strict=True)]

    warmup = [workload.Prompt(p.text, p.input_tokens, 8) for p in prompts[:args.concurrency]]
    run = LoadRun(url, api_key=None, ignore_eos=True)
    profile = Profile("concurrency", args.concurrency)
    run.run_point(0, profile, jobs(warmup), seed=0, record=False)
    run.run_point(1, profile, jobs(prompts[args.concurrency:][:args.requests]), seed=0)
    summary = metrics.aggregate(run.records)
    summary["errors"] = metrics.error_kinds(run.records)
    return summary


def hot_load(client: ServerClient, path: Path, prompt: str, cycles: int) -> dict:
    """Load, query (cold, then warm), unload; under fresh names so every load reads the disk."""
    loads, cold, warm = [], [], []
    for cycle in range(cycles):
        name = f"{HOT}-{cycle}"
        started = time.perf_counter()
        client.load_adapter(name, str(path))
        loads.append(time.perf_counter() - started)
        cold.append(client.stream(name, prompt, 8, ignore_eos=True).ttft_s)
        warm.append(client.stream(name, prompt, 8, ignore_eos=True).ttft_s)
        client.unload_adapter(name)

    def ms(values, pct):
        return round(percentile(values, pct) * 1000, 2)

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
    args.cycles = 5 if args.quick else 20

    demo = {m["name"]: Path(m["path"]) for m in demo_adapters.train()}
    prompts = workload.synthetic_prompts(
        workload.load_tokenizer(BASE), args.requests + args.concurrency,
        workload.LengthSpec("fixed", INPUT_TOKENS), workload.LengthSpec("fixed", OUTPUT_TOKENS),
        seed=0)
    work = Path(tempfile.mkdtemp(prefix="thrifty-bench-lora-"))
    merged_dir = work / "merged-history"
    thrifty("adapters", "merge", BASE, str(demo["history"]), "--out", str(merged_dir))
    quantized_dir = work / "smollm2-gptq"
    thrifty("quantize", BASE, "--method", "gptq", "--num-samples", "32", "--seq-len", "256",
            "--out", str(quantized_dir), "--no-verify")
    mixed = {n: demo[n] for n in MIXED}
    configs = [
        ("plain", BASE, {}, {}, {"base": [BASE]}),
        ("vllm-default", BASE, mixed, {"max_lora_rank": 16, "max_loras": 1}, None),
        ("rank-exact", BASE, mixed, {"max_lora_rank": 8, "max_loras": 1}, None),
        ("thrifty", BASE, mixed, {}, None),
        ("merged", str(merged_dir), {}, {}, {"merged": [merged_dir.name]}),
        ("quantized", str(quantized_dir), mixed, {}, None),
    ]
    rows = []
    for label, base, adapter_paths, flags, traffic in configs:
        print(f"== {label}", flush=True)
        rows.append(measure(label, base, adapter_paths, flags, traffic, work / label,
                            [str(demo[HOT].parent)] if adapter_paths else [],
                            demo[HOT], prompts, args))
        RAW.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    write(rows, args)


def measure(label: str, base: str, adapter_paths: dict[str, Path], flags: dict,
            traffic: dict | None, workdir: Path, allow: list[str], hot: Path,
            prompts: list[workload.Prompt], args) -> dict:
    """One configuration on a server of its own: its traffic types, then hot loading."""
    process, ready = start(base, workdir, adapter_paths, allow, **flags)
    try:
        served = ready["flags"]
        row = {"config": label, "base_model": ready["base"], "lora": served["lora"],
               "max_lora_rank": served["max_lora_rank"], "max_loras": served["max_loras"]}
        if traffic is None:
            traffic = {"base": [ready["base"]], "mixed": list(MIXED)}
            if label == "thrifty":  # one adapter only: LoRA compute without adapter mixing
                traffic["single"] = [MIXED[0]]
        for kind, cycle in traffic.items():
            row[kind] = throughput(ready["url"], cycle, prompts, args)
            print(f"   {kind}: {row[kind][TPS]} tok/s", flush=True)
        if label in ("thrifty", "quantized"):
            row["hot_load"] = hot_load(ServerClient(ready["url"]), hot, prompts[0].text,
                                       args.cycles)
            print(f"   hot load: {row['hot_load']}", flush=True)
    finally:
        process.stop()
    return row


def write(rows: list[dict], args) -> None:
    plain = next(r for r in rows if r["config"] == "plain")["base"][TPS]
    for row in rows:
        traffic = row.get("mixed") or row.get("merged") or row["base"]
        row["ratio_vs_plain_base"] = round(traffic[TPS] / plain, 3)
        if "mixed" in row:
            row["mixed_vs_base_same_server_ratio"] = round(
                row["mixed"][TPS] / row["base"][TPS], 3)
    fp = fingerprint()
    result = {"benchmark": "lora_serving", "hardware": fp["hardware"], "fingerprint": fp,
              "workload": {"prompt_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                           "prompts": "cut from the corpus (thrifty bench's synthetic prompts)",
                           "concurrency": args.concurrency, "requests_count": args.requests,
                           "dtype": "auto (bfloat16 on CPU)", "mixed_adapters": list(MIXED)},
              "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lora_serving.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(rows, args)
    (RESULTS / "lora_serving.md").write_text(text)
    RAW.unlink(missing_ok=True)
    print(text)


def markdown(rows: list[dict], args) -> str:
    lines = ["# Multi-LoRA serving on SmolLM2-135M", "",
             f"{INPUT_TOKENS}-token prompts cut from the corpus, {OUTPUT_TOKENS} output tokens, "
             f"concurrency {args.concurrency}, {args.requests} requests per traffic type; mixed "
             f"= {' / '.join(MIXED)} round-robin. Output tokens/s.", "",
             "| config | max rank | max loras | base-only | mixed (merged: its adapter) | "
             "mixed / base (same server) | vs plain base |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        traffic = row.get("mixed") or row.get("merged") or row["base"]
        lines.append(f"| {row['config']} | {row['max_lora_rank'] or '-'} | "
                     f"{row['max_loras'] or '-'} | {row.get('base', {}).get(TPS, '')} | "
                     f"{traffic[TPS]} | {row.get('mixed_vs_base_same_server_ratio', '')} | "
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
        lines += ["", f"One adapter alone (thrifty flags): {single[TPS]} output tokens/s."]
    lines += ["", "TTFT / TPOT p50 (ms) per traffic type:", "",
              "| config | traffic | TTFT p50 | TPOT p50 | errors |", "|---|---|---|---|---|"]
    for row in rows:
        for kind in ("base", "mixed", "single", "merged"):
            if kind in row:
                t = row[kind]
                lines.append(f"| {row['config']} | {kind} | {t['ttft_ms_p50']} | "
                             f"{t['tpot_ms_p50']} | {t['errors_count']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
