"""What is being exported: a student folder inspected before anything is written (task, head, weights, QAT state)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.errors import (
    ExportError,
    ModelLoadError,
    UnsupportedModelError,
)
from edgedistill.io import read_json_object
from edgedistill.model_checks import check_model_size, check_safetensors, read_config_json
from edgedistill.outputs import extra_outputs

log = logging.getLogger(__name__)


STUDENT_META = "edgedistill.json"


# Files an application needs beside the model to turn text into inputs and outputs into labels.
APP_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
)


# The student folder

_SUFFIX_TASKS = (
    ("ForSequenceClassification", "sequence-classification"),
    ("ForCausalLM", "text-generation"),
)


_TASK_AUTO_CLASSES = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "feature-extraction": "AutoModel",
    "text-generation": "AutoModelForCausalLM",
}


# what `edgedistill distill`/`finetune` call a task -> the export task of the same model
_TRAINING_TASKS = {"causal-lm": "text-generation"}


def _has_nncf_state(qat: dict[str, Any] | None) -> bool:
    """An edgedistill.json ``qat`` entry of NNCF int8 QAT (GGUF-aware QAT keeps no state beside the weights)."""
    return bool(qat) and qat.get("scheme", "nncf") == "nncf"


def _has_weight_only_state(qat: dict[str, Any] | None) -> bool:
    """An edgedistill.json ``qat`` entry of NNCF weight-only int8/int4 QAT with LoRA (qat.mode ov_*_wo)."""
    return bool(qat) and qat.get("scheme") == "nncf_weight_only"


@dataclass
class StudentInfo:
    """A validated student folder: what it is, what it holds, and how to load it for torch."""

    path: Path
    task: str
    model_type: str
    architecture: str | None
    config: dict[str, Any]
    meta: dict[str, Any]
    weights: list[str]
    tokenizer_files: list[str]
    # intermediate results plugins share across the precisions of one export (e.g. a float
    # conversion that several quantized artifacts start from)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def extra_outputs(self) -> list[str]:
        """Outputs beside the task's own (a generalist's ``sentence_embedding``, `edgedistill.outputs`)."""
        return extra_outputs(self.meta, self.task)

    @property
    def qat(self) -> dict[str, Any] | None:
        return self.meta.get("qat") or None

    @property
    def has_qat(self) -> bool:
        """NNCF quantization-aware state (int8 ranges) beside the weights."""
        return _has_nncf_state(self.qat)

    @property
    def weight_only_qat_precision(self) -> str | None:
        """The OpenVINO weight-only precision (int8 / int4) the student was trained for (qat.mode ov_*_wo)."""
        if _has_weight_only_state(self.qat):
            return str(self.qat.get("precision"))
        return None

    @property
    def gguf_qat_precision(self) -> str | None:
        """The GGUF precision the student was trained for (qat.mode gguf_*), if any."""
        if self.qat is not None and self.qat.get("scheme") == "gguf":
            return str(self.qat.get("precision"))
        return None

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.path)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(
                f"cannot load the tokenizer of {self.path}: {exc}. The student folder needs the tokenizer "
                f"files (tokenizer.json or vocab files); save them with `tokenizer.save_pretrained(folder)`."
            ) from exc

    def load_model(self, attn_implementation: str = "eager"):
        """The float32 student in eval mode (eager attention: what NNCF and the exporters trace)."""
        import torch
        import transformers

        cls = getattr(transformers, _TASK_AUTO_CLASSES[self.task])
        try:
            model = cls.from_pretrained(
                self.path,
                use_safetensors=True,
                attn_implementation=attn_implementation,
                dtype=torch.float32,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"cannot load {self.path} as a {self.task} model: {exc}. Re-save it with "
                f"`model.save_pretrained(folder)` or pass the right --task."
            ) from exc
        return model.eval()

    def load_qat_model(self):
        """The NNCF fake-quant student with the ranges (and, weight-only, LoRA adapters) learned in QAT."""
        if not (self.has_qat or self.weight_only_qat_precision):
            raise ExportError(
                f"{self.path} holds no NNCF QAT state (edgedistill.json has no NNCF 'qat' entry)"
            )
        from edgedistill.compress import qat as qat_lib

        ensure = getattr(qat_lib, "ensure_nncf_extensions", None)
        if ensure is not None:
            ensure()
        qat_dir = (self.path / str(self.qat.get("nncf_config") or "qat/nncf_config.json")).parent
        model = qat_lib.load_qat_model(self.load_model("eager"), qat_dir)
        return model.eval()


def _guess_task(architecture: str | None) -> str | None:
    if not architecture:
        return None
    for suffix, task in _SUFFIX_TASKS:
        if architecture.endswith(suffix):
            return task
    if architecture.endswith("Model") and "For" not in architecture:
        return "feature-extraction"
    return None


def _check_head(folder: Path, task: str, architecture: str | None, config: dict[str, Any]) -> None:
    """Refuse a task whose head the weights do not hold: loading it would export a random head.

    Any encoder can be exported as ``feature-extraction`` (its base model); classification and
    generation need the architecture that carries that head (a decoder flag counts for generation).
    """
    if task == "feature-extraction" or architecture is None:
        return
    if task == "text-generation" and (architecture.endswith("ForCausalLM") or config.get("is_decoder")):
        return
    if task == "sequence-classification" and architecture.endswith("ForSequenceClassification"):
        return
    suggestion = _guess_task(architecture) or "feature-extraction"
    raise UnsupportedModelError(
        f"cannot export {folder} as {task}: its architecture {architecture} holds no {task} head, so the "
        f"artifact would carry untrained weights. Export it with --task {suggestion}, or export a student "
        f"trained for {task}."
    )


def inspect_student(path: str | Path, task: str | None = None) -> StudentInfo:
    """Validate a student folder (edgedistill's or any HF folder) and settle its task."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(
            f"student folder {folder} does not exist or is not a folder; pass the `student/` folder written "
            f"by `edgedistill distill`, or any folder written by `model.save_pretrained(...)`."
        )
    resave = "Re-save the model with `model.save_pretrained(folder)`."
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json, so it is not a model folder. {resave}")
    # the checks distill runs on a teacher: size capped JSON, sizes that fit in memory (a config with
    # num_hidden_layers 1e6 would otherwise be allocated by the loader), every safetensors header
    config = read_config_json(folder, "student")
    check_model_size(config, folder, "student")
    model_type = config.get("model_type")
    if not model_type:
        raise ModelLoadError(f"{folder}/config.json has no 'model_type'. {resave}")

    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    weights = [n for n in names if n.endswith(".safetensors")]
    if not weights:
        pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        hint = (
            f"it holds only pickle weights ({', '.join(pickles)}), which export refuses to load; convert them "
            f"with `model.save_pretrained(folder, safe_serialization=True)`"
            if pickles
            else "it has no weights (*.safetensors)"
        )
        raise ModelLoadError(f"{folder}: {hint}.")
    for name in weights:
        check_safetensors(folder / name)

    meta: dict[str, Any] = {}
    if (folder / STUDENT_META).is_file():
        meta = read_json_object(
            folder / STUDENT_META, "Re-run `edgedistill distill` or delete the file.", ModelLoadError
        )
    qat = meta.get("qat")
    if _has_nncf_state(qat) or _has_weight_only_state(qat):
        for key, default in (("nncf_config", "qat/nncf_config.json"), ("state", "qat/qat_state.safetensors")):
            if not (folder / str(qat.get(key) or default)).is_file():
                raise ModelLoadError(
                    f"{folder} says it was trained quantization-aware, but {qat.get(key) or default} is missing. "
                    f"Copy the whole student folder (with qat/), or export float weights with "
                    f"--int8-method dynamic/static."
                )

    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else None
    resolved = task or meta.get("task") or _guess_task(architecture)
    resolved = _TRAINING_TASKS.get(resolved, resolved)
    if resolved is None:
        raise UnsupportedModelError(
            f"cannot export {folder}: architecture {architecture or '(none in config.json)'} is not one of the "
            f"supported kinds (*ForSequenceClassification, a bare *Model encoder, *ForCausalLM). Pass "
            f"--task feature-extraction to export its encoder only, or --task sequence-classification / "
            f"text-generation if the weights hold that head."
        )
    if resolved not in _TASK_AUTO_CLASSES:
        raise UnsupportedModelError(f"unknown task {resolved!r}; choose one of {sorted(_TASK_AUTO_CLASSES)}")
    _check_head(folder, resolved, architecture, config)

    import transformers

    if model_type not in transformers.CONFIG_MAPPING:
        raise UnsupportedModelError(
            f"{folder}: model_type {model_type!r} is not a transformers architecture this version knows "
            f"(transformers {transformers.__version__}); models that need remote code cannot be exported. "
            f"Use a student of a built-in architecture (e.g. BERT, MiniLM, Llama, Qwen2)."
        )
    tokenizer_files = [
        n for n in names if n in APP_FILES and n not in ("config.json", "generation_config.json")
    ]
    if not tokenizer_files:
        raise ModelLoadError(
            f"{folder} has no tokenizer files; parity needs real tokenized text and apps need the vocabulary. "
            f"Save them with `tokenizer.save_pretrained(folder)`."
        )
    return StudentInfo(
        path=folder.resolve(),
        task=resolved,
        model_type=model_type,
        architecture=architecture,
        config=config,
        meta=meta,
        weights=weights,
        tokenizer_files=tokenizer_files,
    )


def copy_app_files(student: StudentInfo, tmp_dir: Path) -> list[str]:
    copied = []
    for name in APP_FILES:
        src = student.path / name
        if src.is_file() and not (tmp_dir / name).exists():
            shutil.copy2(src, tmp_dir / name)
            copied.append(name)
    return copied
