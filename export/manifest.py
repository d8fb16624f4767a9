"""manifest.json: what an artifact folder holds, where it came from, and how well it matches torch.

An app (or `edgedistill bench`) reads the manifest instead of guessing: the model file, the
input/output signature, the sha256 of every file (`verify_manifest` re-checks them), the
teacher/student provenance, the parity figures (with the runtime settings they were measured
with, what the runtime read back, and the CPU they ran on), ``load``: how an app must load the
artifact to get those numerics, and the versions of the tools that built it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill import __version__, host
from edgedistill.errors import ArtifactError
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
        # a generalist: what each output is (the signature in ``outputs`` has names and shapes only)
        **({"student_outputs": meta.get("outputs")} if student.extra_outputs else {}),
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


MAX_MANIFEST_BYTES = 16 * 2**20  # a manifest lists files and figures; anything larger is not one
_FIX = "re-export the artifact with `edgedistill export`"
_REQUIRED = {"format": str, "precision": str, "task": str, "files": dict, "model_files": list}
_OPTIONAL = {
    "model_bytes": int,
    "inputs": list,
    "outputs": list,
    "labels": dict,
    "parity": dict,
    "load": dict,
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """``manifest.json`` parsed and checked field by field (types, version, every path inside the folder)."""
    from edgedistill.export.artifact_checks import inside

    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise ArtifactError(
            f"{folder} has no manifest.json; it is not an artifact written by edgedistill export"
        )
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path}: {path.stat().st_size} bytes is too large for a manifest; {_FIX}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}; truncated?); {_FIX}"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not a JSON manifest ({type(exc).__name__}: {exc}); {_FIX}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(
            f"{path}: the manifest is a JSON {type(manifest).__name__}, not an object; {_FIX}"
        )
    version = manifest.get("manifest_version")
    if version != MANIFEST_VERSION or isinstance(version, bool):
        raise ArtifactError(
            f"{path}: field manifest_version is {version!r}; this edgedistill reads version {MANIFEST_VERSION} "
            f"(export it again with this version, or upgrade edgedistill)"
        )
    problems = [
        f"{key}: missing"
        if key not in manifest
        else f"{key}: {type(manifest[key]).__name__}, not {kind.__name__}"
        for key, kind in _REQUIRED.items()
        if not isinstance(manifest.get(key), kind)
    ]
    problems += [
        f"{key}: {type(manifest[key]).__name__}, not {kind.__name__}"
        for key, kind in _OPTIONAL.items()
        if manifest.get(key) is not None
        and (not isinstance(manifest[key], kind) or isinstance(manifest[key], bool))
    ]
    if problems:
        raise ArtifactError(f"{path}: fields of the wrong kind: " + "; ".join(problems) + f"; {_FIX}")
    for name, entry in manifest["files"].items():
        inside(folder, name, str(path), "files entry")
        ok = isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not ok or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(
                f"{path}: files[{name!r}] must be {{'sha256': 64 hex chars, 'bytes': a count >= 0}}, got {entry!r:.200}; {_FIX}"
            )
    for name in manifest["model_files"]:
        if not isinstance(name, str) or name not in manifest["files"]:
            raise ArtifactError(f"{path}: model_files names {name!r:.200}, which files does not list; {_FIX}")
    if isinstance(manifest.get("model_bytes"), int) and manifest["model_bytes"] < 0:
        raise ArtifactError(f"{path}: field model_bytes is negative ({manifest['model_bytes']}); {_FIX}")
    return manifest


def _folder_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` (symlinks not followed into directories); a link out of it is refused."""
    from edgedistill.export.artifact_checks import inside, regular_file

    found = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*filenames, *dirnames]:
            full = Path(dirpath) / name
            rel = full.relative_to(folder).as_posix()
            if full.is_symlink():
                inside(folder, rel, str(folder), "symlink")  # refused when it points outside
            if name in filenames and rel != "manifest.json":
                regular_file(full, str(folder), "file")
                found[rel] = full
            elif name in dirnames and full.is_symlink():
                raise ArtifactError(f"{folder}: {rel} is a symlink to a folder; copy the files in instead")
    return found


def verify_manifest(folder: str | Path) -> dict[str, Any]:
    """Re-hash an artifact folder against its manifest; raise naming every file that differs.

    The manifest is checked first (`read_manifest`: fields, version, every path inside the
    folder), then the folder walked without following links out of it, and only then hashed.
    """

    folder = Path(folder)
    manifest = read_manifest(folder)
    actual = _folder_files(folder)
    problems = []
    for name, entry in manifest["files"].items():
        if name not in actual:
            problems.append(f"{name}: missing")
        elif actual[name].stat().st_size != entry["bytes"]:
            problems.append(
                f"{name}: sha256 differs (file changed since export: "
                f"{actual[name].stat().st_size} bytes, the manifest says {entry['bytes']})"
            )
        elif sha256_file(actual[name]) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs (file changed since export)")
    problems += [f"{name}: not in the manifest" for name in actual if name not in manifest["files"]]
    if problems:
        raise ArtifactError(
            f"{folder} does not match its manifest.json (re-export it, or restore the files):\n  "
            + "\n  ".join(problems)
        )
    return manifest
