"""The evaluation token stream and its windows (runs in the compress engine).

The text's tokens T are scored window by window. Every window's input starts with the model's
prefix P (its tokenizer's BOS where it adds one, see core/token_prefix.py), as every request a
server sees does, then holds text: `P + T[context_start : targets_end - 1]`, and scores
`T[targets_start : targets_end]`, the last of them from the input's last position. Each text
token is scored once; the first one only when there is a prefix to predict it from.

With the default stride (as many new tokens as fit), the windows are those of
lm-evaluation-harness's rolling log-likelihood: the first predicts `window - len(P) + 1` tokens,
each later one predicts as many with one token of context; the last keeps a full window of
context. A smaller stride slides the window (each scores `stride` new tokens with the rest of
the window as context), as in the Hugging Face perplexity guide.
"""

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


def evaluation_tokens(tokenizer, texts: list[str], max_tokens: int) -> list[int]:
    """The first `max_tokens` tokens of the documents joined by blank lines (no special
    tokens: the prefix is put in front of each window, not into the text)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]


def tokens_sha256(prefix: list[int], ids: list[int]) -> str:
    """Fingerprint of what is scored: the prefix and the text's tokens."""
    return hashlib.sha256((",".join(map(str, prefix)) + ";" + ",".join(map(str, ids))).encode()
                          ).hexdigest()


@dataclass(frozen=True)
class Window:
    context_start: int  # the first text token of the input (after the prefix)
    targets_start: int  # text tokens [targets_start, targets_end) are scored in this window
    targets_end: int

    def input_ids(self, prefix: list[int], ids: list[int]) -> list[int]:
        return prefix + ids[self.context_start:self.targets_end - 1]

    def logits_rows(self, prefix_len: int) -> slice:
        """The input positions whose logits predict the targets (position t predicts t + 1)."""
        first = prefix_len + self.targets_start - 1 - self.context_start
        return slice(first, first + self.targets_end - self.targets_start)


def plan_windows(text_len: int, prefix_len: int, window: int, stride: int | None) -> list[Window]:
    """Windows that score every text token once (the first only after a prefix)."""
    room = window - prefix_len  # text tokens an input holds besides the prefix
    if room < 1:
        raise ValueError(f"a window of {window} tokens leaves no room after the prefix")
    first_target = 0 if prefix_len else 1
    if text_len <= first_target:
        raise ValueError("need at least two tokens")
    stride = min(stride or room, room)
    windows, start, end = [], first_target, min(text_len, room + 1)
    while start < text_len:
        windows.append(Window(max(0, end - 1 - room), start, end))
        start, end = end, min(text_len, end + stride)
    return windows


@torch.inference_mode()
def window_log_probs(model, prefix: list[int], ids: list[int], windows: list[Window]
                     ) -> Iterator[tuple[Window, torch.Tensor, torch.Tensor]]:
    """(window, log-probabilities [targets, vocab] in float32, target ids) per window."""
    for w in windows:
        input_ids = torch.tensor(w.input_ids(prefix, ids)).unsqueeze(0)
        logits = model(input_ids).logits[0, w.logits_rows(len(prefix))].float()
        yield w, torch.log_softmax(logits, dim=-1), torch.tensor(ids[w.targets_start:w.targets_end])


def perplexity(model, prefix: list[int], ids: list[int], window: int, stride: int | None = None,
               on_window: Callable[[int, int], None] = lambda done, total: None) -> dict:
    windows = plan_windows(len(ids), len(prefix), window, stride)
    nll, scored = 0.0, 0
    for index, (_, log_probs, targets) in enumerate(window_log_probs(model, prefix, ids,
                                                                     windows)):
        nll -= log_probs.gather(1, targets.unsqueeze(1)).double().sum().item()
        scored += len(targets)
        on_window(index + 1, len(windows))
    return {"perplexity": math.exp(nll / scored), "scored_tokens": scored,
            "windows_count": len(windows), "nll_sum": nll}
