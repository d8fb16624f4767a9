"""The bounded GGUF header reader, as export and the bench import it.

The reader itself lives in the ground, `edgedistill.gguf_header`, because compress needs it too:
a GGUF teacher is checked with the same code and the same limits before transformers parses it.
This module keeps the import path export, the bench runtimes and the device bundle use.
"""

from __future__ import annotations

from edgedistill.gguf_header import (
    KEPT_ARRAY_ITEMS,
    MAGIC,
    MAX_ARRAY_DEPTH,
    MAX_DIMS,
    MAX_NAME_BYTES,
    SUPPORTED_VERSIONS,
    GGUFHeader,
    GGUFTensorInfo,
    ggml_type_names,
    gguf_context_length,
    gguf_file_type,
    read_gguf_header,
    read_gguf_header_from,
)

__all__ = [
    "KEPT_ARRAY_ITEMS",
    "MAGIC",
    "MAX_ARRAY_DEPTH",
    "MAX_DIMS",
    "MAX_NAME_BYTES",
    "SUPPORTED_VERSIONS",
    "GGUFHeader",
    "GGUFTensorInfo",
    "ggml_type_names",
    "gguf_context_length",
    "gguf_file_type",
    "read_gguf_header",
    "read_gguf_header_from",
]
