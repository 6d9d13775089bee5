"""Perplexity over a fixed token sequence with sliding windows (runs in the compress engine).

Every token after the first is scored exactly once; each window gives it up to `window - stride`
tokens of context from the previous window, as in the Hugging Face perplexity guide.
"""

import hashlib
import math
from collections.abc import Callable

import torch


def evaluation_tokens(tokenizer, texts: list[str], max_tokens: int) -> list[int]:
    """The first `max_tokens` tokens of the documents joined by blank lines."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]


def tokens_sha256(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


@torch.inference_mode()
def perplexity(model, ids: list[int], window: int, stride: int,
               on_window: Callable[[int, int], None] = lambda done, total: None) -> dict:
    if len(ids) < 2:
        raise ValueError("need at least two tokens")
    starts = list(range(0, max(len(ids) - window, 0) + stride, stride))
    starts = [s for s in starts if s < len(ids) - 1]
    nll, scored, scored_until = 0.0, 0, 0
    for index, begin in enumerate(starts):
        end = min(begin + window, len(ids))
        input_ids = torch.tensor(ids[begin:end]).unsqueeze(0)
        logits = model(input_ids).logits[0, :-1].float()
        targets = input_ids[0, 1:]
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
        # logp[i] scores token begin+i+1; skip tokens an earlier window already scored.
        first_new = max(scored_until, begin + 1) - (begin + 1)
        nll -= logp[first_new:].double().sum().item()
        scored += len(logp) - first_new
        scored_until = end
        on_window(index + 1, len(starts))
        if end == len(ids):
            break
    return {"perplexity": math.exp(nll / scored), "scored_tokens": scored,
            "windows_count": len(starts), "nll_sum": nll}
