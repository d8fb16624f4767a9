"""Where a model comes from: a local Hugging Face folder, one GGUF file, or a hub id (a recipe's `teacher:`
and `student.path`, `generate`'s and `finetune`'s `model:`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from edgedistill.config import StrictModel

GGUF_SUFFIX = ".gguf"


def gguf_path(path: str) -> Path | None:
    """The GGUF file a model path names (``DIR/NAME.gguf``), or None for a folder or hub id."""
    return Path(path).expanduser() if path.lower().endswith(GGUF_SUFFIX) else None


class ModelSource(StrictModel):
    """Where a model comes from: a local HF folder, one GGUF file, or a hub id."""

    path: str = Field(
        description="Local folder written by save_pretrained, one .gguf file (loaded through transformers' "
        "gguf_file and dequantized to float32; its header is checked first), or a Hugging Face hub id."
    )
    trust_remote_code: bool = Field(
        False, description="Run modelling code shipped with the model. Off unless you trust it."
    )
    allow_pickle: bool = Field(
        False,
        description="Accept pickle weights (pytorch_model.bin). Pickle can execute code: only for files you trust.",
    )

    @model_validator(mode="before")
    @classmethod
    def _gguf_by_path(cls, data: Any) -> Any:
        # transformers' spelling, (folder, gguf_file=NAME), names the same file as `path: DIR/NAME.gguf`:
        # both are accepted and the file becomes the path (the one thing every loader reads).
        if isinstance(data, dict) and "gguf_file" in data:
            data = dict(data)
            name = str(data.pop("gguf_file"))
            if not name.lower().endswith(GGUF_SUFFIX) or Path(name).name != name:
                raise ValueError(
                    f"gguf_file: {name!r} must be a file name ending in {GGUF_SUFFIX}, inside `path`"
                )
            folder = data.get("path")
            if not folder:
                raise ValueError(f"gguf_file: {name!r} needs `path`, the folder holding it")
            if str(folder).lower().endswith(GGUF_SUFFIX):
                raise ValueError(
                    f"path {folder!r} already names a GGUF file: drop gguf_file or make path its folder"
                )
            data["path"] = str(Path(str(folder)) / name)
        return data

    @property
    def gguf_file(self) -> Path | None:
        """The .gguf file this source names, or None for a folder or hub id."""
        return gguf_path(self.path)
