"""vLLM-engine task: offline latency of whole batches (like `vllm bench latency`), with no
server and no HTTP in the way.

For every batch size x input length x output length: a batch of random-token prompts is
generated `iterations` times with end-of-sequence ignored (exact output lengths); batches of the
same shape are also run for one output token, which times the prefill alone, so that decode
time per step is (latency - prefill) / (output tokens - 1).

vLLM caches prompt prefixes (on by default), so a batch sent twice would skip most of its
prefill the second time: every run -- warm-up, timed, prefill-only -- draws fresh prompts.

A task of the benchmark's worker (`thrifty.benchmark.worker`, run in the vLLM engine);
`thrifty bench latency` runs it through the job protocol.
"""

import random
import statistics
import time
from collections.abc import Iterator

from thrifty.core.jobs import Events
from thrifty.core.stats import PERCENTILES, percentile

# Recorded in the result: how no run is served from the prefix cache of another.
PREFIX_CACHE_ISOLATION = "fresh random prompts for every run"
FIRST_TOKEN = 100  # token ids below this are left out (special tokens of most vocabularies)


def _timed(llm, prompts, sampling) -> float:
    from thrifty.libs import vllm_offline

    started = time.perf_counter()
    vllm_offline.generate_quietly(llm, prompts, sampling)
    return time.perf_counter() - started


def latency(params: dict, events: Events) -> dict:
    from thrifty.libs import vllm_offline

    events.progress("start vLLM", 0, 1, "steps")
    started = time.monotonic()
    llm = vllm_offline.offline_llm(params["model"], params["max_model_len"], eager=params["eager"])
    start_s = time.monotonic() - started
    events.progress("start vLLM", 1, 1, "steps")
    vocab = llm.get_tokenizer().vocab_size
    rng = random.Random(params["seed"])
    combos = [(b, i, o) for b in params["batch_sizes"] for i in params["input_lens"]
              for o in params["output_lens"]]
    cases = []
    for number, (batch, input_len, output_len) in enumerate(combos):
        events.progress("measure", number, len(combos), "cases")
        sampling = {"warmup": vllm_offline.exact_length_params(output_len),
                    "full": vllm_offline.exact_length_params(output_len),
                    "prefill": vllm_offline.exact_length_params(1)}
        times: dict[str, list[float]] = {kind: [] for kind in sampling}
        for kind, token_ids in case_runs(rng, vocab, batch, input_len,
                                         params["warmup_iterations"], params["iterations"]):
            prompts = vllm_offline.token_prompts(token_ids)
            times[kind].append(_timed(llm, prompts, sampling[kind]))
        cases.append(_case(batch, input_len, output_len, times["full"], times["prefill"]))
    events.progress("measure", len(combos), len(combos), "cases")
    return {"cases": cases, "engine_start_s": round(start_s, 2),
            "vllm_version": vllm_offline.version(),
            "prefix_cache_isolation": PREFIX_CACHE_ISOLATION}


def case_runs(rng: random.Random, vocab: int, batch: int, input_len: int, warmup: int,
              iterations: int) -> Iterator[tuple[str, list[list[int]]]]:
    """The runs of one case in order, ("warmup" | "full" | "prefill", the batch's token ids):
    the warm-ups, the timed runs, then the prefill-only runs. Each run draws its own random
    prompts, so that none finds another's prefix in vLLM's cache (drawn as they are needed:
    a large batch of long prompts is many token ids)."""
    for kind, count in (("warmup", warmup), ("full", iterations), ("prefill", iterations)):
        for _ in range(count):
            yield kind, [[rng.randrange(FIRST_TOKEN, vocab) for _ in range(input_len)]
                         for _ in range(batch)]


def _case(batch: int, input_len: int, output_len: int, latencies: list[float],
          prefills: list[float]) -> dict:
    mean = statistics.fmean(latencies)
    prefill = statistics.median(prefills)
    case = {"batch_size": batch, "input_tokens": input_len, "output_tokens": output_len,
            "iterations_count": len(latencies)}
    for pct in PERCENTILES:
        case[f"latency_ms_p{pct}"] = round(percentile(latencies, pct) * 1000, 3)
    case["latency_ms_mean"] = round(mean * 1000, 3)
    case["prefill_ms_median"] = round(prefill * 1000, 3)
    case["decode_step_ms_mean"] = (round((statistics.median(latencies) - prefill)
                                         / (output_len - 1) * 1000, 3)
                                   if output_len > 1 else None)
    case["output_throughput_tokens_per_s"] = round(batch * output_len / mean, 2)
    case["latencies_s"] = [round(v, 6) for v in latencies]
    return case
