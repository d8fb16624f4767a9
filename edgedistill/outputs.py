"""A student's outputs beside its task's own: one spelling for compress, export and bench.

A generalist student (issue 26: ``teachers:`` naming ``output: logits`` and ``output: embedding``)
is an ordinary transformers sequence classifier. Its ``logits`` come from the head as always; its
``sentence_embedding`` is the mean of its last hidden state over real tokens (the
all-MiniLM-L6-v2 convention, `edgedistill.numerics.mean_pool`), so no weight is added and the
folder loads with ``AutoModelForSequenceClassification`` like any other. What makes it a
generalist is one entry of the ``edgedistill.json`` beside the weights::

    "outputs": {"logits": {...}, "sentence_embedding": {"pooling": "mean", "of": "last_hidden_state", ...}}

Export reads it to trace both outputs into one graph (the embedding pooled with the attention
mask inside it), parity checks each, and bench measures each with its own metric. A folder
without the entry has its task's output only, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SENTENCE_EMBEDDING = "sentence_embedding"

# what a recipe's teacher entry names (``output:``) -> the output's name in the student and its artifacts
RECIPE_OUTPUTS = {"logits": "logits", "embedding": SENTENCE_EMBEDDING}

# outputs a student of each task may carry beside its task's own
EXTRA_OUTPUTS = {"sequence-classification": (SENTENCE_EMBEDDING,)}

STUDENT_META = "edgedistill.json"


def sentence_embedding_entry(dim: int, teachers: list[str]) -> dict[str, Any]:
    """The ``edgedistill.json`` description of a mean-pooled sentence-embedding output."""
    return {
        "pooling": "mean",
        "of": "last_hidden_state",
        "mask": "attention_mask",
        "normalized": False,
        "dim": dim,
        "teachers": teachers,
    }


def extra_outputs(meta: dict[str, Any] | None, task: str) -> list[str]:
    """The outputs ``meta`` (an ``edgedistill.json``) declares beside ``task``'s own, in a fixed order.

    Only outputs a student of that task can compute are returned: exported as another task (say
    ``--task feature-extraction``), a generalist is just that task's model.
    """
    declared = (meta or {}).get("outputs") or {}
    if not isinstance(declared, dict):
        return []
    return [name for name in EXTRA_OUTPUTS.get(task, ()) if name in declared]


def read_extra_outputs(folder: str | Path, task: str) -> list[str]:
    """`extra_outputs` of the ``edgedistill.json`` in ``folder`` (none when it is absent or unreadable)."""
    path = Path(folder) / STUDENT_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return []
    return extra_outputs(meta if isinstance(meta, dict) else {}, task)
