"""A minimal closed-loop load for benchmarks/lora_serving.py (token-id prompts, fixed
adapter cycle); `thrifty bench` itself uses loadgen.py. N workers, each sending its next
request when the previous one finishes. Streams every request to time its first token.

TPOT follows vLLM's definition: (E2E - TTFT) / (output tokens - 1).
"""

import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass

from thrifty.core.stats import percentile
from thrifty.formats.openai_api import ServerClient, ServerError


@dataclass
class Request:
    model: str
    prompt: str | list[int]  # text, or token ids (exact input length)
    max_tokens: int


@dataclass
class RequestResult:
    model: str
    ok: bool
    error: str | None
    output_tokens: int
    ttft_s: float | None
    e2e_s: float
    tpot_s: float | None
    started_s: float  # since the start of the run


def random_token_prompts(count: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    """Prompts of exactly `length` random token ids (like `vllm bench serve` --dataset random);
    ids below 100 are skipped, where tokenizers keep their special tokens."""
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab_size) for _ in range(length)] for _ in range(count)]


def run_closed_loop(client: ServerClient, requests: list[Request], concurrency: int,
                    exact_output: bool = True) -> tuple[list[RequestResult], float]:
    """Send all requests with `concurrency` in flight; return per-request results and the wall
    time. exact_output asks vLLM to ignore end-of-sequence so every request generates
    max_tokens tokens (comparable work across models)."""
    queue = list(reversed(requests))
    lock = threading.Lock()
    results: list[RequestResult] = []
    extra = {"ignore_eos": True} if exact_output else {}
    start = time.perf_counter()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                request = queue.pop()
            began = time.perf_counter() - start
            try:
                done = client.stream(request.model, request.prompt, request.max_tokens, **extra)
                tpot = ((done.e2e_s - done.ttft_s) / (done.output_tokens - 1)
                        if done.ttft_s is not None and done.output_tokens > 1 else None)
                result = RequestResult(request.model, True, None, done.output_tokens,
                                       done.ttft_s, done.e2e_s, tpot, began)
            except ServerError as exc:
                result = RequestResult(request.model, False, str(exc), 0, None,
                                       time.perf_counter() - start - began, None, began)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def summarize(results: list[RequestResult], wall_s: float) -> dict:
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    summary = {"requests_count": len(results), "errors_count": len(results) - len(ok),
               "output_tokens": tokens, "wall_s": round(wall_s, 3),
               "output_tokens_per_s": round(tokens / wall_s, 2) if wall_s else None}
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        values = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        unit_ms = name.replace("_s", "_ms")
        for pct in (50, 95):
            value = percentile(values, pct)
            summary[f"{unit_ms}_p{pct}"] = round(value * 1000, 2) if value is not None else None
        summary[f"{unit_ms}_mean"] = (round(statistics.fmean(values) * 1000, 2)
                                      if values else None)
    return summary


def as_records(results: list[RequestResult]) -> list[dict]:
    return [asdict(r) for r in results]
