"""Distillation losses (compress engine): forward KL, reverse KL and generalized JSD between the
teacher's and the student's next-token distributions, mixed with cross-entropy on the labels.

Both distributions are compared on the same bins. With an online teacher the bins are the
whole vocabulary. With an offline (top-k) teacher they are the teacher's k tokens plus one
"rest of the vocabulary" bin: the student's rest is exact (log-sum-exp of its other logits),
the teacher's is 1 - the sum of its top-k probabilities (vLLM's log-probabilities are over the
full vocabulary). At temperature 1 this is the exact divergence of the two distributions
coarse-grained onto k+1 outcomes; at another temperature the teacher's rest is scaled as if it
were one token (its inner shape is not stored).

The generalized JSD is TRL's (GKD): beta weights the teacher in the mixture
M = beta * P + (1 - beta) * Q, and JSD = beta * KL(P||M) + (1 - beta) * KL(Q||M). Soft losses are
multiplied by T^2 so their gradients keep their size when the temperature changes (Hinton).
"""

import math

import torch
import torch.nn.functional as F

LOSSES = ("fkl", "rkl", "jsd")


def divergence(teacher_logp: torch.Tensor, student_logp: torch.Tensor, loss: str,
               beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence over the last axis (both are log-probabilities on the same bins)."""
    p, q = teacher_logp.exp(), student_logp.exp()
    if loss == "fkl":  # KL(teacher || student): mass-covering
        return (p * (teacher_logp - student_logp)).sum(-1)
    if loss == "rkl":  # KL(student || teacher): mode-seeking
        return (q * (student_logp - teacher_logp)).sum(-1)
    if loss == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError("beta must be strictly between 0 and 1 (use fkl or rkl at the ends)")
        mixture = torch.logsumexp(torch.stack([teacher_logp + math.log(beta),
                                               student_logp + math.log(1 - beta)]), dim=0)
        return (beta * (p * (teacher_logp - mixture)).sum(-1)
                + (1 - beta) * (q * (student_logp - mixture)).sum(-1))
    raise ValueError(f"unknown loss {loss!r}; use one of {LOSSES}")


def topk_bins(student_logits: torch.Tensor, teacher_ids: torch.Tensor,
              teacher_logprobs: torch.Tensor, temperature: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities on the teacher's top-k bins plus a rest bin.

    student_logits [..., V]; teacher_ids and teacher_logprobs [..., k].
    """
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    ids = teacher_ids.long()
    student_top = student_logp.gather(-1, ids)
    student_rest = torch.logsumexp(student_logp.scatter(-1, ids, float("-inf")), dim=-1)
    student_bins = torch.cat([student_top, student_rest.unsqueeze(-1)], dim=-1)

    teacher_top = teacher_logprobs.float()
    top_mass = teacher_top.exp().sum(-1).clamp(max=1.0 - 1e-6)
    teacher_rest = torch.log1p(-top_mass).unsqueeze(-1)
    teacher_bins = F.log_softmax(torch.cat([teacher_top, teacher_rest], dim=-1) / temperature,
                                 dim=-1)
    return teacher_bins, student_bins


def full_bins(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    return (F.log_softmax(teacher_logits.float() / temperature, dim=-1),
            F.log_softmax(student_logits.float() / temperature, dim=-1))


def next_token_ce(student_logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t's logits against token t+1 (logits [B, L, V])."""
    logits = student_logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))


def distillation_loss(student_logits: torch.Tensor, input_ids: torch.Tensor, *, loss: str,
                      alpha: float, temperature: float, beta: float = 0.5,
                      teacher_ids: torch.Tensor | None = None,
                      teacher_logprobs: torch.Tensor | None = None,
                      teacher_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """alpha * T^2 * divergence + (1 - alpha) * cross-entropy, and its two parts.

    Position t of the student (logits[:, t]) predicts token t+1, so the last position has no
    target and is dropped; offline teacher rows are already aligned to positions 0..L-2.
    """
    ce = next_token_ce(student_logits, input_ids)
    if alpha == 0.0:
        return {"loss": ce, "ce": ce.detach(), "kd": torch.zeros(())}
    logits = student_logits[:, :-1]
    if teacher_logits is not None:
        teacher_bins, student_bins = full_bins(logits, teacher_logits[:, :-1], temperature)
    else:
        teacher_bins, student_bins = topk_bins(logits, teacher_ids, teacher_logprobs, temperature)
    kd = divergence(teacher_bins, student_bins, loss, beta).mean() * temperature ** 2
    return {"loss": alpha * kd + (1 - alpha) * ce, "ce": ce.detach(), "kd": kd.detach()}
