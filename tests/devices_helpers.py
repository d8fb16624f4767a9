"""Shared by the device tests: a tiny exported ONNX artifact (fp32 + int8).

The real sshd on 127.0.0.1 the ssh tests use lives in `edgedistill.loopback_ssh` (the benchmarks start it too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CACHE: dict[str, Any] = {}


def tiny_onnx(tmp_path_factory, classifier: Path) -> dict[str, Path]:
    """onnx-fp32 and onnx-int8 of the conftest tiny classifier, exported once per session."""
    if "onnx" in _CACHE:
        return _CACHE["onnx"]
    from edgedistill.export import ExportConfig, export

    root = tmp_path_factory.mktemp("device_artifacts")
    cfg = ExportConfig(
        formats=["onnx"],
        precisions=["fp32", "int8"],
        parity_samples=6,
        calib_samples=6,
        int8_method="dynamic",
    )
    export(classifier, root / "cls", cfg)
    _CACHE["onnx"] = {"onnx-fp32": root / "cls" / "onnx-fp32", "onnx-int8": root / "cls" / "onnx-int8"}
    return _CACHE["onnx"]
