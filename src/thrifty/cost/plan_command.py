"""`thrifty cost plan`'s options as one typed config, and the steps that turn them into a report."""

from dataclasses import dataclass, replace
from pathlib import Path

import click

from thrifty.core.errors import BadInput
from thrifty.core.files import check_output_free, write_text
from thrifty.core.output import emit_json
from thrifty.core.progress import stderr
from thrifty.core.runs import RunRecord
from thrifty.core.stats import parse_slo
from thrifty.cost import calibrate, catalog, model_shape, serving
from thrifty.cost import report as cost_report
from thrifty.cost.catalog import HOURS_PER_MONTH
from thrifty.cost.command_options import Variant, load_shapes, split_names, warn_stale
from thrifty.cost.fit import check_tensor_parallel
from thrifty.cost.perf_model import Efficiency, efficiency_for
from thrifty.formats import eval_result


@dataclass(frozen=True)
class CostPlanConfig:
    """Every option of `thrifty cost plan`, as click hands them over."""
    models: tuple[str, ...]
    requests_per_day: float | None
    tokens_per_month: float | None
    input_tokens: int
    output_tokens: int
    peak_factor: float
    slo_text: str
    variant_names: str
    gpu_names: str | None
    pricing: str
    calibration_file: str | None
    efficiency_text: str | None
    bench_run: str | None
    bench_gpu: str | None
    tensor_parallel: int | None
    hours_per_week: float
    years: float
    usd_per_kwh: float
    top: int
    markdown_file: str | None
    html_file: str | None
    force: bool
    catalog_file: str | None
    as_json: bool
    quality_run: str | None = None


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


def choose_efficiency(calibration_file: str | None,
                      efficiency_text: str | None) -> Efficiency | None:
    """One efficiency for every GPU (given, or calibrated on a GPU); None: each GPU's own from
    the catalog (fitted, or borrowed from a fitted GPU of its vendor, or the defaults)."""
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
    return None


def gpu_efficiency(eff: Efficiency | None, gpu, cat: catalog.Catalog) -> Efficiency:
    return eff or efficiency_for(gpu, list(cat.gpus.values()))


def run_plan(config: CostPlanConfig) -> None:
    traffic = check_traffic(config)
    limits, slo = parse_limits(config.slo_text)
    eff = choose_efficiency(config.calibration_file, config.efficiency_text)
    cat = catalog.load(config.catalog_file)
    quality = eval_result.load_quality(config.quality_run) if config.quality_run else None
    options = build_options(config, cat, eff, traffic, slo, quality)
    ranked = serving.rank(options, config.pricing)
    own = serving.Ownership(years=config.years, usd_per_kwh=config.usd_per_kwh)
    report = cost_report.build(ranked, traffic, slo, config.pricing, eff, cat, config.models,
                               config.hours_per_week, own, config.tensor_parallel)
    run_config = {"models": list(config.models), "traffic": traffic.as_dict(), "slo": limits,
                  "pricing": config.pricing, "catalog": cat.files,
                  "efficiency": eff.as_dict() if eff else "per GPU, from the catalog",
                  "tensor_parallel": config.tensor_parallel}
    run_path = write_reports(config, report, run_config)
    report["run"] = str(run_path)
    report["quality"] = ({"run": quality["run"], "reference": quality["reference"]}
                         if quality else None)
    if config.as_json:
        emit_json(report)
    else:
        cost_report.print_terminal(report, config.top)
        click.echo(f"Report: {run_path / 'cost.html'}")
    warn_stale([p for o in ranked[:config.top] for p in o.prices.values() if p])


def check_traffic(config: CostPlanConfig) -> serving.Traffic:
    """Check the traffic, buy-vs-rent and output options; the traffic they describe."""
    if (config.requests_per_day is None) == (config.tokens_per_month is None):
        raise BadInput("Give the traffic as exactly one of --requests-per-day or "
                       "--tokens-per-month (e.g. --requests-per-day 100000).")
    if not (0 <= config.hours_per_week <= 168 and config.years > 0 and config.usd_per_kwh >= 0):
        raise BadInput("Buy-vs-rent needs --hours-per-week between 0 and 168, --years above 0 "
                       f"and a --usd-per-kwh of 0 or more (got {config.hours_per_week:g}, "
                       f"{config.years:g}, {config.usd_per_kwh:g}).")
    for path in (config.markdown_file, config.html_file):
        if path:
            check_output_free(Path(path), config.force)
    if config.tokens_per_month is not None:
        if config.tokens_per_month <= 0:
            raise BadInput(f"--tokens-per-month is {config.tokens_per_month:g}; traffic must be "
                           "positive. Give the tokens you expect to serve in a month.")
        return serving.Traffic.from_tokens_per_month(config.tokens_per_month,
                                                     config.input_tokens, config.output_tokens,
                                                     config.peak_factor)
    return serving.Traffic(config.requests_per_day, config.input_tokens, config.output_tokens,
                           config.peak_factor)


def parse_limits(slo_text: str) -> tuple[dict[str, float], serving.Slo]:
    limits = parse_slo(slo_text)
    extra = sorted(set(limits) - {"ttft_ms", "tpot_ms"})
    if extra:
        raise BadInput(f"--slo: the cost model plans for ttft_ms and tpot_ms; drop "
                       f"{', '.join(extra)}.")
    return limits, serving.Slo(limits.get("ttft_ms"), limits.get("tpot_ms"))


def build_options(config: CostPlanConfig, cat: catalog.Catalog, eff: Efficiency | None,
                  traffic: serving.Traffic, slo: serving.Slo,
                  quality: dict | None = None) -> list[serving.Option]:
    """Every GPU x model variant, modelled (or measured with --bench); at least one must fit.
    A variant thrifty cannot produce is modelled but not ranked."""
    gpus = cat.select(split_names(config.gpu_names))
    variants = load_shapes(config.models, split_names(config.variant_names))
    check_tensor_parallel(config.tensor_parallel, [v.shape for v in variants], gpus)
    context = traffic.input_tokens + traffic.output_tokens
    options = []
    for variant in variants:
        for gpu in gpus:
            option = serving.plan_option(gpu, variant.shape, variant.label,
                                         gpu_efficiency(eff, gpu, cat), cat, traffic, slo,
                                         context, config.tensor_parallel)
            option.problem = variant.not_made() or option.problem
            option.quality = _evaluated(variant, quality)
            options.append(option)
    if config.bench_run:
        bench = BenchContext(cat, eff, slo, traffic, config.tensor_parallel)
        apply_bench(options, config.bench_run, config.bench_gpu, variants, bench)
    if not any(o.fit.fits for o in options):
        need = min(o.fit.needed_gib_total for o in options)
        if config.tensor_parallel:
            raise BadInput(f"No option fits at --tensor-parallel {config.tensor_parallel}: "
                           f"{smallest_groups(options)}. Give a larger --tensor-parallel, leave "
                           "it out to use the smallest group that holds the model, or add a "
                           "quantized variant (--variants w4a16).")
        raise BadInput(f"No option fits: every model variant needs more memory than a node of "
                       f"any catalog GPU offers (the smallest needs about {need:.0f} GiB). Add a "
                       "quantized variant (--variants w4a16) or a larger GPU (--catalog).")
    return options


def _evaluated(variant: Variant, quality: dict | None) -> dict | None:
    """The variant's quality from `thrifty eval`, where the variant is the evaluated checkpoint
    itself (a checkpoint as it is, or an unquantized model's bf16/fp16), not one modelled from
    it."""
    if not quality or (variant.modelled and variant.shape.weight_bits < 16):
        return None
    return eval_result.quality_of(quality, variant.model)


def smallest_groups(options: list[serving.Option]) -> str:
    """Where each refused option would fit, for the --tensor-parallel error."""
    reasons = sorted({f"{o.gpu.id} {o.variant}: {o.fit.reason}" for o in options})
    return "; ".join(reasons[:4]) + (f"; and {len(reasons) - 4} more" if len(reasons) > 4 else "")


def write_reports(config: CostPlanConfig, report: dict, run_config: dict) -> Path:
    """The run record with cost.md and cost.html, and copies where --markdown/--html ask;
    the run folder."""
    with RunRecord("cost", run_config) as run:
        best = report["options"][0] if report["options"] else {}
        run.record({}, modelled=best_figures(best), details={"cost": report})
        outputs = {"cost.md": cost_report.markdown(report), "cost.html": cost_report.html(report)}
        for name, text in outputs.items():
            write_text(run.path / name, text)
    for path, name in ((config.markdown_file, "cost.md"), (config.html_file, "cost.html")):
        if path:
            write_text(Path(path), outputs[name])
    return run.path


def best_figures(best: dict) -> dict:
    """The cheapest option's monthly figures, for the run record (and MLflow)."""
    if best.get("usd_per_month") is None:
        return {}
    energy = best.get("energy") or {}
    figures = {"usd_per_month": best["usd_per_month"],
               "usd_per_1m_tokens": best["usd_per_1m_tokens"],
               "gpu_hours_per_month": best["gpus"] * HOURS_PER_MONTH,
               "energy_kwh_per_month": energy.get("kwh_per_month"),
               "energy_kwh_per_1m_output_tokens": energy.get("kwh_per_1m_output_tokens")}
    return {k: v for k, v in figures.items() if v is not None}


@dataclass(frozen=True)
class BenchContext:
    """What re-planning an option for a bench run needs."""
    cat: catalog.Catalog
    eff: Efficiency | None
    slo: serving.Slo
    traffic: serving.Traffic
    tensor_parallel: int | None


def apply_bench(options: list[serving.Option], bench_run: str, bench_gpu: str | None,
                variants: list[Variant], ctx: BenchContext) -> None:
    """Put the bench run's measured figure in place of the modelled one of the option it
    measured: the GPU it ran on, the model and variant it served, its tensor-parallel size."""
    bench, folder = calibrate.read_bench(bench_run)
    if not bench_gpu:
        raise BadInput("--bench needs --bench-gpu: the catalog GPU the run was measured on "
                       f"(the run says its hardware was {bench.get('hardware')!r}).")
    gpu = ctx.cat.find(bench_gpu)
    traffic = ctx.traffic
    work = bench["workload"]
    if (str(work.get("input_tokens")), str(work.get("output_tokens"))) != \
            (str(traffic.input_tokens), str(traffic.output_tokens)):
        stderr.print(f"[yellow]warning:[/] the bench run used {work.get('input_tokens')} input "
                     f"and {work.get('output_tokens')} output tokens, the traffic "
                     f"{traffic.input_tokens} and {traffic.output_tokens}; its measured "
                     "throughput is used as it is.")
    served = served_variant(bench, variants, bench_run)
    index = next((i for i, o in enumerate(options) if o.gpu.id == gpu.id
                  and o.variant == served.label and o.shape == served.shape), None)
    if index is None:
        raise BadInput(f"--bench-gpu {bench_gpu} is not among the GPUs costed here (--gpu); add "
                       "it to --gpu so the bench run can stand in for its option.")
    option = at_bench_tp(options[index], bench, bench_run, ctx)
    if not option.fit.fits:
        raise BadInput(f"--bench-gpu {bench_gpu}: the variant the run served ({served.label}) "
                       f"does not fit that GPU in thrifty's memory model ({option.fit.reason}), "
                       "so the bench run cannot stand in for it.")
    options[index] = serving.measured_option(option, bench, ctx.slo, traffic, folder.name)


def at_bench_tp(option: serving.Option, bench: dict, bench_run: str,
                ctx: BenchContext) -> serving.Option:
    """The option on as many GPUs per replica as the run used (when it says)."""
    run_tp = ((bench.get("target") or {}).get("flags") or {}).get("tensor_parallel_size")
    if not run_tp or run_tp == option.fit.tensor_parallel:
        return option
    if ctx.tensor_parallel:
        raise BadInput(f"The bench run {bench_run} served with tensor parallelism {run_tp} but "
                       f"--tensor-parallel is {ctx.tensor_parallel}: its figures are for "
                       f"{run_tp} GPUs per replica. Pass --tensor-parallel {run_tp}, or a bench "
                       f"run served with --tensor-parallel-size {ctx.tensor_parallel}.")
    replanned = serving.plan_option(option.gpu, option.shape, option.variant,
                                    gpu_efficiency(ctx.eff, option.gpu, ctx.cat), ctx.cat,
                                    ctx.traffic, ctx.slo,
                                    ctx.traffic.input_tokens + ctx.traffic.output_tokens, run_tp)
    replanned.fit = replace(replanned.fit, tp_chosen_by="the bench run")
    return replanned


def served_shape(bench: dict) -> tuple[model_shape.ModelShape | None, str]:
    """The shape of the model a bench run served, read from its folder's config.json (which
    says how it was quantized), and the folder; or None and why it cannot be known."""
    target = bench.get("target") or {}
    path = target.get("model_path") or (target.get("flags") or {}).get("base_path")
    if not path:
        return None, ("it ran against a server thrifty did not start, which named no model "
                      "folder")
    try:
        return model_shape.load(path), path
    except BadInput:
        return None, f"it served {path}, whose config.json cannot be read here"


def _architecture(shape: model_shape.ModelShape) -> model_shape.ModelShape:
    """The shape with its precision, name and context limit left out: what makes two
    checkpoints the same model for costing."""
    return replace(model_shape.variant(shape, "bf16"), name="", source="", max_context=0)


def served_variant(bench: dict, variants: list[Variant], bench_run: str) -> Variant:
    """The costed variant a bench run measured: the same model as it served, at the precision
    its checkpoint has. Refused when the run served something that is not costed."""
    served, where = served_shape(bench)
    costed = ", ".join(f"{v.model} {v.label}" for v in variants)
    if served is None:
        if len(variants) == 1:
            stderr.print(f"[yellow]warning:[/] the bench run {bench_run} does not say which model "
                         f"it served ({where}); its figures are taken for {costed}, the one "
                         "variant costed.")
            return variants[0]
        raise BadInput(f"The bench run {bench_run} does not say which model it served ({where}), "
                       f"so thrifty cannot tell which of the variants costed here ({costed}) it "
                       "measured. Cost only the one it served (one MODEL, and --variants with "
                       "one name), or bench a model that `thrifty bench --model` serves.")
    same_model = [v for v in variants if _architecture(v.shape) == _architecture(served)]
    if not same_model:
        models = ", ".join(dict.fromkeys(v.model for v in variants))
        raise BadInput(f"The bench run {bench_run} served {where} ({served.params / 1e9:.2f} B "
                       f"parameters, {served.layers} layers, hidden size {served.hidden}), which "
                       f"is not the model costed here ({models}). Cost the model it served "
                       f"(`thrifty cost {where} ...`), or give a bench run of {models}.")
    matches = [v for v in same_model if v.shape.precision == served.precision]
    if not matches:
        ways = ([f"add {served.precision} to --variants"]
                if served.precision in model_shape.VARIANTS else [])
        if served.weight_bits < 16:
            ways.append(f"give the checkpoint {where} itself as a MODEL")
        raise BadInput(f"The bench run {bench_run} served {where} as {served.precision} (the "
                       "precision its config.json records), but that model is costed here only "
                       f"as {', '.join(v.label for v in same_model)}. To use the run, "
                       f"{' or '.join(ways)}.")
    return next((v for v in matches if v.label == served.precision), matches[0])
