"""Traffic -> replicas -> dollars: the monthly cost of serving a model on each GPU option.

For each GPU x model variant: the memory fit gives the GPUs per replica (tensor parallelism) and
the KV-cache room; the throughput model gives, per replica, the largest number of sequences in
flight whose TTFT and TPOT still meet the SLO, and the request rate that sustains. Then

    replicas  = ceil(peak request rate / SLO-compliant request rate per replica)
    $/month   = replicas x GPUs per replica x $/GPU-hour x 730
    $/1M tok  = $/month / tokens per month (and split into input and output by GPU time)

A figure comes from a measurement (a `thrifty bench` run given with --bench) or from the model
(labelled with the efficiencies it used); each option says which.
"""

import math
from dataclasses import dataclass, field

from thrifty.core.errors import BadInput
from thrifty.cost.catalog import HOURS_PER_MONTH, PRICE_KINDS, Catalog, Gpu, Price
from thrifty.cost.fit import Fit, fit
from thrifty.cost.model_shape import ModelShape
from thrifty.cost.perf_model import (
    Efficiency,
    Hardware,
    SteadyState,
    prefill_step,
    steady_state,
    step_seconds,
)

DAYS_PER_MONTH = HOURS_PER_MONTH / 24


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float
    input_tokens: int
    output_tokens: int
    peak_factor: float = 2.0  # busiest-hour rate over the daily average

    def __post_init__(self):
        problems = []
        if not self.requests_per_day > 0:
            problems.append(f"the traffic is {self.requests_per_day:g} requests per day")
        if self.input_tokens <= 0 or self.output_tokens <= 0:
            problems.append(f"the lengths are {self.input_tokens} input and "
                            f"{self.output_tokens} output tokens")
        if self.peak_factor < 1:
            problems.append(f"the peak factor is {self.peak_factor:g} (the peak cannot be "
                            "below the average)")
        if problems:
            raise BadInput(f"Cannot cost this traffic: {'; '.join(problems)}. Give a positive "
                           "--requests-per-day (or --tokens-per-month), positive "
                           "--input-tokens/--output-tokens and a --peak-factor of at least 1.")

    @classmethod
    def from_tokens_per_month(cls, tokens: float, input_tokens: int, output_tokens: int,
                              peak_factor: float) -> "Traffic":
        per_request = max(1, input_tokens + output_tokens)  # bad lengths are refused below
        return cls(tokens / per_request / DAYS_PER_MONTH, input_tokens, output_tokens,
                   peak_factor)

    @property
    def average_rps(self) -> float:
        return self.requests_per_day / 86400

    @property
    def peak_rps(self) -> float:
        return self.average_rps * self.peak_factor

    @property
    def tokens_per_month(self) -> tuple[float, float]:
        requests = self.requests_per_day * DAYS_PER_MONTH
        return requests * self.input_tokens, requests * self.output_tokens

    def as_dict(self) -> dict:
        input_month, output_month = self.tokens_per_month
        return {"requests_per_day": self.requests_per_day, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "peak_factor": self.peak_factor,
                "average_requests_per_s": self.average_rps, "peak_requests_per_s": self.peak_rps,
                "input_tokens_per_month": input_month, "output_tokens_per_month": output_month}


@dataclass(frozen=True)
class Slo:
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met(self, state: SteadyState) -> bool:
        return ((self.ttft_ms is None or state.ttft_s * 1000 <= self.ttft_ms)
                and (self.tpot_ms is None or state.tpot_s * 1000 <= self.tpot_ms))

    def text(self) -> str:
        parts = [f"TTFT <= {self.ttft_ms:g} ms" if self.ttft_ms else "",
                 f"TPOT <= {self.tpot_ms:g} ms" if self.tpot_ms else ""]
        return ", ".join(p for p in parts if p) or "none"


@dataclass
class Option:
    """One way to serve the traffic: a GPU, a model variant, and what it costs."""
    gpu: Gpu
    shape: ModelShape
    variant: str
    fit: Fit
    source: str  # "modelled (...)" or "measured (...)"
    efficiency: Efficiency | None = None  # what the modelled figures used
    capacity: SteadyState | None = None  # one replica's highest SLO-compliant load
    state: SteadyState | None = None  # one replica at its share of the peak traffic
    replicas: int = 0
    prices: dict[str, Price | None] = field(default_factory=dict)
    input_share: float = 0.5  # share of GPU time spent on prompts
    problem: str = ""  # why this option cannot serve the traffic
    quality: dict | None = None  # the checkpoint's evaluated quality (cost --quality)

    @property
    def gpus(self) -> int:
        return self.replicas * (self.fit.tensor_parallel or 0)

    def usd_per_month(self, kind: str) -> float | None:
        price = self.prices.get(kind)
        if price is None or self.problem:
            return None
        return self.gpus * price.usd_per_gpu_hour * HOURS_PER_MONTH

    def utilisation(self, traffic: Traffic) -> float | None:
        if not self.capacity or not self.replicas:
            return None
        return traffic.average_rps / (self.replicas * self.capacity.request_rate_per_s)


def _largest(ok, low: int, high: int) -> int:
    """The largest n in [low, high] with ok(n), given ok(low) and ok monotone decreasing."""
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def capacity(shape: ModelShape, hw: Hardware, eff: Efficiency, fitted: Fit,
             traffic: Traffic, slo: Slo) -> SteadyState | None:
    """The highest-throughput concurrency that meets the SLO (latency rises with load, so a
    binary search), limited by the KV cache and vLLM's max_num_seqs."""
    per_sequence = traffic.input_tokens + traffic.output_tokens
    limit = min(hw.max_num_seqs, fitted.kv_tokens_capacity // per_sequence)
    tp = fitted.tensor_parallel or 1

    def at(b: int) -> SteadyState:
        return steady_state(shape, hw, eff, b, traffic.input_tokens, traffic.output_tokens, tp)

    if limit < 1 or not slo.met(at(1)):
        return None
    return at(_largest(lambda b: slo.met(at(b)), 1, limit))


def operating_point(shape: ModelShape, hw: Hardware, eff: Efficiency, tp: int,
                    traffic: Traffic, rate: float, most: SteadyState) -> SteadyState:
    """One replica serving `rate` requests/s: the fewest sequences in flight that sustain it."""
    def at(b: int) -> SteadyState:
        return steady_state(shape, hw, eff, b, traffic.input_tokens, traffic.output_tokens, tp)

    if at(1).request_rate_per_s >= rate:
        return at(1)
    below = _largest(lambda b: at(b).request_rate_per_s < rate, 1, most.concurrency)
    return at(min(below + 1, most.concurrency))


def input_share(shape: ModelShape, hw: Hardware, eff: Efficiency, state: SteadyState,
                traffic: Traffic, tp: int) -> float:
    """The share of a replica's GPU time that goes to prompts: one prompt's prefill time
    against its share of the batch's decode steps."""
    prompt_s = step_seconds(shape, hw, eff, prefill_step(traffic.input_tokens), tp)
    decode_s = state.step_s * traffic.output_tokens / max(1, state.concurrency)
    return prompt_s / (prompt_s + decode_s)


def plan_option(gpu: Gpu, shape: ModelShape, variant: str, eff: Efficiency, catalog: Catalog,
                traffic: Traffic, slo: Slo, context: int, tp: int | None = None) -> Option:
    """One GPU x variant, modelled: on `tp` GPUs per replica when given (--tensor-parallel),
    else on the smallest group that holds the model."""
    fitted = fit(shape, gpu, context, tp=tp)
    source = f"modelled ({'default efficiency' if eff.source == 'default' else eff.source})"
    option = Option(gpu, shape, variant, fitted, source, eff,
                    prices={kind: catalog.cheapest(gpu.id, kind) for kind in PRICE_KINDS})
    if not fitted.fits:
        option.problem = fitted.reason
        return option
    if shape.weight_format == "int" and shape.activation_bits <= 8 and gpu.int8_tops is None:
        option.problem = (f"vLLM has no INT8 W8A8 kernel for the {gpu.id} (none for compute "
                          "capability 10.0 and later); use fp8 there")
        return option
    hw = Hardware.from_gpu(gpu)
    most = capacity(shape, hw, eff, fitted, traffic, slo)
    if most is None:
        one = steady_state(shape, hw, eff, 1, traffic.input_tokens, traffic.output_tokens,
                           fitted.tensor_parallel or 1)
        option.problem = (f"misses the SLO ({slo.text()}) even with one request in flight: "
                          f"TTFT {one.ttft_s * 1000:,.1f} ms, TPOT {one.tpot_s * 1000:.2f} ms "
                          "(modelled)")
        return option
    option.capacity = most
    option.replicas = max(1, math.ceil(traffic.peak_rps / most.request_rate_per_s))
    option.state = operating_point(shape, hw, eff, fitted.tensor_parallel, traffic,
                                   traffic.peak_rps / option.replicas, most)
    option.input_share = input_share(shape, hw, eff, option.state, traffic,
                                     fitted.tensor_parallel)
    if all(p is None for p in option.prices.values()):
        option.problem = "no price in the catalog (add one with --catalog)"
    return option


def measured_option(option: Option, bench: dict, slo: Slo, traffic: Traffic, run: str) -> Option:
    """Replace the modelled operating point by the best load point of a bench run that met
    the SLO (the bench's own SLO verdict when it had one, else this SLO on its p50s)."""
    best = None
    for point in bench["points"]:
        summary = point["summary"]
        met = point.get("slo_met")
        if met is None:
            met = ((slo.ttft_ms is None or summary.get("ttft_ms_p50", math.inf) <= slo.ttft_ms)
                   and (slo.tpot_ms is None
                        or summary.get("tpot_ms_p50", math.inf) <= slo.tpot_ms))
        rate = summary.get("request_throughput_per_s") or 0
        if met and rate > 0 and (best is None or rate > best[1]["request_throughput_per_s"]):
            best = (point, summary)
    if best is None:
        option.problem = f"no load point of the bench run {run} met the SLO"
        return option
    point, summary = best
    rate = summary["request_throughput_per_s"]
    option.capacity = option.state = SteadyState(
        int(point["load"]) if point["kind"] == "concurrency" else 0,
        summary["tpot_ms_p50"] / 1000, summary["ttft_ms_p50"] / 1000,
        summary["tpot_ms_p50"] / 1000, summary["e2e_ms_p50"] / 1000, rate,
        summary["output_throughput_tokens_per_s"])
    option.replicas = max(1, math.ceil(traffic.peak_rps / rate))
    option.source = f"measured (bench run {run}, {point['kind']} {point['load']})"
    option.problem = ""
    return option


def option_row(option: Option, traffic: Traffic, kind: str) -> dict:
    """Everything a report shows about one option, in plain numbers."""
    monthly = option.usd_per_month(kind)
    input_month, output_month = traffic.tokens_per_month
    row = {
        "gpu": option.gpu.id, "gpu_name": option.gpu.name, "variant": option.variant,
        "model": option.shape.name, "precision": option.shape.precision,
        "figures": option.source, "problem": option.problem or None,
        "quality": option.quality,
        "efficiency": option.efficiency.as_dict() if option.efficiency else None,
        "tensor_parallel": option.fit.tensor_parallel,
        "tensor_parallel_chosen_by": option.fit.tp_chosen_by,
        "weights_gib": round(option.shape.weight_bytes / 2**30, 2),
        "replicas": option.replicas or None, "gpus": option.gpus or None,
        "pricing": kind,
    }
    if option.state:
        row.update({
            "capacity_requests_per_s_per_replica": round(option.capacity.request_rate_per_s, 4),
            "capacity_concurrency_per_replica": option.capacity.concurrency,
            "capacity_output_tokens_per_s_per_replica":
                round(option.capacity.output_tokens_per_s, 1),
            "concurrency_at_peak": option.state.concurrency,
            "ttft_ms": round(option.state.ttft_s * 1000, 1),
            "tpot_ms": round(option.state.tpot_s * 1000, 2),
            "e2e_ms": round(option.state.e2e_s * 1000, 1),
            "utilisation_pct": round(100 * option.utilisation(traffic), 1),
            "energy": energy(option, traffic),
        })
    price = option.prices.get(kind)
    if price:
        row["price"] = {"usd_per_gpu_hour": price.usd_per_gpu_hour, "provider": price.provider,
                        "date": price.date.isoformat(), "source": price.source,
                        "term": price.term or None}
    if monthly is not None:
        row.update({
            "usd_per_hour": round(monthly / HOURS_PER_MONTH, 3),
            "usd_per_month": round(monthly, 2),
            "usd_per_1m_tokens": round(monthly / (input_month + output_month) * 1e6, 4),
            "usd_per_1m_input_tokens": round(monthly * option.input_share / input_month * 1e6, 4),
            "usd_per_1m_output_tokens":
                round(monthly * (1 - option.input_share) / output_month * 1e6, 4),
        })
        row["usd_per_month_by_pricing"] = {
            k: round(option.usd_per_month(k), 2) if option.usd_per_month(k) is not None
            else None for k in PRICE_KINDS}
    return row


# A serving GPU holds its weights and KV cache with clocks up between batches: its draw at no
# load is taken as this share of TDP (an assumption, not a measurement).
IDLE_POWER_SHARE = 0.3


def energy(option: Option, traffic: Traffic) -> dict | None:
    """Modelled energy: each GPU draws its TDP scaled between the idle share and full power
    by the option's average utilisation; no data-centre overhead (PUE) included."""
    utilisation = option.utilisation(traffic)
    if utilisation is None or not option.gpus:
        return None
    watts = option.gpus * option.gpu.tdp_w * (
        IDLE_POWER_SHARE + (1 - IDLE_POWER_SHARE) * min(1.0, utilisation))
    kwh_per_month = watts / 1000 * HOURS_PER_MONTH
    _, output_month = traffic.tokens_per_month
    return {"power_w": round(watts, 0), "kwh_per_month": round(kwh_per_month, 1),
            "kwh_per_1m_output_tokens": round(kwh_per_month / output_month * 1e6, 4),
            "figures": f"modelled (catalog TDP {option.gpu.tdp_w:g} W per GPU x "
                       f"({IDLE_POWER_SHARE:g} + {1 - IDLE_POWER_SHARE:g} x utilisation); "
                       "no PUE)"}


def rank(options: list[Option], kind: str) -> list[Option]:
    """Options that serve the traffic within the SLO, cheapest first; then the others."""
    def key(option: Option):
        monthly = option.usd_per_month(kind)
        tpot = option.state.tpot_s if option.state else 0
        return (monthly is None, monthly if monthly is not None else 0, tpot, option.gpu.id)
    return sorted(options, key=key)


# --- buy or rent

@dataclass(frozen=True)
class Ownership:
    years: float = 3.0  # depreciation period
    usd_per_kwh: float = 0.12
    pue: float = 1.4  # data-centre power usage effectiveness
    host_share: float = 0.5  # server, networking and hosting per GPU, as a share of its price


def buy_vs_rent(gpu: Gpu, gpus: int, rent: Price, hours_per_week: float,
                own: Ownership) -> dict:
    """Owning `gpus` GPUs for `own.years` against renting them `hours_per_week`.

    Owning costs the hardware (GPUs plus the host share) once, and power for the hours used;
    renting costs the hourly price for those hours. Break-even: the weekly hours above which
    owning is cheaper over the period."""
    if gpu.purchase_usd is None:
        return {"gpu": gpu.id, "available": False,
                "reason": "no purchase price in the catalog (add purchase_usd with --catalog)"}
    capital = gpus * gpu.purchase_usd * (1 + own.host_share)
    power_per_hour = gpus * gpu.tdp_w / 1000 * own.pue * own.usd_per_kwh
    rent_per_hour = gpus * rent.usd_per_gpu_hour
    weeks = own.years * 52
    hours = hours_per_week * weeks
    margin = rent_per_hour - power_per_hour
    break_even = capital / (weeks * margin) if margin > 0 else None
    return {
        "gpu": gpu.id, "available": True, "gpus": gpus, "years": own.years,
        "hours_per_week": hours_per_week,
        "purchase_usd": capital, "purchase_price": {
            "usd_per_gpu": gpu.purchase_usd, "date": gpu.purchase_date.isoformat()
            if gpu.purchase_date else None, "source": gpu.purchase_source},
        "own_total_usd": round(capital + power_per_hour * hours, 0),
        "rent_total_usd": round(rent_per_hour * hours, 0),
        "rent_price": {"usd_per_gpu_hour": rent.usd_per_gpu_hour, "provider": rent.provider,
                       "kind": rent.kind, "date": rent.date.isoformat()},
        "break_even_hours_per_week": round(break_even, 1) if break_even else None,
        "cheaper": "buy" if break_even is not None and hours_per_week > break_even else "rent",
        "assumptions": {"usd_per_kwh": own.usd_per_kwh, "pue": own.pue,
                        "host_share_of_gpu_price": own.host_share},
    }
