"""GGUF precisions: the names the exporter accepts, their aliases, block sizes, and the lazy `gguf` import."""

from __future__ import annotations

import logging

from edgedistill.errors import MissingDependencyError, UnsupportedModelError

log = logging.getLogger(__name__)


# Precisions written by gguf's Python quantizers, and k-quants delegated to llama.cpp
# (value: the LlamaFileType member name).
PYTHON_PRECISIONS = ("f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")


LLAMA_CPP_PRECISIONS = {
    "q2_k": "MOSTLY_Q2_K",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q6_k": "MOSTLY_Q6_K",
}


PRECISIONS = (*PYTHON_PRECISIONS, *LLAMA_CPP_PRECISIONS)


# The export config's generic names, mapped onto GGUF types.
PRECISION_ALIASES = {"fp32": "f32", "fp16": "f16", "int8": "q8_0", "int4": "q4_0"}


K_QUANT_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


QK_K = 256  # k-quant super-block length: rows must be a multiple of it


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("gguf", "gguf", "Writing GGUF files") from None
    return gguf


def normalize_precision(precision: str) -> str:
    name = PRECISION_ALIASES.get(precision.lower(), precision.lower())
    if name not in PRECISIONS:
        raise UnsupportedModelError(
            f"GGUF precision {precision!r} is not supported; choose one of {', '.join(PRECISIONS)} "
            f"(aliases: {', '.join(f'{k}={v}' for k, v in PRECISION_ALIASES.items())})"
        )
    return name
