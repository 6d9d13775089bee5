"""The evaluation token stream and its windows (runs in the compress engine).

The text's tokens T are scored window by window. Every window's input starts with the model's
prefix P (its tokenizer's BOS where it adds one, see core/token_prefix.py), as every request a
server sees does, then holds text: `P + T[context_start : targets_end - 1]`, and scores
`T[targets_start : targets_end]`, the last of them from the input's last position. Each text
token is scored once; the first one only when there is a prefix to predict it from.

With the default stride the first window predicts `window - len(P) + 1` tokens and each later
one `window - len(P)` with one token of context, the last keeping a full window of context:
lm-evaluation-harness's rolling layout, except that lm-eval puts its prefix token only before
the first window (docs/evaluation.md says where the two differ). A smaller stride slides the
window (each scores `stride` new tokens with the rest of the window as context), as in the
Hugging Face perplexity guide.
"""

import hashlib
import math
from collections.abc import Callable, Iterator

import torch

from thrifty.compress.windows import Window, plan_windows
from thrifty.core.token_prefix import without_prefix


def evaluation_tokens(tokenizer, texts: list[str], max_tokens: int,
                      prefix: list[int] | tuple = ()) -> list[int]:
    """The first `max_tokens` tokens of the documents joined by blank lines (no special
    tokens: the prefix is put in front of each window, not into the text)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(without_prefix(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"],
                                  prefix))
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]


def tokens_sha256(prefix: list[int], ids: list[int]) -> str:
    """Fingerprint of what is scored: the prefix and the text's tokens."""
    return hashlib.sha256((",".join(map(str, prefix)) + ";" + ",".join(map(str, ids))).encode()
                          ).hexdigest()


@torch.inference_mode()
def window_log_probs(model, prefix: list[int], ids: list[int], windows: list[Window]
                     ) -> Iterator[tuple[Window, torch.Tensor, torch.Tensor]]:
    """(window, log-probabilities [targets, vocab] in float32, target ids) per window."""
    for w in windows:
        input_ids = torch.tensor(w.input_ids(prefix, ids)).unsqueeze(0)
        logits = model(input_ids).logits[0, w.logits_rows(len(prefix))].float()
        yield w, torch.log_softmax(logits, dim=-1), torch.tensor(ids[w.targets_start:w.targets_end])


def token_nll(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each target token's negative log-likelihood under its row of log-probabilities."""
    return -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)


def perplexity(model, prefix: list[int], ids: list[int], window: int, stride: int | None = None,
               on_window: Callable[[int, int], None] = lambda done, total: None) -> dict:
    windows = plan_windows(len(ids), len(prefix), window, stride)
    nll, scored = 0.0, 0
    for index, (_, log_probs, targets) in enumerate(window_log_probs(model, prefix, ids,
                                                                     windows)):
        nll += token_nll(log_probs, targets).double().sum().item()
        scored += len(targets)
        on_window(index + 1, len(windows))
    return {"perplexity": math.exp(nll / scored), "scored_tokens": scored,
            "windows_count": len(windows), "nll_sum": nll}
