"""The soak's figures from its raw record (benchmarks/soak.py): outcomes, hot-load latency, and
the server memory's slope after warm-up with its 95% interval."""

import math
import statistics

from thrifty.core.stats import percentile

WARMUP_SHARE = 0.2  # the first fifth of the samples: the server's pools still filling


def slope_mib_per_min(samples: list[dict], key: str, warmup_share: float = WARMUP_SHARE) -> dict:
    """Least-squares slope of memory over time after warm-up, with a 95% interval (t ~ 2)."""
    kept = samples[int(len(samples) * warmup_share):]
    if len(kept) < 3:
        return {"slope_mib_per_min": None, "ci95": None, "samples_count": len(kept)}
    xs = [s["at_s"] / 60 for s in kept]
    ys = [s[key] for s in kept]
    fit = statistics.linear_regression(xs, ys)
    residuals = [y - (fit.slope * x + fit.intercept) for x, y in zip(xs, ys, strict=True)]
    spread_x = sum((x - statistics.fmean(xs)) ** 2 for x in xs)
    error = math.sqrt(sum(r * r for r in residuals) / (len(xs) - 2) / spread_x) if spread_x else 0
    return {"slope_mib_per_min": round(fit.slope, 3),
            "ci95": [round(fit.slope - 2 * error, 3), round(fit.slope + 2 * error, 3)],
            "first_mib": ys[0], "last_mib": ys[-1], "samples_count": len(kept)}


def summarize(raw: dict) -> dict:
    outcomes: dict[str, int] = {}
    for request in raw["requests"]:
        outcomes[request["outcome"]] = outcomes.get(request["outcome"], 0) + 1
    loads = [h["load_s"] for h in raw["hot_loads"]]
    failed = sum(n for kind, n in outcomes.items() if kind.startswith("failed"))
    series = {"rss_mib": raw["memory"], "uss_mib": raw.get("memory_uss", raw["memory"])}
    if raw.get("server_died_at_s"):  # the slopes of a live server: samples before it failed
        died = raw["server_died_at_s"]  # the first failure of the minute before its death
        end = min((r["at_s"] for r in raw["requests"] if r["outcome"].startswith("failed")
                   and r["at_s"] > died - 60), default=died)
        series = {key: [m for m in samples if m["at_s"] < end]
                  for key, samples in series.items()}
    memory = {key: slope_mib_per_min(samples, key) for key, samples in series.items()}
    # the same over the second half only: a server whose pools fill for longer than the
    # first fifth shows it here (reported beside the goal's figure, never in its place)
    second_half = {key: slope_mib_per_min(samples, key, 0.5) for key, samples in series.items()}
    by_process = _slopes_by_process(series["rss_mib"])
    flat = all(m["ci95"] is not None and m["ci95"][0] <= 0 <= m["ci95"][1]
               for m in memory.values())
    distinct = sum(len({texts[i] for texts in raw["references"].values()})
                   == len(raw["references"]) for i in range(len(next(iter(
                       raw["references"].values())))))
    return {"requests_count": len(raw["requests"]), "outcomes": outcomes,
            "failed_count": failed, "misrouted_count": outcomes.get("misrouted", 0),
            "prompts_telling_every_model_apart": distinct,
            "hot_loads_count": len(loads),
            "churn_errors_count": len(raw.get("churn_errors", [])),
            "hot_load_ms_p50": _ms(percentile(loads, 50)),
            "hot_load_ms_p99": _ms(percentile(loads, 99)), "memory": memory,
            "memory_second_half": second_half, "rss_second_half_by_process": by_process,
            "server_died_at_s": raw.get("server_died_at_s"),
            "meets_goal": (failed == 0 and outcomes.get("misrouted", 0) == 0 and flat
                           and not raw.get("churn_errors") and not raw.get("server_died_at_s")),
            "memory_flat_within_noise": flat}


def _slopes_by_process(samples: list[dict]) -> dict:
    """The second half's RSS slope of each of the server's processes (runs recorded before the
    soak kept them have none)."""
    roles = sorted({role for s in samples for role in s.get("by_process", {})})
    series = {role: [{"at_s": s["at_s"], "rss_mib": s["by_process"][role]} for s in samples
                     if role in s.get("by_process", {})] for role in roles}
    return {role: slope_mib_per_min(kept, "rss_mib", 0.5) for role, kept in series.items()}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def markdown(result: dict) -> str:
    s, settings, fp = result["summary"], result["settings"], result["fingerprint"]
    hw = fp["hardware"]
    lines = [
        "# Adapter churn soak", "",
        f"Measured: `benchmarks/soak.py --minutes {settings['minutes']:g}` at "
        f"{fp.get('git_revision') or fp.get('thrifty_version')}, {result['date']}, on "
        f"{hw['cpu_model']} ({hw['cpu_cores']} cores). {settings['base']} served by "
        f"`thrifty serve` with the 4 demo adapters; {settings['clients']} streaming clients "
        f"({settings['max_tokens']} tokens, greedy); "
        + (f"one adapter unloaded and loaded back every {settings['churn_every_s']:g} s"
           if settings["churn_every_s"] else "no churn (the control run)")
        + f". Raw data: {result['name']}.json."
        + (f" {result['note']}" if result.get("note") else ""), "",
        f"Goal (0 failed, 0 misrouted, memory flat after warm-up): "
        f"{'met' if s['meets_goal'] else 'NOT met'}."
        + (f" **The server died {s['server_died_at_s']:g} s into the run**, which ended the "
           "run there (its log names the cause)." if s.get("server_died_at_s") else ""), "",
        "| outcome | requests |", "|---|---:|",
        *[f"| {kind} | {count} |" for kind, count in sorted(s["outcomes"].items())],
        f"| all | {s['requests_count']} |", "",
        f"Prompts whose completions tell all five models apart: "
        f"{s['prompts_telling_every_model_apart']} of {settings['prompts_count']} "
        "(a misrouted request is recognised on those).", "",
        f"Hot loads: {s['hot_loads_count']}, p50 {s['hot_load_ms_p50']} ms, p99 "
        f"{s['hot_load_ms_p99']} ms; failed unloads or loads: "
        f"{s.get('churn_errors_count', 0)}.", "",
        "| server memory (after the first fifth) | samples | first → last MiB "
        "| slope MiB/min [95% interval] |",
        "|---|---:|---|---|"]
    halves = s.get("memory_second_half", {})
    for label, figures in (("", s["memory"]), (" (second half)", halves)):
        for key, m in figures.items():
            if m["ci95"] is not None:
                lines.append(f"| {key.removesuffix('_mib').upper()}{label} | "
                             f"{m['samples_count']} | {m['first_mib']} → {m['last_mib']} | "
                             f"{m['slope_mib_per_min']} [{m['ci95'][0]}, {m['ci95'][1]}] |")
    for role, m in s.get("rss_second_half_by_process", {}).items():
        if m["ci95"] is not None:
            lines.append(f"| RSS of {role} (second half) | {m['samples_count']} | "
                         f"{m['first_mib']} → {m['last_mib']} | {m['slope_mib_per_min']} "
                         f"[{m['ci95'][0]}, {m['ci95'][1]}] |")
    return "\n".join(lines) + "\n"
