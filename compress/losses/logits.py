"""Logit losses: Hinton soft targets (KL with temperature) and the hard-label cross-entropy.

With several teachers (`teachers:`) the soft target is one distribution combined from theirs
(`ensemble_target`): a weighted mixture of each teacher's probabilities, each softened at its own
temperature. Probabilities, not logits, are averaged because logit scales of different
architectures (and differently trained heads) are not comparable: one teacher's logits may span
+-3 and another's +-15, and a mean of logits would be the second teacher's opinion whatever the
weights say. Probabilities live on one scale, and their mixture is the ensemble's predictive
distribution. ``combine: confidence`` weights each teacher per example by its weight times its
confidence, 1 - H(p)/log C, the normalised entropy of its own (temperature-1) probabilities:
softening flattens every teacher towards uniform, so the unsoftened one says which is sure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedistill.compress.losses.base import DistillLoss, EnsembleLogits, LossInputs, register_loss


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


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """1 - H(softmax(logits)) / log C per row: 1 for a one-hot belief, 0 for a uniform one."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return (1.0 - entropy / math.log(logits.shape[-1])).clamp(0.0, 1.0)


def ensemble_target(ensemble: EnsembleLogits, temperature: float) -> torch.Tensor:
    """The combined soft target [B, C]: sum_k a_k(x) softmax(z_k / T_k), the a_k(x) summing to 1.

    ``combine`` mean: a_k = w_k / sum w. confidence: a_k(x) proportional to w_k x confidence_k(x)
    (rows where every teacher is uniform fall back to w_k). T_k is the teacher's own temperature,
    or ``temperature`` (the step's) where it has none.
    """
    logits = ensemble.logits.float()
    temps = [temperature if t is None else t for t in ensemble.temperatures]
    probs = torch.stack([F.softmax(z / t, dim=-1) for z, t in zip(logits, temps, strict=True)])  # [K, B, C]
    weights = torch.tensor(ensemble.weights, dtype=probs.dtype, device=probs.device)[:, None]  # [K, 1]
    shares = weights.expand(probs.shape[:2])
    if ensemble.combine == "confidence":
        sure = shares * torch.stack([confidence(z) for z in logits])
        shares = torch.where(sure.sum(0, keepdim=True) > 1e-6, sure, shares)
    shares = shares / shares.sum(0, keepdim=True)
    return (shares[..., None] * probs).sum(0)


def soft_target_kl_to(student_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(target || student_T) x T^2 for a target that is already a (tempered) distribution.

    The target is not softened again; the student's softmax and the T^2 factor use ``temperature``
    as `soft_target_kl` does, so one teacher of weight 1 gives exactly its loss.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, target.float(), log_target=False, reduction="batchmean")
    return kl * (t * t)


@register_loss
class SoftTargetKL(DistillLoss):
    name = "soft_kl"
    role = "distill"
    needs = frozenset({"logits"})

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        ensemble = inputs.teacher.ensemble
        if ensemble is not None:
            target = ensemble_target(ensemble, inputs.temperature)
            return soft_target_kl_to(inputs.student.logits, target, inputs.temperature)
        return soft_target_kl(inputs.student.logits, inputs.teacher.logits, inputs.temperature)


@register_loss
class HardLabelCE(DistillLoss):
    name = "hard_ce"
    role = "supervised"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.labels is None:
            raise ValueError("hard_ce needs labels: set data.label_column to a column of integer labels")
        return F.cross_entropy(inputs.student.logits.float(), inputs.labels)
