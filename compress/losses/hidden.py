"""Hidden-state matching (FitNets/TinyBERT): MSE between mapped student and teacher layers.

When widths differ, a learned linear projection per mapped layer lifts the student state to
the teacher's width; it is trained with the student and thrown away afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedistill.compress.losses.base import (
    DistillLoss,
    LossInputs,
    check_layer_map,
    masked_mean,
    register_loss,
)


@register_loss
class HiddenStateMSE(DistillLoss):
    name = "hidden_mse"
    role = "distill"
    needs = frozenset({"hidden_states"})
    student_needs = frozenset({"hidden_states"})

    def __init__(self, spec, ctx):
        super().__init__(spec, ctx)
        self.layer_map = check_layer_map(
            spec.layer_map or ctx.default_layer_map(), ctx, "hidden_mse.layer_map"
        )
        if ctx.student_hidden != ctx.teacher_hidden:
            self.projections = nn.ModuleDict(
                {str(s): nn.Linear(ctx.student_hidden, ctx.teacher_hidden) for s in self.layer_map}
            )
        else:
            self.projections = None

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        total = 0.0
        for s, t in self.layer_map.items():
            student_state = inputs.student.hidden_states[s].float()
            if self.projections is not None:
                student_state = self.projections[str(s)](student_state)
            teacher_state = inputs.teacher.hidden_states[t].float()
            # Mean over real tokens of the per-token MSE (mean over hidden dims).
            per_token = (student_state - teacher_state).pow(2).mean(-1)
            total = total + masked_mean(per_token, inputs.attention_mask)
        return total / len(self.layer_map)
