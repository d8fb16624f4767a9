"""Sentence-embedding matching for feature-extraction students (mean pooling, cosine or MSE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.compress.losses.base import DistillLoss, LossInputs, register_loss


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors over real (unpadded) tokens: the sentence-transformers pooling.

    The torch twin of `edgedistill.numerics.mean_pool` (which pools runtimes' numpy outputs for
    export parity and the bench): this one keeps autograd and the training device and dtype."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class _EmbeddingLoss(DistillLoss):
    role = "distill"
    needs = frozenset({"embedding"})

    def __init__(self, spec, ctx):
        super().__init__(spec, ctx)
        # Narrower students are compared through a learned projection to the teacher's width.
        self.projection = (
            nn.Linear(ctx.student_hidden, ctx.teacher_hidden, bias=False)
            if ctx.student_hidden != ctx.teacher_hidden
            else None
        )

    def project(self, student_embedding: torch.Tensor) -> torch.Tensor:
        return self.projection(student_embedding) if self.projection is not None else student_embedding


@register_loss
class EmbeddingCosine(_EmbeddingLoss):
    name = "embedding_cosine"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student = self.project(inputs.student.embedding.float())
        return (1.0 - F.cosine_similarity(student, inputs.teacher.embedding.float(), dim=-1)).mean()


@register_loss
class EmbeddingMSE(_EmbeddingLoss):
    name = "embedding_mse"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student = self.project(inputs.student.embedding.float())
        return F.mse_loss(student, inputs.teacher.embedding.float())
