"""Registered distillation losses. Importing this package registers every built-in loss."""

from edgedistill.compress.losses import attention, embedding, hidden, logits  # noqa: F401  (registration)
from edgedistill.compress.losses.base import (
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

__all__ = [
    "LOSSES",
    "DistillLoss",
    "LossContext",
    "LossInputs",
    "StudentOutputs",
    "TeacherOutputs",
    "build_loss",
    "mean_pool",
    "register_loss",
]
