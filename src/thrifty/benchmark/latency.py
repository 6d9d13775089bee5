"""vLLM-engine task: offline latency of whole batches (like `vllm bench latency`), with no
server and no HTTP in the way.

For every batch size x input length x output length: a batch of random-token prompts is
generated `iterations` times with end-of-sequence ignored (exact output lengths); the same batch
is also run for one output token, which times the prefill alone, so that decode time per step
is (latency - prefill) / (output tokens - 1).

A task of the benchmark's worker (`thrifty.benchmark.worker`, run in the vLLM engine);
`thrifty bench latency` runs it through the job protocol.
"""

import random
import statistics
import time

from thrifty.core.jobs import Events
from thrifty.core.stats import PERCENTILES, percentile


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
        prompts = vllm_offline.token_prompts([[rng.randrange(100, vocab) for _ in range(input_len)]
                                        for _ in range(batch)])
        full = vllm_offline.exact_length_params(output_len)
        prefill_only = vllm_offline.exact_length_params(1)
        for _ in range(params["warmup_iterations"]):
            _timed(llm, prompts, full)
        latencies = [_timed(llm, prompts, full) for _ in range(params["iterations"])]
        prefills = [_timed(llm, prompts, prefill_only) for _ in range(params["iterations"])]
        cases.append(_case(batch, input_len, output_len, latencies, prefills))
    events.progress("measure", len(combos), len(combos), "cases")
    return {"cases": cases, "engine_start_s": round(start_s, 2),
            "vllm_version": vllm_offline.version()}


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
