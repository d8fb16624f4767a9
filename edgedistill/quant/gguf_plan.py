"""The tensor plan: which GGML type every checkpoint tensor is stored as, shared by the GGUF writer and GGUF QAT."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgedistill.errors import ExportError, UnsupportedModelError
from edgedistill.quant.gguf_arch import ARCHITECTURES, RULE_ONLY_ARCHITECTURES, GGUFArch, _converted_name
from edgedistill.quant.gguf_types import PYTHON_PRECISIONS, _import_gguf, normalize_precision

log = logging.getLogger(__name__)

# One rule decides how every tensor is stored, and both the writer (`edgedistill.export.gguf.writer`) and GGUF
# quantization-aware training (`edgedistill.compress.gguf_quant`) read it from `plan_tensors`,
# so a fake-quantized student and its exported file cannot disagree on a tensor's type.


@dataclass(frozen=True)
class TensorRule:
    """How one checkpoint tensor is stored in the GGUF file."""

    source: str  # key in the checkpoint (safetensors / named_parameters)
    name: str  # key after arch renames (BERT drops "bert."), the one mapped to a GGUF name
    gguf_name: str
    kind: str  # gguf.MODEL_TENSOR member name
    shape: tuple[int, ...]
    float_only: bool  # llama.cpp keeps it F32: 1-D, norms, biases, position/token-type tables
    wanted: str  # GGML type the rule asks for (F32, the precision's type, Q8_0 for a 4-bit output)
    ggml_type: str  # GGML type written: `wanted`, or F16 when rows do not fill its blocks
    override: str | None = None  # why `wanted` is not the precision's type (other than float_only)
    fallback: str | None = None  # why `ggml_type` is not `wanted`


@dataclass(frozen=True)
class TensorPlan:
    """Every converted tensor of one checkpoint at one precision, in file order."""

    precision: str
    architecture: str  # gguf.MODEL_ARCH member name
    tensors: tuple[TensorRule, ...]
    skipped: tuple[str, ...]  # checkpoint keys left out on purpose
    output_tensor: str  # GGUF name of the output projection (token_embd when there is no output.weight)

    def fallbacks(self) -> list[dict[str, str]]:
        return [
            {"tensor": r.gguf_name, "wanted": r.wanted, "got": r.ggml_type, "reason": r.fallback}
            for r in self.tensors
            if r.fallback
        ]

    def overrides(self) -> list[dict[str, str]]:
        return [
            {"tensor": r.gguf_name, "type": r.wanted, "reason": r.override}
            for r in self.tensors
            if r.override
        ]


def _rule_arch(config: dict[str, Any]) -> GGUFArch:
    model_type = str(config.get("model_type"))
    arch = ARCHITECTURES.get(model_type) or RULE_ONLY_ARCHITECTURES.get(model_type)
    if arch is None:
        known = ", ".join([*ARCHITECTURES, *RULE_ONLY_ARCHITECTURES])
        raise UnsupportedModelError(
            f"no GGUF tensor rule for model_type {model_type!r}; known: {known}. Export this model to "
            f"ONNX or OpenVINO instead."
        )
    return arch


def _float_only(gguf, kind, gguf_name: str, shape: Sequence[int]) -> bool:
    """llama.cpp's rule: 1-D tensors, norms, biases and a few tables are stored as F32."""
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return True
    return kind in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES, gguf.MODEL_TENSOR.FFN_GATE_INP)


def _wanted_type(precision: str, is_output: bool) -> str:
    if is_output and precision not in ("f32", "f16", "q8_0"):
        # llama.cpp keeps the output projection (token_embd when there is no output.weight) at a
        # higher precision (Q6_K there); gguf has no Python Q6_K quantizer, so Q8_0 here.
        return "Q8_0"
    return precision.upper()


def plan_tensors(
    config: dict[str, Any],
    shapes: Mapping[str, Sequence[int]],
    precision: str,
    *,
    source: str = "the checkpoint",
) -> TensorPlan:
    """The GGUF type of every tensor of a checkpoint at a Python-quantizable precision.

    ``config`` is the model's config.json as a dict, ``shapes`` maps checkpoint keys to shapes
    (HF layout: the last dimension is the row that blocks of 32 are cut from). Needs ``gguf``
    (numpy only), never torch. k-quants are chosen by llama.cpp's quantizer and are not planned here.
    """
    gguf = _import_gguf()
    precision = normalize_precision(precision)
    if precision not in PYTHON_PRECISIONS:
        raise UnsupportedModelError(
            f"GGUF {precision} is quantized by llama.cpp's own k-quant code, whose per-tensor choices "
            f"are not planned here; plan one of {', '.join(PYTHON_PRECISIONS)}"
        )
    arch = _rule_arch(config)
    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], n_layers)

    mapped: list[tuple[str, str, str, Any, tuple[int, ...]]] = []
    skipped: list[str] = []
    unmapped: list[str] = []
    for key, shape in shapes.items():
        name, converted = _converted_name(arch, config, key)
        if not converted:
            skipped.append(name)
            continue
        found = name_map.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if found is None:
            unmapped.append(name)
        else:
            kind, gguf_name = found
            mapped.append((key, name, gguf_name, kind, tuple(int(n) for n in shape)))
    if unmapped:
        raise ExportError(
            f"{len(unmapped)} tensor(s) of {source} have no llama.cpp {arch.gguf_arch} name: "
            f"{', '.join(unmapped[:8])}. The checkpoint does not match a plain {arch.hf_class}."
        )
    names = {m[2] for m in mapped}
    token_embd = next((m[2] for m in mapped if m[3] == gguf.MODEL_TENSOR.TOKEN_EMBD), None)
    if token_embd is None:
        raise ExportError(f"{source} has no token embedding table")
    output_name = "output.weight" if "output.weight" in names else token_embd

    rules = []
    for key, name, gguf_name, kind, shape in mapped:
        float_only = _float_only(gguf, kind, gguf_name, shape)
        wanted = "F32" if float_only else _wanted_type(precision, gguf_name == output_name)
        override = None
        if not float_only and wanted.lower() != precision:
            override = "output projection kept at 8 bits"
        ggml_type, fallback = wanted, None
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[wanted]][0]
        if shape[-1] % block:
            ggml_type = "F16"
            fallback = f"row length {shape[-1]} is not a multiple of the {wanted} block size {block}"
        rules.append(
            TensorRule(
                key, name, gguf_name, kind.name, shape, float_only, wanted, ggml_type, override, fallback
            )
        )
    return TensorPlan(precision, arch.gguf_arch, tuple(rules), tuple(skipped), output_name)
