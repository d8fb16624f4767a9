"""`ExportConfig`: what to export, how to quantize it, and how close it must stay to torch.

Tolerances are per precision and merged key by key over the defaults, so a recipe (or
``--set tolerances.int8.min_top1_agreement=1.0``) changes one bound and keeps the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.config import StrictModel

EXPORT_CONFIG_VERSION = 1

# ort: ONNX Runtime mobile (.ort); executorch: a .pte lowered to XNNPACK (extra [executorch])
FORMATS = ("onnx", "openvino", "gguf", "ort", "executorch")
TASKS = ("sequence-classification", "feature-extraction", "text-generation")
# Every precision name any format plugin may offer; a plugin declares the subset it supports.
PRECISIONS = (
    "fp32",
    "fp16",
    "int8",
    "int4",
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q2_k",
    "q3_k_s",
    "q3_k_m",
    "q3_k_l",
    "q4_k_s",
    "q4_k_m",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
)

BF16_MAX_REL = 0.03
QAT_EXACT_MAX_REL = 5e-3  # see QAT_EXACT below

Task = Literal["sequence-classification", "feature-extraction", "text-generation"]


class Tolerance(StrictModel):
    """Bounds an artifact must meet against the torch reference; ``None`` leaves a figure unchecked.

    ``max_abs_diff`` applies to every compared output (logits, hidden states, embeddings) over
    real (unpadded) tokens; ``min_top1_agreement`` to classification/LM logits; ``min_cosine``
    (the worst sample) to hidden states and sentence embeddings.
    """

    max_abs_diff: float | None = Field(None, ge=0)
    max_rel_diff: float | None = Field(None, ge=0, description="max |diff| / max |torch| of each output")
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    min_cosine: float | None = Field(None, ge=-1, le=1)


def _tol(
    max_abs: float | None, top1: float | None, cosine: float | None, max_rel: float | None = None
) -> dict[str, Any]:
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "min_top1_agreement": top1,
        "min_cosine": cosine,
    }


# The arithmetic a runtime may run a file in on some CPUs (OpenVINO: bf16 on AVX-512 BF16 / AMX),
# named as it is read back, and the tolerance key that applies to such a run.
RUN_PRECISION_TOLERANCES = {"bf16": "bf16", "f16": "fp16"}

# Float formats must reproduce torch to rounding error; quantized ones must keep the decision
# (top-1) and the direction of embeddings, while individual values may move by a quantum or so.
DEFAULT_TOLERANCES: dict[str, dict[str, Any]] = {
    "fp32": _tol(1e-3, 1.0, 0.99999, max_rel=1e-3),
    "fp16": _tol(5e-2, 1.0, 0.999, max_rel=5e-2),
    # a run in bf16 (8-bit mantissa: 2^-8 relative per rounding, compounded over layers); not a
    # precision to export, the bound an fp32/fp16 file is held to where a runtime computes it in bf16
    "bf16": _tol(None, 0.98, 0.999, max_rel=BF16_MAX_REL),
    # post-training int8 of a real encoder (MiniLM-L6) reaches a worst-sentence cosine of ~0.97
    "int8": _tol(None, 0.9, 0.95),
    "int4": _tol(None, 0.8, 0.9),
    "q8_0": _tol(None, 0.9, 0.99),
}
# An artifact that holds exactly the weights of its torch reference, the fake-quant student it was
# trained as (GGUF-aware QAT at the trained precision, OpenVINO weight-only QAT), is held to this
# instead of its precision's bounds (top-1 0.8 / cosine 0.9 admit any post-training quantization):
# only the runtime's own kernels and summation order may differ. Measured on the built-in parity
# sentences (AVX-512 VNNI BF16): llama.cpp q4_0 decoder logits max_rel 3.7e-7, BERT embeddings
# 2.3e-5 (llama.cpp's tanh GELU) at cosine 1 - 1e-9; OpenVINO int4 weight-only logits max_rel
# 4.6e-7 (max |diff| 7.6e-6). The bounds leave room for what other CPUs do: a llama.cpp activation
# on a Q8_0 rounding boundary flips one position by up to 0.04 (~3e-3 of the logits' range), and
# AMX hosts run other multi-token kernels (mean |diff| 8.3e-4), while the float student the GGUF export was compared
# with before differs by max 2.6 / mean 0.21 (tests/test_gguf_qat.py). The manifest names it
# (parity.tolerance_name); a recipe can still loosen it (tolerances.qat-exact.max_rel_diff).
QAT_EXACT = "qat-exact"
DEFAULT_TOLERANCES[QAT_EXACT] = _tol(None, 0.99, 0.99999, max_rel=QAT_EXACT_MAX_REL)
_LOW_BIT_DEFAULT = _tol(None, 0.8, 0.9)
for _p in PRECISIONS:
    DEFAULT_TOLERANCES.setdefault(_p, dict(_LOW_BIT_DEFAULT))


class ExportPair(StrictModel):
    """One artifact: a format and a precision (``{format: onnx, precision: int8}``)."""

    format: str
    precision: str


class ExportConfig(StrictModel):
    """Everything `edgedistill export` needs besides the student folder and the output folder."""

    version: Literal[1] = EXPORT_CONFIG_VERSION
    formats: list[str] = Field(
        default_factory=lambda: ["onnx"],
        description="onnx, openvino, gguf, ort, executorch, or all (every format whose runtime is installed)",
    )
    precisions: list[str] = Field(default_factory=lambda: ["fp32"], description=", ".join(PRECISIONS))
    task: Task | None = Field(
        None, description="Default: edgedistill.json's task, else guessed from config.json architectures."
    )
    int8_method: Literal["auto", "qat", "dynamic", "static"] = Field(
        "auto",
        description=(
            "auto: the learned QAT ranges when the student has them, else static calibration when "
            "calib_data is given, else dynamic (ONNX) / post-training on built-in sentences (OpenVINO)."
        ),
    )
    calib_data: Path | None = Field(
        None, description="Text file (one sentence a line) or TSV/CSV with a text column, for calibration."
    )
    calib_text_column: str | None = Field(None, description="Column of calib_data holding text (TSV/CSV).")
    calib_samples: int = Field(128, gt=0, description="Sentences used to calibrate static int8.")
    parity_samples: int = Field(16, gt=0, description="Real sentences run through artifact and torch.")
    parity_data: Path | None = Field(
        None, description="Sentences for the parity check (default: calib_data, else a built-in list)."
    )
    max_length: int = Field(128, gt=1, description="Longest sequence fed to parity and calibration.")
    opset: int = Field(17, ge=13, description="ONNX opset (the dynamo exporter writes at least 18).")
    onnx_exporter: Literal["torchscript", "dynamo", "optimum"] = Field(
        "torchscript",
        description=(
            "How fp32/fp16 ONNX (and the float file dynamic/static int8 start from) is written: "
            "torchscript (torch.onnx's TorchScript exporter; measured fastest graphs), dynamo "
            "(torch.onnx dynamo=True), or optimum (optimum-onnx main_export; pip install "
            "'edgedistill[optimum]', transformers<4.58). QAT int8 always uses the TorchScript exporter."
        ),
    )
    seed: int = 0
    tolerances: dict[str, Tolerance] = Field(default_factory=dict, validate_default=True)
    only: list[ExportPair] | None = Field(
        None,
        description="Build only these (format, precision) pairs of formats x precisions (default: every "
        "pair): `fit` exports its winner in the pairs that passed its full measurement, not their cross product.",
    )

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        names = [v.lower() for v in value]
        if "all" in names:
            return ["all"]  # expanded by the planner, which skips formats whose runtime is missing
        bad = [v for v in names if v not in FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {bad}; choose from {list(FORMATS)} or 'all'")
        if not names:
            raise ValueError("name at least one format")
        return list(dict.fromkeys(names))

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: list[str]) -> list[str]:
        names = [v.lower() for v in value]
        bad = [v for v in names if v not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; choose from {list(PRECISIONS)}")
        if not names:
            raise ValueError("name at least one precision")
        return list(dict.fromkeys(names))

    @field_validator("tolerances", mode="before")
    @classmethod
    def _merge_tolerances(cls, value: Any) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return value  # pydantic reports the type error
        merged: dict[str, Any] = {p: dict(t) for p, t in DEFAULT_TOLERANCES.items()}
        for precision, bounds in value.items():
            if precision not in merged:
                raise ValueError(
                    f"tolerances for unknown precision {precision!r}; known: {list(PRECISIONS)}, bf16 "
                    f"(the bound for runs a runtime computes in bf16) and {QAT_EXACT} (artifacts that hold "
                    f"exactly the weights of their fake-quant student)"
                )
            if isinstance(bounds, Tolerance):
                bounds = bounds.model_dump(exclude_unset=True)
            if not isinstance(bounds, dict):
                return value
            merged[precision] = {**merged[precision], **bounds}
        return merged

    @model_validator(mode="after")
    def _calib_column_needs_file(self) -> ExportConfig:
        if self.calib_text_column and self.calib_data is None:
            raise ValueError("calib_text_column is set but calib_data is not")
        return self

    @model_validator(mode="after")
    def _only_within_the_request(self) -> ExportConfig:
        if self.only is None:
            return self
        if not self.only:
            raise ValueError("only: [] builds nothing; drop it to build every pair, or name at least one")
        outside = [
            f"{p.format}-{p.precision}"
            for p in self.only
            if (p.format not in self.formats and self.formats != ["all"])
            or p.precision not in self.precisions
        ]
        if outside:
            raise ValueError(
                f"only: {outside} not among formats {self.formats} x precisions {self.precisions}; "
                "add them there or drop them from only"
            )
        return self

    def just(self, fmt: str, precision: str, **update: Any) -> ExportConfig:
        """These settings for one artifact, ``fmt``-``precision`` (``only`` dropped: it names that pair)."""
        return self.model_copy(update={"formats": [fmt], "precisions": [precision], "only": None, **update})

    def wants(self, fmt: str, precision: str) -> bool:
        """Whether ``only`` (when given) names this pair."""
        return self.only is None or any(p.format == fmt and p.precision == precision for p in self.only)

    def tolerance(self, precision: str) -> Tolerance:
        return self.tolerances[precision]
