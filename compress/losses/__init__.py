"""Registered distillation losses. Importing this package registers every built-in loss."""

from edgedistill.compress.losses import attention, embedding, hidden, logits, token  # noqa: F401  (registration)
from edgedistill.compress.losses.base import (
    IGNORE_INDEX,
    LOSSES,
    DistillLoss,
    LossContext,
    LossInputs,
    StudentOutputs,
    TeacherOutputs,
    build_loss,
    register_loss,
)
from edgedistill.compress.losses.embedding import mean_pool
from edgedistill.compress.losses.token import TopK, next_token_cross_entropy, teacher_topk

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "DistillLoss",
    "LossContext",
    "LossInputs",
    "StudentOutputs",
    "TeacherOutputs",
    "TopK",
    "build_loss",
    "mean_pool",
    "next_token_cross_entropy",
    "register_loss",
    "teacher_topk",
]
