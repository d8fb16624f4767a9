"""Artifact folders as the bench harness sees them: what they are, which runtime runs them, their hashes.

`open_artifact` re-hashes every file of an export artifact against its ``manifest.json``
(`edgedistill.export.manifest.verify_manifest`; a mismatch raises naming the files) and reads
format, precision, task, model files, input signature and labels from it. A plain model folder
(``config.json`` + safetensors, e.g. a distilled student) is accepted too and run by torch, and so
is an ONNX folder another tool wrote (``config.json`` + one ``*.onnx``, e.g. optimum's export or
``ORTQuantizer`` output), so a third-party baseline can be measured under the same harness; such
folders have nothing to verify their hashes against and are reported ``verified: false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.errors import ArtifactError, EdgeDistillError
from edgedistill.io import read_json_object, sha256_file
from edgedistill.model_checks import check_model_size, check_safetensors
from edgedistill.outputs import EXTRA_OUTPUTS, read_extra_outputs

_FORMATS_FOR_HF_FOLDER = "torch"
_INPUT_DTYPES = ("int64", "int32", "float32", "float16", "bool", "int8", "uint8")
_ARCH_TASKS = (("ForSequenceClassification", "sequence-classification"), ("ForCausalLM", "text-generation"))


@dataclass
class Artifact:
    """An artifact folder (or a plain HF model folder, run by torch) as the harness sees it."""

    path: Path
    name: str
    format: str
    precision: str
    task: str
    runtime: str
    model_files: list[str]
    model_bytes: int
    files_sha256: dict[str, str]
    manifest: dict[str, Any] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] | None = None
    # the arithmetic the file declares, where it is read from the file itself (foreign ONNX graphs)
    graph_ran: str | None = None

    @property
    def student_path(self) -> Path | None:
        if self.manifest is None:
            return None
        value = (self.manifest.get("provenance") or {}).get("student_path")
        return Path(value) if value else None

    @property
    def extra_outputs(self) -> list[str]:
        """A generalist's outputs beside its task's (`edgedistill.outputs`): from the manifest's output
        signature, or the ``edgedistill.json`` of a torch model folder."""
        if self.manifest is not None:
            names = {o.get("name") for o in self.manifest.get("outputs") or [] if isinstance(o, dict)}
            return [n for n in EXTRA_OUTPUTS.get(self.task, ()) if n in names]
        if self.format == _FORMATS_FOR_HF_FOLDER:
            return read_extra_outputs(self.path, self.task)
        return []

    def job_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "format": self.format,
            "precision": self.precision,
            "task": self.task,
            "runtime": self.runtime,
            "model_files": self.model_files,
            "inputs": self.inputs,
            "extra_outputs": self.extra_outputs,  # measured beside the task's output by the accuracy job
            # how the export verified it must be loaded (the `artifact` precision policy uses it)
            "load": (self.manifest or {}).get("load"),
        }

    def declared_ran(self) -> str | None:
        """The arithmetic export parity read back for this file (runtimes that cannot say it themselves)."""
        runtime = ((self.manifest or {}).get("parity") or {}).get("runtime") or {}
        return str(runtime["ran"]) if runtime.get("ran") else self.graph_ran

    def describe(self) -> dict[str, Any]:
        manifest = None  # a torch model folder: nothing to verify
        if self.manifest is None and self.format != _FORMATS_FOR_HF_FOLDER:
            manifest = {"verified": False, "note": "no manifest.json: not written by edgedistill export"}
        if self.manifest is not None:
            manifest = {
                "verified": True,
                "manifest_version": self.manifest.get("manifest_version"),
                "created_utc": self.manifest.get("created_utc"),
                "quantization_method": (self.manifest.get("quantization") or {}).get("method"),
                "student_path": str(self.student_path) if self.student_path else None,
                "parity": _parity_summary(self.manifest.get("parity")),
            }
        return {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "precision": self.precision,
            "task": self.task,
            "runtime": self.runtime,
            "model_files": self.model_files,
            "model_bytes": self.model_bytes,
            "size_mb": round(self.model_bytes / 1e6, 4),
            "files_sha256": self.files_sha256,
            "manifest": manifest,
        }


def _parity_summary(parity: Any) -> dict[str, Any] | None:
    if not isinstance(parity, dict):
        return None
    return {k: parity.get(k) for k in ("passed", "reference", "samples") if k in parity}


def _guess_task(folder: Path, config: dict[str, Any]) -> str:
    meta_path = folder / "edgedistill.json"
    if meta_path.is_file():
        task = read_json_object(
            meta_path, "Re-run `edgedistill distill` or delete the file.", ArtifactError
        ).get("task")
        if task:
            return str(task)
    for arch in config.get("architectures") or []:
        for suffix, task in _ARCH_TASKS:
            if arch.endswith(suffix):
                return task
        if arch.endswith("Model"):
            return "feature-extraction"
    raise EdgeDistillError(
        f"{folder}: cannot tell the task of this model folder (config.json architectures "
        f"{config.get('architectures')}); it needs *ForSequenceClassification, *ForCausalLM or a bare *Model"
    )


def _read_config(folder: Path) -> dict[str, Any]:
    return read_json_object(folder / "config.json", "Save the model folder again.", ArtifactError)


def _check_inputs(folder: Path, inputs: list[Any]) -> None:
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ArtifactError(
                f"{folder / 'manifest.json'}: inputs[{i}] must be an object with a string 'name', got "
                f"{spec!r:.120}; re-export the artifact with `edgedistill export`"
            )
        dtype = spec.get("dtype")
        if dtype is not None and dtype not in _INPUT_DTYPES:
            raise ArtifactError(
                f"{folder / 'manifest.json'}: inputs[{i}].dtype {dtype!r:.60} is not one of {', '.join(_INPUT_DTYPES)}"
            )


def open_artifact(path: str | Path) -> Artifact:
    """Open an artifact folder, re-hashing every file against ``manifest.json`` (a mismatch raises).

    A folder without a manifest but with ``config.json`` and safetensors weights is a torch model
    folder (a student): its files are hashed and recorded, nothing to verify them against.
    """
    from edgedistill.bench.runtimes import runtime_for_format

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise EdgeDistillError(
            f"{folder} is not a folder; pass artifact folders written by `edgedistill export`"
        )
    folder = folder.resolve()
    if (folder / "manifest.json").is_file():
        from edgedistill.export.artifact_checks import check_model_files
        from edgedistill.export.manifest import verify_manifest

        manifest = verify_manifest(folder)  # raises naming every file that differs
        fmt = str(manifest["format"])
        model_files = list(manifest.get("model_files") or [])
        _check_inputs(folder, manifest.get("inputs") or [])
        # before any runtime opens them: external data, IR consts and GGUF counts inside the files
        check_model_files(folder, model_files, str(folder / "manifest.json"))
        return Artifact(
            path=folder,
            name=folder.name,
            format=fmt,
            precision=str(manifest["precision"]),
            task=str(manifest["task"]),
            runtime=runtime_for_format(fmt),
            model_files=model_files,
            model_bytes=int(
                manifest.get("model_bytes") or sum(manifest["files"][f]["bytes"] for f in model_files)
            ),
            files_sha256={name: entry["sha256"] for name, entry in manifest["files"].items()},
            manifest=manifest,
            inputs=list(manifest.get("inputs") or []),
            labels=manifest.get("labels"),
        )
    onnx_files = sorted(p.name for p in folder.glob("*.onnx"))
    if (folder / "config.json").is_file() and len(onnx_files) == 1:
        return _foreign_onnx(folder, onnx_files[0])
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        # a torch model folder: the checks every verb runs before a model folder loads (config sizes
        # against memory, every safetensors header), so the measuring worker never trips over them
        config = _read_config(folder)
        check_model_size(config, folder, "model")
        weights = sorted(p.name for p in folder.glob("*.safetensors"))
        for name in weights:
            check_safetensors(folder / name)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        labels = (
            config.get("id2label")
            if str(config.get("architectures", [""])[0]).endswith("ForSequenceClassification")
            else None
        )
        return Artifact(
            path=folder,
            name=folder.name,
            format=_FORMATS_FOR_HF_FOLDER,
            precision="fp32",
            task=_guess_task(folder, config),
            runtime=runtime_for_format(_FORMATS_FOR_HF_FOLDER),
            model_files=weights,
            model_bytes=sum((folder / w).stat().st_size for w in weights),
            files_sha256={p.name: sha256_file(p) for p in files},
            labels={str(k): str(v) for k, v in labels.items()} if labels else None,
        )
    raise EdgeDistillError(
        f"{folder} has no manifest.json (not written by `edgedistill export`) and is neither a model folder "
        f"(config.json + *.safetensors) nor an ONNX folder (config.json + one *.onnx); pass "
        f"OUT/<format>-<precision> folders from `edgedistill export`"
    )


def _foreign_onnx(folder: Path, model_file: str) -> Artifact:
    """An ONNX folder written by another tool: precision and inputs read from the graph itself."""
    import onnx

    from edgedistill import numerics
    from edgedistill.bench.runtimes import runtime_for_format
    from edgedistill.export.artifact_checks import check_onnx

    config = _read_config(folder)
    check_onnx(folder / model_file, folder)  # external data inside the folder, before onnx reads more
    graph = onnx.load(str(folder / model_file), load_external_data=False).graph
    ran = numerics.onnx_ran(graph)
    precision = "int8" if ran.endswith("+int8") else {"f16": "fp16", "f32": "fp32"}[ran]
    initializers = {init.name for init in graph.initializer}
    inputs = [
        {
            "name": i.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name,
        }
        for i in graph.input
        if i.name not in initializers
    ]
    task = _guess_task(folder, config)
    if task == "text-generation":
        raise EdgeDistillError(
            f"{folder}: ONNX decoders from other tools are not supported by the harness (KV-cache "
            "inputs differ per exporter); export the model with `edgedistill export` instead"
        )
    labels = config.get("id2label") if task == "sequence-classification" else None
    data_files = [p.name for p in folder.iterdir() if p.name.startswith(model_file) and p.name != model_file]
    model_files = [model_file, *sorted(data_files)]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return Artifact(
        path=folder,
        name=folder.name,
        format="onnx",
        precision=precision,
        task=task,
        runtime=runtime_for_format("onnx"),
        model_files=model_files,
        model_bytes=sum((folder / f).stat().st_size for f in model_files),
        files_sha256={p.name: sha256_file(p) for p in files},
        inputs=inputs,
        labels={str(k): str(v) for k, v in labels.items()} if labels else None,
        graph_ran=ran,
    )
