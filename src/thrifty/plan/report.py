"""The decision report: plan.json (the format's schema), plan.md, plan.html and the terminal."""

import datetime
from pathlib import Path

from thrifty import __version__
from thrifty.core import hardware
from thrifty.core.files import write_json, write_text
from thrifty.core.html_page import esc, page
from thrifty.core.html_page import table as html_table
from thrifty.core.numbers import money
from thrifty.core.output import table
from thrifty.core.runs import git_revision
from thrifty.formats import plan as plan_format
from thrifty.plan import decide, deploy, pipeline
from thrifty.plan.config import PlanConfig

REC_KEYS = ("gpu", "gpu_name", "tensor_parallel", "replicas", "gpus", "usd_per_month",
            "usd_per_1m_tokens", "usd_per_1m_output_tokens", "ttft_ms", "tpot_ms",
            "utilisation_pct", "energy", "figures", "price")


def assemble(config: PlanConfig, model_path: str, results: dict, runner) -> dict:
    paths = {v: pipeline.variant_path(config, model_path, v) for v in config.variants}
    quality = {v: decide.variant_quality(v, results) for v in config.variants}
    variants = [{"name": v, "checkpoint": paths[v],
                 "quantize_args": config.quantize_args(v),
                 "quality": quality[v], "quality_figures": "measured (thrifty eval, here)",
                 "speed_here": decide.variant_speed(v, results, pipeline.bench_skip_reason(v))}
                for v in config.variants]
    cost = results["cost"]
    best, options = decide.judge(cost["options"], decide.variant_names(paths), quality,
                                 config.floor, config.budget_usd)
    recommendation = None
    if best:
        chosen = best["plan_variant"]
        recommendation = {"variant": chosen, "checkpoint": paths[chosen],
                          **{k: best.get(k) for k in REC_KEYS}, "quality": quality[chosen]}
    speed = {v["name"]: v["speed_here"] for v in variants}
    return {
        "schema": plan_format.KIND, "schema_version": plan_format.VERSION,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "thrifty_version": __version__, "git_revision": git_revision(),
        "hardware": hardware.describe(), "model": config.model, "model_path": model_path,
        "adapters": config.adapters,
        "inputs": {"traffic": cost["traffic"], "slo": cost["slo"],
                   "quality_floor": config.floor.as_dict(), "budget_usd_per_month":
                   config.budget_usd, "variants": list(config.variants),
                   "gpus": list(config.gpus) or "all catalog GPUs", "pricing": config.pricing},
        "recommendation": recommendation,
        "nothing_meets": None if best else decide.why_nothing(options, config.floor,
                                                              config.budget_usd),
        "serving": deploy.serving_spec(recommendation, speed, config.adapters),
        "variants": variants, "options": options,
        "calibration": results.get("calibrate"), "cost_run": cost["run"],
        "efficiency_by_gpu": cost.get("efficiency_by_gpu"),
        "stages": [{"name": name, **timing} for name, timing in runner.timings.items()],
        "stages_rerun_for_changed_inputs": runner.changed,
        "notes": [
            "Quality (KLD, top-1, perplexity) and speed here are measured on this machine; "
            "GPU latency, replicas, dollars and energy are modelled by the throughput model "
            "with each GPU's efficiencies (the option's figures column names its source).",
            cost.get("note", ""),
        ],
    }


def write(folder: Path, decided: dict) -> list[Path]:
    """plan.md, plan.html and plan.json in the plan folder (each written atomically)."""
    files = [folder / "plan.md", folder / "plan.html", folder / "plan.json"]
    write_text(files[0], markdown(decided))
    write_text(files[1], html(decided))
    write_json(files[2], decided)
    return files


def _number(value, spec: str, none: str = "–") -> str:
    return none if value is None else format(value, spec)


def headline(decided: dict) -> str:
    rec = decided["recommendation"]
    if not rec:
        return f"No option meets every constraint: {decided['nothing_meets']}."
    quality = rec["quality"] or {}
    energy = rec.get("energy") or {}
    quality_text = ("the base itself" if quality.get("reference") else
                    f"top-1 agreement {_number(quality.get('top1_agreement_pct'), '.1f')}%, "
                    f"KLD {_number(quality.get('kld_mean'), '.4f')}, perplexity "
                    f"{_number(quality.get('perplexity_delta_pct'), '+.1f')}% (measured here)")
    return (f"Serve {rec['variant']} on {rec['gpu_name']}: {rec['replicas']} replica"
            f"{'s' if rec['replicas'] > 1 else ''} x {rec['tensor_parallel']} GPU, "
            f"{money(rec['usd_per_month'])}/month ({rec['price']['provider']} "
            f"{decided['inputs']['pricing']} price of {rec['price']['date']}), "
            f"${rec['usd_per_1m_tokens']:.4f}/1M tokens (${rec['usd_per_1m_output_tokens']:.4f}"
            f"/1M output), {_number(energy.get('kwh_per_1m_output_tokens'), '.3f')} kWh/1M "
            f"output tokens, TTFT {rec['ttft_ms']:,.0f} ms and TPOT {rec['tpot_ms']:.1f} ms at "
            f"peak ({rec['figures']}); quality vs base: {quality_text}.")


SHORT_VERDICTS = {"slo": "misses the SLO", "fit": "does not fit", "quality": "below the floor",
                  "budget": "over budget", "unavailable": "not available"}


def short_verdict(option: dict) -> str:
    if not option["excluded_by"]:
        return "recommended"
    if option["excluded_by"] == "costlier":
        return option["why"].split(" than")[0].replace("costs ", "+").replace(" more", "")
    return SHORT_VERDICTS[option["excluded_by"]]


def option_rows(decided: dict, short: bool = False) -> list[list[str]]:
    """One row per option; the long form (reports) names each figure's source and the price's
    provider and date, the short one (terminal) only whether it is measured or modelled."""
    rows = []
    for o in decided["options"]:
        figures = o["figures"]
        price = o.get("price") or {}
        rows.append([o["plan_variant"], o["gpu"], str(o.get("tensor_parallel") or "–"),
                     str(o.get("replicas") or "–"), money(o.get("usd_per_month")),
                     _number(o.get("tpot_ms"), ".1f"),
                     ("measured" if figures.startswith("measured") else "modelled") if short
                     else f"{figures}; price {price.get('provider', '–')} "
                          f"{price.get('date', '')}",
                     short_verdict(o) if short else o["why"]])
    return rows


OPTION_HEADERS = ["variant", "GPU", "TP", "replicas", "$/month", "TPOT ms", "figures",
                  "verdict"]


def variant_rows(decided: dict) -> list[list[str]]:
    rows = []
    for v in decided["variants"]:
        q, s = v["quality"] or {}, v["speed_here"]
        last = s["points"][-1] if s.get("measured") else {}
        rows.append([v["name"], _number(q.get("kld_mean"), ".4f"),
                     _number(q.get("top1_agreement_pct"), ".1f"),
                     _number(q.get("perplexity"), ".2f"),
                     _number(last.get("ttft_ms_p50"), ".0f"),
                     _number(last.get("tpot_ms_p50"), ".1f"),
                     _number(last.get("output_tokens_per_s"), ".1f",
                             s.get("reason", "–"))])
    return rows


VARIANT_HEADERS = ["variant", "KLD", "top-1 %", "perplexity", "TTFT p50 ms here",
                   "TPOT p50 ms here", "output tok/s here"]


def markdown(decided: dict) -> str:
    inputs = decided["inputs"]
    lines = [f"# Deployment plan: {decided['model']}", "", f"**{headline(decided)}**", "",
             f"- Traffic: {inputs['traffic']['requests_per_day']:,.0f} requests/day, "
             f"{inputs['traffic']['input_tokens']} in / {inputs['traffic']['output_tokens']} "
             f"out tokens, peak x{inputs['traffic']['peak_factor']:g}; SLO "
             f"{inputs['slo']['text']}; quality floor {inputs['quality_floor']['text']}; "
             f"budget {money(inputs['budget_usd_per_month'], 'none')}",
             *(f"- {note}" for note in decided["notes"] if note), "",
             "## Every option", "", _md_table(OPTION_HEADERS, option_rows(decided)), "",
             f"## The variants, measured here ({hardware.machine_name(decided['hardware'])})", "",
             _md_table(VARIANT_HEADERS, variant_rows(decided)), "",
             "## Stages", "",
             _md_table(["stage", "seconds", "reused"],
                       [[s["name"], f"{s['elapsed_s']:.0f}", "yes" if s["cached"] else "no"]
                        for s in decided["stages"]]), ""]
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(out)


def html(decided: dict) -> str:
    body = (f"<h1>Deployment plan: {esc(decided['model'])}</h1>"
            f"<p class='headline'><strong>{esc(headline(decided))}</strong></p>"
            + "".join(f"<p>{esc(n)}</p>" for n in decided["notes"] if n)
            + "<h2>Every option</h2>"
            + html_table(OPTION_HEADERS, option_rows(decided))
            + "<h2>The variants, measured here</h2>"
            + html_table(VARIANT_HEADERS, variant_rows(decided))
            + "<h2>Stages</h2>"
            + html_table(["stage", "seconds", "reused"],
                         [[s["name"], f"{s['elapsed_s']:.0f}",
                           "yes" if s["cached"] else "no"] for s in decided["stages"]]))
    return page(f"thrifty plan: {decided['model']}", body)


def print_terminal(decided: dict) -> None:
    table("The variants, measured here", VARIANT_HEADERS, variant_rows(decided))
    table("Every option, best first (plan.md says why each lost)", OPTION_HEADERS,
          option_rows(decided, short=True)[:15])
    print(headline(decided))
    for path in decided.get("files", []):
        print(f"Wrote {path}")
