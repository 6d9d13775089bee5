"""One `thrifty bench` run: warm up, then every load point in turn with the server sampled
alongside, then the aggregates (per point and per adapter), the SLO verdicts and the memory
picture, as one versioned `bench` dict that the reports read.

Ctrl-C stops the run; everything that finished before it is kept and reported.
"""

import secrets
import time
from dataclasses import dataclass, field

from thrifty.benchmark import metrics, workload
from thrifty.benchmark.loadgen import Job, LoadRun, Profile
from thrifty.benchmark.memory import GpuPlacement
from thrifty.benchmark.metrics import RequestRecord
from thrifty.benchmark.monitor import Monitor
from thrifty.formats.bench_result import BENCH_SCHEMA_VERSION


@dataclass
class Target:
    """The server under test."""
    url: str
    base_model: str  # the served name of the base model
    api_key: str | None = None
    started_by_thrifty: bool = False
    server_pid: int | None = None
    startup_memory: dict = field(default_factory=dict)  # from vLLM's start-up log
    max_model_len: int | None = None  # from /v1/models (vLLM reports it)
    model_path: str | None = None  # the model's local folder, when known
    served: list[str] = field(default_factory=list)  # model names, the base first
    loadable: list[str] = field(default_factory=list)  # adapters loadable on first use
    flags: dict | None = None  # thrifty serve's plan, when thrifty started it
    gpu_placement: GpuPlacement | None = None  # where it runs, when thrifty started it


@dataclass
class BenchPlan:
    profile_kind: str  # "concurrency", "constant" or "poisson"
    loads: list[float]
    prompts: list[workload.Prompt]
    warmup_prompts: list[workload.Prompt]
    requests_per_point: int | None
    duration_s: float | None
    seed: int
    workload_info: dict
    mix: dict[str, float] | None = None
    max_concurrency: int | None = None
    slo: dict[str, float] | None = None
    slo_attainment_pct: float = 90.0
    sample_every_s: float = 1.0  # server sampling (/metrics, memory); 0 turns it off
    request_timeout_s: float = 600.0
    ignore_eos: bool = True
    label: str = ""
    hardware: str | None = None
    # Synthetic prompts are drawn afresh for each load point: vLLM caches prompt prefixes, so
    # a point that resent the previous point's prompts would skip most of their prefill.
    fresh_per_point: bool = False
    # vLLM's `cache_salt`, per run (derived per load point and per pass over the prompts, see
    # loadgen): replayed prompts, and another run's, are never served from the prefix cache.
    # None sends no salt.
    cache_salt: str | None = field(default_factory=lambda: f"thrifty-{secrets.token_hex(6)}")

    @property
    def prefix_cache_isolation(self) -> str:
        """How the run keeps vLLM's prefix cache from serving one point another's prompts."""
        fresh = "fresh prompts and " if self.fresh_per_point and self.requests_per_point else ""
        if not self.cache_salt:
            return "fresh prompts per load point" if fresh else "none"
        passes = " and per pass over the prompts" if self.duration_s else ""
        return f"{fresh}cache_salt per load point{passes}"

    def prompts_for(self, index: int) -> list[workload.Prompt]:
        if not self.fresh_per_point or not self.requests_per_point:
            return self.prompts
        n = self.requests_per_point
        return self.prompts[index * n:(index + 1) * n]

    def jobs(self, prompts: list[workload.Prompt], target: Target) -> list[Job]:
        names = (workload.assign_adapters(len(prompts), self.mix, self.seed) if self.mix
                 else [workload.BASE] * len(prompts))
        return [Job(target.base_model if name == workload.BASE else name, name, prompt)
                for name, prompt in zip(names, prompts, strict=True)]

    def profile(self, load: float) -> Profile:
        return Profile(self.profile_kind, load, self.max_concurrency)


def run(plan: BenchPlan, target: Target, on_point=lambda label, total: None,
        on_done=lambda record: None) -> dict:
    """Run every load point; returns the bench dict (with "interrupted" set on Ctrl-C)."""
    load = LoadRun(target.url, target.api_key, ignore_eos=plan.ignore_eos,
                   timeout_s=plan.request_timeout_s, on_done=on_done, cache_salt=plan.cache_salt)
    monitor = Monitor(target.url.rstrip("/").removesuffix("/v1") + "/metrics", target.api_key,
                      target.server_pid, plan.sample_every_s, target.gpu_placement)
    points: list[dict] = []
    interrupted = False
    try:
        if plan.warmup_prompts:
            warm = plan.jobs(plan.warmup_prompts, target)
            on_point("warm-up (not measured)", len(warm))
            load.run_point(-1, Profile("concurrency", min(len(warm), 4)), warm, plan.seed,
                           record=False)
        for index, value in enumerate(plan.loads):
            profile = plan.profile(value)
            on_point(profile.label, plan.requests_per_point)
            monitor.start()
            try:
                load.run_point(index, profile, plan.jobs(plan.prompts_for(index), target),
                               plan.seed + index, plan.duration_s)
            finally:
                monitor.stop()
                points.append({"index": index, "kind": plan.profile_kind, "load": value,
                               "label": profile.label, "interrupted": False,
                               "server": monitor.summary()})
    except KeyboardInterrupt:
        load.stop.set()
        interrupted = True
        if points:
            points[-1]["interrupted"] = True
    return assemble(plan, target, points, list(load.records), interrupted)


def assemble(plan: BenchPlan, target: Target, points: list[dict],
             records: list[RequestRecord], interrupted: bool) -> dict:
    """Aggregate the records of each point (whole and per adapter) into the bench dict."""
    for point in points:
        mine = [r for r in records if r.point == point["index"]]
        span = metrics.duration_s(mine)
        point["summary"] = metrics.aggregate(mine, plan.slo, span)
        adapters = sorted({r.adapter for r in mine})
        point["per_adapter"] = {
            name: metrics.aggregate([r for r in mine if r.adapter == name], plan.slo, span)
            for name in adapters}
        point["errors"] = metrics.error_kinds(mine)
        point["errors_by_kind"] = metrics.errors_by_kind(mine)
        point["slo_met"] = (metrics.point_meets_slo(point["summary"], plan.slo_attainment_pct)
                            if plan.slo else None)
    met = [p["load"] for p in points if p["slo_met"] and not p["interrupted"]]
    return {
        "bench_schema_version": BENCH_SCHEMA_VERSION,
        "label": plan.label or target.base_model,
        "interrupted": interrupted,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target": {"url": target.url, "base_model": target.base_model,
                   "model_path": target.model_path,
                   "started_by_thrifty": target.started_by_thrifty, "flags": target.flags},
        "hardware": plan.hardware,
        "workload": {**plan.workload_info, "requests_per_point": plan.requests_per_point,
                     "duration_s_per_point": plan.duration_s,
                     "warmup_requests": len(plan.warmup_prompts), "seed": plan.seed,
                     "ignore_eos": plan.ignore_eos, "adapter_mix": plan.mix,
                     "prefix_cache_isolation": plan.prefix_cache_isolation},
        "profile": {"kind": plan.profile_kind, "loads": plan.loads,
                    "max_concurrency": plan.max_concurrency},
        "sample_every_s": plan.sample_every_s,
        "slo": ({"limits": plan.slo, "attainment_pct": plan.slo_attainment_pct}
                if plan.slo else None),
        "slo_best_load": max(met) if met else None,
        "memory": memory_summary(target, points),
        "points": points,
        "error_timeline": metrics.error_timeline(records),
        "requests": [r.as_dict() for r in records],
    }


def memory_summary(target: Target, points: list[dict]) -> dict:
    """Weights and KV pool from the start-up report (or /metrics for a server thrifty did not
    start), and the peaks sampled during the run."""
    startup = target.startup_memory
    kv_tokens = startup.get("kv_cache_tokens") or next(
        (p["server"].get("kv_cache_tokens") for p in points if p["server"].get("kv_cache_tokens")),
        None)
    max_len = startup.get("max_model_len_tokens") or target.max_model_len
    ratio = startup.get("max_concurrency_ratio") or (
        round(kv_tokens / max_len, 2) if kv_tokens and max_len else None)

    def peak(key):
        values = [p["server"].get(key) for p in points if p["server"].get(key) is not None]
        return max(values) if values else None

    return {"weights_gib": startup.get("weights_gib"), "kv_cache_gib": startup.get("kv_cache_gib"),
            "kv_cache_tokens": kv_tokens, "max_concurrency_ratio": ratio,
            "max_model_len_tokens": max_len,
            "kv_cache_usage_peak_pct": peak("kv_cache_usage_peak_pct"),
            "preemptions_count": sum(p["server"].get("preemptions_count") or 0 for p in points),
            "server_rss_peak_gib": peak("server_rss_peak_gib"),
            # PSS (USS off Linux): shared pages counted once, unlike the RSS sum above.
            "server_memory_peak_gib": peak("server_memory_peak_gib"),
            "server_memory_measure": next((p["server"]["server_memory_measure"] for p in points
                                           if p["server"].get("server_memory_measure")), None),
            # the server's GPUs only; `gpus` lists every GPU seen, `gpu_scope` says how the
            # server's were told apart (or that they could not be)
            "gpu_memory_peak_gib": peak("gpu_memory_peak_gib"),
            "gpu_total_gib": peak("gpu_total_gib"),
            "gpu_scope": next((p["server"]["gpu_scope"] for p in points
                               if p["server"].get("gpu_scope")), None),
            "gpus": gpus_over_points(points)}


def gpus_over_points(points: list[dict]) -> list[dict]:
    """Each GPU's reading at its highest over the run (whether it is the server's, from the
    last point that knew)."""
    merged: dict[int, dict] = {}
    for point in points:
        for gpu in point["server"].get("gpus") or []:
            seen = merged.setdefault(gpu["index"], dict(gpu))
            seen["used_peak_gib"] = max(seen["used_peak_gib"], gpu["used_peak_gib"])
            if gpu["server"] is not None:
                seen["server"] = gpu["server"]
    return [merged[index] for index in sorted(merged)]
