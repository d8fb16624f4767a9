"""The recipe's `teachers:` list: several teachers for one student (issue 26), checked before any work.

``teacher: {path: ...}`` stays the one-teacher spelling. ``teachers: [{path, weight, temperature,
name, output}, ...]`` names several; the student is derived from the first (its layers, its
tokenizer), and every other teacher tokenizes the raw text itself, so teachers need not share a
vocabulary or an architecture. Each entry names the student output it teaches (``output``): today
that is the task's own output only (an ensemble of teachers for one task); a student with several
outputs, each taught by its own teachers (the generalist), is the next step and is refused here
with that said.

What cannot work with several teachers is refused at once, every reason in one message
(`teachers_problems`); what needs the teachers' files (their label counts) is checked by
`compress.ensemble.check_teacher_configs` before the run folder is made.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedistill.compress.model_source import ModelSource

# The output each task's student has, and the name a teacher entry uses for it.
TASK_OUTPUT = {
    "sequence-classification": "logits",
    "feature-extraction": "embedding",
    "causal-lm": "next_token",
}

# Losses that compare the student with one teacher's layers (per-token states are not cached either).
ONE_TEACHER_LOSSES = frozenset({"hidden_mse", "attention_kl"})

Combine = Literal["mean", "confidence"]


class TeacherEntry(ModelSource):
    """One teacher of ``teachers:``: where it comes from, and how much and how soft it teaches."""

    name: str | None = Field(
        None, description="Name in the report (default: teacher0, teacher1, ... in the list's order)."
    )
    weight: float = Field(
        1.0, gt=0, description="Share of the combined soft targets (normalised over teachers)."
    )
    temperature: float | None = Field(
        None,
        gt=0,
        description="Softens this teacher's probabilities (its own logit scale). Default: the recipe's temperature "
        "schedule, the same one the student's softmax uses.",
    )
    output: str | None = Field(
        None,
        description="The student output this teacher teaches (default: the task's: logits for "
        "sequence-classification). Only the task's own output is built so far.",
    )


def teacher_names(entries: list[TeacherEntry]) -> list[str]:
    return [entry.name or f"teacher{i}" for i, entry in enumerate(entries)]


def teachers_problems(task: str, entries: list[TeacherEntry], loss_names: list[str]) -> list[str]:
    """Every reason these teachers cannot teach this recipe's student (empty: they can)."""
    if not entries:
        return ["teachers: give at least one teacher (or write the single `teacher:`)"]
    problems = []
    if task != "sequence-classification":
        why = {
            "feature-extraction": "each teacher's embedding space is its own, so their vectors cannot be "
            "averaged; one learned projection per teacher is not built yet",
            "causal-lm": "next-token distributions of teachers with other vocabularies are over other "
            "tokens at other positions and would need token alignment, which is not built",
        }[task]
        problems.append(
            f"task {task}: several teachers teach sequence-classification only ({why}); use `teacher:`"
        )
    own = TASK_OUTPUT[task]
    for i, entry in enumerate(entries):
        if entry.output is not None and entry.output != own:
            problems.append(
                f"teachers[{i}].output {entry.output!r}: a student with several outputs, each taught by its own "
                f"teachers (the generalist), is not built yet; every teacher teaches the task's output {own!r}"
            )
    names = teacher_names(entries)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"teachers: names {repeated} are given twice; each teacher needs its own name")
    layer_losses = sorted(set(loss_names) & ONE_TEACHER_LOSSES)
    if layer_losses:
        problems.append(
            f"losses {layer_losses} match the student's layers to one teacher's layers, and teachers' layers "
            "differ (and per-token states are not cached); with `teachers:` use soft_kl and hard_ce, or write "
            "the single `teacher:`"
        )
    return problems
