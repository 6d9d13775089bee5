"""Replay a workload through a model of vLLM's scheduler, timing each step with the roofline.

The scheduler is vLLM v1's: every step first gives each running sequence one decode token, then
fills the rest of the token budget (max_num_batched_tokens) with prompt chunks of waiting
requests, first come first served, while the KV cache and max_num_seqs allow. A request's first
token comes at the end of the step that finishes its prompt; each later step adds one token.
A request reaches the engine's queue a while after the client sends it (HTTP, the API server's
parsing and tokenizing: the calibrated `lag_ms`); TTFT and E2E count from the send.
This is what predicts TTFT, TPOT and throughput for a bench workload (closed or open loop).
"""

import heapq
import math
from dataclasses import dataclass, field, replace

from thrifty.core.stats import percentile
from thrifty.cost.model_shape import ModelShape
from thrifty.cost.perf_model import OUTPUT_DELAY_STEPS, Efficiency, Hardware, Step, step_seconds

# Requests sent at the same instant reach the engine a little apart (the API server parses and
# tokenizes each), and an idle engine starts a step for the first one at once. So the first
# request of a closed-loop wave that starts on an idle engine is prefilled alone and the rest
# share the next step, as the request timings of `thrifty bench` runs on vLLM show.
ARRIVAL_SPREAD_S = 0.001


@dataclass(eq=False)  # identity, not value, equality: requests are tracked in sets
class SimRequest:
    input_tokens: int
    output_tokens: int
    arrival_s: float = 0.0
    prompt: "Prompt | None" = None  # what its prompt shares with others (prefix caching)
    prefilled: int = 0
    generated: int = 0
    first_token_s: float | None = None
    finished_s: float | None = None

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finished_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        return (self.e2e_s - self.ttft_s) / max(1, self.output_tokens - 1)


@dataclass(frozen=True)
class Prompt:
    """A prompt's identity for vLLM's prefix cache: requests with the same `text` reuse all its
    full blocks once one of them was prefilled; requests of one `group` share its first
    `shared_tokens` (a system prompt)."""
    text: int
    group: int = -1
    shared_tokens: int = 0


@dataclass
class PrefixCache:
    """vLLM's automatic prefix caching, at the level that matters for a workload that cycles
    through a fixed set of prompts: hits in whole blocks, the last prompt token always computed.
    Freed blocks are evicted least-recently-used, so a cycle of prompts whose blocks (with what
    running requests hold) exceed the cache gets no hit at all; `capacity_tokens` includes a
    CPU offload tier, from which evicted blocks come back."""
    capacity_tokens: float
    block_tokens: int = 16
    texts: set = field(default_factory=set)
    groups: set = field(default_factory=set)
    unique_tokens: int = 0  # prompt tokens of every distinct prompt seen

    def cached_tokens(self, request: "SimRequest", in_use_tokens: float) -> int:
        prompt = request.prompt
        if prompt is None or self.unique_tokens + in_use_tokens > self.capacity_tokens:
            return 0
        if prompt.text in self.texts:
            hit = request.input_tokens - 1
        elif prompt.group in self.groups:
            hit = min(prompt.shared_tokens, request.input_tokens - 1)
        else:
            return 0
        return hit // self.block_tokens * self.block_tokens

    def remember(self, request: "SimRequest") -> None:
        prompt = request.prompt
        if prompt is not None and prompt.text not in self.texts:
            self.texts.add(prompt.text)
            self.groups.add(prompt.group)
            self.unique_tokens += request.input_tokens


@dataclass
class Workload:
    """Requests of given lengths, sent by `concurrency` closed-loop users (all starting
    together, as `thrifty bench --concurrency` does) or at given arrival times (open loop)."""
    lengths: list[tuple[int, int]]  # (input tokens, output tokens) per request, in send order
    concurrency: int | None = None
    arrivals_s: list[float] | None = None
    kv_tokens: int | None = None  # KV-cache capacity; None: unlimited
    tp: int = 1
    requests: list[SimRequest] = field(default_factory=list)
    prompts: list[Prompt] | None = None  # per request, for prefix caching; None: all distinct
    prefix_cache_tokens: float | None = None  # cache reach (GPU KV + CPU offload); None: off
    prefix_cache_warm: bool = False  # every prompt already cached (a run's steady state)


def simulate(shape: ModelShape, hw: Hardware, eff: Efficiency, work: Workload,
             max_steps: int = 2_000_000) -> list[SimRequest]:
    pending = [SimRequest(i, o) for i, o in work.lengths]
    for request, prompt in zip(pending, work.prompts or [], strict=False):
        request.prompt = prompt
    cache = PrefixCache(work.prefix_cache_tokens) if work.prefix_cache_tokens else None
    if cache is not None and work.prefix_cache_warm:
        for request in pending:
            cache.remember(request)
    lag = eff.lag_ms / 1000  # from the client's send to the engine's queue
    if work.arrivals_s is not None:
        for request, at in zip(pending, work.arrivals_s, strict=True):
            request.arrival_s = at
        future = [(r.arrival_s + lag, n, r) for n, r in enumerate(pending)]
        heapq.heapify(future)
        queue_next = None
    else:
        users = min(work.concurrency or 1, len(pending))
        future = [(n * ARRIVAL_SPREAD_S + lag, n, pending[n]) for n in range(users)]
        for n in range(users):
            pending[n].arrival_s = n * ARRIVAL_SPREAD_S
        queue_next = users  # the next request a freed user sends
    now, waiting, running, done = 0.0, [], [], []
    unseen: list[tuple[SimRequest, str]] = []  # tokens the client gets when the next step ends
    kv_free = work.kv_tokens if work.kv_tokens is not None else float("inf")
    for _ in range(max_steps):
        while future and future[0][0] <= now + 1e-12:
            waiting.append(heapq.heappop(future)[2])
        if not waiting and not running:
            if not future:
                break
            now = future[0][0]
            continue
        step, finishing_prefill, kv_free = _schedule(waiting, running, hw, kv_free, cache)
        if step.prefill_tokens == 0 and not unseen:
            now, step = _skip_quiet_steps(shape, hw, eff, work.tp, step, running, now, future)
        step_s = step_seconds(shape, hw, eff, step, work.tp)
        now += step_s
        _show(unseen, now)
        released = []
        for request in list(running):
            if request in finishing_prefill:
                request.first_token_s = now  # until the next step ends (see _show)
                unseen.append((request, "first_token_s"))
                request.generated = 1
                if cache is not None:
                    cache.remember(request)
            elif request.prefilled >= request.input_tokens:
                request.generated += 1
            if request.generated >= request.output_tokens:
                request.finished_s = now
                unseen.append((request, "finished_s"))
                running.remove(request)
                kv_free += request.input_tokens + request.output_tokens
                done.append(request)
                if queue_next is not None and queue_next < len(pending):
                    released.append(queue_next)
                    queue_next += 1
        # A busy engine takes every request that arrived during the step at the next one; an
        # idle one starts on the first to arrive. A user sees its finish (and sends again)
        # once the next step ends, about a step from now, if the engine has other work.
        busy = bool(running or waiting)
        if not busy:
            unseen.clear()  # nothing else to run: this step's tokens go out at once
        seen = now + OUTPUT_DELAY_STEPS * step_s if busy else now
        spread = 0.0 if busy else ARRIVAL_SPREAD_S
        for k, index in enumerate(released):
            pending[index].arrival_s = seen + k * spread
            heapq.heappush(future, (pending[index].arrival_s + lag, index, pending[index]))
    return done


def _show(unseen: list[tuple[SimRequest, str]], now: float) -> None:
    """vLLM v1 streams a step's tokens from its API server process while the engine runs the
    next step: the client gets them when that step ends (an engine that goes idle instead sends
    them at once, so they keep the time they were computed)."""
    for request, moment in unseen:
        setattr(request, moment, now)
    unseen.clear()


def _skip_quiet_steps(shape: ModelShape, hw: Hardware, eff: Efficiency, tp: int, step: Step,
                      running: list[SimRequest], now: float, future: list) -> tuple[float, Step]:
    """Decode-only steps in which no request finishes and none arrives change nothing but the
    clock and the token counts: take them at once (the replay's hot path), timed at their
    middle context (step time is linear in the context the batch reads)."""
    if not running or any(r.prefilled < r.input_tokens for r in running):
        return now, step
    quiet = min(r.output_tokens - r.generated for r in running) - 1
    batch = step.decodes
    if quiet >= 2 and future:
        first = step_seconds(shape, hw, eff, step, tp)
        quiet = min(quiet, int((future[0][0] - now) / first))
    if quiet < 2:
        return now, step
    middle = replace(step, context_tokens=step.context_tokens + batch * (quiet - 1) // 2)
    for request in running:
        request.generated += quiet
    now += quiet * step_seconds(shape, hw, eff, middle, tp)
    return now, replace(step, context_tokens=step.context_tokens + batch * quiet)


def _schedule(waiting: list[SimRequest], running: list[SimRequest], hw: Hardware,
              kv_free: float, cache: PrefixCache | None = None) -> tuple[Step, set, float]:
    decoding = [r for r in running if r.prefilled >= r.input_tokens]
    budget = hw.max_batched_tokens - len(decoding)
    context = sum(r.input_tokens + r.generated for r in decoding)
    prefill_tokens, attention, finishing = 0, 0.0, set()
    # Requests part-way through their prompt keep their place before new ones are admitted.
    partial = [r for r in running if r.prefilled < r.input_tokens]
    while budget > 0 and waiting and len(running) < hw.max_num_seqs:
        request = waiting[0]
        needed = request.input_tokens + request.output_tokens
        if needed > kv_free:
            break
        kv_free -= needed
        running.append(waiting.pop(0))
        partial.append(request)
        if cache is not None:
            in_use = sum(r.input_tokens + r.generated for r in running)
            request.prefilled = cache.cached_tokens(request, in_use)
    for request in partial:
        if budget <= 0:
            break
        chunk = min(budget, request.input_tokens - request.prefilled)
        attention += chunk * (request.prefilled + chunk / 2)
        request.prefilled += chunk
        prefill_tokens += chunk
        budget -= chunk
        if request.prefilled >= request.input_tokens:
            finishing.add(request)
    step = Step(prefill_tokens=prefill_tokens, prefill_attention=attention,
                decodes=len(decoding), context_tokens=context,
                sampled=len(decoding) + len(finishing))
    return step, finishing, kv_free


def summarize(done: list[SimRequest]) -> dict:
    """The bench summary's headline metrics, for simulated requests."""
    start = min(r.arrival_s for r in done)
    end = max(r.finished_s for r in done)
    output = sum(r.output_tokens for r in done)
    summary = {"requests_count": len(done), "duration_s": end - start,
               "output_throughput_tokens_per_s": output / (end - start) if end > start else 0.0,
               "request_throughput_per_s": len(done) / (end - start) if end > start else 0.0}
    for name, values in (("ttft_ms", [r.ttft_s for r in done]),
                         ("tpot_ms", [r.tpot_s for r in done if r.output_tokens > 1]),
                         ("e2e_ms", [r.e2e_s for r in done])):
        for pct in (50, 90, 99):
            summary[f"{name}_p{pct}"] = (percentile(values, pct) or math.nan) * 1000
        summary[f"{name}_mean"] = sum(values) / len(values) * 1000 if values else float("nan")
    return summary
