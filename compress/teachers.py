"""The recipe's `teachers:` list: several teachers for one student (issue 26), checked before any work.

``teacher: {path: ...}`` stays the one-teacher spelling. ``teachers: [{path, weight, temperature,
name, output}, ...]`` names several; the student is derived from the first (its layers, its
tokenizer), and every other teacher tokenizes the raw text itself, so teachers need not share a
vocabulary or an architecture. Each entry names the student output it teaches (``output``):

- ``logits`` (the default of a sequence-classification recipe): the class head. Several teachers
  of it are an ensemble, their tempered probabilities combined (``combine:``).
- ``embedding``: the student's sentence embedding, the mean of its last hidden state over real
  tokens (the all-MiniLM-L6-v2 convention), taught by one sentence-embedding teacher through the
  embedding losses (``embedding_cosine`` / ``embedding_mse`` on its cached embeddings). A student
  with both is the *generalist*: one ordinary sequence classifier whose ``edgedistill.json``
  names its second output (`edgedistill.outputs`), exported as one artifact with both.

The first teacher teaches ``logits``: the student is derived from it, and only a classifier has
the head. One teacher at most teaches ``embedding``: each teacher's embedding space is its own, so
two teachers' vectors cannot be averaged into one target.

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

# The outputs a student of each task can be taught (the task's own first), and the losses that read each.
TASK_STUDENT_OUTPUTS = {"sequence-classification": ("logits", "embedding")}
OUTPUT_LOSSES = {
    "logits": frozenset({"soft_kl", "hard_ce"}),
    "embedding": frozenset({"embedding_cosine", "embedding_mse"}),
}

Combine = Literal["mean", "confidence"]


class TeacherEntry(ModelSource):
    """One teacher of ``teachers:``: where it comes from, and how much and how soft it teaches."""

    name: str | None = Field(
        None, description="Name in the report (default: teacher0, teacher1, ... in the list's order)."
    )
    weight: float = Field(
        1.0,
        ge=0,
        description="Share of the combined soft targets (normalised over teachers). 0: the teacher teaches "
        "nothing; a first teacher of weight 0 is only what the student is cut from (its layers, its "
        "tokenizer), e.g. a small student of a bigger teacher of another architecture.",
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
        "sequence-classification). embedding: the student's mean-pooled sentence embedding, taught by "
        "this sentence-embedding teacher (a generalist student with both outputs).",
    )


def teacher_names(entries: list[TeacherEntry]) -> list[str]:
    return [entry.name or f"teacher{i}" for i, entry in enumerate(entries)]


def teacher_output(entry: TeacherEntry, task: str) -> str:
    """The student output ``entry`` teaches (the task's own unless it names another)."""
    return entry.output or TASK_OUTPUT[task]


def embedding_teacher(entries: list[TeacherEntry] | None) -> int | None:
    """The index of the teacher of the sentence-embedding output (None: the student has the task's output only)."""
    return next((i for i, e in enumerate(entries or []) if e.output == "embedding"), None)


def output_losses(entries: list[TeacherEntry] | None) -> frozenset[str]:
    """Losses the outputs of a generalist add to its task's (the embedding losses when one teaches it)."""
    return OUTPUT_LOSSES["embedding"] if embedding_teacher(entries) is not None else frozenset()


def _output_problems(task: str, entries: list[TeacherEntry], loss_names: list[str]) -> list[str]:
    """Unknown outputs, a first teacher that cannot be the student's origin, two embedding teachers,
    and an output no loss reads."""
    own = TASK_OUTPUT[task]
    known = TASK_STUDENT_OUTPUTS.get(task, (own,))
    problems = []
    for i, entry in enumerate(entries):
        if entry.output is not None and entry.output not in known:
            problems.append(
                f"teachers[{i}].output {entry.output!r}: a {task} student has no such output; it has "
                + " and ".join(repr(o) for o in known)
                + (" (its mean-pooled last hidden state)" if "embedding" in known else "")
            )
    outputs = [teacher_output(e, task) for e in entries]
    if outputs[0] != own and outputs[0] in known:
        problems.append(
            f"teachers[0].output {outputs[0]!r}: the student is derived from the first teacher, which must teach "
            f"the task's output {own!r} (a classifier holds the head); list the {own} teacher first"
        )
    taught_by = [i for i, o in enumerate(outputs) if o == "embedding"]
    for i in taught_by[1:]:
        problems.append(
            f"teachers[{i}].output 'embedding': teachers[{taught_by[0]}] already teaches it, and two teachers' "
            "embedding spaces are their own (their vectors cannot be averaged); give the output one teacher"
        )
    for i in taught_by:
        entry = entries[i]
        given = [key for key in ("weight", "temperature") if key in entry.model_fields_set]
        if given:
            problems.append(
                f"teachers[{i}].{given[0]}: weight and temperature mix and soften class probabilities; an "
                "embedding teacher has none (weigh its output with the embedding loss's weight)"
            )
    if taught_by and not set(loss_names) & OUTPUT_LOSSES["embedding"]:
        problems.append(
            f"teachers[{taught_by[0]}] teaches output 'embedding' but no loss reads it: add embedding_cosine "
            "or embedding_mse to losses (the default losses of such a recipe include embedding_cosine)"
        )
    return problems


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
    else:
        problems.extend(_output_problems(task, entries, loss_names))
        logits = [e for e in entries if teacher_output(e, task) == "logits"]
        if logits and not any(e.weight > 0 for e in logits):
            problems.append(
                "teachers: every logits teacher has weight 0, so nothing teaches the class head; give at least "
                "one a weight above 0"
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
