"""The one place for latency statistics: percentiles, TPOT, millisecond summaries, SLO limits.

Definitions follow vLLM's (`vllm bench serve`): linear-interpolated percentiles, and
TPOT = (E2E - TTFT) / (output tokens - 1), undefined for one-token outputs. Standard library
only: engine workers import it too.
"""

import re
import statistics

from thrifty.core.errors import BadInput

PERCENTILES = (50, 90, 99)
# SLO keys -> the per-request value they limit (all in milliseconds).
SLO_KEYS = {"ttft_ms": "ttft_s", "tpot_ms": "tpot_s", "itl_ms": "itl_max_s", "e2e_ms": "e2e_s"}


def percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method, as vLLM uses)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def tpot_s(e2e_s: float | None, ttft_s: float | None, output_tokens: int) -> float | None:
    """Time per output token after the first; None where it is undefined."""
    if ttft_s is None or e2e_s is None or output_tokens < 2:
        return None
    return (e2e_s - ttft_s) / (output_tokens - 1)


def stats_ms(name: str, values: list[float]) -> dict:
    """{name}_p50/_p90/_p99/_mean in milliseconds of values given in seconds."""
    out = {}
    for pct in PERCENTILES:
        value = percentile(values, pct)
        out[f"{name}_p{pct}"] = round(value * 1000, 3) if value is not None else None
    out[f"{name}_mean"] = round(statistics.fmean(values) * 1000, 3) if values else None
    return out


# --- the SLO option ---------------------------------------------------------------

_SLO_ITEM = re.compile(r"^\s*([a-z0-9_]+)\s*=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_slo(text: str) -> dict[str, float]:
    """'ttft_ms=500,tpot_ms=50' -> {'ttft_ms': 500.0, 'tpot_ms': 50.0}."""
    slo: dict[str, float] = {}
    for item in text.split(","):
        match = _SLO_ITEM.match(item)
        if not match:
            raise BadInput(f"--slo {text!r}: {item.strip()!r} is not KEY=MILLISECONDS. Write "
                           f"for example --slo ttft_ms=500,tpot_ms=50 (keys: "
                           f"{', '.join(SLO_KEYS)}).")
        key, value = match.group(1), float(match.group(2))
        if key not in SLO_KEYS:
            raise BadInput(f"--slo {text!r}: unknown limit {key!r}. The limits are "
                           f"{', '.join(SLO_KEYS)} (milliseconds).")
        if value <= 0:
            raise BadInput(f"--slo {text!r}: {key} must be a positive number of milliseconds.")
        if key in slo:
            raise BadInput(f"--slo {text!r}: {key} is given twice.")
        slo[key] = value
    return slo
