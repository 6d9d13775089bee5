"""How far a candidate's next-token distribution is from the base model's, with 95% intervals
(runs in the compress engine).

Per scored token: the negative log-likelihood of the true token, the KL divergence
KL(base || candidate) over the whole vocabulary, and whether the two models' most likely tokens
agree -- the measures of llama.cpp's `--kl-divergence` report. The base runs once, however many
candidates follow: its log-probabilities are kept on disk in float16 (as llama.cpp keeps its
base logits), one row per scored token, so memory does not grow with the evaluation
(tests/integration/test_eval_quality_real.py checks the result against float32). Only the
base's top-k tokens plus a rest bin (the teacher-signal representation) would be smaller, but
it understates the KL of a small model, whose distribution has a long tail.

Intervals: tokens next to each other are correlated, so they are resampled in blocks of
BLOCK_TOKENS consecutive scored tokens (a block bootstrap, RESAMPLES draws, fixed seed); a
shorter evaluation gets shorter blocks so that it still has MIN_BLOCKS of them, and one too
short for that gets no interval (None) rather than a falsely narrow one.
"""

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from thrifty.compress.perplexity import token_nll
from thrifty.core.errors import BadInput

BLOCK_TOKENS = 128
MIN_BLOCKS = 20  # fewer blocks than this make a bootstrap percentile interval unreliable
MIN_BLOCK_TOKENS = 32  # shorter blocks would cut through the tokens' correlation
RESAMPLES = 1000


class BaseLogProbs:
    """The base's log-probabilities [scored tokens, vocab] in float16 on disk, and its exact
    top-1 token per position."""

    def __init__(self, folder: Path):
        # one file per process: evaluations without a run folder share the temporary folder
        self.path = Path(folder) / f"base-logprobs-{os.getpid()}.f16.npy"
        self.tokens = 0
        self.rows = None  # created at the first window, as wide as the model's logits
        self.top1 = np.zeros(0, dtype=np.int64)
        self.filled = 0

    def expect(self, tokens: int) -> None:
        self.tokens = tokens
        self.top1 = np.zeros(tokens, dtype=np.int64)

    def _allocate(self, vocab: int) -> None:
        needed, free = self.tokens * vocab * 2, shutil.disk_usage(self.path.parent).free
        if needed > 0.9 * free:
            raise BadInput(
                f"Comparing models with the base keeps the base's log-probabilities on disk: "
                f"{needed / 1e9:.1f} GB for {self.tokens:,} tokens × a vocabulary of {vocab:,}, "
                f"but {self.path.parent} has {free / 1e9:.1f} GB free. Use a smaller "
                "--max-tokens, or free some space.")
        self.rows = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16,
                                              shape=(self.tokens, vocab))

    def append(self, log_probs: torch.Tensor) -> None:
        if self.rows is None:
            self._allocate(log_probs.shape[-1])
        end = self.filled + len(log_probs)
        self.rows[self.filled:end] = log_probs.half().numpy()
        self.top1[self.filled:end] = log_probs.argmax(-1).numpy()
        self.filled = end

    def window(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.from_numpy(np.asarray(self.rows[start:start + count], dtype=np.float32))
        return rows, torch.from_numpy(self.top1[start:start + count])

    def remove(self) -> None:
        self.rows = None  # closes the memory map
        self.path.unlink(missing_ok=True)


@dataclass
class TokenScores:
    """Per scored token, in stream order: the model's own negative log-likelihood, and for a
    candidate its comparison with the base."""

    nll: list[np.ndarray] = field(default_factory=list)
    kld: list[np.ndarray] = field(default_factory=list)
    top1_agree: list[np.ndarray] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return sum(len(window) for window in self.nll)

    def array(self, name: str) -> np.ndarray:
        return np.concatenate(getattr(self, name))


def add_window(scores: TokenScores, log_probs: torch.Tensor, targets: torch.Tensor,
               keep: BaseLogProbs | None = None, base: BaseLogProbs | None = None) -> None:
    """Score one window's tokens; keep them as the base's, or compare them with the base's."""
    start = scores.scored
    scores.nll.append(token_nll(log_probs, targets).double().numpy())
    if keep is not None:
        keep.append(log_probs)
    if base is not None:
        base_rows, base_top1 = base.window(start, len(targets))
        scores.kld.append(_kl_divergence(base_rows, log_probs))
        scores.top1_agree.append((log_probs.argmax(-1) == base_top1).numpy())


def _kl_divergence(base: torch.Tensor, candidate: torch.Tensor, rows: int = 256) -> np.ndarray:
    """KL(base || candidate) per row in float64, a few rows at a time. Both rows are normalised
    again first: float16 rounding of the base and float32 sums over a 50k vocabulary err by
    ~1e-5, the size of the KL between a model and itself."""
    out = []
    for start in range(0, len(base), rows):
        b = torch.log_softmax(base[start:start + rows].double(), dim=-1)
        c = torch.log_softmax(candidate[start:start + rows].double(), dim=-1)
        out.append((b.exp() * (b - c)).sum(-1).numpy())
    return np.concatenate(out)


def block_tokens(n: int) -> int | None:
    """Tokens per bootstrap block: BLOCK_TOKENS, shorter (down to MIN_BLOCK_TOKENS) so that a
    short evaluation still has MIN_BLOCKS blocks; None when even that is too few to resample."""
    size = min(BLOCK_TOKENS, n // MIN_BLOCKS)
    return size if size >= MIN_BLOCK_TOKENS else None


def _blocks(n: int, size: int) -> list[slice]:
    """Consecutive blocks of `size` tokens; a short tail joins the block before it."""
    edges = list(range(0, n, size)) + [n]
    if len(edges) > 2 and n - edges[-2] < size:
        edges.pop(-2)
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False)]


def _resampled(values: np.ndarray, statistic, seed: int = 0
               ) -> tuple[float, list[float] | None]:
    """The statistic and its 95% block-bootstrap interval (None: too few tokens for one)."""
    size = block_tokens(len(values))
    if size is None:
        return float(statistic(values)), None
    blocks = [values[s] for s in _blocks(len(values), size)]
    rng = np.random.default_rng(seed)
    draws = [statistic(np.concatenate([blocks[i] for i in rng.integers(0, len(blocks),
                                                                        len(blocks))]))
             for _ in range(RESAMPLES)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(statistic(values)), [float(low), float(high)]


def perplexity_interval(nll: np.ndarray) -> list[float] | None:
    _, interval = _resampled(nll, np.mean)
    return [math.exp(interval[0]), math.exp(interval[1])] if interval else None


def compare(base: TokenScores, candidate: TokenScores) -> dict:
    """The candidate against the base, each figure with its interval."""
    kld, agree = candidate.array("kld"), candidate.array("top1_agree").astype(np.float64)
    delta = candidate.array("nll") - base.array("nll")
    out: dict = {}
    for name, values, statistic in [
            ("kld_mean", kld, np.mean),
            ("kld_p90", kld, lambda v: np.percentile(v, 90)),
            ("kld_p99", kld, lambda v: np.percentile(v, 99)),
            ("top1_agreement_pct", agree, lambda v: 100 * np.mean(v)),
            ("delta_log_ppl", delta, np.mean)]:
        out[name], out[f"{name}_ci95"] = _resampled(values, statistic)
    interval = out["delta_log_ppl_ci95"]
    out["delta_log_ppl_within_noise"] = interval[0] <= 0.0 <= interval[1] if interval else None
    size = block_tokens(len(kld))
    out["interval"] = (f"95% block bootstrap ({RESAMPLES} resamples of {size}-token blocks)"
                       if size else f"none: fewer than {MIN_BLOCKS * MIN_BLOCK_TOKENS} scored "
                       "tokens are too few to resample")
    return out
