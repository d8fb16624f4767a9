"""The `export` verb: student folder -> one verified artifact folder per format and precision.

Reads top to bottom like the job it does:

1. inspect the student folder (config, weights, tokenizer, edgedistill.json) and settle the task;
2. pick the (format, precision) pairs, each served by a format plugin from the registry below;
3. for each pair, inside a temporary folder beside ``OUT/<format>-<precision>``: the plugin writes
   the model files, the tokenizer files an app needs are copied, the artifact runs in its own
   runtime on real sentences and is compared with torch (hard failure outside tolerance), and
   ``manifest.json`` records hashes, signatures, provenance, parity and tool versions;
4. only then the folder replaces ``OUT/<format>-<precision>`` whole (`edgedistill.io.atomic_dir`).

Format plugins are registered by module path and imported only when used, so
``import edgedistill.export`` imports none of onnx, onnxruntime, openvino, optimum, nncf, gguf.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from edgedistill.errors import (  # noqa: F401  (ExportError, UnsupportedModelError: re-exported)
    EdgeDistillError,
    ExportError,
    MissingDependencyError,
    ModelLoadError,
    UnsupportedModelError,
)
from edgedistill.export.config import ExportConfig
from edgedistill.io import atomic_dir, atomic_write_json
from edgedistill.plugins import load_plugin

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

STUDENT_META = "edgedistill.json"
MANIFEST = "manifest.json"
REPORT = "export_report.json"

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


# --------------------------------------------------------------------------------------------
# The plugin interface (stable: the onnx, openvino and gguf plugins implement exactly this)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime sees it; symbolic dimensions are strings."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class ArtifactResult:
    """What a plugin reports after writing its model files into the temporary artifact folder.

    ``reference`` names the torch model the artifact must match: ``"float"`` (the float32
    student) or ``"qat"`` (the NNCF fake-quant student whose learned ranges the artifact carries).
    """

    files: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    reference: Literal["float", "qat"] = "float"
    quantization: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class RuntimeRun:
    """One run of an artifact in its runtime: the outputs, and what the runtime was set to and ran.

    ``settings`` are what the plugin asked for (compile properties, session options, cache
    types); ``read_back`` is what the runtime reports it applied; ``ran`` a short label of the
    arithmetic that ran (``f32``, ``bf16``, ``f32+int8``, ...), read back where the runtime can say.
    """

    outputs: list[dict[str, np.ndarray]]
    settings: dict[str, Any]
    read_back: dict[str, Any] = field(default_factory=dict)
    ran: str | None = None


class FormatPlugin(ABC):
    """A format that turns a student into an artifact folder and runs that folder for parity.

    Subclasses set the class attributes and implement `export` and `execute`. Heavy imports
    (the runtime, the converter) belong inside the methods, never at module top level.

    Parity runs the artifact twice where the runtime's defaults can compute something else than
    the file declares (``deployed_defaults_differ``): once with the settings that make it compute
    what the file declares (``deployed=False``), once as an app that passes nothing would get on
    this host (``deployed=True``, e.g. OpenVINO's bf16 on AVX-512 BF16/AMX CPUs).
    """

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    tasks: ClassVar[tuple[str, ...]] = ("sequence-classification", "feature-extraction")
    # (importable module, pip extra) pairs checked before an export starts
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    # distribution names whose versions go into the manifest
    tool_packages: ClassVar[tuple[str, ...]] = ()
    # False: parity feeds one unpadded sequence per call (e.g. llama.cpp), True: also padded batches
    batched_parity: ClassVar[bool] = True
    # copy tokenizer/config files (APP_FILES) from the student into the artifact folder
    copy_app_files: ClassVar[bool] = True
    # generic precision name -> the format's own name for the same thing (gguf: int8 -> q8_0)
    precision_aliases: ClassVar[dict[str, str]] = {}
    # True: the runtime's defaults on some hosts compute differently from the file's declaration
    deployed_defaults_differ: ClassVar[bool] = False
    # what the manifest says of the runtime's defaults when they are not checked separately
    deployed_note: ClassVar[str] = (
        "the runtime's defaults are these settings: an app loading the file plainly gets these figures"
    )

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg: ExportConfig) -> str | None:
        """Why this plugin cannot export ``student`` at ``precision`` (None when it can)."""
        if precision not in self.precisions:
            return f"{self.name} offers {', '.join(self.precisions)}, not {precision}"
        if student.task not in self.tasks:
            return f"{self.name} export of task {student.task!r} is not supported (supported: {', '.join(self.tasks)})"
        return None

    @abstractmethod
    def export(
        self, student: StudentInfo, precision: str, tmp_dir: Path, cfg: ExportConfig
    ) -> ArtifactResult:
        """Write the model file(s) for ``precision`` into ``tmp_dir`` (an empty folder)."""

    @abstractmethod
    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        """Load the artifact in its runtime once and return its outputs for every feed.

        Each feed maps tokenizer names (``input_ids``, ``attention_mask``, ``token_type_ids``) to
        int64 arrays of shape [batch, seq]; a plugin passes on the ones its model takes. Outputs
        are keyed by name: ``logits`` (classification, LM), ``last_hidden_state`` and/or
        ``sentence_embedding`` (feature extraction); other names are recorded but not checked.
        ``deployed``: load with the runtime's own defaults instead of the declared-numerics settings.
        """

    def run(self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The outputs of `execute` with the settings that make the runtime compute what the file declares."""
        return self.execute(artifact_dir, inputs).outputs

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        """How an app must load the artifact to get the numerics parity verified (manifest ``load``)."""
        return {}


PLUGINS: dict[str, str] = {
    "onnx": "edgedistill.export.onnx:OnnxPlugin",
    "openvino": "edgedistill.export.openvino:OpenVINOPlugin",
    "gguf": "edgedistill.export.gguf:GGUFPlugin",
}


def register_plugin(name: str, target: str) -> None:
    """Register (or replace) a format plugin as ``"package.module:ClassName"``."""
    if ":" not in target:
        raise ValueError(f"plugin target {target!r} must look like 'package.module:ClassName'")
    PLUGINS[name] = target


def get_plugin(name: str) -> FormatPlugin:
    """Import and instantiate the plugin for ``name``; a missing dependency names the pip extra."""
    try:
        target = PLUGINS[name]
    except KeyError:
        raise ExportError(f"unknown export format {name!r}; known: {', '.join(sorted(PLUGINS))}") from None
    return load_plugin(target, f"Exporting to {name}", extra=name)


# --------------------------------------------------------------------------------------------
# The student folder
# --------------------------------------------------------------------------------------------

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


def clip_narrow_range_on_export(qmodel) -> int:
    """Make NNCF's export of narrow-range quantizers keep the grid they were trained on.

    NNCF quantizes int8 weights symmetrically on a *narrow* grid: levels -127..127 (255 levels),
    and in training its fake-quant clips to ``[-scale, scale]``. On export it writes a 256-level
    grid instead: QuantizeLinear with an int8 zero point (saturates at -128), and for OpenVINO
    ``fake_quantize_per_channel_affine`` with ``quant_min`` widened to -128. Both let a weight
    below ``-scale`` become -128 where training used -127. After post-training calibration no
    weight lies there (the scale is the row's max |w|), but QAT moves weights past their learned
    scale: on a tiny test student 98 weights in 9 of its 11 weight tensors did, each exported one
    quantum off, which moved its logits by 2.2e-4 on average (max 1.1e-3, 37 of 64 sentences).

    This clamps the input of every narrow-range quantizer to its trained range inside the export
    path (the quantizer's ``_prepare_export_quantization``, which only tracing calls), as NNCF
    itself does for its half-range quantizers; the clamp of a weight constant-folds away (OpenVINO
    folds it; `edgedistill.export.onnx.fold_weight_quantizers` evaluates it for ONNX). The model's
    eager forward (the fake-quant reference) is untouched. Returns the number of quantizers changed.
    """
    import types

    import torch
    from nncf.torch.quantization.layers import BaseQuantizer

    count = 0
    for module in qmodel.modules():
        if not isinstance(module, BaseQuantizer) or not getattr(module, "narrow_range", False):
            continue
        if getattr(module, "_edgedistill_clips_on_export", False):
            continue
        original = module._prepare_export_quantization

        def prepare(self, x, _original=original):
            x, level_high, level_low, input_low, input_high = _original(x)
            if int(level_high) - int(level_low) + 1 == 255:  # still the narrow grid (not half-range)
                x = torch.min(torch.max(x, input_low), input_high)
            return x, level_high, level_low, input_low, input_high

        module._prepare_export_quantization = types.MethodType(prepare, module)
        module._edgedistill_clips_on_export = True
        count += 1
    return count


def int8_method(student: StudentInfo, cfg: ExportConfig, default_without_qat: str) -> str:
    """Settle ``cfg.int8_method`` for one student: ``qat`` | ``dynamic`` | ``static``."""
    method = cfg.int8_method
    if method == "auto":
        if student.has_qat:
            return "qat"
        return "static" if cfg.calib_data is not None else default_without_qat
    if method == "qat" and not student.has_qat:
        raise ExportError(
            f"int8_method 'qat' needs a student trained quantization-aware, but {student.path} has no QAT "
            f"state. Distill with `--qat int8`, or use --int8-method dynamic (or static with --calib-data)."
        )
    return method


def forward_parameters(model) -> list[str]:
    """Names the model's forward takes explicitly (``**kwargs`` excluded), in signature order."""
    import inspect

    params = inspect.signature(model.forward).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def model_input_names(model, tokenizer) -> list[str]:
    """Tokenizer outputs the model's forward takes, in forward-signature order."""
    provided = set(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    provided |= {"input_ids", "attention_mask"}
    return [p for p in forward_parameters(model) if p in provided]


def task_output_names(task: str) -> list[str]:
    return ["last_hidden_state"] if task == "feature-extraction" else ["logits"]


def causal_additive_mask(input_ids, attention_mask=None):
    """The 4-D float mask (0 = attend, dtype minimum = masked) decoders build from a 2-D padding mask.

    transformers builds it with ``torch.vmap`` (torch >= 2.6), which ``torch.jit.trace`` cannot
    record (``unordered_map::at``), and its fallback bakes the traced sequence length into the
    graph. This one is plain tensor ops on the input's own shape, so the traced graph takes any
    length; a 4-D mask is used by the model as given. Same values as transformers' eager mask:
    key ``k`` is visible from query ``q`` when ``k <= q`` and ``k`` is not padding.
    """
    import torch

    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    visible = (positions[None, :] <= positions[:, None])[None, None]  # [1, 1, q, k]
    if attention_mask is not None:
        visible = visible & attention_mask[:, None, None, :].bool()
    dtype = torch.float32
    return torch.zeros(visible.shape, dtype=dtype, device=input_ids.device).masked_fill(
        ~visible, torch.finfo(dtype).min
    )


def traceable(model, task: str, input_names: list[str]):
    """Wrap an HF model so tracing sees positional tensor inputs and one named tensor output."""
    import torch

    output_name = task_output_names(task)[0]

    class TaskOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            inputs = dict(zip(input_names, tensors, strict=True))
            extra = {}
            if task == "text-generation":
                extra["use_cache"] = False  # full-sequence logits, no KV
                inputs["attention_mask"] = causal_additive_mask(
                    inputs["input_ids"], inputs.get("attention_mask")
                )
            out = self.inner(**inputs, return_dict=True, **extra)
            return getattr(out, output_name)

    return TaskOutput(model).eval()


def example_batch(student: StudentInfo, tokenizer, input_names: list[str]) -> dict[str, Any]:
    """A real, padded two-sentence batch (torch tensors) for tracing (one sentence without a pad token)."""
    sentences = ["An example sentence to trace the model with.", "Short one."]
    if getattr(tokenizer, "pad_token_id", None) is None:
        sentences = sentences[:1]
    batch = tokenizer(
        sentences,
        padding=len(sentences) > 1,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
    return {name: batch[name] for name in input_names}


def _read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} ({what}) is not valid JSON: {exc}. {fix}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} ({what}) must hold a JSON object, not {type(data).__name__}. {fix}")
    return data


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupted safetensors file before any loader trips over it."""
    resave = (
        "Copy the file again, or re-save the model with `model.save_pretrained(folder)` "
        "(re-running `edgedistill distill` writes a fresh student)."
    )
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{path} is truncated ({size} bytes): no safetensors header. {resave}")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8 or header_len > 100_000_000:
            raise ModelLoadError(
                f"{path} is truncated or not a safetensors file (header claims {header_len} bytes, "
                f"file has {size}). {resave}"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelLoadError(f"{path} has a corrupted safetensors header. {resave}") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise ModelLoadError(
            f"{path} is truncated: {size} bytes, but its header describes {expected}. {resave}"
        )


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
    config = _read_json(folder / "config.json", "the model config", resave)
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
        meta = _read_json(
            folder / STUDENT_META, "edgedistill metadata", "Re-run `edgedistill distill` or delete the file."
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


# --------------------------------------------------------------------------------------------
# The verb
# --------------------------------------------------------------------------------------------


def plan(student: StudentInfo, cfg: ExportConfig) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """The (format, precision) pairs to build, and the skipped pairs with the reason.

    A pair a format does not offer is skipped when other pairs remain; a request that yields no
    artifact at all, or a precision no requested format offers, is an error. ``formats: [all]``
    also skips formats whose runtime is not installed (a named format must be installed).
    """
    pairs, skipped = [], []
    plugins: dict[str, FormatPlugin] = {}
    if cfg.formats == ["all"]:
        for name in PLUGINS:
            try:
                plugins[name] = get_plugin(name)
            except (MissingDependencyError, ExportError) as exc:
                skipped += [{"format": name, "precision": p, "reason": str(exc)} for p in cfg.precisions]
    else:
        plugins = {name: get_plugin(name) for name in cfg.formats}
    planned: dict[tuple[str, str], str] = {}  # (format, canonical precision) -> requested name
    for precision in cfg.precisions:
        served = False
        for name, plugin in plugins.items():
            reason = plugin.unsupported_reason(student, precision, cfg)
            canonical = plugin.precision_aliases.get(precision, precision)
            if reason is None and (name, canonical) in planned:
                # e.g. gguf int8 is q8_0: one artifact, not two identical ones under two names
                reason = f"{name} {precision} is the same artifact as {name}-{planned[name, canonical]}"
                served = True
            if reason is None:
                pairs.append((name, precision))
                planned[name, canonical] = precision
                served = True
            else:
                skipped.append({"format": name, "precision": precision, "reason": reason})
        if not served:
            reasons = "; ".join(s["reason"] for s in skipped if s["precision"] == precision)
            raise UnsupportedModelError(f"no requested format can export {precision}: {reasons}")
    return pairs, skipped


def copy_app_files(student: StudentInfo, tmp_dir: Path) -> list[str]:
    copied = []
    for name in APP_FILES:
        src = student.path / name
        if src.is_file() and not (tmp_dir / name).exists():
            shutil.copy2(src, tmp_dir / name)
            copied.append(name)
    return copied


def export_artifact(
    student: StudentInfo,
    fmt: str,
    precision: str,
    out_dir: Path,
    cfg: ExportConfig,
    references: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Build, verify and atomically publish ``out_dir/<fmt>-<precision>``; returns its manifest."""
    from edgedistill.export import manifest as manifest_lib
    from edgedistill.export import parity as parity_lib

    plugin = get_plugin(fmt)
    reason = plugin.unsupported_reason(student, precision, cfg)
    if reason:
        raise UnsupportedModelError(f"cannot export {student.path} to {fmt} {precision}: {reason}")
    target = Path(out_dir) / f"{fmt}-{precision}"
    references = references if references is not None else {}
    started = time.perf_counter()
    with atomic_dir(target) as tmp:
        with warnings.catch_warnings():
            # tracing a fake-quant model warns on every quantizer (``.item()``, output mismatch of the
            # trace check); parity below is the check that counts, on real inputs in the runtime
            warnings.filterwarnings("ignore", message=".*trace", category=Warning)
            warnings.filterwarnings(
                "ignore", module=r"torch\.jit.*|nncf.*|transformers\.modeling_attn_mask_utils"
            )
            result = plugin.export(student, precision, tmp, cfg)
        missing = [f for f in result.files if not (tmp / f).is_file()]
        if missing:
            raise ExportError(f"the {fmt} exporter reported files it did not write: {missing}")
        if plugin.copy_app_files:
            copy_app_files(student, tmp)
        export_s = time.perf_counter() - started
        parity = parity_lib.check(plugin, student, tmp, result, precision, cfg, references, label=target.name)
        manifest = manifest_lib.build_manifest(
            tmp, plugin, student, precision, result, parity, cfg, export_seconds=export_s
        )
        atomic_write_json(tmp / MANIFEST, manifest)
    log.info("wrote %s (%.1f s)", target, time.perf_counter() - started)
    return manifest


def export(
    student_dir: str | Path,
    out_dir: str | Path,
    cfg: ExportConfig | None = None,
) -> dict[str, Any]:
    """Export ``student_dir`` to every requested format and precision under ``out_dir``.

    Returns the report (also written to ``out_dir/export_report.json``): one entry per artifact
    with its folder, size and parity, plus the pairs skipped and why. Any parity failure raises
    `ParityError` after the artifacts already verified have been published; the failing one
    leaves nothing behind and an earlier good folder of the same name is kept.
    """
    cfg = cfg or ExportConfig()
    out = Path(out_dir)
    student = inspect_student(student_dir, cfg.task)
    pairs, skipped = plan(student, cfg)
    references: dict[Any, Any] = {}
    artifacts = []
    for fmt, precision in pairs:
        manifest = export_artifact(student, fmt, precision, out, cfg, references)
        artifacts.append(
            {
                "format": fmt,
                "precision": precision,
                "path": str(out / f"{fmt}-{precision}"),
                "model_bytes": manifest["model_bytes"],
                "quantization": manifest["quantization"],
                "parity": manifest["parity"],
            }
        )
    report = {
        "student": str(student.path),
        "task": student.task,
        "artifacts": artifacts,
        "skipped": skipped,
        "config": json.loads(cfg.model_dump_json()),
    }
    atomic_write_json(out / REPORT, report)
    return report


def tensor_specs_to_json(specs: list[TensorSpec]) -> list[dict[str, Any]]:
    return [asdict(s) for s in specs]
