"""Fuzz targets for the artifact readers: any input may raise ArtifactError, nothing else.

Plain functions taking bytes, so any fuzz driver (hypothesis here and in
benchmarks/fuzz_artifacts.py, a coverage-guided fuzzer elsewhere) can call them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

from edgedistill.errors import ArtifactError

_DIR: dict[str, Path] = {}
MODEL_BYTES = b"\x08\x07 tiny model bytes"


def fuzz_gguf(data: bytes) -> None:
    from edgedistill.export.gguf.header import read_gguf_header_from

    try:
        read_gguf_header_from(io.BytesIO(data), len(data), "fuzz.gguf")
    except ArtifactError:
        pass


def _folder() -> Path:
    if "manifest" not in _DIR:
        folder = Path(tempfile.mkdtemp(prefix="edgedistill-fuzz-manifest-"))
        (folder / "model.onnx").write_bytes(MODEL_BYTES)
        _DIR["manifest"] = folder
    return _DIR["manifest"]


def valid_manifest() -> bytes:
    return json.dumps(
        {
            "manifest_version": 1,
            "format": "onnx",
            "precision": "fp32",
            "task": "feature-extraction",
            "model_files": ["model.onnx"],
            "model_bytes": len(MODEL_BYTES),
            "files": {
                "model.onnx": {"sha256": hashlib.sha256(MODEL_BYTES).hexdigest(), "bytes": len(MODEL_BYTES)}
            },
            "inputs": [{"name": "input_ids", "dtype": "int64"}],
            "labels": None,
        }
    ).encode()


def fuzz_manifest(data: bytes) -> None:
    from edgedistill.export.manifest import verify_manifest

    folder = _folder()
    (folder / "manifest.json").write_bytes(data)
    try:
        verify_manifest(folder)
    except ArtifactError:
        pass
