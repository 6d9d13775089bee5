"""The cost report as one dict (result.json), a terminal table, markdown and an HTML page."""

import datetime

from thrifty.core.html_page import COLORS, Plots, Points, esc, figure, page, scatter_chart
from thrifty.core.html_page import table as html_table
from thrifty.core.numbers import by_size, money
from thrifty.core.output import table
from thrifty.cost import serving
from thrifty.cost.catalog import HOURS_PER_MONTH, PRICE_KINDS, Catalog
from thrifty.cost.perf_model import Efficiency


def build(ranked: list, traffic: serving.Traffic, slo: serving.Slo, pricing: str,
          eff: Efficiency | None,
          cat: Catalog, models: tuple[str, ...], hours_per_week: float,
          own: serving.Ownership, tensor_parallel: int | None = None) -> dict:
    rows = [serving.option_row(o, traffic, pricing) for o in ranked]
    priced = [o for o in ranked if o.usd_per_month(pricing) is not None]
    buy = []
    for option in priced[:5]:
        rent = option.prices.get(pricing)
        result = serving.buy_vs_rent(option.gpu, option.gpus, rent, hours_per_week, own)
        buy.append({"variant": option.variant, **result})
    return {
        "schema": "thrifty.cost", "version": 1,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "models": list(models), "traffic": traffic.as_dict(),
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "text": slo.text()},
        "pricing": pricing, "hours_per_month": HOURS_PER_MONTH,
        "efficiency": eff.as_dict() if eff else None,
        "efficiency_by_gpu": {o.gpu.id: o.efficiency.as_dict() for o in ranked if o.efficiency},
        "catalog": cat.files,
        "tensor_parallel": {"given": tensor_parallel, "text": (
            f"{tensor_parallel}, as given (--tensor-parallel)" if tensor_parallel
            else "the smallest tensor-parallel group that holds the model")},
        "options": rows, "buy_vs_rent": buy,
        "note": ("Throughput, latency, replicas and dollars are modelled by the roofline "
                 "throughput model unless an option says measured; prices are dated catalog "
                 "prices."),
    }


def _serving(report: dict) -> list[dict]:
    return [r for r in report["options"] if r.get("usd_per_month") is not None]


def not_ranked(report: dict) -> list[str]:
    """One line per reason an option is not ranked, naming the GPUs it holds for."""
    groups: dict[tuple, list[str]] = {}
    for r in report["options"]:
        if r.get("problem"):
            groups.setdefault((r["model"], r["variant"], r["problem"]), []).append(r["gpu"])
    every = len({r["gpu"] for r in report["options"]})
    return [f"{model} {variant} on {'every GPU' if len(gpus) == every > 1 else ', '.join(gpus)}: "
            f"{problem}" for (model, variant, problem), gpus in groups.items()]


def print_terminal(report: dict, top: int) -> None:
    traffic = report["traffic"]
    rows = []
    for r in _serving(report)[:top]:
        by = r["usd_per_month_by_pricing"]
        rows.append([r["gpu"], f"{r['model']} {r['variant']}", r["tensor_parallel"],
                     r["replicas"], r["gpus"], f"{r['ttft_ms']:,.0f}", f"{r['tpot_ms']:.1f}",
                     f"{r['utilisation_pct']:.0f}%", money(r["usd_per_month"]),
                     *[money(by[k]) for k in PRICE_KINDS if k != report["pricing"]],
                     f"${r['usd_per_1m_input_tokens']:.3f} / ${r['usd_per_1m_output_tokens']:.3f}",
                     "measured" if r["figures"].startswith("measured") else "modelled"])
    others = [k for k in PRICE_KINDS if k != report["pricing"]]
    table(f"Cheapest options for {traffic['requests_per_day']:,.0f} requests/day "
          f"({traffic['input_tokens']} in / {traffic['output_tokens']} out tokens, peak x"
          f"{traffic['peak_factor']:g}) within {report['slo']['text']}; GPUs per replica: "
          f"{report['tensor_parallel']['text']}; {report['pricing']} prices, 730 h/month",
          ["GPU", "model", "TP", "replicas", "GPUs", "TTFT ms", "TPOT ms", "util",
           f"$/month {report['pricing']}", *[f"$/month {k}" for k in others],
           "$/1M in / out", "figures"], rows)
    blocked = not_ranked(report)
    if blocked:
        more = [f"... and {len(blocked) - 6} more (cost.md lists them all)"] \
            if len(blocked) > 6 else []
        print("\n".join(["Not ranked:", *[f"- {line}" for line in blocked[:6]], *more]))
    for line in efficiency_lines(report) + quality_lines(report):
        print(line)
    for b in report["buy_vs_rent"][:1]:
        if b.get("available"):
            even = b["break_even_hours_per_week"]
            print(f"Buy or rent ({b['gpus']} x {b['gpu']}, {b['years']:g} years): buying breaks "
                  f"even above {even:g} h/week against ${b['rent_price']['usd_per_gpu_hour']:g}/h "
                  f"({b['rent_price']['provider']}); at {b['hours_per_week']:g} h/week "
                  f"{b['cheaper']} is cheaper." if even else
                  f"Buy or rent ({b['gpu']}): renting is cheaper at any use.")


def _kwh(row: dict) -> str:
    energy = row.get("energy")
    return f"{energy['kwh_per_1m_output_tokens']:.3f}" if energy else "–"


def _kwh_month(row: dict) -> str:
    energy = row.get("energy")
    return f"{energy['kwh_per_month']:,.0f}" if energy else "–"


def markdown(report: dict) -> str:
    traffic = report["traffic"]
    lines = [
        f"# Serving cost: {', '.join(report['models'])}",
        "",
        f"- Traffic: {traffic['requests_per_day']:,.0f} requests/day, "
        f"{traffic['input_tokens']} input and {traffic['output_tokens']} output tokens, "
        f"peak {traffic['peak_factor']:g} x average ({traffic['peak_requests_per_s']:.3f} req/s)",
        f"- SLO per replica: {report['slo']['text']}",
        f"- Ranked by {report['pricing']} price; $/month at {report['hours_per_month']} h",
        f"- GPUs per replica (TP): {report['tensor_parallel']['text']}",
        f"- {report['note']}",
        f"- Energy (modelled): each GPU draws its catalog TDP scaled from "
        f"{serving.IDLE_POWER_SHARE:.0%} (idle) to 100% by the option's average utilisation; "
        "no PUE",
        *(f"- {line}" for line in efficiency_lines(report) + quality_lines(report)),
        "",
        "| rank | GPU | model | TP | replicas | GPUs | TTFT ms | TPOT ms | utilisation | "
        "$/month on-demand | spot | reserved | $/1M input | $/1M output | kWh/month "
        "(modelled) | kWh/1M output (modelled) | figures | price source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(_serving(report), 1):
        by = r["usd_per_month_by_pricing"]
        price = r.get("price") or {}
        lines.append(
            f"| {n} | {r['gpu']} | {r['model']} {r['variant']} | {r['tensor_parallel']} | "
            f"{r['replicas']} | {r['gpus']} | {r['ttft_ms']:,.0f} | {r['tpot_ms']:.1f} | "
            f"{r['utilisation_pct']:.0f}% | {money(by['on-demand'])} | {money(by['spot'])} | "
            f"{money(by['reserved'])} | ${r['usd_per_1m_input_tokens']:.4f} | "
            f"${r['usd_per_1m_output_tokens']:.4f} | {_kwh_month(r)} | {_kwh(r)} | "
            f"{r['figures']} | "
            f"{price.get('provider', '')} {price.get('date', '')} |")
    blocked = not_ranked(report)
    if blocked:
        lines += ["", "Not ranked:", ""]
        lines += [f"- {line}" for line in blocked]
    if report["buy_vs_rent"]:
        lines += ["", "## Buy or rent", "",
                  "| GPU | GPUs | years | rent $/GPU-h | break-even h/week | at use h/week | "
                  "cheaper | purchase price source |", "|---|---|---|---|---|---|---|---|"]
        for b in report["buy_vs_rent"]:
            if b.get("available"):
                lines.append(f"| {b['gpu']} | {b['gpus']} | {b['years']:g} | "
                             f"{b['rent_price']['usd_per_gpu_hour']:g} | "
                             f"{b['break_even_hours_per_week']} | {b['hours_per_week']:g} | "
                             f"{b['cheaper']} | {b['purchase_price']['source']} "
                             f"({b['purchase_price']['date']}) |")
            else:
                lines.append(f"| {b['gpu']} | | | | | | | {b['reason']} |")
    return "\n".join(lines) + "\n"


def _hover(r: dict, pricing: str) -> str:
    """One option's hover text: GPU, variant, $/month, latency and where the figures come from."""
    return "<br>".join(esc(line) for line in [
        f"{r['gpus']} x {r['gpu']}, {r['model']} {r['variant']}",
        f"{money(r['usd_per_month'])}/month ({pricing})",
        f"TTFT {by_size(r['ttft_ms'])} ms, TPOT {by_size(r['tpot_ms'])} ms", r["figures"]])


def cost_latency_chart(report: dict, plots: Plots | None = None) -> str:
    """$/month against modelled TPOT: one point per option, one legend entry per model
    variant; hovering a point names its GPU, variant, price and latency."""
    rows = _serving(report)
    if not rows:
        return "<p class='note'>No option serves this traffic within the SLO.</p>"
    variants = sorted({f"{r['model']} {r['variant']}" for r in rows})
    groups = {v: Points(v, COLORS[i % len(COLORS)]) for i, v in enumerate(variants)}
    for r in rows:
        group = groups[f"{r['model']} {r['variant']}"]
        group.x.append(r["tpot_ms"])
        group.y.append(r["usd_per_month"])
        group.hover.append(_hover(r, report["pricing"]))
        group.ringed.append(r["figures"].startswith("measured"))
    chart = scatter_chart("Cost vs TPOT", list(groups.values()),
                          "TPOT at the operating point (ms, modelled)",
                          f"$/month ({report['pricing']})")
    return figure(plots or Plots(), "Monthly cost against latency, per option", [chart],
                  note="Lower left is cheaper and faster. Hover a point for its GPU and "
                       "figures; points with a black ring are measured.")


def _price_text(row: dict) -> str:
    price = row.get("price") or {}
    return f"{price.get('provider', '')} {price.get('date', '')}".strip()


def html(report: dict) -> str:
    traffic = report["traffic"]
    header = (f"<h1>Serving cost: {esc(', '.join(report['models']))}</h1>"
              f"<p>{traffic['requests_per_day']:,.0f} requests/day · {traffic['input_tokens']} "
              f"in / {traffic['output_tokens']} out tokens · peak ×{traffic['peak_factor']:g} · "
              f"SLO {esc(report['slo']['text'])} · {esc(report['pricing'])} prices · GPUs "
              f"per replica: {esc(report['tensor_parallel']['text'])}</p>"
              f"<p class='banner'>{esc(report['note'])}</p>")
    rows = [[str(n), r["gpu"], f"{r['model']} {r['variant']}", str(r["tensor_parallel"]),
             str(r["gpus"]),
             by_size(r["ttft_ms"]), by_size(r["tpot_ms"]), money(r["usd_per_month"]),
             f"${r['usd_per_1m_output_tokens']:.4f}", _kwh_month(r), _kwh(r), r["figures"],
             _price_text(r)]
            for n, r in enumerate(_serving(report), 1)]
    ranking = html_table(["rank", "GPU", "model", "TP", "GPUs", "TTFT ms", "TPOT ms", "$/month",
                          "$/1M output", "kWh/month (modelled)", "kWh/1M output (modelled)",
                          "figures", "price"], rows)
    body = (f"{header}<h2>Cost against latency</h2>{cost_latency_chart(report, Plots())}"
            f"<h2>Ranking</h2>{ranking}<footer>thrifty cost · modelled unless marked measured · "
            f"prices dated in the catalog</footer>")
    return page("thrifty cost", body)


def quality_lines(report: dict) -> list[str]:
    """Each costed checkpoint's quality from `cost --quality` (measured by `thrifty eval`)."""
    if not report.get("quality"):
        return []
    lines = [f"Quality, measured by `thrifty eval` against {report['quality']['reference']} "
             f"({report['quality']['run']}):"]
    seen = set()
    for row in report["options"]:
        q = row.get("quality")
        if not q or q["label"] in seen:
            continue
        seen.add(q["label"])
        head = f"  {row['model']} {row['variant']}: perplexity {q['perplexity']:.2f}"
        lines.append(head + (" (the reference)" if q["reference"] else
                             f", KL divergence {q['kld_mean']:.3f} nats, top-1 agreement "
                             f"{q['top1_agreement_pct']:.1f}%, Δ log-perplexity "
                             f"{q['delta_log_ppl']:+.3f}" if q["kld_mean"] is not None else
                             " (not compared: another tokenizer)"))
    missing = sorted({r["model"] for r in report["options"]}
                     - {r["model"] for r in report["options"] if r.get("quality")})
    if missing:
        lines.append(f"  not in that run (or only modelled variants): {', '.join(missing)}")
    return lines


def efficiency_lines(report: dict) -> list[str]:
    """Which efficiencies the modelled figures used, and where they came from: one line per
    distinct set (one for all GPUs when given, else per GPU from the catalog)."""
    by_text: dict[str, list[str]] = {}
    given = report["efficiency"]
    sets = {"all GPUs": given} if given else report.get("efficiency_by_gpu", {})
    for gpu, eff in sets.items():
        text = (f"memory efficiency {eff['memory']:.3g}, compute efficiency "
                f"{eff['compute']:.3g}, step overhead {eff['overhead_ms']:.3g} ms, request lag "
                f"{eff['lag_ms']:.3g} ms ({eff['source']})")
        by_text.setdefault(text, []).append(gpu)
    return [f"Modelled for {', '.join(gpus)} with {text}." for text, gpus in by_text.items()]
