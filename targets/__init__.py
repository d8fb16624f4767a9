"""Device targets: where an artifact runs, how it is measured, and the budgets it must meet.

A target is a YAML file validated like a recipe (a ``version`` field, unknown keys are errors,
every problem reported at once with its key path). The built-ins ship beside this module:

- ``cpu``: the host as it is, every core it lets us use.
- ``mobile-class``: a phone-class CPU's *constraints* reproduced on the host (see that file).
- ``gpu-cuda``: ONNX Runtime's CUDA provider, OpenVINO's GPU device, llama.cpp with every layer
  offloaded. Reported ``skipped`` (never passed, never failed) where no CUDA device exists.

    from edgedistill.targets import load_target
    target = load_target("mobile-class")                     # a built-in, by name
    target = load_target("ci/my-phone.yaml", {"measurement.min_seconds": 1})

Importing this module imports pydantic and PyYAML only (no runtime, no torch).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.config import StrictModel, load_config, set_dotted, validate
from edgedistill.errors import ConfigError
from edgedistill.export.config import FORMATS, PRECISIONS
from edgedistill.targets.device import DeviceSpec

TARGET_VERSION = 1
BUILTIN_DIR = Path(__file__).resolve().parent

# Every precision and format an artifact may carry: export's, plus a torch student folder (fp32).
_KNOWN_PRECISIONS = PRECISIONS
_KNOWN_FORMATS = (*FORMATS, "torch")


class OnnxRuntimeOptions(StrictModel):
    """`onnxruntime.InferenceSession` settings."""

    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="Execution providers in priority order; each must be available or the target is skipped.",
    )
    provider_options: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Options per provider name, e.g. {CUDAExecutionProvider: {device_id: '0'}}.",
    )
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    intra_op_num_threads: int | None = Field(None, ge=0, description="Default: runtime.threads.")
    inter_op_num_threads: int = Field(1, ge=0)
    session_config: dict[str, str] = Field(
        default_factory=dict,
        description="add_session_config_entry pairs, e.g. session.intra_op.allow_spinning: '0'.",
    )


class OpenVINOOptions(StrictModel):
    """`openvino.Core.compile_model` settings (the benchmark_app flags that matter for latency)."""

    device: str = Field("CPU", description="CPU, GPU, GPU.0, NPU ...; must be in Core().available_devices.")
    performance_hint: Literal["none", "latency", "throughput"] = Field(
        "none",
        description="none: the explicit threads/streams below decide (OpenVINO refuses a hint together with them).",
    )
    num_streams: int = Field(1, ge=1)
    inference_num_threads: int | None = Field(None, ge=0, description="Default: runtime.threads.")
    inference_precision_hint: str | None = Field(
        None,
        description=(
            "f32, bf16, f16; unset: runtime.precision_policy decides (artifact: f32; native: the device "
            "default, bf16 on AVX-512 BF16/AMX CPUs, f32 on AVX2)."
        ),
    )
    enable_cpu_pinning: bool | None = None
    config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Any other compile_model property, passed as given."
    )


class LlamaCppOptions(StrictModel):
    """`llama_cpp.Llama` settings."""

    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1 offloads all.")
    n_threads: int | None = Field(None, ge=1, description="Default: runtime.threads.")
    n_threads_batch: int | None = Field(None, ge=1, description="Default: n_threads.")
    kv_cache: Literal["f16", "f32"] = Field("f16", description="KV cache type (llama.cpp's default is f16).")
    flash_attn: bool = False
    extra_buffers: bool | None = Field(
        None,
        description=(
            "llama.cpp's extra weight buffers (AMX repack on AMX CPUs, CPU repack elsewhere). Unset: on, "
            "except on AMX CPUs, where llama.cpp's AMX matmul crashes (llama.cpp issue #20824)."
        ),
    )


class TorchOptions(StrictModel):
    """The torch reference (a student folder run with transformers)."""

    device: str = Field("cpu", description="cpu or cuda[:N]")
    interop_threads: int = Field(1, ge=1)


# read by the measuring process (slow the timed region so tests and the gate benchmark prove a slowdown
# is caught), reachable only through `bench(candidate_overrides=...)`: a target could fake its latency
TEST_ONLY_RUNTIME_KNOBS = ("debug_extra_latency_ms", "debug_slowdown_factor")


class RuntimeOptions(StrictModel):
    """Threads, CPU affinity and per-runtime settings, applied inside the measuring process."""

    threads: int = Field(
        0, ge=0, description="Compute threads for every runtime; 0: one per CPU the process may run on."
    )
    cpu_affinity: int | list[int] | None = Field(
        None,
        description=(
            "Pin the measuring process: a count N (the first N CPUs the host allows) or a list of CPU ids. "
            "Unset: no pinning. A list naming CPUs the host lacks skips the target."
        ),
    )
    precision_policy: Literal["auto", "artifact", "native"] = Field(
        "auto",
        description=(
            "artifact: run what the artifact declares (OpenVINO: f32, no dynamic activation quantization, "
            "the properties its manifest's `load` names); native: the runtime's defaults on this host "
            "(OpenVINO runs fp32 IRs in bf16 on AVX-512 BF16/AMX CPUs); auto: artifact for fp32/fp16 "
            "artifacts, native for quantized ones. Explicit runtime settings below win. Every report row "
            "says what ran, read back from the runtime."
        ),
    )
    onnxruntime: OnnxRuntimeOptions = Field(default_factory=OnnxRuntimeOptions)
    openvino: OpenVINOOptions = Field(default_factory=OpenVINOOptions)
    llamacpp: LlamaCppOptions = Field(default_factory=LlamaCppOptions)
    torch: TorchOptions = Field(default_factory=TorchOptions)

    @model_validator(mode="before")
    @classmethod
    def _no_test_knobs(cls, data: Any) -> Any:
        named = sorted(set(data) & set(TEST_ONLY_RUNTIME_KNOBS)) if isinstance(data, Mapping) else []
        if named:
            raise ValueError(
                f"{', '.join(named)}: test-only knob(s) that inflate the measured latency on purpose, "
                "not target settings; remove them (tests pass them as `bench(candidate_overrides=...)`)"
            )
        return data

    @field_validator("cpu_affinity")
    @classmethod
    def _affinity(cls, value: int | list[int] | None) -> int | list[int] | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("a CPU count must be at least 1")
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one CPU id")
            if any(v < 0 for v in value):
                raise ValueError("CPU ids are >= 0")
            if len(set(value)) != len(value):
                raise ValueError("CPU ids repeat")
        return value


class Workload(StrictModel):
    """What one timed inference is, and how the accuracy data is fed."""

    batch_size: int = Field(
        1, ge=1, le=65_536, description="Sequences per inference (llama.cpp runs them one by one)."
    )
    sequence_lengths: list[int] = Field(
        default_factory=lambda: [128],
        description="Tokens per sequence (special tokens included). Several lengths are cycled through, "
        "one per iteration, so percentiles cover the mix.",
    )
    prompt_tokens: int = Field(
        64, ge=1, le=1_048_576, description="LMs: prompt length for time-to-first-token."
    )
    generate_tokens: int = Field(
        32, ge=2, le=1_048_576, description="LMs: tokens generated per request (greedy)."
    )
    eval_batch_size: int = Field(1, ge=1, description="Accuracy: sentences per inference.")
    eval_max_length: int = Field(128, ge=2, description="Accuracy: longest tokenized sentence (truncated).")
    eval_max_samples: int | None = Field(None, ge=1, description="Accuracy: only the first N rows of --data.")

    @field_validator("sequence_lengths")
    @classmethod
    def _lengths(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("name at least one sequence length")
        if any(v < 2 for v in value):
            raise ValueError("sequence lengths are >= 2 (they include the special tokens)")
        if len(value) > 1000 or any(v > 1_048_576 for v in value):
            raise ValueError("at most 1000 sequence lengths, each at most 1048576 tokens")
        return value


class Measurement(StrictModel):
    """Warmup, then at least ``min_iterations`` AND at least ``min_seconds``, in fresh processes."""

    # Upper bounds keep a hostile or mistyped target from hanging a bench (NaN/inf are refused
    # for every float by StrictModel): a day of measuring, a million iterations, 1,000 processes.
    warmup_iterations: int = Field(10, ge=0, le=1_000_000)
    min_iterations: int = Field(50, ge=1, le=1_000_000)
    min_seconds: float = Field(2.0, ge=0, le=86_400)
    rounds: int = Field(
        1, ge=1, le=1000, description="Fresh processes per artifact; their samples are pooled."
    )
    compare_rounds: int = Field(
        10,
        ge=1,
        le=1000,
        description="With --baseline-artifact: processes per side, candidate and baseline alternating.",
    )
    max_compare_rounds: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="With --baseline-artifact: when the first look (compare_rounds a side) is inconclusive, "
        "keep alternating up to this many processes a side and decide again on all of them. "
        "Unset: no extension.",
    )
    rss_poll_interval_ms: float = Field(
        10.0, gt=0, description="How often the parent samples the child's RSS."
    )
    timeout_s: float = Field(
        900.0, gt=0, le=86_400, description="A measuring process running longer is killed."
    )

    @model_validator(mode="after")
    def _extension(self) -> Measurement:
        if self.max_compare_rounds is not None and self.max_compare_rounds < self.compare_rounds:
            raise ValueError(
                f"max_compare_rounds ({self.max_compare_rounds}) is below compare_rounds "
                f"({self.compare_rounds}): set it >= compare_rounds, or remove it for no extension"
            )
        return self


class Regression(StrictModel):
    """When a candidate counts as slower than its baseline (see `edgedistill.bench.stats`)."""

    min_effect: float = Field(
        0.05, ge=0, description="Smallest slowdown that matters (0.05 = 5%): unchanged must exclude it."
    )
    p_threshold: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="One-sided Mann-Whitney U p-value (over process medians) below which it is real; also the "
        "one-sided error of each confidence bound of the ratio.",
    )
    min_samples: int = Field(30, ge=2, description="Fewer timed iterations on either side: inconclusive.")
    min_rounds: int = Field(
        5,
        ge=1,
        description="Fewer processes on either side: inconclusive (one process says nothing of drift).",
    )


class Budgets(StrictModel):
    """What an artifact must meet on this target. Unset figures are not checked.

    Sizes and memory are in MB of 10^6 bytes. Accuracy figures are fractions (0.9 = 90%).
    """

    p50_latency_ms: float | None = Field(None, gt=0)
    p95_latency_ms: float | None = Field(None, gt=0)
    p99_latency_ms: float | None = Field(None, gt=0)
    min_throughput_per_s: float | None = Field(
        None, gt=0, description="Sequences per second (batch / latency)."
    )
    ttft_ms: float | None = Field(None, gt=0, description="LMs: median time to first token.")
    min_decode_tokens_per_s: float | None = Field(None, gt=0, description="LMs: median decode speed.")
    peak_rss_mb: float | None = Field(
        None, gt=0, description="Peak resident memory of the measuring process (interpreter included)."
    )
    artifact_size_mb: float | None = Field(
        None, gt=0, description="Model files of the artifact (manifest model_bytes)."
    )
    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="Task metric floor on --data (classification)."
    )
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="Reference accuracy minus artifact accuracy, at most this."
    )
    min_agreement: float | None = Field(None, ge=0, le=1, description="Top-1 agreement with the reference.")
    min_cosine: float | None = Field(
        None, ge=-1, le=1, description="Embeddings: mean cosine to the reference's embeddings."
    )
    # Relative budgets: against the teacher measured in the same report (`edgedistill bench
    # CANDIDATE --baseline-artifact TEACHER_ARTIFACT`); see `edgedistill.bench.gating.relative`.
    speedup_vs_teacher: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="At least this many times faster (on the ratio's confidence interval).",
    )
    size_vs_teacher: float | None = Field(
        None, gt=0, description="Model bytes at most this fraction of the teacher's (0.2: 5x smaller)."
    )
    rss_vs_teacher: float | None = Field(
        None, gt=0, description="Peak RSS at most this fraction of the teacher's."
    )


class Target(StrictModel):
    """One device target: hardware it needs, runtime settings, workload, measurement and budgets."""

    version: Literal[1] = TARGET_VERSION
    name: str = Field(
        ...,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Letters, digits, '.', '_' and '-' (it becomes part of file names): no '/', '..' or NUL.",
    )
    description: str = ""
    requires: Literal["cpu", "cuda"] = Field(
        "cpu", description="Hardware that must exist, else the target is skipped."
    )
    emulates: list[str] = Field(default_factory=list, description="What this target reproduces (reported).")
    does_not_emulate: list[str] = Field(
        default_factory=list, description="What it cannot reproduce (reported)."
    )
    formats: list[str] | None = Field(
        None, description="Artifact formats accepted (unset: all); others are skipped."
    )
    precisions: list[str] | None = Field(
        None, description="Artifact precisions accepted (unset: all); others are skipped with the reason."
    )
    device: DeviceSpec = Field(
        default_factory=DeviceSpec, description="Where to measure (default: this host)."
    )
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    workload: Workload = Field(default_factory=Workload)
    measurement: Measurement = Field(default_factory=Measurement)
    budgets: Budgets = Field(default_factory=Budgets)
    regression: Regression = Field(default_factory=Regression)

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, value: str) -> str:
        if ".." in value:
            raise ValueError(f"{value!r}: no '..' in a target name (it becomes part of file names)")
        return value

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [v.lower() for v in value]
        bad = [v for v in names if v not in _KNOWN_FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {bad}; choose from {list(_KNOWN_FORMATS)}")
        return names

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [v.lower() for v in value]
        bad = [v for v in names if v not in _KNOWN_PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; choose from {list(_KNOWN_PRECISIONS)}")
        return names

    @model_validator(mode="after")
    def _cuda_needs_a_gpu_runtime_setting(self) -> Target:
        if self.requires == "cpu" and self.runtime.llamacpp.n_gpu_layers != 0:
            raise ValueError("runtime.llamacpp.n_gpu_layers offloads to a GPU; set requires: cuda")
        return self

    def accepts(self, fmt: str, precision: str) -> str | None:
        """Why an artifact of this format/precision is not for this target (None when it is)."""
        if self.formats is not None and fmt not in self.formats:
            return f"target {self.name} accepts formats {', '.join(self.formats)}; this artifact is {fmt}"
        if self.precisions is not None and precision not in self.precisions:
            return f"target {self.name} accepts precisions {', '.join(self.precisions)}; this artifact is {precision}"
        return None


def builtin_targets() -> dict[str, Path]:
    """Built-in target name -> its YAML file."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def resolve_target_path(name_or_path: str | Path) -> Path:
    """A built-in's file by name, or the given path; a miss lists the built-ins."""
    text = str(name_or_path)
    builtins = builtin_targets()
    if text in builtins:
        return builtins[text]
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise ConfigError(
        text,
        [("", f"no such target file, and not a built-in target (built-ins: {', '.join(builtins)})")],
    )


def load_target(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> Target:
    """Load a built-in target by name or a target YAML by path; ``overrides`` are dotted keys."""
    return load_config(Target, resolve_target_path(name_or_path), overrides)


def target_from_dict(
    raw: Mapping[str, Any], source: str = "target", overrides: Mapping[str, Any] | None = None
) -> Target:
    """Validate a target given as a mapping (e.g. the copy embedded in a bench report)."""
    data = copy.deepcopy(dict(raw))
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return validate(Target, data, source)


__all__ = [
    "Budgets",
    "DeviceSpec",
    "LlamaCppOptions",
    "Measurement",
    "OnnxRuntimeOptions",
    "OpenVINOOptions",
    "Regression",
    "RuntimeOptions",
    "TEST_ONLY_RUNTIME_KNOBS",
    "Target",
    "TorchOptions",
    "Workload",
    "builtin_targets",
    "load_target",
    "resolve_target_path",
    "target_from_dict",
]
