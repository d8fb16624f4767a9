"""The loss registry: each distillation loss is a small nn.Module registered under a recipe name.

A loss declares whether it is a *distillation* term (weighted by alpha) or a *supervised* term
(weighted by 1 - alpha), and which teacher outputs it needs, so the trainer asks the teacher
(or the cached teacher outputs) only for what the chosen losses use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from edgedistill.compress.config import LossSpec

# "topk": the teacher's top-k next-token log-probs suffice (a top-k cache may serve them; a live
# teacher's logits always do).
TeacherField = Literal["logits", "hidden_states", "attentions", "embedding", "topk"]

# Label of a position that is not a target (prompt tokens, padding): transformers' convention.
IGNORE_INDEX = -100


@dataclass
class TeacherOutputs:
    """What the frozen teacher produced for a batch (live, or read back from the output cache).

    Language models may hand over their next-token distributions as top-k instead of full
    logits (a top-k teacher logit cache): ``topk_indices`` int64 [B, L, k] and ``topk_logprobs``
    float32 [B, L, k] = ``torch.log_softmax(logits.float() / T, -1).topk(k, -1)`` at the recipe
    temperature ``topk_temperature``, aligned with the batch's input_ids like ``logits`` (position
    t holds the distribution of the token at t + 1); see ``losses.token.teacher_topk``.
    """

    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    embedding: torch.Tensor | None = None  # mean-pooled last hidden state
    topk_indices: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    topk_temperature: float | None = None
    # several teachers (`teachers:`): every teacher's logits, combined into one target by soft_kl
    ensemble: EnsembleLogits | None = None


@dataclass
class EnsembleLogits:
    """The class logits of every teacher of ``teachers:`` for a batch, with how they are combined.

    ``logits`` [K, B, C] (teacher k's logits for the batch's examples), ``weights`` [K] (the recipe's,
    not yet normalised), ``temperatures`` [K] (None: the step's temperature), ``combine`` ("mean" or
    "confidence"); see ``losses.logits.ensemble_target``.
    """

    logits: torch.Tensor
    weights: list[float]
    temperatures: list[float | None]
    combine: str = "mean"


@dataclass
class StudentOutputs:
    logits: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None
    attentions: tuple[torch.Tensor, ...] | None
    embedding: torch.Tensor | None


@dataclass
class LossInputs:
    student: StudentOutputs
    teacher: TeacherOutputs
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    temperature: float


@dataclass
class LossContext:
    """Shapes a loss needs to build itself (projections, default layer maps)."""

    student_layers: int
    teacher_layers: int
    student_hidden: int
    teacher_hidden: int
    student_heads: int
    teacher_heads: int
    # Teacher layer (0-based) each student layer was initialised from, when derived from the teacher.
    selected_layers: list[int] | None = None
    # Size of the shared tokenizer vocabulary (len(tokenizer)); logit rows beyond it are padding.
    vocab_size: int | None = None

    def default_layer_map(self) -> dict[int, int]:
        """student hidden-state index -> teacher hidden-state index (0 = embeddings, l = output of layer l)."""
        if self.selected_layers is not None:
            return {j + 1: t + 1 for j, t in enumerate(self.selected_layers)}
        ratio = self.teacher_layers / self.student_layers
        return {j: round(j * ratio) for j in range(1, self.student_layers + 1)}


class DistillLoss(nn.Module):
    """Base class. Subclasses set ``name``, ``role`` and ``needs`` and implement ``forward``."""

    name: ClassVar[str]
    role: ClassVar[Literal["distill", "supervised"]]
    needs: ClassVar[frozenset[str]] = frozenset()  # teacher fields
    student_needs: ClassVar[frozenset[str]] = frozenset()  # "hidden_states", "attentions"

    def __init__(self, spec: LossSpec, ctx: LossContext):
        super().__init__()
        self.spec = spec
        self.ctx = ctx

    def forward(self, inputs: LossInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


LOSSES: dict[str, type[DistillLoss]] = {}


def register_loss(cls: type[DistillLoss]) -> type[DistillLoss]:
    if cls.name in LOSSES:
        raise ValueError(f"loss {cls.name!r} registered twice")
    LOSSES[cls.name] = cls
    return cls


def build_loss(spec: LossSpec, ctx: LossContext) -> DistillLoss:
    try:
        cls = LOSSES[spec.name]
    except KeyError:
        raise ValueError(f"unknown loss {spec.name!r}; registered: {sorted(LOSSES)}") from None
    return cls(spec, ctx)


def check_layer_map(layer_map: dict[int, int], ctx: LossContext, what: str, first: int = 0) -> dict[int, int]:
    for s, t in layer_map.items():
        if not first <= s <= ctx.student_layers:
            raise ValueError(f"{what}: student layer {s} outside [{first}, {ctx.student_layers}]")
        if not first <= t <= ctx.teacher_layers:
            raise ValueError(f"{what}: teacher layer {t} outside [{first}, {ctx.teacher_layers}]")
    return layer_map


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions where ``mask`` is 1; ``values`` is [B, L] or [B, L, ...] summed over trailing dims first."""
    while values.dim() > mask.dim():
        values = values.sum(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
