"""manifest.json: what an artifact folder holds, where it came from, and how well it matches torch.

An app (or `edgedistill bench`) reads the manifest instead of guessing: the model file, the
input/output signature, the sha256 of every file (`verify_manifest` re-checks them), the
teacher/student provenance, the parity figures (with the runtime settings they were measured
with, what the runtime read back, and the CPU they ran on), ``load``: how an app must load the
artifact to get those numerics, and the versions of the tools that built it.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill import __version__, host
from edgedistill.errors import EdgeDistillError
from edgedistill.io import sha256_file

if TYPE_CHECKING:
    from edgedistill.export.config import ExportConfig
    from edgedistill.export.core import ArtifactResult, FormatPlugin, StudentInfo
    from edgedistill.export.parity import ParityReport

MANIFEST_VERSION = 1
BASE_TOOLS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "nncf")


def tool_versions(packages: tuple[str, ...] | list[str]) -> dict[str, str]:
    versions = {"edgedistill": __version__, "python": platform.python_version()}
    for name in dict.fromkeys([*BASE_TOOLS, *packages]):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``folder`` (POSIX relative paths), manifest excluded."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == "manifest.json":
            continue
        table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def labels(student: StudentInfo) -> dict[str, str] | None:
    """Class index -> label name (config.json omits transformers' default LABEL_i names)."""
    if student.task != "sequence-classification":
        return None
    from transformers import AutoConfig

    id2label = AutoConfig.from_pretrained(student.path).id2label
    return {str(k): str(v) for k, v in sorted(id2label.items())}


def provenance(student: StudentInfo) -> dict[str, Any]:
    meta = student.meta
    weights = {name: sha256_file(student.path / name) for name in student.weights}
    return {
        "student_path": str(student.path),
        "student_weights_sha256": weights,
        "architecture": student.architecture,
        "model_type": student.model_type,
        "num_hidden_layers": student.config.get("num_hidden_layers"),
        "hidden_size": student.config.get("hidden_size"),
        "teacher": meta.get("teacher"),
        "selected_teacher_layers": meta.get("selected_teacher_layers"),
        "qat": meta.get("qat"),
        "student_eval_metrics": meta.get("eval_metrics"),
        "edgedistill_metadata": bool(meta),
    }


def build_manifest(
    folder: Path,
    plugin: FormatPlugin,
    student: StudentInfo,
    precision: str,
    result: ArtifactResult,
    parity: ParityReport,
    cfg: ExportConfig,
    export_seconds: float | None = None,
) -> dict[str, Any]:
    from edgedistill.export.core import tensor_specs_to_json

    files = file_table(folder)
    return {
        "manifest_version": MANIFEST_VERSION,
        "format": plugin.name,
        "precision": precision,
        "task": student.task,
        "model_files": list(result.files),
        "model_bytes": sum(files[f]["bytes"] for f in result.files),
        "files": files,
        "inputs": tensor_specs_to_json(result.inputs),
        "outputs": tensor_specs_to_json(result.outputs),
        "labels": labels(student),
        "quantization": result.quantization,
        "notes": result.notes,
        "provenance": provenance(student),
        "parity": parity.to_dict(),
        # parity figures hold for this CPU: int8 kernels and OpenVINO's arithmetic depend on the ISA
        "host": host.cpu_summary(),
        "load": plugin.load_instructions(result),
        "tools": tool_versions(plugin.tool_packages),
        "export_config": json.loads(cfg.model_dump_json()),
        "export_seconds": round(export_seconds, 3) if export_seconds is not None else None,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def verify_manifest(folder: str | Path) -> dict[str, Any]:
    """Re-hash an artifact folder against its manifest; raise naming every file that differs."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise EdgeDistillError(
            f"{folder} has no manifest.json; it is not an artifact written by edgedistill export"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    actual = file_table(folder)
    problems = []
    for name, entry in manifest["files"].items():
        if name not in actual:
            problems.append(f"{name}: missing")
        elif actual[name]["sha256"] != entry["sha256"]:
            problems.append(f"{name}: sha256 differs (file changed since export)")
    problems += [f"{name}: not in the manifest" for name in actual if name not in manifest["files"]]
    if problems:
        raise EdgeDistillError(f"{folder} does not match its manifest:\n  " + "\n  ".join(problems))
    return manifest
