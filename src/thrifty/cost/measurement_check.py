"""Predict measured vLLM runs (cost/measurements.py) by replaying each row's workload through
the scheduler model, and report the error per row, per model and per metric.

Each experiment is replayed once: Poisson arrivals at each stage's rate (gaps rescaled so exactly
rate x duration requests fall in the stage, as the load generator does), prompts cycling through
the fixed set with vLLM's prefix cache, the row's vLLM limits and KV cache. A stage row is read
from its stage's requests, a whole-run row from all of them.
"""

import random
import statistics
from dataclasses import replace

from thrifty.core.stats import percentile
from thrifty.cost import fit as memory_fit
from thrifty.cost.measurements import PROMPTS_PER_GROUP, MeasuredRow, Scenario
from thrifty.cost.perf_model import Efficiency, Hardware
from thrifty.cost.simulate import Prompt, SimRequest, Workload, simulate

SATURATED_TTFT_MS = 1000.0  # the measurements' own "queueing" criterion: mean TTFT above 1 s
LATENCY_METRICS = ("ttft_ms_mean", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms", "e2e_ms_mean",
                   "e2e_ms_p90", "e2e_ms_p99")


def workload(scenario: Scenario, horizon_s: float | None = None,
             seed: int = 0) -> tuple[Workload, list[int]]:
    """The scenario's requests as an open-loop workload, and each request's stage. With a
    horizon, each stage is cut to that many seconds and starts with every prompt cached (the
    steady state of a full-length run, where the first pass is a few percent of requests)."""
    rng = random.Random(seed)
    arrivals, stages, start = [], [], 0.0
    for index, stage in enumerate(scenario.stages):
        duration = min(stage.duration_s, horizon_s) if horizon_s else stage.duration_s
        count = max(1, round(stage.rate_per_s * duration))
        gaps = [rng.expovariate(stage.rate_per_s) for _ in range(count)]
        scale = duration / sum(gaps)
        at = start
        for gap in gaps:
            at += gap * scale
            arrivals.append(at)
            stages.append(index)
        start += duration
    prompts = [Prompt(text=n % scenario.unique_prompts,
                      group=(n % scenario.unique_prompts) // PROMPTS_PER_GROUP,
                      shared_tokens=scenario.shared_prefix_tokens) for n in range(len(arrivals))]
    kv = scenario.kv_tokens or _modelled_kv_tokens(scenario)
    lengths = [(scenario.input_tokens, scenario.output_tokens)] * len(arrivals)
    return Workload(lengths, arrivals_s=arrivals, kv_tokens=kv, tp=scenario.tp, prompts=prompts,
                    prefix_cache_tokens=kv + scenario.cpu_offload_tokens,
                    prefix_cache_warm=horizon_s is not None), stages


def _modelled_kv_tokens(scenario: Scenario) -> int:
    context = scenario.input_tokens + scenario.output_tokens
    return memory_fit.fit(scenario.shape, scenario.gpu, context, 1, scenario.tp).kv_tokens_capacity


def hardware(scenario: Scenario, allreduce_latency_us: float | None = None) -> Hardware:
    """The row's GPU with its vLLM limits (and, when fitting it, another all-reduce latency)."""
    hw = replace(Hardware.from_gpu(scenario.gpu), max_batched_tokens=scenario.max_batched_tokens,
                 max_num_seqs=scenario.max_num_seqs)
    if allreduce_latency_us is not None:
        hw = replace(hw, allreduce_latency_us=allreduce_latency_us)
    return hw


def replay(scenario: Scenario, eff: Efficiency, horizon_s: float | None = None,
           allreduce_latency_us: float | None = None) -> list[tuple[int, SimRequest]]:
    """Every simulated request of the scenario with its stage index."""
    work, stages = workload(scenario, horizon_s)
    done = simulate(scenario.shape, hardware(scenario, allreduce_latency_us), eff, work)
    # arrivals increase with the request's index, so arrival order gives each its stage
    ordered = sorted(done, key=lambda r: r.arrival_s)
    return list(zip(stages, ordered, strict=True))


def predict_row(row: MeasuredRow, replayed: list[tuple[int, SimRequest]]) -> dict[str, float]:
    """The row's metrics, from the replayed requests of its stage (or all of them)."""
    chosen = [r for s, r in replayed if row.stage_index in (-1, s)]
    ttft = [r.ttft_s * 1000 for r in chosen]
    e2e = [r.e2e_s * 1000 for r in chosen]
    out = {"ttft_ms_mean": statistics.fmean(ttft), "e2e_ms_mean": statistics.fmean(e2e)}
    for pct in (90, 99):
        out[f"ttft_ms_p{pct}"] = percentile(ttft, pct)
        out[f"e2e_ms_p{pct}"] = percentile(e2e, pct)
    out["tpot_ms"] = (out["e2e_ms_mean"] - out["ttft_ms_mean"]) / max(
        1, row.scenario.output_tokens - 1)
    return out


def check_rows(rows: list[MeasuredRow], eff: Efficiency, horizon_s: float | None = None,
               progress=None, allreduce_latency_us: float | None = None) -> list[dict]:
    """Predicted against measured for every row (replaying each experiment once)."""
    replays: dict[tuple, list] = {}
    results = []
    for row in rows:
        if not row.usable:
            results.append({"row_id": row.row_id, "model": row.scenario.model,
                            "skipped": f"quality flag: {row.flag}"})
            continue
        key = row.scenario.key()
        if key not in replays:
            replays[key] = replay(row.scenario, eff, horizon_s, allreduce_latency_us)
            if progress:
                progress(len(replays))
        predicted = predict_row(row, replays[key])
        results.append(_compare(row, predicted))
    return results


def _compare(row: MeasuredRow, predicted: dict[str, float]) -> dict:
    entry = {"row_id": row.row_id, "model": row.scenario.model, "tp": row.scenario.tp,
             "stage": row.stage_index, "flag": row.flag,
             "predicted": {k: round(v, 3) for k, v in predicted.items()},
             "measured": {k: v for k, v in row.measured.items() if k in LATENCY_METRICS}}
    if row.saturated:
        entry["saturation"] = {"measured": True,
                               "predicted": predicted["ttft_ms_mean"] > SATURATED_TTFT_MS}
        return entry
    entry["predicted_saturated"] = predicted["ttft_ms_mean"] > SATURATED_TTFT_MS
    entry["error_pct"] = {k: round((predicted[k] - m) / m * 100, 2)
                          for k, m in entry["measured"].items() if m}
    return entry


def summarize_errors(results: list[dict]) -> dict:
    """Median and 90th percentile of the absolute error per metric, overall and per model;
    the saturation verdicts; the rows skipped and why."""
    checked = [r for r in results if "error_pct" in r]
    summary = {"rows": len(results), "rows_checked": len(checked),
               "metrics": _error_stats(checked), "per_model": {}}
    for model in sorted({r["model"] for r in checked}):
        summary["per_model"][model] = _error_stats([r for r in checked if r["model"] == model])
    saturated = [r for r in results if "saturation" in r]
    summary["saturation"] = {
        "rows": len(saturated),
        "predicted_saturated": sum(r["saturation"]["predicted"] for r in saturated),
        "false_alarms": sum(r.get("predicted_saturated", False) for r in checked)}
    summary["skipped"] = [{"row_id": r["row_id"], "reason": r["skipped"]}
                          for r in results if "skipped" in r]
    return summary


def _error_stats(rows: list[dict]) -> dict:
    stats = {}
    for metric in LATENCY_METRICS:
        errors = [r["error_pct"][metric] for r in rows if metric in r["error_pct"]]
        if errors:
            absolute = [abs(e) for e in errors]
            stats[metric] = {"rows": len(errors),
                             "median_abs_pct": round(percentile(absolute, 50), 1),
                             "p90_abs_pct": round(percentile(absolute, 90), 1),
                             "median_signed_pct": round(percentile(errors, 50), 1)}
    return stats
