"""`thrifty gpus`, `thrifty fit` and `thrifty cost`: choose the GPU with numbers in hand."""

import click

from thrifty.core.errors import BadInput
from thrifty.core.output import DefaultSubcommandGroup, emit_json, json_option, table
from thrifty.cost import catalog, model_shape
from thrifty.cost.calibrate_command import cost_calibrate, cost_check
from thrifty.cost.command_options import (
    catalog_option,
    load_shapes,
    split_names,
    tensor_parallel_option,
    warn_stale,
)
from thrifty.cost.finetune_command import cost_finetune
from thrifty.cost.fit import check_tensor_parallel, memory_needed_text
from thrifty.cost.fit import fit as fit_model
from thrifty.cost.plan_command import CostPlanConfig, run_plan

# ---------------------------------------------------------------- thrifty gpus

@click.command("gpus")
@catalog_option
@click.option("--gpu", "gpu_names", metavar="LIST", help="Only these GPUs (comma-separated).")
@json_option
def gpus_command(catalog_file: str | None, gpu_names: str | None, as_json: bool) -> None:
    """List the GPU catalog: memory, bandwidth, dense TFLOPs, power, interconnect and the
    cheapest dated price per kind (on-demand, spot, reserved).

    \b
    Add GPUs or override prices with a TOML file:
      [[price]]
      gpu = "h100-sxm"
      provider = "my-cloud"
      kind = "reserved"            # on-demand | spot | reserved
      term = "1 year"
      usd_per_gpu_hour = 2.10
      date = 2026-10-01
      source = "contract 1234"
    """
    cat = catalog.load(catalog_file)
    selected = cat.select(split_names(gpu_names))
    if as_json:
        emit_json({"files": cat.files, "gpus": [
            {**catalog.as_dict(g), "prices": [catalog.price_dict(p) for p in cat.prices_for(g.id)]}
            for g in selected]})
        warn_stale([p for g in selected for p in cat.prices_for(g.id)])
        return
    rows = []
    for g in selected:
        cheapest = [cat.cheapest(g.id, kind) for kind in catalog.PRICE_KINDS]
        rows.append([g.id, f"{g.memory_gib:g}", f"{g.bandwidth_gb_s:,.0f}", f"{g.bf16_tflops:g}",
                     f"{g.fp8_tflops:g}" if g.fp8_tflops else "–", f"{g.tdp_w:g}",
                     *[f"{p.usd_per_gpu_hour:.2f} ({p.date:%Y-%m})" if p else "–"
                       for p in cheapest]])
    table("GPU catalog: vendor datasheet specifications (dense tensor rates) and the cheapest "
          "dated price per GPU-hour in USD",
          ["id", "GiB", "GB/s", "bf16 TF", "fp8 TF", "TDP W", "on-demand", "spot", "reserved"],
          rows)
    click.echo(f"{len(cat.prices)} dated prices from {', '.join(cat.files)}; "
               "`thrifty gpus --json` lists every price with its source.")
    warn_stale([cat.cheapest(g.id, k) for g in selected for k in catalog.PRICE_KINDS
                if cat.cheapest(g.id, k)])


# ---------------------------------------------------------------- thrifty fit

@click.command("fit")
@click.argument("model")
@click.option("--context", type=int, default=None,
              help="Tokens per sequence (prompt + output); default: the model's maximum, "
                   "capped at 8192.")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Sequences of --context tokens that must fit in the KV cache at once.")
@click.option("--variant", "variant_names", metavar="LIST",
              help=f"Size the model as these variants ({', '.join(model_shape.VARIANTS)}); "
                   "default: as it is.")
@click.option("--gpu", "gpu_names", metavar="LIST", help="Only these GPUs.")
@tensor_parallel_option
@catalog_option
@json_option
def fit_command(model: str, context: int | None, concurrency: int, variant_names: str | None,
                gpu_names: str | None, tensor_parallel: int | None, catalog_file: str | None,
                as_json: bool) -> None:
    """Which GPUs hold MODEL, and how many of each with tensor parallelism.

    MODEL is a model folder or its config.json, a built-in thrifty model, or a known
    architecture (llama-3.1-8b, llama-3.1-70b, ...). Memory = weights (bits and group size
    from the quantization config) + KV cache (2 x layers x KV heads x head dim x bytes per
    token) + a runtime reserve, within vLLM's default 90% of each GPU. All figures are modelled.
    """
    if concurrency < 1 or (context is not None and context < 1):
        raise BadInput("--context and --concurrency must be positive: the memory fit needs at "
                       "least one sequence of at least one token.")
    cat = catalog.load(catalog_file)
    gpus = cat.select(split_names(gpu_names))
    variants = load_shapes((model,), split_names(variant_names))
    check_tensor_parallel(tensor_parallel, [v.shape for v in variants], gpus)
    results = []
    for variant in variants:
        ctx = context or min(variant.shape.max_context, 8192)
        fits = [fit_model(variant.shape, gpu, ctx, concurrency, tensor_parallel) for gpu in gpus]
        results.append({"variant": variant.label, "shape": variant.shape.as_dict(),
                        "context_tokens": ctx, "tensor_parallel_given": tensor_parallel,
                        "fits": [f.as_dict(ctx, concurrency) for f in fits]})
        if not any(f.fits for f in fits):
            refuse_fit(model, variant, fits, ctx, concurrency, tensor_parallel)
    if as_json:
        emit_json({"model": model, "figures": "modelled", "results": results})
        return
    print_fits(model, results, concurrency)


def refuse_fit(model: str, variant, fits: list, context: int, concurrency: int,
               tensor_parallel: int | None) -> None:
    """The error when a variant fits on none of the GPUs (at the --tensor-parallel given)."""
    if tensor_parallel:
        why = "; ".join(f"{f.gpu.id}: {f.reason}" for f in fits[:4])
        raise BadInput(f"{model} ({variant.label}) fits on no GPU here at --tensor-parallel "
                       f"{tensor_parallel} ({why}{'; ...' if len(fits) > 4 else ''}). Give a "
                       "larger --tensor-parallel, or leave it out to get the smallest group "
                       "that holds the model.")
    need = min(f.needed_gib_total for f in fits)
    per_node = max(f.gpu.max_per_node for f in fits)
    raise BadInput(
        f"{model} ({variant.label}) fits on no GPU in the catalog, even {per_node} to a node: it "
        f"needs about {need:.0f} GiB "
        f"({memory_needed_text(variant.shape, context, concurrency)}). Quantize it (--variant "
        "w4a16), shorten --context or lower --concurrency, or serve it across nodes with "
        "pipeline parallelism.")


def print_fits(model: str, results: list[dict], concurrency: int) -> None:
    for result in results:
        shape = result["shape"]
        given = result["tensor_parallel_given"]
        table(f"{model} as {result['variant']}: {shape['params'] / 1e9:.2f} B parameters, "
              f"{shape['weights_gib']} GiB of weights, "
              f"{shape['kv_bytes_per_token'] / 1024:.0f} KiB of KV cache per token "
              f"(modelled; {concurrency} x {result['context_tokens']} tokens; "
              + (f"tensor parallel {given}, as given)" if given
                 else "the smallest tensor-parallel group that fits)"),
              ["GPU", "fits", "GPUs (TP)", "weights GiB/GPU", "KV needed GiB/GPU",
               "KV room GiB/GPU", "max sequences"],
              [[f["gpu"], "yes" if f["fits"] else f"no: {f['reason']}",
                f["tensor_parallel"] or "–",
                f["weights_gib_per_gpu"], f["kv_cache_gib_needed_per_gpu"],
                f["kv_cache_gib_available_per_gpu"] if f["fits"] else "–",
                f["max_concurrency_at_context"] if f["fits"] else "–"]
               for f in result["fits"]])


# ---------------------------------------------------------------- thrifty cost

@click.group("cost", cls=DefaultSubcommandGroup, default_command="plan")
def cost_group() -> None:
    """Project the monthly cost of serving (and fine-tuning) a model on each GPU.

    \b
    thrifty cost llama-3.1-8b --requests-per-day 200000 --slo ttft_ms=500,tpot_ms=50
    thrifty cost MODEL_DIR QUANTIZED_DIR --tokens-per-month 2e9 --pricing spot
    thrifty cost calibrate BENCH_RUN          fit the throughput model to a bench run
    thrifty cost check BENCH_RUN              predicted vs measured for a bench run
    thrifty cost finetune llama-3.1-70b --tokens 1e8 --gpu h100-sxm
    """


@cost_group.command("plan")
@click.argument("models", metavar="MODEL...", nargs=-1, required=True)
@click.option("--requests-per-day", type=float, help="Average traffic in requests per day.")
@click.option("--tokens-per-month", type=float,
              help="Or: traffic as input + output tokens per month.")
@click.option("--input-tokens", type=int, default=512, show_default=True,
              help="Prompt tokens per request.")
@click.option("--output-tokens", type=int, default=256, show_default=True,
              help="Generated tokens per request.")
@click.option("--peak-factor", type=float, default=2.0, show_default=True,
              help="Busiest-hour traffic over the daily average; replicas are sized for it.")
@click.option("--slo", "slo_text", default="ttft_ms=2000,tpot_ms=100", show_default=True,
              help="Latency limits each replica must meet (MLPerf's llama3.1-8b server SLO by "
                   "default).")
@click.option("--variants", "variant_names", default="bf16,w8a8,w4a16", show_default=True,
              help="Variants to cost for each unquantized MODEL (modelled from its shape; "
                   "those `thrifty quantize` cannot make are listed, not ranked); a quantized "
                   "checkpoint is costed as it is.")
@click.option("--gpu", "gpu_names", metavar="LIST", help="Only these GPUs (default: all).")
@click.option("--pricing", type=click.Choice(catalog.PRICE_KINDS), default="on-demand",
              show_default=True, help="Which price ranks the options.")
@click.option("--calibration", "calibration_file", type=click.Path(dir_okay=False),
              help="Efficiencies fitted to a GPU bench run (`thrifty cost calibrate`).")
@click.option("--efficiency", "efficiency_text", metavar="memory=..,compute=..,overhead_ms=..",
              help="Give the model's efficiencies directly.")
@click.option("--bench", "bench_run", type=click.Path(),
              help="A bench run of one MODEL on one catalog GPU: its measured SLO-compliant "
                   "throughput replaces the modelled one for that option.")
@click.option("--bench-gpu", help="The catalog GPU the --bench run ran on.")
@click.option("--quality", "quality_run", type=click.Path(), metavar="EVAL_RUN",
              help="A `thrifty eval` run of the models costed here: each checkpoint's KL "
              "divergence, top-1 agreement and Δ log-perplexity (measured) are shown beside "
              "its dollars.")
@tensor_parallel_option
@click.option("--hours-per-week", type=float, default=168, show_default=True,
              help="Hours of use per week, for buy-vs-rent.")
@click.option("--years", type=float, default=3, show_default=True,
              help="Years to depreciate bought GPUs over.")
@click.option("--usd-per-kwh", type=float, default=0.12, show_default=True,
              help="Electricity price, for buy-vs-rent.")
@click.option("--top", type=int, default=15, show_default=True, help="Rows in the table.")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False),
              help="Also write the report as markdown here.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False),
              help="Also write the HTML report (cost vs latency chart) here.")
@click.option("--force", is_flag=True, help="Overwrite --markdown/--html files.")
@catalog_option
@json_option
def cost_plan(**options) -> None:
    """Rank GPU x model variant options by monthly cost for a traffic profile and an SLO.

    For each option: the memory fit (GPUs per replica: the smallest tensor-parallel group that
    holds the model, or --tensor-parallel), the throughput model's SLO-compliant
    request rate per replica (modelled; or measured with --bench), replicas = ceil(peak rate /
    rate per replica), $/month at 730 hours, $/1M input and output tokens, utilisation, and the
    on-demand, spot and reserved prices. Writes cost.md, cost.html and result.json to a run
    folder.
    """
    run_plan(CostPlanConfig(**options))


# The other subcommands live in their own modules; the group gathers them here.
for _command in (cost_calibrate, cost_check, cost_finetune):
    cost_group.add_command(_command)
