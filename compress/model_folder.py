"""A model saved as the folder an exporter reads: a GGUF-file teacher dequantized (the run's teacher
reference, fit's baseline) or fit's screening student, each saved once and reused after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.compress.model_source import ModelSource
from edgedistill.io import atomic_dir, atomic_write_json
from edgedistill.outputs import STUDENT_META


def save_model_folder(folder: Path, task: str, load: Callable[[], tuple[Any, Any]]) -> Path:
    """``load()``'s (model, tokenizer) saved at ``folder`` with an edgedistill.json naming ``task``,
    atomically and once: a folder saved before is kept, and ``load`` is not called."""
    if (folder / "config.json").is_file():
        return folder
    model, tokenizer = load()
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / STUDENT_META, {"format_version": 1, "task": task, "qat": None})
    return folder


def load_teacher(teacher: ModelSource, task: str) -> tuple[Any, Any]:
    """The teacher and its tokenizer as distill loads them (a GGUF file dequantized to float32)."""
    from edgedistill.compress import models

    return models.load_model(teacher, task, "teacher"), models.load_tokenizer(teacher.path)


def teacher_folder(
    teacher: ModelSource, task: str, folder: Path, load: Callable[[], tuple[Any, Any]] | None = None
) -> str:
    """What an exporter can read for ``teacher``: its own folder, or a GGUF-file teacher saved as a
    model folder at ``folder`` (an exporter reads folders; saved as distill loads it, so a reference
    exported from it is the model the student learnt from). ``load``: the caller's loaded copy."""
    if teacher.gguf_file is None:
        return teacher.path
    return str(save_model_folder(folder, task, load or (lambda: load_teacher(teacher, task))))
