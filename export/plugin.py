"""The format plugin interface (stable: the onnx, openvino and gguf plugins implement exactly this) and its registry."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from edgedistill.errors import (
    ExportError,
)
from edgedistill.export.config import ExportConfig
from edgedistill.plugins import load_plugin

if TYPE_CHECKING:
    import numpy as np

from edgedistill.export.student import StudentInfo

log = logging.getLogger(__name__)


# The plugin interface (stable: the onnx, openvino and gguf plugins implement exactly this)


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
    student), ``"qat"`` (the NNCF fake-quant student whose learned ranges or weights the artifact
    carries) or ``"gguf-qat"`` (the student with GGUF fake quantization at its trained precision).
    ``tolerance`` names the `ExportConfig.tolerances` entry parity holds it to: its precision's
    by default, ``"qat-exact"`` where the file holds exactly the reference's quantized weights.
    """

    files: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    reference: Literal["float", "qat", "gguf-qat"] = "float"
    tolerance: str | None = None
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
    # True: one artifact carries a generalist's outputs beside its task's (traced together)
    several_outputs: ClassVar[bool] = False
    # what the manifest says of the runtime's defaults when they are not checked separately
    deployed_note: ClassVar[str] = (
        "the runtime's defaults are these settings: an app loading the file plainly gets these figures"
    )

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg: ExportConfig) -> str | None:
        """Why this plugin cannot export ``student`` at ``precision`` (None when it can)."""
        if precision not in self.precisions:
            return f"{self.name} offers {', '.join(self.precisions)}, not {precision}"
        if student.extra_outputs and not self.several_outputs:
            return several_outputs_reason(self.name, student)
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


def several_outputs_reason(name: str, student: StudentInfo) -> str:
    """Why format ``name`` cannot hold a generalist student's outputs in one artifact, and what it can hold."""
    outputs = ", ".join(["logits", *student.extra_outputs])
    if name == "gguf":
        return (
            f"gguf holds one pooled output per model (llama.cpp's embedding with a pooling type) and no classification "
            f"head, so not this student's {outputs}: export its sentence_embedding alone with --task "
            "feature-extraction --format gguf (the encoder and mean pooling), its logits with --format onnx or openvino"
        )
    return (
        f"{name} export of a student with several outputs ({outputs}) is not built; use --format onnx or openvino "
        "(one artifact with every output), or --task feature-extraction for the sentence_embedding alone"
    )


PLUGINS: dict[str, str] = {
    "onnx": "edgedistill.export.onnx:OnnxPlugin",
    "openvino": "edgedistill.export.openvino:OpenVINOPlugin",
    "gguf": "edgedistill.export.gguf:GGUFPlugin",
    "ort": "edgedistill.export.ort:OrtPlugin",
    "executorch": "edgedistill.export.pte:ExecuTorchPlugin",
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


def tensor_specs_to_json(specs: list[TensorSpec]) -> list[dict[str, Any]]:
    return [asdict(s) for s in specs]
