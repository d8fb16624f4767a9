"""Token-level distillation for causal language models: next-token distributions, position by position.

``token_kd`` compares the teacher's and the student's next-token distributions at every target
position with one of three divergences (p = teacher, q = student, both at temperature T):

- ``forward_kl``: KL(p || q), mode-covering: the student spreads mass over all the teacher's options;
- ``reverse_kl``: KL(q || p), mode-seeking: the student concentrates on the teacher's main modes (MiniLLM);
- ``jsd``: the generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024),
  ``beta * KL(p || m) + (1 - beta) * KL(q || m)`` with ``m = beta * p + (1 - beta) * q``. It
  vanishes at beta = 0 and 1; divided by beta it tends to forward KL as beta -> 0, divided by
  1 - beta to reverse KL as beta -> 1, and at exactly 0 / 1 those limits are used (as TRL does).

Every divergence is multiplied by T^2, like ``soft_kl``, so alpha means the same at any T.

With ``top_k`` the distributions are compared on the teacher's k most likely tokens plus one
*tail* bucket holding everything else: the teacher's tail is 1 - (its top-k mass), the student's
is its mass outside the teacher's top-k ids. That is exactly what a top-k teacher cache can
provide, and with k = vocabulary the tail is empty and the loss equals the full-logit one.

Positions follow transformers' convention: ``labels`` are the input ids with ``IGNORE_INDEX``
(-100) where there is no target (prompt tokens, padding); logits at position t predict the
label at t + 1. Only target positions count, each once (token-weighted mean over the batch).
Logit rows beyond the shared tokenizer vocabulary (``LossContext.vocab_size``: embedding tables
are often padded, e.g. 151936 vs 152064 rows) are dropped before any softmax.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from edgedistill.compress.losses.base import IGNORE_INDEX, DistillLoss, LossInputs, register_loss

# Log-probability floor of a tail bucket: e^-69 ~ 1e-30, far below anything that matters, and finite
# so neither the forward pass nor the gradients see inf - inf.
_LOG_FLOOR = -69.0


class TopK(NamedTuple):
    indices: torch.Tensor  # int64 [..., k]
    logprobs: torch.Tensor  # float32 [..., k], sorted descending


def restrict_vocab(logits: torch.Tensor, vocab_size: int | None) -> torch.Tensor:
    """Drop padded logit rows beyond the tokenizer's vocabulary (a view, no copy)."""
    if vocab_size is None or logits.shape[-1] == vocab_size:
        return logits
    if logits.shape[-1] < vocab_size:
        raise ValueError(
            f"the model has {logits.shape[-1]} logit rows but the tokenizer {vocab_size} tokens; "
            "its embedding table does not cover the vocabulary (resize_token_embeddings)"
        )
    return logits[..., :vocab_size]


def teacher_topk(logits: torch.Tensor, k: int, temperature: float, vocab_size: int | None = None) -> TopK:
    """The top-k representation of teacher logits: ``log_softmax(logits.float() / T).topk(k)``.

    Rows beyond ``vocab_size`` are dropped first, so padding rows never take part; k is
    capped at the vocabulary size.
    """
    logits = restrict_vocab(logits, vocab_size)
    logprobs, indices = torch.log_softmax(logits.float() / temperature, -1).topk(min(k, logits.shape[-1]), -1)
    return TopK(indices, logprobs)


def next_token_positions(
    logits: torch.Tensor, labels: torch.Tensor, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [N, V], targets [N], mask [B, L-1]) at the N target positions, shifted for next-token prediction."""
    mask = labels[:, 1:] != IGNORE_INDEX
    selected = restrict_vocab(logits[:, :-1], vocab_size)[mask]
    return selected, labels[:, 1:][mask], mask


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities over the last dimension."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, kind: str, beta: float = 0.5
) -> torch.Tensor:
    """Per-row divergence between two distributions given as log-probabilities (last dimension)."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return _kl(teacher_logp, student_logp)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kl(student_logp, teacher_logp)
    if kind != "jsd":
        raise ValueError(f"unknown divergence {kind!r}; use forward_kl, reverse_kl or jsd")
    mixture = torch.logaddexp(teacher_logp + math.log(beta), student_logp + math.log1p(-beta))
    return beta * _kl(teacher_logp, mixture) + (1.0 - beta) * _kl(student_logp, mixture)


def topk_buckets(student_scaled: torch.Tensor, topk: TopK) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) log-probabilities over k + 1 buckets: the teacher's top-k ids, then the tail.

    ``student_scaled`` are the student's logits already divided by T, [N, V].
    """
    student_logp = torch.log_softmax(student_scaled, -1)
    student_top = student_logp.gather(-1, topk.indices)
    # The student's tail from its own logits (no 1 - sum cancellation): logsumexp outside the top-k
    # ids minus the normaliser. Masked entries get a finite very negative value: with k = V every
    # entry is masked, and an all -inf logsumexp would poison the gradient with NaN.
    masked = student_scaled.scatter(-1, topk.indices, torch.finfo(student_scaled.dtype).min / 2)
    student_tail = (torch.logsumexp(masked, -1) - torch.logsumexp(student_scaled, -1)).clamp_min(_LOG_FLOOR)
    teacher_mass = topk.logprobs.exp().sum(-1).clamp(max=1.0)
    teacher_tail = torch.log1p(-teacher_mass).clamp_min(_LOG_FLOOR)
    teacher = torch.cat([topk.logprobs.float(), teacher_tail.unsqueeze(-1)], -1)
    student = torch.cat([student_top, student_tail.unsqueeze(-1)], -1)
    return teacher, student


def _require_labels(inputs: LossInputs, name: str) -> torch.Tensor:
    if inputs.labels is None or inputs.labels.dim() != 2:
        raise ValueError(
            f"{name} needs per-token labels [batch, length] (input ids, -100 where there is no target): "
            "use task causal-lm, whose data path makes them"
        )
    return inputs.labels


@register_loss
class TokenKD(DistillLoss):
    """Next-token distillation with forward KL, reverse KL or generalized JSD, on full or top-k logits."""

    name = "token_kd"
    role = "distill"
    needs = frozenset({"logits"})

    def __init__(self, spec, ctx):
        super().__init__(spec, ctx)
        self.divergence = spec.divergence or "forward_kl"
        self.beta = 0.5 if spec.beta is None else spec.beta
        self.top_k = spec.top_k
        self.vocab_size = ctx.vocab_size
        if self.top_k is not None:
            self.needs = frozenset({"topk"})  # a top-k teacher cache can stand in for the logits

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        labels = _require_labels(inputs, self.name)
        t = inputs.temperature
        student_logits = inputs.student.logits
        teacher = inputs.teacher
        vocab_size = self.vocab_size
        if vocab_size is None:  # no tokenizer told us: compare the rows both models have
            sizes = [x.shape[-1] for x in (student_logits, teacher.logits) if x is not None]
            vocab_size = min(sizes)
        student, _, mask = next_token_positions(student_logits, labels, vocab_size)
        if student.shape[0] == 0:
            return student_logits.sum() * 0.0  # no target in this batch: zero, still part of the graph
        student = student.float() / t
        if self.top_k is None:
            if teacher.logits is None:
                raise ValueError(
                    "token_kd on full logits needs the teacher's logits, but the teacher outputs hold only its "
                    "top-k; set top_k on the loss (at most the k of the cache)"
                )
            teacher_logits = restrict_vocab(teacher.logits[:, :-1], vocab_size)[mask]
            teacher_logp = torch.log_softmax(teacher_logits.float() / t, -1)
            # A teacher may rule tokens out with -inf logits: 0 * (-inf) would turn the KL into NaN.
            teacher_logp.clamp_(min=torch.finfo(teacher_logp.dtype).min)
            student_logp = torch.log_softmax(student, -1)
        else:
            topk = self._teacher_topk(teacher, mask, t, vocab_size)
            teacher_logp, student_logp = topk_buckets(student, topk)
        per_token = divergence(teacher_logp, student_logp, self.divergence, self.beta)
        return per_token.mean() * (t * t)

    def _teacher_topk(self, teacher, mask: torch.Tensor, temperature: float, vocab_size: int) -> TopK:
        if teacher.topk_indices is None:
            logits = restrict_vocab(teacher.logits[:, :-1], vocab_size)[mask]
            return teacher_topk(logits, self.top_k, temperature)
        cached_k = teacher.topk_indices.shape[-1]
        if cached_k < min(self.top_k, vocab_size):
            raise ValueError(
                f"token_kd top_k={self.top_k} but the teacher outputs hold only the top {cached_k}"
            )
        if teacher.topk_temperature is not None and not math.isclose(teacher.topk_temperature, temperature):
            raise ValueError(
                f"the teacher's top-k log-probabilities were taken at temperature {teacher.topk_temperature}, "
                f"but the loss runs at {temperature}; use a constant temperature equal to the cache's"
            )
        k = min(self.top_k, cached_k)
        indices = teacher.topk_indices[:, :-1][mask][..., :k].long()  # a cache may store int32
        if indices.numel() and int(indices.max()) >= vocab_size:
            raise ValueError(
                f"the teacher's top-k ids reach {int(indices.max())}, beyond the {vocab_size}-token vocabulary: "
                "the cache kept padded logit rows; rebuild it with teacher_topk(..., vocab_size=len(tokenizer))"
            )
        return TopK(indices, teacher.topk_logprobs[:, :-1][mask][..., :k].float())


def next_token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, vocab_size: int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy over target positions (hard labels), padded vocab rows dropped."""
    selected, targets, _ = next_token_positions(logits, labels, vocab_size)
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(selected.float(), targets)


@register_loss
class NextTokenCE(DistillLoss):
    """Supervised next-token cross-entropy on the data's own tokens (weighted by 1 - alpha)."""

    name = "next_token_ce"
    role = "supervised"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        labels = _require_labels(inputs, self.name)
        return next_token_cross_entropy(inputs.student.logits, labels, self.ctx.vocab_size)
