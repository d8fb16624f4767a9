"""Logit losses: Hinton soft targets (KL with temperature) and the hard-label cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.compress.losses.base import DistillLoss, LossInputs, register_loss


def soft_target_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher_T || student_T) x T^2, averaged over the batch.

    The T^2 factor keeps the gradient magnitude of the soft term comparable across temperatures
    (Hinton et al., 2015), so alpha means the same thing whatever T the schedule is at.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * (t * t)


@register_loss
class SoftTargetKL(DistillLoss):
    name = "soft_kl"
    role = "distill"
    needs = frozenset({"logits"})

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return soft_target_kl(inputs.student.logits, inputs.teacher.logits, inputs.temperature)


@register_loss
class HardLabelCE(DistillLoss):
    name = "hard_ce"
    role = "supervised"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.labels is None:
            raise ValueError("hard_ce needs labels: set data.label_column to a column of integer labels")
        return F.cross_entropy(inputs.student.logits.float(), inputs.labels)
