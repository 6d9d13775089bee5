"""Per-request timelines and their aggregates, with vLLM's definitions (`vllm bench serve`):

- TTFT: request sent -> first streamed chunk carrying a choice.
- ITL: the gap between consecutive chunks after the first.
- TPOT: (E2E - TTFT) / (output tokens - 1), per request; undefined for one-token outputs.
- E2E: request sent -> stream finished.
- Duration of a load point: first request sent -> last request finished.
- Goodput: requests per second that succeeded and met every SLO limit.

Errors count as requests that missed the SLO and are reported, never dropped.
"""

import math
from dataclasses import asdict, dataclass, field

from thrifty.core import stats
from thrifty.core.stats import SLO_KEYS, stats_ms


@dataclass
class RequestRecord:
    """One request as measured by the client. Times are seconds; started_s is relative to
    the start of the whole benchmark."""
    point: int  # index of the load point (concurrency or rate) it belongs to
    model: str  # the model name sent (the base or an adapter)
    adapter: str  # "base" or the adapter name
    started_s: float
    ok: bool = False
    error: str | None = None
    input_tokens: int | None = None  # as counted by the server (usage), else the client
    output_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    scheduled_s: float | None = None  # when the load profile meant to send it
    error_kind: str | None = None  # refused, stalled, dropped, HTTP 429, ... (openai_api)

    @property
    def tpot_s(self) -> float | None:
        return stats.tpot_s(self.e2e_s, self.ttft_s, self.output_tokens) if self.ok else None

    @property
    def itl_max_s(self) -> float | None:
        return max(self.itl_s) if self.itl_s else None

    @property
    def finished_s(self) -> float | None:
        return self.started_s + self.e2e_s if self.e2e_s is not None else None

    def as_dict(self) -> dict:
        return {**asdict(self), "tpot_s": self.tpot_s}


def duration_s(records: list[RequestRecord]) -> float:
    """First send to last finish (the span the throughputs are divided by)."""
    if not records:
        return 0.0
    start = min(r.started_s for r in records)
    end = max((r.finished_s for r in records if r.finished_s is not None), default=start)
    return end - start


def meets_slo(record: RequestRecord, slo: dict[str, float]) -> bool:
    if not record.ok:
        return False
    for key, limit_ms in slo.items():
        # None: no such interval (TPOT of a one-token output, ITL of a one-chunk stream)
        value = getattr(record, SLO_KEYS[key])
        if value is not None and value * 1000 > limit_ms:
            return False
    return True


def aggregate(records: list[RequestRecord], slo: dict[str, float] | None = None,
              span_s: float | None = None) -> dict:
    """Summary metrics of one group of requests (a load point, or one adapter within it).
    span_s: the time to divide by (a load point's duration, so that per-adapter throughputs
    add up to the point's); defaults to the group's own duration."""
    ok = [r for r in records if r.ok]
    span = duration_s(records) if span_s is None else span_s
    output_tokens = sum(r.output_tokens for r in ok)
    input_tokens = sum(r.input_tokens or 0 for r in ok)
    summary = {
        "requests_count": len(records),
        "completed_count": len(ok),
        "errors_count": len(records) - len(ok),
        "duration_s": round(span, 3),
        "input_tokens_count": input_tokens,
        "output_tokens_count": output_tokens,
        "request_throughput_per_s": round(len(ok) / span, 4) if span > 0 else None,
        "output_throughput_tokens_per_s": round(output_tokens / span, 3) if span > 0 else None,
        "total_throughput_tokens_per_s": (round((input_tokens + output_tokens) / span, 3)
                                          if span > 0 else None),
    }
    summary |= stats_ms("ttft_ms", [r.ttft_s for r in ok if r.ttft_s is not None])
    summary |= stats_ms("tpot_ms", [r.tpot_s for r in ok if r.tpot_s is not None])
    summary |= stats_ms("itl_ms", [gap for r in ok for gap in r.itl_s])
    summary |= stats_ms("e2e_ms", [r.e2e_s for r in ok if r.e2e_s is not None])
    if slo:
        good = sum(1 for r in records if meets_slo(r, slo))
        summary["slo_attainment_pct"] = round(100 * good / len(records), 2) if records else None
        summary["goodput_requests_per_s"] = round(good / span, 4) if span > 0 else None
    return summary


def error_kinds(records: list[RequestRecord]) -> dict[str, int]:
    """How many requests failed with each message (so that errors are never hidden)."""
    kinds: dict[str, int] = {}
    for r in records:
        if not r.ok:
            kinds[r.error or "unknown error"] = kinds.get(r.error or "unknown error", 0) + 1
    return kinds


def errors_by_kind(records: list[RequestRecord]) -> dict[str, dict]:
    """Failed requests by kind: how many, and when the first and the last of them ended, in
    seconds since the benchmark started (a storm of 429s, a server gone from some moment on)."""
    kinds: dict[str, dict] = {}
    for r in sorted((r for r in records if not r.ok), key=_ended):
        at = round(_ended(r), 3)
        entry = kinds.setdefault(r.error_kind or "other", {"count": 0, "first_s": at})
        entry["count"] += 1
        entry["last_s"] = at
    return kinds


def error_timeline(records: list[RequestRecord], bins: int = 60) -> dict:
    """Failed requests per kind in equal time bins over the whole run (about `bins` of them,
    whole seconds wide), for the report's errors-over-time chart."""
    failed = [r for r in records if not r.ok]
    if not failed:
        return {"bin_s": None, "counts": {}}
    end = max(_ended(r) for r in records)
    width = max(1, math.ceil(end / bins))
    counts: dict[str, list[int]] = {}
    for r in failed:
        row = counts.setdefault(r.error_kind or "other", [0] * (int(end // width) + 1))
        row[int(_ended(r) // width)] += 1
    return {"bin_s": width, "counts": counts}


def _ended(record: RequestRecord) -> float:
    return record.finished_s if record.finished_s is not None else record.started_s


def point_meets_slo(summary: dict, attainment_pct: float) -> bool:
    value = summary.get("slo_attainment_pct")
    return value is not None and summary["requests_count"] > 0 and value >= attainment_pct
