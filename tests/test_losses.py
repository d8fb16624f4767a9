"""Every registered loss runs and has a gradient; schedules hit their endpoints."""

from __future__ import annotations

import typing

import pytest
import torch

from edgedistill.compress.config import ConstantSchedule, LossSpec, RampSchedule
from edgedistill.compress.losses import (
    LOSSES,
    LossContext,
    LossInputs,
    StudentOutputs,
    TeacherOutputs,
    build_loss,
)
from edgedistill.compress.losses.logits import soft_target_kl
from edgedistill.compress.schedules import schedule_value


def test_registry_matches_recipe_names():
    names = set(typing.get_args(LossSpec.model_fields["name"].annotation))
    assert names == set(LOSSES), "every loss name a recipe accepts must be registered, and vice versa"


def _fake_batch(student_hidden: int, teacher_hidden: int, heads_s: int = 2, heads_t: int = 4):
    torch.manual_seed(0)
    b, length, classes = 3, 5, 2
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 3:] = 0

    def attn(h):
        return torch.softmax(torch.randn(b, h, length, length), -1)

    student = StudentOutputs(
        logits=torch.randn(b, classes, requires_grad=True),
        hidden_states=tuple(torch.randn(b, length, student_hidden, requires_grad=True) for _ in range(3)),
        attentions=tuple(attn(heads_s).requires_grad_() for _ in range(2)),
        embedding=torch.randn(b, student_hidden, requires_grad=True),
    )
    teacher = TeacherOutputs(
        logits=torch.randn(b, classes),
        hidden_states=tuple(torch.randn(b, length, teacher_hidden) for _ in range(5)),
        attentions=tuple(attn(heads_t) for _ in range(4)),
        embedding=torch.randn(b, teacher_hidden),
    )
    return LossInputs(student, teacher, mask, torch.tensor([0, 1, 1]), temperature=2.0)


# Losses on next-token distributions: logits [B, L, vocab] and per-token labels.
TOKEN_LOSSES = {"token_kd", "next_token_ce"}


def _fake_token_batch(batch: LossInputs, vocab: int = 11) -> LossInputs:
    b, length = batch.attention_mask.shape
    labels = torch.randint(0, vocab, (b, length))
    labels[batch.attention_mask == 0] = -100
    batch.student.logits = torch.randn(b, length, vocab, requires_grad=True)
    batch.teacher.logits = torch.randn(b, length, vocab)
    batch.labels = labels
    return batch


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("widths", [(8, 8), (6, 8)])
def test_each_loss_runs_with_gradient(name, widths):
    ctx = LossContext(
        student_layers=2,
        teacher_layers=4,
        student_hidden=widths[0],
        teacher_hidden=widths[1],
        student_heads=2,
        teacher_heads=4,
        selected_layers=[0, 3] if widths[0] == widths[1] else None,
    )
    loss = build_loss(LossSpec(name=name), ctx)
    batch = _fake_batch(*widths)
    value = loss(_fake_token_batch(batch) if name in TOKEN_LOSSES else batch)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() >= 0
    value.backward()


def test_soft_kl_zero_for_identical_logits_and_scales_with_t_squared():
    logits = torch.randn(4, 3)
    assert soft_target_kl(logits, logits, 4.0).abs() < 1e-6
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    # T^2 scaling: at large T, KL ~ 1/T^2, so KL * T^2 approaches a constant.
    assert float(soft_target_kl(a, b, 50.0)) == pytest.approx(float(soft_target_kl(a, b, 100.0)), rel=0.05)


def test_hidden_mse_layer_map_validated():
    ctx = LossContext(2, 4, 8, 8, 2, 4, None)
    with pytest.raises(ValueError, match="teacher layer 9"):
        build_loss(LossSpec(name="hidden_mse", layer_map={1: 9}), ctx)
    assert build_loss(LossSpec(name="hidden_mse"), ctx).layer_map == {1: 2, 2: 4}


@pytest.mark.parametrize(
    "schedule,expected",
    [
        (ConstantSchedule(value=3.0), (3.0, 3.0, 3.0)),
        (RampSchedule(kind="linear", start=8.0, end=2.0), (8.0, 5.0, 2.0)),
        (RampSchedule(kind="cosine", start=8.0, end=2.0), (8.0, 5.0, 2.0)),
    ],
)
def test_schedules(schedule, expected):
    got = tuple(schedule_value(schedule, p) for p in (0.0, 0.5, 1.0))
    assert got == pytest.approx(expected)
    if schedule.kind == "cosine":  # slower than linear at the start
        assert schedule_value(schedule, 0.1) > 8.0 - 0.1 * 6.0
