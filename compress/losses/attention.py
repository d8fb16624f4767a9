"""Attention-distribution KL (MiniLM / TinyBERT style).

For each mapped layer, each query row of the attention matrix is a distribution over keys; the
loss is KL(teacher row || student row), averaged over heads and real query tokens. When the
head counts differ, head-averaged distributions are compared instead (documented fallback:
MiniLM-v2's relation matching would be the refinement).
"""

from __future__ import annotations

import torch

from edgedistill.compress.losses.base import (
    DistillLoss,
    LossInputs,
    check_layer_map,
    masked_mean,
    register_loss,
)

_EPS = 1e-12


@register_loss
class AttentionKL(DistillLoss):
    name = "attention_kl"
    role = "distill"
    needs = frozenset({"attentions"})
    student_needs = frozenset({"attentions"})

    def __init__(self, spec, ctx):
        super().__init__(spec, ctx)
        # Default: last layer to last layer, as in MiniLM (deep self-attention distillation).
        default = {ctx.student_layers: ctx.teacher_layers}
        self.layer_map = check_layer_map(spec.layer_map or default, ctx, "attention_kl.layer_map", first=1)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        total = 0.0
        for s, t in self.layer_map.items():
            student_attn = inputs.student.attentions[s - 1].float()  # [B, H, Lq, Lk]
            teacher_attn = inputs.teacher.attentions[t - 1].float()
            if student_attn.shape[1] != teacher_attn.shape[1]:
                student_attn = student_attn.mean(1, keepdim=True)
                teacher_attn = teacher_attn.mean(1, keepdim=True)
            kl = teacher_attn * (torch.log(teacher_attn + _EPS) - torch.log(student_attn + _EPS))
            per_query = kl.sum(-1).mean(1)  # sum over keys, mean over heads -> [B, Lq]
            total = total + masked_mean(per_query, inputs.attention_mask)
        return total / len(self.layer_map)
