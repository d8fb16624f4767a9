"""Hostile artifacts for the reader tests: real tiny exports copied and damaged, and crafted GGUF bytes.

`exported` exports the conftest tiny classifier (ONNX + OpenVINO fp32) and encoder (GGUF f32)
once per test session; every test copies a folder (`copy`) before damaging it. An attacker who
edits a file can rewrite manifest.json too, so `rehash` re-signs a damaged folder: the readers
must then refuse the file itself, not only the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

_CACHE: dict[str, Any] = {}


def exported(tmp_path_factory, classifier: Path, encoder: Path) -> dict[str, Path]:
    if "exported" in _CACHE:
        return _CACHE["exported"]
    from edgedistill.export import ExportConfig, export

    root = tmp_path_factory.mktemp("hostile_artifacts")
    export(
        classifier,
        root / "cls",
        ExportConfig(formats=["onnx", "openvino"], precisions=["fp32"], parity_samples=4),
    )
    export(encoder, root / "enc", ExportConfig(formats=["gguf"], precisions=["fp32"], parity_samples=4))
    _CACHE["exported"] = {
        "onnx": root / "cls" / "onnx-fp32",
        "openvino": root / "cls" / "openvino-fp32",
        "gguf": next((root / "enc").glob("gguf-*")),
    }
    return _CACHE["exported"]


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def write_manifest(folder: Path, data: dict[str, Any] | str | bytes) -> None:
    path = folder / "manifest.json"
    if isinstance(data, dict):
        data = json.dumps(data, indent=1)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rehash(folder: Path, model_files: list[str] | None = None) -> dict[str, Any]:
    """Re-sign ``folder``'s manifest over what it now holds (symlinks listed by their own name)."""
    data = manifest(folder)
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if rel != "manifest.json" and path.exists():
                files[rel] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    data["files"] = files
    if model_files is not None:
        data["model_files"] = model_files
    data["model_bytes"] = sum(files[f]["bytes"] for f in data["model_files"] if f in files)
    write_manifest(folder, data)
    return data


def to_external_data(folder: Path, location: str = "model.onnx.data") -> Path:
    """Rewrite the folder's model.onnx with every initializer in an external file; re-sign."""
    import onnx

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    rehash(folder, ["model.onnx", location])
    return path


def set_external_location(folder: Path, location: str, *, offset_shift: int = 0, resign: bool = True) -> str:
    """Point the first external tensor's location elsewhere (or shift its offset); returns its name."""
    import onnx

    path = folder / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location
        if entry.key == "offset" and offset_shift:
            entry.value = str(int(entry.value) + offset_shift)
    path.write_bytes(model.SerializeToString())
    if resign:
        rehash(folder)
    return tensor.name


# --------------------------------------------------------------------------- GGUF bytes


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    kvs: list[bytes] | None = None,
    tensors: list[bytes] | None = None,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes | None = None,
) -> bytes:
    """A GGUF file from raw parts; by default one KV and one f32 tensor of 4 values."""
    kvs = [kv_string("general.architecture", "bert")] if kvs is None else kvs
    tensors = [tensor_info("t", [4], 0, 0)] if tensors is None else tensors
    head = magic + struct.pack("<I", version)
    head += struct.pack(
        "<QQ", len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    head += b"".join(kvs) + b"".join(tensors)
    head += b"\0" * (-len(head) % 32)
    return head + (struct.pack("<4f", 1, 2, 3, 4) if data is None else data)


def kv_string(key: str, value: str) -> bytes:
    return gstr(key) + struct.pack("<I", 8) + gstr(value)


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", 4, value)


def kv_array(key: str, item_type: int, count: int, payload: bytes = b"") -> bytes:
    return gstr(key) + struct.pack("<IIQ", 9, item_type, count) + payload


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int, n_dims: int | None = None) -> bytes:
    out = gstr(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims)
    out += b"".join(struct.pack("<Q", d) for d in dims)
    return out + struct.pack("<IQ", ggml_type, offset)


def write_gguf_artifact(folder: Path, data: bytes) -> Path:
    """Replace the GGUF artifact's model file with ``data`` and re-sign the manifest."""
    model = manifest(folder)["model_files"][0]
    (folder / model).write_bytes(data)
    rehash(folder)
    return folder / model


# --------------------------------------------------------------------------- bench reports


def report_entry(name: str = "onnx-int8", p50: float = 4.0, n: int = 200) -> dict[str, Any]:
    return {
        "role": "candidate",
        "name": name,
        "path": f"/x/{name}",
        "format": name.split("-")[0],
        "precision": name.split("-")[1],
        "task": "sequence-classification",
        "runtime": "onnxruntime",
        "size_mb": 10.0,
        "status": "measured",
        "reason": None,
        "latency": {
            "n": n,
            "p50_ms": p50,
            "p95_ms": p50 * 1.2,
            "p99_ms": p50 * 1.3,
            "throughput_per_s": 1000 / p50,
            "samples_ms": [p50] * n,
            "rounds": [{"n": n, "median_ms": p50}],
        },
        "memory": {"peak_rss_mb": 100.0},
        "accuracy": None,
        "lm": None,
    }


def bench_report(target_file: Path, entries: list[dict[str, Any]]) -> dict[str, Any]:
    from edgedistill.targets import load_target

    target = load_target(target_file)
    return {
        "report_version": 1,
        "kind": "edgedistill-bench-report",
        "target": {"name": target.name, "config": json.loads(target.model_dump_json())},
        "host": {"cpu": {"model": "Test CPU", "logical_cores": 2, "isa": {"avx2": True}}},
        "artifacts": entries,
        "comparisons": [],
    }
