"""`thrifty cost plan`'s options as one typed config, and the steps that turn them into a report."""

from dataclasses import dataclass
from pathlib import Path

import click

from thrifty.core.errors import BadInput
from thrifty.core.files import check_output_free, write_text
from thrifty.core.output import emit_json
from thrifty.core.progress import stderr
from thrifty.core.runs import RunRecord
from thrifty.core.stats import parse_slo
from thrifty.cost import calibrate, catalog, serving
from thrifty.cost import report as cost_report
from thrifty.cost.command_options import load_shapes, split_names, warn_stale
from thrifty.cost.perf_model import DEFAULT_GPU_EFFICIENCY, Efficiency


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
    hours_per_week: float
    years: float
    usd_per_kwh: float
    top: int
    markdown_file: str | None
    html_file: str | None
    force: bool
    catalog_file: str | None
    as_json: bool


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


def run_plan(config: CostPlanConfig) -> None:
    traffic = check_traffic(config)
    limits, slo = parse_limits(config.slo_text)
    eff = choose_efficiency(config.calibration_file, config.efficiency_text)
    cat = catalog.load(config.catalog_file)
    options = build_options(config, cat, eff, traffic, slo)
    ranked = serving.rank(options, config.pricing)
    own = serving.Ownership(years=config.years, usd_per_kwh=config.usd_per_kwh)
    report = cost_report.build(ranked, traffic, slo, config.pricing, eff, cat, config.models,
                               config.hours_per_week, own)
    run_config = {"models": list(config.models), "traffic": traffic.as_dict(), "slo": limits,
                  "pricing": config.pricing, "catalog": cat.files, "efficiency": eff.as_dict()}
    run_path = write_reports(config, report, run_config)
    report["run"] = str(run_path)
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


def build_options(config: CostPlanConfig, cat: catalog.Catalog, eff: Efficiency,
                  traffic: serving.Traffic, slo: serving.Slo) -> list[serving.Option]:
    """Every GPU x model variant, modelled (or measured with --bench); at least one must fit."""
    gpus = cat.select(split_names(config.gpu_names))
    shapes = load_shapes(config.models, split_names(config.variant_names))
    options = []
    for label, shape in shapes:
        for gpu in gpus:
            options.append(serving.plan_option(gpu, shape, label, eff, cat, traffic, slo,
                                               traffic.input_tokens + traffic.output_tokens))
    if config.bench_run:
        apply_bench(options, config.bench_run, config.bench_gpu, cat, slo, traffic)
    if not any(o.fit.fits for o in options):
        need = min(o.fit.needed_gib_total for o in options)
        raise BadInput(f"No option fits: every model variant needs more memory than a node of "
                       f"any catalog GPU offers (the smallest needs about {need:.0f} GiB). Add a "
                       "quantized variant (--variants w4a16) or a larger GPU (--catalog).")
    return options


def write_reports(config: CostPlanConfig, report: dict, run_config: dict) -> Path:
    """The run record with cost.md and cost.html, and copies where --markdown/--html ask;
    the run folder."""
    with RunRecord("cost", run_config) as run:
        best = report["options"][0] if report["options"] else {}
        run.record({}, modelled={k: best[k] for k in ("usd_per_month", "usd_per_1m_tokens")
                                 if k in best}, details={"cost": report})
        outputs = {"cost.md": cost_report.markdown(report), "cost.html": cost_report.html(report)}
        for name, text in outputs.items():
            write_text(run.path / name, text)
    for path, name in ((config.markdown_file, "cost.md"), (config.html_file, "cost.html")):
        if path:
            write_text(Path(path), outputs[name])
    return run.path


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
