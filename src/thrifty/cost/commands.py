"""`thrifty gpus`, `thrifty fit` and `thrifty cost`: choose the GPU with numbers in hand."""

import datetime
from pathlib import Path

import click

from thrifty.core.errors import BadInput
from thrifty.core.files import check_output_free, write_text
from thrifty.core.output import DefaultSubcommandGroup, emit_json, json_option, table
from thrifty.core.progress import stderr
from thrifty.core.runs import RunRecord
from thrifty.core.stats import parse_slo
from thrifty.cost import calibrate, catalog, finetune_cost, model_shape, serving
from thrifty.cost import report as cost_report
from thrifty.cost.fit import fit as fit_model
from thrifty.cost.fit import memory_needed_text
from thrifty.cost.perf_model import DEFAULT_GPU_EFFICIENCY, Efficiency, Hardware
from thrifty.formats import probe

CATALOG_HELP = ("A TOML file of [[gpu]] / [[price]] tables that adds GPUs or overrides prices "
                "(same format as the shipped catalog; $THRIFTY_HOME/gpus.toml is read too).")


def catalog_option(function):
    return click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False),
                        help=CATALOG_HELP)(function)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def warn_stale(prices: list[catalog.Price]) -> None:
    """One warning naming every price shown that is more than a year old, with its date."""
    today = datetime.date.today()
    stale = sorted({p for p in prices if p.age_days(today) > catalog.STALE_AFTER_DAYS},
                   key=lambda p: (p.date, p.gpu))
    if not stale:
        return
    listed = "; ".join(f"{p.gpu} {p.provider} {p.kind} ${p.usd_per_gpu_hour:g}/h of "
                       f"{p.date.isoformat()}" for p in stale)
    stderr.print(f"[yellow]warning:[/] {len(stale)} price(s) shown are more than a year old: "
                 f"{listed}. Check them and override them with --catalog.")


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
    selected = cat.select(_names(gpu_names))
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

def load_shapes(model_refs: tuple[str, ...], variants: list[str] | None) -> list[tuple]:
    """(label, shape) for each model, in each variant asked for (a checkpoint that is already
    quantized is taken as it is)."""
    shapes = []
    for ref in model_refs:
        shape = model_shape.load(ref)
        if shape.weight_bits < 16 or not variants:
            shapes.append((shape.precision, shape))
            continue
        for name in variants:
            shapes.append((name, model_shape.variant(shape, name)))
    return shapes


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
@catalog_option
@json_option
def fit_command(model: str, context: int | None, concurrency: int, variant_names: str | None,
                gpu_names: str | None, catalog_file: str | None, as_json: bool) -> None:
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
    gpus = cat.select(_names(gpu_names))
    results = []
    for label, shape in load_shapes((model,), _names(variant_names)):
        ctx = context or min(shape.max_context, 8192)
        fits = [fit_model(shape, gpu, ctx, concurrency) for gpu in gpus]
        results.append({"variant": label, "shape": shape.as_dict(), "context_tokens": ctx,
                        "fits": [f.as_dict(ctx, concurrency) for f in fits]})
        if not any(f.fits for f in fits):
            need = min(f.needed_gib_total for f in fits)
            per_node = max(g.max_per_node for g in gpus)
            raise BadInput(
                f"{model} ({label}) fits on no GPU in the catalog, even {per_node} to a node: it "
                f"needs about {need:.0f} GiB ({memory_needed_text(shape, ctx, concurrency)}). "
                "Quantize it (--variant w4a16), shorten --context or lower --concurrency, or "
                "serve it across nodes with pipeline parallelism.")
    if as_json:
        emit_json({"model": model, "figures": "modelled", "results": results})
        return
    for result in results:
        shape = result["shape"]
        table(f"{model} as {result['variant']}: {shape['params'] / 1e9:.2f} B parameters, "
              f"{shape['weights_gib']} GiB of weights, "
              f"{shape['kv_bytes_per_token'] / 1024:.0f} KiB of KV cache per token "
              f"(modelled; {concurrency} x {result['context_tokens']} tokens)",
              ["GPU", "fits", "GPUs (TP)", "weights GiB/GPU", "KV needed GiB/GPU",
               "KV room GiB/GPU", "max sequences"],
              [[f["gpu"], "yes" if f["fits"] else "no", f["tensor_parallel"] or "–",
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


def parse_efficiency(text: str) -> Efficiency:
    values = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            values[key.strip()] = -1.0
    keys = {"memory", "compute", "overhead_ms"}
    if not keys <= set(values) <= keys | {"lag_ms"} or any(v < 0 for v in values.values()) \
            or not 0 < values["memory"] <= 1.5 or not 0 < values["compute"] <= 1.5:
        raise BadInput(f"--efficiency {text!r} should be memory=SHARE,compute=SHARE,"
                       "overhead_ms=MS[,lag_ms=MS] with shares in (0, 1.5], e.g. "
                       "memory=0.75,compute=0.55,overhead_ms=3.")
    return Efficiency(values["memory"], values["compute"], values["overhead_ms"],
                      "efficiency given with --efficiency", values.get("lag_ms", 0.0))


def choose_efficiency(calibration_file: str | None, efficiency_text: str | None) -> Efficiency:
    if efficiency_text:
        return parse_efficiency(efficiency_text)
    if calibration_file:
        data = calibrate.load(calibration_file)
        if data["hardware"].get("device") == "cpu":
            raise BadInput(f"{calibration_file} was calibrated on a CPU "
                           f"({data['hardware']['name']}); its efficiencies describe vLLM's CPU "
                           "kernels, not a GPU's. Calibrate on a GPU bench run, or check CPU "
                           "predictions with `thrifty cost check`.")
        return calibrate.efficiency_of(data)
    return DEFAULT_GPU_EFFICIENCY


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
              help="Variants to cost for each unquantized MODEL (modelled from its shape); a "
                   "quantized checkpoint is costed as it is.")
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
def cost_plan(models: tuple[str, ...], requests_per_day, tokens_per_month, input_tokens,
              output_tokens, peak_factor, slo_text, variant_names, gpu_names, pricing,
              calibration_file, efficiency_text, bench_run, bench_gpu, hours_per_week, years,
              usd_per_kwh, top, markdown_file, html_file, force, catalog_file,
              as_json) -> None:
    """Rank GPU x model variant options by monthly cost for a traffic profile and an SLO.

    For each option: the memory fit (GPUs per replica), the throughput model's SLO-compliant
    request rate per replica (modelled; or measured with --bench), replicas = ceil(peak rate /
    rate per replica), $/month at 730 hours, $/1M input and output tokens, utilisation, and the
    on-demand, spot and reserved prices. Writes cost.md, cost.html and result.json to a run
    folder.
    """
    if (requests_per_day is None) == (tokens_per_month is None):
        raise BadInput("Give the traffic as exactly one of --requests-per-day or "
                       "--tokens-per-month (e.g. --requests-per-day 100000).")
    if not (0 <= hours_per_week <= 168 and years > 0 and usd_per_kwh >= 0):
        raise BadInput("Buy-vs-rent needs --hours-per-week between 0 and 168, --years above 0 "
                       f"and a --usd-per-kwh of 0 or more (got {hours_per_week:g}, {years:g}, "
                       f"{usd_per_kwh:g}).")
    for path in (markdown_file, html_file):
        if path:
            check_output_free(Path(path), force)
    if tokens_per_month is not None:
        if tokens_per_month <= 0:
            raise BadInput(f"--tokens-per-month is {tokens_per_month:g}; traffic must be "
                           "positive. Give the tokens you expect to serve in a month.")
        traffic = serving.Traffic.from_tokens_per_month(tokens_per_month, input_tokens,
                                                     output_tokens, peak_factor)
    else:
        traffic = serving.Traffic(requests_per_day, input_tokens, output_tokens, peak_factor)
    limits = parse_slo(slo_text)
    extra = sorted(set(limits) - {"ttft_ms", "tpot_ms"})
    if extra:
        raise BadInput(f"--slo: the cost model plans for ttft_ms and tpot_ms; drop "
                       f"{', '.join(extra)}.")
    slo = serving.Slo(limits.get("ttft_ms"), limits.get("tpot_ms"))
    eff = choose_efficiency(calibration_file, efficiency_text)
    cat = catalog.load(catalog_file)
    gpus = cat.select(_names(gpu_names))
    shapes = load_shapes(models, _names(variant_names))
    options = []
    for label, shape in shapes:
        for gpu in gpus:
            options.append(serving.plan_option(gpu, shape, label, eff, cat, traffic, slo,
                                            traffic.input_tokens + traffic.output_tokens))
    if bench_run:
        apply_bench(options, bench_run, bench_gpu, cat, slo, traffic)
    if not any(o.fit.fits for o in options):
        need = min(o.fit.needed_gib_total for o in options)
        raise BadInput(f"No option fits: every model variant needs more memory than a node of "
                       f"any catalog GPU offers (the smallest needs about {need:.0f} GiB). Add a "
                       "quantized variant (--variants w4a16) or a larger GPU (--catalog).")
    ranked = serving.rank(options, pricing)
    own = serving.Ownership(years=years, usd_per_kwh=usd_per_kwh)
    report = cost_report.build(ranked, traffic, slo, pricing, eff, cat, models, hours_per_week,
                               own)
    with RunRecord("cost", {"models": list(models), "traffic": traffic.as_dict(),
                            "slo": limits, "pricing": pricing, "catalog": cat.files,
                            "efficiency": eff.as_dict()}) as run:
        best = report["options"][0] if report["options"] else {}
        run.record({}, modelled={k: best[k] for k in ("usd_per_month", "usd_per_1m_tokens")
                                 if k in best}, details={"cost": report})
        outputs = {"cost.md": cost_report.markdown(report), "cost.html": cost_report.html(report)}
        for name, text in outputs.items():
            write_text(run.path / name, text)
    for path, name in ((markdown_file, "cost.md"), (html_file, "cost.html")):
        if path:
            write_text(Path(path), outputs[name])
    report["run"] = str(run.path)
    if as_json:
        emit_json(report)
    else:
        cost_report.print_terminal(report, top)
        click.echo(f"Report: {run.path / 'cost.html'}")
    warn_stale([p for o in ranked[:top] for p in o.prices.values() if p])


def apply_bench(options: list, bench_run: str, bench_gpu: str | None, cat, slo, traffic) -> None:
    bench, folder = calibrate.read_bench(bench_run)
    if not bench_gpu:
        raise BadInput("--bench needs --bench-gpu: the catalog GPU the run was measured on "
                       f"(the run says its hardware was {bench.get('hardware')!r}).")
    gpu = cat.find(bench_gpu)
    work = bench["workload"]
    if (str(work.get("input_tokens")), str(work.get("output_tokens"))) != \
            (str(traffic.input_tokens), str(traffic.output_tokens)):
        stderr.print(f"[yellow]warning:[/] the bench run used {work.get('input_tokens')} input "
                     f"and {work.get('output_tokens')} output tokens, the traffic "
                     f"{traffic.input_tokens} and {traffic.output_tokens}; its measured "
                     "throughput is used as it is.")
    candidates = [o for o in options if o.gpu.id == gpu.id and o.fit.fits]
    if not candidates:
        raise BadInput(f"--bench-gpu {bench_gpu}: no option on that GPU fits the model, so the "
                       "bench run cannot stand in for one.")
    # The bench served one model as it is: it measures the first model's first variant.
    serving.measured_option(candidates[0], bench, slo, traffic, folder.name)


# ---------------------------------------------------------------- calibrate / check

def _hardware_for(bench: dict, gpu_name: str | None, cat) -> tuple[Hardware, dict]:
    if gpu_name:
        gpu = cat.find(gpu_name)
        return Hardware.from_gpu(gpu), {"name": gpu.id, "device": "gpu"}
    measured = probe.load_probe()
    return Hardware.from_probe(measured), {
        "name": measured["hardware"], "device": measured["device"],
        "bandwidth_gb_per_s": measured["bandwidth_gb_per_s"],
        "bf16_tflop_per_s": measured["bf16_tflop_per_s"]}


def _bench_model(bench: dict, model: str | None) -> model_shape.ModelShape:
    target = bench.get("target") or {}
    path = model or target.get("model_path") or (target.get("flags") or {}).get("base_path")
    if not path:
        raise BadInput("The bench run does not say which model folder it served (it ran "
                       "against --url); give it with --model.")
    return model_shape.load(path)


@cost_group.command("calibrate")
@click.argument("run")
@click.option("--model", help="The model the run served (default: read from the run).")
@click.option("--gpu", "gpu_name", help="The catalog GPU the run was measured on (default: this "
                                        "machine, using `thrifty doctor --probe`).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the calibration here (default: $THRIFTY_HOME/calibrations/).")
@catalog_option
@json_option
def cost_calibrate(run: str, model: str | None, gpu_name: str | None, out: str | None,
                   catalog_file: str | None, as_json: bool) -> None:
    """Fit the throughput model's efficiencies to a `thrifty bench` RUN.

    Replays each load point of the run through the model of vLLM's scheduler and fits the
    memory and compute efficiencies and the per-step overhead that reproduce the measured TTFT,
    TPOT and throughput. A run on a GPU calibrates the model for all catalog GPUs
    (`thrifty cost --calibration FILE`); a run on this CPU checks the model here.
    """
    bench, folder = calibrate.read_bench(run)
    cat = catalog.load(catalog_file)
    hw, hardware_info = _hardware_for(bench, gpu_name, cat)
    shape = _bench_model(bench, model)
    with stderr.status("fitting the throughput model to the bench run"):
        eff, report = calibrate.fit(bench, shape, hw, f"bench run {folder.name} on "
                                                      f"{hardware_info['name']}")
    path = calibrate.save(eff, hardware_info, shape, folder, report,
                          Path(out) if out else None)
    if as_json:
        emit_json({"calibration": str(path), "efficiency": eff.as_dict(), "fit": report})
        return
    click.echo(f"Fitted on {folder.name} ({hardware_info['name']}): memory efficiency "
               f"{eff.memory:.3f}, compute efficiency {eff.compute:.3f}, step overhead "
               f"{eff.overhead_ms:.2f} ms, request lag {eff.lag_ms:.2f} ms.")
    print_check(report["points"], "Calibration fit: measured vs modelled")
    click.echo(f"Calibration: {path}")


def print_check(points: list[dict], title: str) -> None:
    rows = []
    for p in points:
        for key in calibrate.REPORTED_METRICS:
            m, q, e = p["measured"][key], p["predicted"][key], p["error_pct"][key]
            rows.append([f"{p['kind']} {p['load']}", key, f"{m:.1f}" if m else "–",
                         f"{q:.1f}", f"{e:+.1f}%" if e is not None else "–"])
    table(title, ["load", "metric", "measured", "modelled", "error"], rows)


@cost_group.command("check")
@click.argument("run")
@click.option("--calibration", "calibration_file", type=click.Path(dir_okay=False),
              required=True, help="A calibration from `thrifty cost calibrate`.")
@click.option("--model", help="The model the run served (default: read from the run).")
@click.option("--gpu", "gpu_name", help="The catalog GPU the run was measured on (default: this "
                                        "machine's probe).")
@catalog_option
@json_option
def cost_check(run: str, calibration_file: str, model: str | None, gpu_name: str | None,
               catalog_file: str | None, as_json: bool) -> None:
    """Predict a bench RUN from its workload alone and compare with what it measured."""
    bench, folder = calibrate.read_bench(run)
    eff = calibrate.efficiency_of(calibrate.load(calibration_file))
    hw, _ = _hardware_for(bench, gpu_name, catalog.load(catalog_file))
    points = calibrate.predict(bench, _bench_model(bench, model), hw, eff)
    if as_json:
        emit_json({"run": str(folder), "efficiency": eff.as_dict(), "points": points})
        return
    print_check(points, f"{folder.name}: measured vs modelled ({eff.source})")


# ---------------------------------------------------------------- finetune

@cost_group.command("finetune")
@click.argument("model")
@click.option("--tokens", type=float, required=True, help="Training tokens per epoch.")
@click.option("--epochs", type=float, default=1, show_default=True)
@click.option("--method", "methods", default="full,lora,qlora", show_default=True,
              help=f"Comma-separated: {', '.join(finetune_cost.METHODS)}.")
@click.option("--teacher", help="The teacher model, for --method distill.")
@click.option("--teacher-signal", type=click.Choice(["offline", "online"]), default="offline",
              show_default=True, help="distill: the teacher's top-k log-probabilities captured "
              "once with vLLM (as `thrifty distill` does by default), or the teacher inside "
              "every training step.")
@click.option("--top-k", type=click.IntRange(min=1), default=20, show_default=True,
              help="distill: log-probabilities stored per token (offline signal).")
@click.option("--gpu", "gpu_names", metavar="LIST", default="h100-sxm,a100-80gb,l40s",
              show_default=True)
@click.option("--sequence-tokens", type=int, default=2048, show_default=True)
@click.option("--micro-batch", type=int, default=1, show_default=True)
@click.option("--lora-rank", type=int, default=16, show_default=True)
@click.option("--mfu", type=float, default=0.4, show_default=True,
              help="Model FLOPs utilisation the run reaches.")
@click.option("--pricing", type=click.Choice(catalog.PRICE_KINDS), default="on-demand",
              show_default=True)
@catalog_option
@json_option
def cost_finetune(model, tokens, epochs, methods, teacher, teacher_signal, top_k, gpu_names,
                  sequence_tokens, micro_batch, lora_rank, mfu, pricing, catalog_file,
                  as_json) -> None:
    """Memory, GPUs, hours and dollars for fine-tuning MODEL (full, LoRA, QLoRA, distill).

    Model states per parameter: full 16 B (bf16 weights and gradients, fp32 Adam), LoRA 2 B
    plus the adapter, QLoRA ~0.52 B (NF4) plus the adapter; activations with gradient
    checkpointing. All figures are modelled.
    """
    names = _names(methods) or []
    unknown = [m for m in names if m not in finetune_cost.METHODS]
    if unknown or not names:
        raise BadInput(f"--method {methods!r}: choose from {', '.join(finetune_cost.METHODS)}.")
    if tokens <= 0 or epochs <= 0 or not 0 < mfu <= 1:
        raise BadInput("--tokens and --epochs must be positive and --mfu in (0, 1].")
    if "distill" in names and not teacher:
        raise BadInput("--method distill needs --teacher MODEL (the model whose outputs the "
                       "student learns from).")
    shape = model_shape.load(model)
    teacher_shape = model_shape.load(teacher) if teacher else None
    cat = catalog.load(catalog_file)
    rows = []
    for gpu in cat.select(_names(gpu_names)):
        for method in names:
            job = finetune_cost.Job(method, tokens, epochs, sequence_tokens, micro_batch,
                                    lora_rank, mfu, teacher_shape, teacher_signal, top_k)
            price = cat.cheapest(gpu.id, pricing)
            rows.append(finetune_cost.plan(shape, job, gpu, price))
            if method == "distill" and teacher_signal == "offline":
                rows.append(finetune_cost.capture_plan(job, gpu, price))
    if as_json:
        emit_json({"model": model, "figures": "modelled", "plans": rows})
        return
    table(f"Fine-tuning {model} ({shape.params / 1e9:.2f} B parameters) on {tokens:,.0f} tokens "
          f"x {epochs:g} epochs (modelled, MFU {mfu:g}, {pricing} prices)",
          ["method", "GPU", "model states GB", "total GB", "GPUs", "hours", "GPU-hours", "$"],
          [[r["method"], r["gpu"], f"{r['model_states_gb']:,.1f}", f"{r['total_gb']:,.1f}",
            r["gpus"] or r.get("problem"), r.get("hours", "–"), r.get("gpu_hours", "–"),
            f"{r['usd']:,.2f}" if "usd" in r else "no price"] for r in rows])
    capture = next((r for r in rows if "signal_gb" in r), None)
    if capture:
        click.echo(f"Offline distillation = training + one teacher capture (vLLM prefill of "
                   f"{teacher}); the captured top-{top_k} signal takes "
                   f"{capture['signal_bytes_per_token']} bytes/token, {capture['signal_gb']:,} GB "
                   "on disk.")
    warn_stale([cat.cheapest(g.id, pricing) for g in cat.select(_names(gpu_names))
                if cat.cheapest(g.id, pricing)])
