"""`thrifty bench`: load-test an OpenAI-compatible server (or a model thrifty serves for the
run), measure an offline engine's batch latency, and compare runs."""

import time

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from thrifty.assets import architectures, prepare
from thrifty.benchmark import html_report, report, workload
from thrifty.benchmark import run as runner
from thrifty.benchmark import target as targets
from thrifty.benchmark.bench_config import BenchConfig, BenchOptions, check, parse_floats
from thrifty.core import hardware, tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.files import write_json
from thrifty.core.output import DefaultSubcommandGroup, emit_json, json_option, table
from thrifty.core.progress import stderr
from thrifty.core.runs import RunRecord
from thrifty.formats.bench_result import load_bench


@click.group(cls=DefaultSubcommandGroup, default_command="run")
def bench_group() -> None:
    """Benchmark latency, throughput and memory; compare runs.

    \b
    thrifty bench --model smollm2-135m --concurrency 1,4,16
    thrifty bench --url http://host:8000/v1 --rate 2,4,8 --slo ttft_ms=500,tpot_ms=50
    thrifty bench latency --model smollm2-135m --batch-size 1,8
    thrifty bench compare RUN_A RUN_B
    """


@bench_group.command("run")
@click.option("--url", help="An OpenAI-compatible server to load (any server; e.g. "
                            "http://127.0.0.1:8000/v1).")
@click.option("--model", help="Instead of --url: a model thrifty serves with vLLM for this run "
                              "(built-in name, folder or hub id) and stops afterwards.")
@click.option("--adapter", "adapter_specs", multiple=True, metavar="NAME=PATH",
              help="With --model: a LoRA adapter to serve as NAME; repeat for several.")
@click.option("--adapters-dir", type=click.Path(file_okay=False),
              help="With --model: a folder of adapters servable by sub-folder name.")
@click.option("--api-key", envvar="THRIFTY_API_KEY",
              help="Bearer token for --url; with --model, the server started for the run "
                   "demands it (default: THRIFTY_API_KEY, none when unset).")
@click.option("--served-model", help="The model name to request for the base (default: the "
                                     "first model the server lists).")
@click.option("--input-tokens", default="128", show_default=True,
              help="Prompt length in tokens: N, 'uniform(LOW,HIGH)' or 'normal(MEAN,STD)'. "
                   "Prompts are cut from the enwiki corpus.")
@click.option("--output-tokens", default="64", show_default=True,
              help="Completion length in tokens, same forms. End-of-sequence is ignored "
                   "(vLLM's ignore_eos) so every request generates exactly this many, unless "
                   "--allow-eos.")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False),
              help="Your own prompts instead: .jsonl of {\"prompt\": ..., \"output_tokens\": N} "
                   "(the format `vllm bench serve --dataset-name custom` reads) or .txt with "
                   "one prompt per paragraph.")
@click.option("--tokenizer", help="Folder with tokenizer.json (or a built-in model name) for "
                                  "synthetic prompts; default: the served model's.")
@click.option("--requests", "requests_count", type=click.IntRange(min=1),
              help="Requests per load point [default: 64, or every prompt of --prompts].")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds per load point instead of a request count (prompts are cycled).")
@click.option("--concurrency", help="Closed loop: requests in flight, a comma-separated sweep "
                                    "(default 1,4,16 unless --rate).")
@click.option("--rate", help="Open loop: arrivals per second, a comma-separated sweep.")
@click.option("--arrivals", type=click.Choice(["poisson", "constant"]), default="poisson",
              show_default=True, help="With --rate: Poisson or evenly spaced arrivals.")
@click.option("--max-concurrency", type=click.IntRange(min=1),
              help="With --rate: cap on requests in flight (later arrivals wait).")
@click.option("--warmup", "warmup_count", default=4, show_default=True,
              type=click.IntRange(min=0), help="Warm-up requests sent first, not measured.")
@click.option("--seed", default=0, show_default=True, help="Seed for prompts, lengths, "
                                                           "arrivals and the adapter mix.")
@click.option("--slo", "slo_text", help="Limits per request, e.g. ttft_ms=500,tpot_ms=50 "
                                        "(also itl_ms, e2e_ms): goodput and the highest load "
                                        "that meets them are reported.")
@click.option("--slo-percent", default=90.0, show_default=True,
              type=click.FloatRange(0, 100, min_open=True),
              help="Share of requests that must meet the SLO for a load point to pass.")
@click.option("--adapter-mix", "mix_text", help="Weighted traffic over adapters, e.g. "
                                                "a=0.5,b=0.3,base=0.2; metrics per adapter.")
@click.option("--allow-eos", is_flag=True, help="Let completions stop at end-of-sequence.")
@click.option("--label", help="A name for this run in reports and comparisons.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              default="auto", show_default=True, help="With --model: weights type.")
@click.option("--max-model-len", default=2048, show_default=True, type=click.IntRange(min=16),
              help="With --model: longest prompt + completion.")
@click.option("--sample-every", "sample_every_s", default=1.0, show_default=True,
              type=click.FloatRange(min=0),
              help="Seconds between samples of the server's /metrics and memory during the run "
                   "(each vLLM scrape costs the server a few ms of CPU); 0 turns sampling off.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds before one request counts as failed.")
@json_option
def bench_run(**options) -> None:
    """Load a server with streamed completions and report latency, throughput and memory.

    Each load point (a concurrency or an arrival rate) sends the same seeded requests. Per
    point, and per adapter with --adapter-mix: TTFT, TPOT, ITL and end-to-end latency
    (p50/p90/p99/mean), request and token throughput, errors, goodput under --slo; from
    vLLM's /metrics: peak KV-cache usage and preemptions. The run folder gets result.json
    (every request included), CSV files, report.html and the prompts sent (prompts.jsonl).
    Ctrl-C stops the run and keeps what was measured.
    """
    config = BenchConfig(**options)
    parsed = check(config)
    run = RunRecord("bench", config.as_record(), engines_used=("vllm",) if config.model else ())
    try:
        with run:
            bench = _measure(config, parsed, run)
            _write_reports(bench, run)
            _print_result(config, bench, run)
            if bench["interrupted"]:
                raise _Interrupted(len(bench["requests"]))
    except _Interrupted as stop:
        stderr.print(f"Interrupted: kept {stop.kept} finished requests; reports are in "
                     f"{run.path}.")
        raise SystemExit(130) from None


def _measure(config: BenchConfig, parsed: BenchOptions, run: RunRecord) -> dict:
    """Start or connect to the server, load it, and stop a server started for the run."""
    server = None
    try:
        if config.model:
            server, target = targets.start_server(config.model, config.adapter_specs,
                                                  config.adapters_dir, config.dtype,
                                                  config.max_model_len, run.path,
                                                  config.api_key)
        else:
            target = targets.connect(config.url, config.api_key, config.served_model)
        targets.check_mix(parsed.mix, target)
        plan = _build_plan(config, parsed, target, run)
        return _run_with_progress(plan, target)
    finally:
        if server is not None:
            server.stop()


def _build_plan(config: BenchConfig, parsed: BenchOptions, target: runner.Target,
                run: RunRecord) -> runner.BenchPlan:
    """The prompts (the user's, or cut from the corpus) and every setting of the run."""
    fresh = False
    if parsed.file_prompts is not None:
        # the user's prompts are all measured; warm-up reuses the first few
        file_prompts = parsed.file_prompts
        measured = file_prompts[:config.requests_count] if config.requests_count else file_prompts
        warm = file_prompts[:config.warmup_count]
        info = {"source": "file", "prompts_file": config.prompts_file}
        per_point = len(measured)
    else:
        ref = config.tokenizer or target.model_path or target.base_model
        per_point = config.requests_count or 64
        fresh = not config.duration_s
        with stderr.status("cutting prompts from the enwiki corpus"):
            prompts = workload.synthetic_prompts(
                workload.load_tokenizer(ref),
                per_point * (len(parsed.loads) if fresh else 1) + config.warmup_count,
                parsed.input_len, parsed.output_len, config.seed)
        warm, measured = prompts[:config.warmup_count], prompts[config.warmup_count:]
        info = {"source": "synthetic", "prompts_file": None}
    info |= {"input_tokens": str(parsed.input_len), "output_tokens": str(parsed.output_len)}
    workload.write_prompts_file(measured, run.path / "prompts.jsonl")
    return runner.BenchPlan(
        profile_kind=parsed.kind, loads=parsed.loads, prompts=measured, warmup_prompts=warm,
        requests_per_point=None if config.duration_s else per_point, fresh_per_point=fresh,
        duration_s=config.duration_s, seed=config.seed, workload_info=info, mix=parsed.mix,
        max_concurrency=config.max_concurrency, slo=parsed.slo,
        slo_attainment_pct=config.slo_percent, ignore_eos=not config.allow_eos,
        label=config.label or "", hardware=_hardware_line(),
        sample_every_s=config.sample_every_s, request_timeout_s=config.timeout_s)


def _print_result(config: BenchConfig, bench: dict, run: RunRecord) -> None:
    if config.as_json:
        emit_json({"run": str(run.path), "bench": {k: v for k, v in bench.items()
                                                   if k != "requests"}})
    else:
        report.print_summary(bench)
        click.echo(f"Run folder: {run.path} (report.html, result.json, requests.csv, "
                   "points.csv, prompts.jsonl)")


class _Interrupted(KeyboardInterrupt):
    """The run was stopped and its partial results written (the run record says
    "interrupted")."""

    def __init__(self, kept: int):
        super().__init__()
        self.kept = kept


def _hardware_line() -> str:
    described = hardware.describe()
    gpus = hardware.gpus()
    if gpus:
        return f"{len(gpus)} x {gpus[0].name}, {described.get('cpu_cores')} CPU cores"
    return f"{described.get('cpu_model', 'CPU')}, {described.get('cpu_cores')} cores, no GPU"


def _run_with_progress(plan: runner.BenchPlan, target: runner.Target) -> dict:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=False) as progress:
        state = {"task": None}

        def on_point(label, total):
            state["task"] = progress.add_task(label, total=total, errors=0)

        def on_done(record):
            task = state["task"]
            if task is not None:
                errors = progress.tasks[task].fields["errors"] + (0 if record.ok else 1)
                progress.update(task, advance=1, errors=errors)

        return runner.run(plan, target, on_point, on_done)


def _write_reports(bench: dict, run: RunRecord) -> None:
    best = max(bench["points"], key=lambda p: p["summary"]["output_throughput_tokens_per_s"]
               or 0, default=None)
    measured = {}
    if best is not None:
        measured = {k: v for k, v in best["summary"].items() if v is not None}
    # Figures only: the name of the memory measure (pss/uss) stays in the bench details.
    measured |= {f"memory_{k}": v for k, v in bench["memory"].items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
    run.record(measured, details={"bench": bench})
    report.write_requests_csv(bench, run.path / "requests.csv")
    report.write_points_csv(bench, run.path / "points.csv")
    html_report.write_html(bench, run.path / "report.html")


@bench_group.command("compare")
@click.argument("runs", nargs=-1, required=True)
@json_option
def bench_compare(runs: tuple[str, ...], as_json: bool) -> None:
    """Compare bench runs side by side: the first is the baseline, the others show their
    change from it at every load point they share (e.g. base vs quantized model, one GPU vs
    another). RUNS are run folders or result.json files."""
    if len(runs) < 2:
        raise BadInput("`thrifty bench compare` needs at least two runs (run folders or "
                       "result.json files).")
    loaded = [load_bench(ref) for ref in runs]
    result = report.compare([bench for _, bench in loaded])
    if as_json:
        emit_json({"runs": [ref for ref, _ in loaded], **result})
    else:
        report.print_compare(result, [ref for ref, _ in loaded])


@bench_group.command("latency")
@click.option("--model", required=True, help="Built-in name, folder or hub id.")
@click.option("--batch-size", "batch_sizes", default="1,8", show_default=True,
              help="Comma-separated batch sizes.")
@click.option("--input-tokens", "input_lens", default="128", show_default=True,
              help="Comma-separated prompt lengths.")
@click.option("--output-tokens", "output_lens", default="32", show_default=True,
              help="Comma-separated output lengths.")
@click.option("--iterations", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--warmup-iterations", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--max-model-len", default=2048, show_default=True, type=click.IntRange(min=16))
@click.option("--seed", default=0, show_default=True)
@json_option
def bench_latency(model, batch_sizes, input_lens, output_lens, iterations, warmup_iterations,
                  max_model_len, seed, as_json) -> None:
    """Offline batch latency in the vLLM engine, no server (like `vllm bench latency`): for
    each batch size x input x output length, end-to-end latency p50/p90/p99, the prefill alone,
    and the time per decode step."""
    params = {
        "batch_sizes": parse_floats(batch_sizes, "--batch-size", integer=True),
        "input_lens": parse_floats(input_lens, "--input-tokens", integer=True),
        "output_lens": parse_floats(output_lens, "--output-tokens", integer=True),
        "iterations": iterations, "warmup_iterations": warmup_iterations,
        "max_model_len": max_model_len, "seed": seed, "eager": not hardware.gpus()}
    longest = max(params["input_lens"]) + max(params["output_lens"])
    if longest > max_model_len:
        raise BadInput(f"The longest case needs {longest} tokens but --max-model-len is "
                       f"{max_model_len}; raise it or shorten the lengths.")
    ref = prepare.ensure_model(model)
    architectures.check_vllm_serves(ref, "measures the model in vLLM")
    with RunRecord("bench-latency", {"model": model, **params}, engines_used=("vllm",)) as run:
        started = time.monotonic()
        result = run_in_engine(tasks.LATENCY,
                               {**params, "model": ref.path}, run.path,
                               title=f"offline latency of {model}")
        cases = result["cases"]
        isolation = result["prefix_cache_isolation"]
        run.record({"engine_start_s": result["engine_start_s"],
                    "duration_s": round(time.monotonic() - started, 2)},
                   details={"latency": {"model": model, "cases": cases,
                                        "vllm_version": result["vllm_version"],
                                        "prefix_cache_isolation": isolation,
                                        "hardware": _hardware_line()}})
        write_json(run.path / "latency.json", {"model": model, "cases": cases,
                                               "prefix_cache_isolation": isolation})
    if as_json:
        emit_json({"run": str(run.path), "model": model, "cases": cases,
                   "prefix_cache_isolation": isolation})
        return
    table(f"offline latency: {model} (vLLM {result['vllm_version']})",
          ["batch", "in", "out", "p50 ms", "p90 ms", "p99 ms", "prefill ms", "decode step ms",
           "out tok/s"],
          [[c["batch_size"], c["input_tokens"], c["output_tokens"], c["latency_ms_p50"],
            c["latency_ms_p90"], c["latency_ms_p99"], c["prefill_ms_median"],
            c["decode_step_ms_mean"], c["output_throughput_tokens_per_s"]] for c in cases])
    click.echo(f"Run folder: {run.path}")
