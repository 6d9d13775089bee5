"""From the stages' results to one decision: each variant's measured quality and speed, every
GPU x variant option with the reason it lost, and the recommendation."""

from thrifty.plan.config import QualityFloor

QUALITY_KEYS = ("kld_mean", "kld_mean_ci95", "kld_p90", "kld_p99", "top1_agreement_pct",
                "top1_agreement_pct_ci95", "delta_log_ppl", "delta_log_ppl_ci95",
                "delta_log_ppl_within_noise")


def variant_quality(variant: str, results: dict) -> dict | None:
    """The variant's quality against the base from its eval stage (measured); the base's
    own row for bf16."""
    evals = [r for name, r in results.items() if name.startswith("eval ")]
    if variant == "bf16":  # the reference itself; its perplexity where an eval measured it
        return {"reference": True, "perplexity": evals[0]["rows"][0]["perplexity"]
                if evals else None, "perplexity_delta_pct": 0.0, "top1_agreement_pct": 100.0,
                "kld_mean": 0.0, "tasks": _tasks(evals[0], 0) if evals else []}
    result = results.get(f"eval {variant}")
    if not result:
        return None
    row = result["rows"][1]
    return {"reference": False, "perplexity": row["perplexity"],
            "perplexity_delta_pct": row["perplexity_delta_pct"],
            "weights_bytes": row["weights_bytes"], "run": result["run"],
            **{k: (row.get("vs_base") or {}).get(k) for k in QUALITY_KEYS},
            "tasks": _tasks(result, 1)}


def _tasks(result: dict, index: int) -> list[dict]:
    rows = result.get("task_rows") or []
    label = result["rows"][index]["label"]
    return [r for r in rows if r.get("label") == label]


def variant_speed(variant: str, results: dict, skipped: str) -> dict:
    """What `thrifty bench` measured for the variant on this machine, per load point."""
    result = results.get(f"bench {variant}")
    if not result:
        return {"measured": False, "reason": skipped or "not benched"}
    bench = result["bench"]
    points = [{"load": p["load"], "kind": p["kind"],
               "ttft_ms_p50": p["summary"].get("ttft_ms_p50"),
               "tpot_ms_p50": p["summary"].get("tpot_ms_p50"),
               "output_tokens_per_s": p["summary"].get("output_throughput_tokens_per_s"),
               "requests_per_s": p["summary"].get("request_throughput_per_s"),
               "errors": p["summary"].get("errors_count", 0)} for p in bench["points"]]
    return {"measured": True, "run": result["run"], "hardware": bench.get("hardware"),
            "points": points, "kv_cache_tokens": (bench.get("memory") or {}).get(
                "kv_cache_tokens"), "flags": (bench.get("target") or {}).get("flags")}


def judge(options: list[dict], variant_of: dict[str, str], quality: dict[str, dict | None],
          floor: QualityFloor, budget: float | None) -> tuple[dict | None, list[dict]]:
    """Every option with its verdict; the recommendation is the cheapest that serves the
    traffic within the SLO, keeps the quality floor and fits the budget."""
    judged = []
    for row in options:
        variant = variant_of.get(row["model"])
        if variant is None:
            continue
        option = {**row, "plan_variant": variant, "variant_quality": quality.get(variant)}
        option["excluded_by"], option["why"] = _exclusion(option, quality.get(variant), floor,
                                                          budget)
        judged.append(option)
    candidates = [o for o in judged if not o["excluded_by"]]
    # Equal cost: the variant closer to the base wins, then the faster option.
    best = min(candidates, key=lambda o: (o["usd_per_month"], _kld(o),
                                          o.get("tpot_ms") or 0)) if candidates else None
    for option in candidates:
        if option is not best:
            more = option["usd_per_month"] - best["usd_per_month"]
            option["excluded_by"] = "costlier"
            option["why"] = (f"costs ${more:,.0f}/month more than the recommendation "
                             f"(+{100 * more / best['usd_per_month']:.0f}%)" if more > 0 else
                             "costs the same as the recommendation, which keeps more quality "
                             "or runs faster")
    if best:
        best["why"] = "recommended: the cheapest option meeting every constraint"
    judged.sort(key=lambda o: (o is not best, o.get("usd_per_month") is None,
                               o.get("usd_per_month") or 0))
    return best, judged


def _kld(option: dict) -> float:
    return (option["variant_quality"] or {}).get("kld_mean") or 0.0


def _exclusion(option: dict, quality: dict | None, floor: QualityFloor,
               budget: float | None) -> tuple[str, str]:
    problem = option.get("problem") or ""
    if problem:
        kind = ("slo" if "SLO" in problem else "fit" if "memory" in problem or "GiB" in problem
                else "unavailable")
        return kind, problem
    if option.get("usd_per_month") is None:
        return "unavailable", f"no {option['pricing']} price for the {option['gpu']} in the catalog"
    misses = floor.shortfalls(quality) if quality else []
    if misses:
        return "quality", "below the quality floor: " + "; ".join(misses)
    if budget is not None and option["usd_per_month"] > budget:
        over = option["usd_per_month"] - budget
        return "budget", (f"${option['usd_per_month']:,.0f}/month is ${over:,.0f} over the "
                          f"${budget:,.0f} budget")
    return "", ""


def why_nothing(judged: list[dict], floor: QualityFloor, budget: float | None) -> str:
    """Which constraint left no option, and by how much."""
    if not judged:
        return "no option was costed"
    served = [o for o in judged if o["excluded_by"] not in ("slo", "fit", "unavailable")]
    if not served:
        counts = {kind: sum(o["excluded_by"] == kind for o in judged)
                  for kind in ("slo", "fit", "unavailable")}
        slow = [o for o in judged if o["excluded_by"] == "slo"]
        example = (f"; e.g. {slow[0]['plan_variant']} on {slow[0]['gpu']} "
                   f"{slow[0]['why']}" if slow else "")
        return (f"no option can serve the traffic: {counts['slo']} of {len(judged)} miss the "
                f"SLO even with one request in flight, {counts['fit']} do not fit the GPU and "
                f"{counts['unavailable']} are not available (no price or no kernel){example}; "
                "relax the SLO, add faster GPUs (--gpus) or smaller variants")
    floored = [o for o in served if o["excluded_by"] != "quality"]
    if not floored:
        best = min(served, key=lambda o: (o["variant_quality"] or {}).get("kld_mean") or 0)
        return (f"the quality floor ({floor.text()}) excludes every option that meets the SLO; "
                f"the closest is {best['plan_variant']}: {best['why'].split(': ', 1)[1]}")
    cheapest = min(floored, key=lambda o: o["usd_per_month"])  # all priced by now
    return (f"the budget (${budget:,.0f}/month) excludes every option that meets the SLO and "
            f"the quality floor; the cheapest, {cheapest['plan_variant']} on "
            f"{cheapest['gpu']}, costs ${cheapest['usd_per_month']:,.0f}/month, "
            f"${cheapest['usd_per_month'] - budget:,.0f} over")


def variant_names(paths: dict[str, str]) -> dict[str, str]:
    """cost's model column (the reference as passed) -> the plan's variant name."""
    return {path: variant for variant, path in paths.items()}
