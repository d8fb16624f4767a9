"""Quantization-aware knowledge distillation: teacher -> smaller student, int8 ranges learned in training.

Public API (heavy modules load on first use, so ``import edgedistill.compress`` stays cheap)::

    from edgedistill.compress import DistillRecipe, distill
    report = distill(DistillRecipe(teacher={"path": "teacher/"}, student={"layers": 3}, ...), "runs/x")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgedistill.compress.config import DistillRecipe, FinetuneRecipe

if TYPE_CHECKING:  # pragma: no cover
    from edgedistill.compress.distillation import distill
    from edgedistill.compress.finetuning import finetune

__all__ = ["DistillRecipe", "FinetuneRecipe", "distill", "finetune"]


def __getattr__(name: str) -> Any:
    if name == "distill":
        from edgedistill.compress.distillation import distill

        return distill
    if name == "finetune":
        from edgedistill.compress.finetuning import finetune

        return finetune
    raise AttributeError(f"module 'edgedistill.compress' has no attribute {name!r}")
