"""`thrifty plan`: from a model and a traffic profile to the cheapest deployment that meets the
SLO and a quality floor, with the report and the manifests to run it."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from thrifty.assets import architectures, models
from thrifty.core import processes, tracking
from thrifty.core.errors import BadInput
from thrifty.core.files import write_json
from thrifty.core.output import emit_json, json_option
from thrifty.core.progress import stderr
from thrifty.formats import lora_adapter
from thrifty.plan import config as plan_config
from thrifty.plan import deploy, pipeline, report
from thrifty.plan.stages import STATE_FILE, Stage, StageRunner, run_thrifty

PLAN_FILES = (STATE_FILE, "plan.json")
PLAN_OUTPUTS = (*PLAN_FILES, "plan.md", "plan.html", "variants", "manifests")
HOURS_PER_MONTH = 730  # as thrifty cost prices a month


@click.command("plan")
@click.argument("model")
@click.option("--adapter", "adapter_specs", multiple=True, metavar="NAME=DIR",
              help="A LoRA adapter served over the model (repeat); the bench spreads traffic "
                   "evenly over the base and each adapter, and the manifests load them.")
@click.option("--requests-per-day", type=click.FloatRange(min=0, min_open=True),
              help="Average traffic in requests per day.")
@click.option("--tokens-per-month", type=click.FloatRange(min=0, min_open=True),
              help="Or: traffic as input + output tokens per month.")
@click.option("--input-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="Prompt tokens per request.")
@click.option("--output-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Generated tokens per request.")
@click.option("--peak-factor", type=click.FloatRange(min=1), default=2.0, show_default=True,
              help="Busiest-hour traffic over the daily average; replicas are sized for it.")
@click.option("--slo", "slo_text", default="ttft_ms=2000,tpot_ms=100", show_default=True,
              help="Latency limits each replica must meet at peak.")
@click.option("--quality-floor", "floor_text", metavar="top1=PCT,kld=NATS,ppl=+PCT%",
              help="Drop variants below it, measured against the model on the same tokens "
                   "(e.g. top1=95 or ppl=+5%).")
@click.option("--variants", "variants_text", default="bf16,w8a8,w4a16-gptq", show_default=True,
              help=f"Variants to make and compare: {', '.join(plan_config.VARIANT_ARGS)}.")
@click.option("--gpus", "gpus_text", help="Only these catalog GPUs (default: all).")
@click.option("--budget", "budget_usd", type=click.FloatRange(min=0, min_open=True),
              help="Most you will pay per month (USD); costlier options are dropped.")
@click.option("--pricing", type=click.Choice(["on-demand", "spot", "reserved"]),
              default="on-demand", show_default=True, help="Which price ranks the options.")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=32,
              show_default=True, help="Calibration samples for GPTQ/AWQ/SmoothQuant variants.")
@click.option("--calibration-seq-len", type=click.IntRange(min=16), default=256,
              show_default=True, help="Tokens per calibration sample.")
@click.option("--eval-tokens", type=click.IntRange(min=64), default=4096, show_default=True,
              help="Evaluation tokens each variant is compared with the model on.")
@click.option("--task", "tasks", multiple=True, metavar="mmlu[:N]|TASK.yaml",
              help="Also score task accuracy with lm-eval (see `thrifty eval --help`).")
@click.option("--bench-concurrency", default="1,4", show_default=True,
              help="Concurrencies each variant is benched at on this machine.")
@click.option("--bench-requests", type=click.IntRange(min=1), default=16, show_default=True,
              help="Requests per bench load point.")
@click.option("--emit", "emit_text", metavar="production-stack,kserve,k8s",
              help="Also write the manifests that deploy the recommendation.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="The plan folder: variants, stages.json, plan.html/md/json, manifests/.")
@click.option("--resume", is_flag=True,
              help="Continue a plan in --out: reuse every stage whose inputs are unchanged.")
@click.option("--force", is_flag=True, help="Start the plan in --out over.")
@json_option
def plan(model, adapter_specs, requests_per_day, tokens_per_month, input_tokens, output_tokens,
         peak_factor, slo_text, floor_text, variants_text, gpus_text, budget_usd, pricing,
         calibration_samples, calibration_seq_len, eval_tokens, tasks, bench_concurrency,
         bench_requests, emit_text, out, resume, force, as_json):
    """Choose the variant, GPU, GPUs per replica and replicas that serve MODEL's traffic
    within the SLO and the quality floor at the lowest monthly cost.

    \b
    Stages (each a thrifty command, cached by a hash of its inputs; --resume reuses them):
      quantize   make each variant (llm-compressor)
      eval       KL divergence, top-1 agreement, perplexity (and tasks) against MODEL
      bench      serve each variant with vLLM here and measure TTFT, TPOT, throughput
      calibrate  fit the throughput model to the first bench (on a GPU it drives the costs)
      cost       every variant x GPU: replicas, $/month, $/1M tokens, energy
    Then plan.html, plan.md and plan.json in --out: the recommendation first, every option
    with why it lost, each figure labelled measured or modelled.

    \b
    thrifty plan smollm2-135m --requests-per-day 1e6 --input-tokens 128 --output-tokens 32 \\
        --slo ttft_ms=500,tpot_ms=50 --quality-floor top1=90 --out plan --emit k8s
    """
    if (requests_per_day is None) == (tokens_per_month is None):
        raise BadInput("Give the traffic as exactly one of --requests-per-day or "
                       "--tokens-per-month (e.g. --requests-per-day 1000000).")
    config = plan_config.PlanConfig(
        model=model, adapters=_adapters(adapter_specs),
        traffic=plan_config.Traffic(requests_per_day, tokens_per_month, input_tokens,
                                    output_tokens, peak_factor),
        slo_text=slo_text, floor=plan_config.parse_floor(floor_text),
        variants=plan_config.parse_variants(variants_text),
        gpus=tuple(g.strip() for g in (gpus_text or "").split(",") if g.strip()),
        budget_usd=budget_usd, out=str(Path(out).resolve()),
        calibration_samples=calibration_samples, calibration_seq_len=calibration_seq_len,
        eval_tokens=eval_tokens, tasks=tuple(tasks),
        bench=plan_config.BenchProfile(bench_concurrency, bench_requests, max_model_len=max(
            2048, input_tokens + output_tokens)),
        pricing=pricing, emit=deploy.parse_targets(emit_text), resume=resume, force=force)
    model_path = check_inputs(config)
    folder = prepare_folder(Path(config.out), resume, force)
    runner = StageRunner(folder, pipeline.build_stages(config, model_path), resume)
    with tracked(config) as outcome:
        results = runner.run_all()
        decided = outcome["decided"] = report.assemble(config, model_path, results, runner)
        decided["mlflow_run_id"] = os.environ.get(tracking.PARENT_ENV)
        manifests = emit(decided, config.emit, folder / "manifests")
        outcome["files"] = report.write(folder, decided) + manifests
        decided["files"] = [str(p) for p in outcome["files"]]
    if as_json:
        emit_json(decided)
    else:
        report.print_terminal(decided)


def emit(decided: dict, targets: tuple[str, ...], folder: Path) -> list[Path]:
    """The manifests asked for; where none can be written (no recommendation, a GPU thrifty
    writes no manifests for), the plan says why instead of failing after all its stages."""
    decided["manifests_skipped"] = None
    if not targets:
        return []
    try:
        return deploy.write_manifests(decided, targets, folder)
    except BadInput as exc:
        decided["manifests_skipped"] = str(exc)
        stderr.print(f"[yellow]plan:[/] no manifests written: {exc}")
        return []


@contextmanager
def tracked(config: plan_config.PlanConfig) -> Iterator[dict]:
    """With MLflow tracking on: a parent run for the plan, each stage's run its child, and the
    decision and the files written (which the block puts in the dict) logged when it ends."""
    parent = tracking.start_parent(f"plan {config.model}", {
        "model": config.model, "variants": ",".join(config.variants),
        "slo": config.slo_text, "quality_floor": config.floor.text(),
        "budget_usd_per_month": config.budget_usd, "traffic": vars(config.traffic)})
    if parent:
        os.environ[tracking.PARENT_ENV] = parent
    outcome: dict = {"decided": {}, "files": []}
    ok = False
    try:
        yield outcome
        ok = True
    finally:
        if parent:
            rec = outcome["decided"].get("recommendation") or {}
            tracking.finish_parent(parent, plan_metrics(rec), plan_tags(rec), outcome["files"],
                                   ok)


def plan_tags(rec: dict) -> dict[str, str]:
    price = rec.get("price") or {}
    tags = {"thrifty.plan.variant": rec.get("variant"), "thrifty.cost.gpu": rec.get("gpu"),
            "thrifty.cost.price_provider": price.get("provider"),
            "thrifty.cost.price_date": price.get("date"),
            "thrifty.cost.price_source": price.get("source")}
    return {k: str(v) for k, v in tags.items() if v}


def plan_metrics(rec: dict) -> dict[str, float]:
    """The recommendation's figures, as MLflow metrics."""
    energy = rec.get("energy") or {}
    figures = {"modelled.usd_per_month": rec.get("usd_per_month"),
               "modelled.usd_per_1m_tokens": rec.get("usd_per_1m_tokens"),
               "modelled.gpus_count": rec.get("gpus"),
               "modelled.gpu_hours_per_month": (rec.get("gpus") or 0) * HOURS_PER_MONTH or None,
               "modelled.energy_kwh_per_1m_output_tokens":
                   energy.get("kwh_per_1m_output_tokens")}
    return {k: float(v) for k, v in figures.items() if v is not None}


def _adapters(specs: tuple[str, ...]) -> dict[str, str]:
    adapters = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--adapter {spec!r} should be NAME=DIR, e.g. --adapter "
                           "support=./adapters/support.")
        adapters[lora_adapter.check_name(name)] = str(Path(path).expanduser().resolve())
    return adapters


def check_inputs(config: plan_config.PlanConfig) -> str:
    """Everything that can be checked before the first stage; the model's folder."""
    if models.looks_like_hub_id(config.model):  # said before any attempt to reach the hub
        raise BadInput(f"thrifty plan needs a local model: {config.model} is a hub id. Download "
                       "it first (e.g. `hf download ...`) and give its folder.")
    ref = models.resolve(config.model)
    architectures.check_vllm_serves(ref, "benchmarks and deploys every variant with vLLM")
    if ref.kind == "builtin" and not models.is_prepared(config.model):
        run_thrifty(Stage("prepare model", ["models", "prepare", config.model]))
    for name, path in config.adapters.items():
        if not Path(path).is_dir():
            raise BadInput(f"--adapter {name}={path}: no such folder.")
        lora_adapter.validate(path, ref.path, config.model)
    if config.gpus:
        plan_config.check_gpus(config.gpus, _catalog_ids())
    if (config.adapters or config.emit) and all(pipeline.bench_skip_reason(v)
                                                 for v in config.variants):
        raise BadInput(f"None of --variants {','.join(config.variants)} is benched on this "
                       "machine, so no serving flags are measured for the adapters or the "
                       "manifests (they take the LoRA sizes and context `thrifty serve` "
                       "derives in the bench). Add bf16 (or another variant) to --variants.")
    for task in config.tasks:
        if task.endswith((".yaml", ".yml")) and not Path(task).is_file():
            raise BadInput(f"--task {task}: no such task file.")
    return ref.path


def _catalog_ids() -> dict[str, list[str]]:
    """GPU id -> aliases, from `thrifty gpus --json` (the cost feature owns the catalog)."""
    import json

    done = processes.run_child([sys.executable, "-m", "thrifty", "gpus", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:  # the catalog's own error (e.g. a bad $THRIFTY_HOME/gpus.toml)
        raise BadInput(done.stderr.strip().removeprefix("Error: "))
    return {g["id"]: g.get("aliases", []) for g in json.loads(done.stdout)["gpus"]}


def prepare_folder(folder: Path, resume: bool, force: bool) -> Path:
    """The plan folder: new, resumed, or (with --force) started over; never someone else's."""
    if resume and force:
        raise BadInput("Give --resume (reuse what is unchanged) or --force (start over), not "
                       "both.")
    is_plan = any((folder / name).exists() for name in PLAN_FILES)
    if folder.exists() and any(folder.iterdir()) and not is_plan:
        raise BadInput(f"--out {folder} exists and is not a thrifty plan folder; give a new or "
                       "empty folder so nothing of yours is overwritten.")
    if is_plan and not (resume or force):
        raise BadInput(f"--out {folder} already holds a plan. Pass --resume to continue it "
                       "(stages whose inputs are unchanged are reused) or --force to start "
                       "over.")
    if is_plan and force:
        stderr.print(f"plan: starting over in {folder} (--force).")
        for name in PLAN_OUTPUTS:  # only what a plan writes; anything else there stays
            path = folder / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / STATE_FILE).exists():  # marks the folder as a plan's from the start
        write_json(folder / STATE_FILE, {})
    return folder
