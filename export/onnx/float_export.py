"""Float ONNX export by torch.onnx (TorchScript by default, dynamo on request) or optimum-onnx."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.errors import MissingDependencyError
from edgedistill.export.core import (
    ExportError,
    StudentInfo,
    example_batch,
    model_input_names,
    task_output_names,
    traceable,
)
from edgedistill.export.tracing import OUTPUT_AXES, output_names

if TYPE_CHECKING:
    from edgedistill.export.config import ExportConfig

from edgedistill.export.onnx.files import EXTERNAL_DATA_FILE, MODEL_FILE

log = logging.getLogger(__name__)


_OPTIMUM_TASKS = {
    "sequence-classification": "text-classification",
    "feature-extraction": "feature-extraction",
}


# Float export


def _optimum_supports(model_type: str, task: str) -> bool:
    # TasksManager knows the ONNX configs only once model_configs is imported (it registers them;
    # optimum.exporters.onnx itself is a lazy module). Without it every model type looked
    # unsupported, so before this fix edgedistill silently used torch.onnx for every model.
    import optimum.exporters.onnx.model_configs  # noqa: F401
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(
            model_type, "onnx", library_name="transformers"
        )
    except KeyError:
        return False
    return _OPTIMUM_TASKS[task] in tasks


def require_optimum() -> None:
    """``onnx_exporter: optimum`` without optimum-onnx installed: say how to get it, and its limit."""
    from edgedistill.plugins import is_installed

    if not is_installed("optimum.exporters.onnx"):
        raise MissingDependencyError(
            "optimum-onnx",
            "optimum",
            "onnx_exporter=optimum (optimum-onnx 0.1.0 needs transformers<4.58; the default "
            "onnx_exporter=torchscript needs no optimum)",
        )


def export_float_optimum(student: StudentInfo, dtype: str, work_dir: Path, opset: int) -> Path:
    """optimum-onnx export of the student folder; returns the written model.onnx."""
    from optimum.exporters.onnx import main_export

    main_export(
        str(student.path),
        output=str(work_dir),
        task=_OPTIMUM_TASKS[student.task],
        opset=opset,
        dtype=dtype,
        device="cpu",
        do_validation=False,  # edgedistill's parity check runs on real sentences instead
        library_name="transformers",
        local_files_only=True,
    )
    return work_dir / MODEL_FILE


def _dynamic_axes(
    input_names: list[str], task: str, outputs: list[str] | None = None
) -> tuple[list[str], dict[str, dict[int, str]]]:
    output_names = outputs or task_output_names(task)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in input_names}
    axes.update({name: OUTPUT_AXES[name] for name in output_names})
    return output_names, axes


def export_module(
    module,
    example: dict[str, Any],
    path: Path,
    task: str,
    opset: int,
    outputs: list[str] | None = None,
) -> Path:
    """torch.onnx (TorchScript exporter) of a module taking ``example``'s tensors positionally."""
    import torch

    input_names = list(example)
    output_names, axes = _dynamic_axes(input_names, task, outputs)
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(example.values()),
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the dynamo exporter fails on NNCF-hooked models
        )
    return path


def export_module_dynamo(
    module,
    example: dict[str, Any],
    path: Path,
    task: str,
    opset: int,
    outputs: list[str] | None = None,
) -> Path:
    """torch.onnx's dynamo exporter (torch.export, then onnxscript's optimizer) of the same module.

    The graph is written at opset 18 or higher: 18 is the lowest opset the dynamo exporter writes
    natively (a lower one would pass through onnx's version converter after export).
    """
    import torch

    input_names = list(example)
    output_names, _ = _dynamic_axes(input_names, task, outputs)
    batch = torch.export.Dim("batch_size")
    sequence = torch.export.Dim("sequence_length")
    shapes = {name: {0: batch, 1: sequence} for name in input_names}
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                module,
                tuple(example.values()),
                None,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=(tuple(shapes.values()),),
                opset_version=max(opset, 18),
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # torch.export raises many types (UserError, GuardOnDataDependent...)
        raise ExportError(
            f"torch.onnx's dynamo exporter cannot export this model: {type(exc).__name__}: "
            f"{str(exc)[:500]}. Use the default --set onnx_exporter=torchscript."
        ) from exc
    program.save(str(path))
    return path


def export_float_torch(
    student: StudentInfo, dtype: str, work_dir: Path, opset: int, exporter: str = "torchscript"
) -> Path:
    """The eager-attention student through torch.onnx (``exporter``: torchscript or dynamo)."""
    model = student.load_model("eager")
    if dtype == "fp16":
        model = model.half()
    tokenizer = student.load_tokenizer()
    names = model_input_names(model, tokenizer)
    outputs = output_names(student)
    module = traceable(model, student.task, names, outputs=outputs)
    example = example_batch(student, tokenizer, names)
    write = export_module_dynamo if exporter == "dynamo" else export_module
    return write(module, example, work_dir / MODEL_FILE, student.task, opset, outputs)


EXPORTER_NAMES = {
    "torchscript": "torch.onnx (TorchScript exporter)",
    "dynamo": "torch.onnx (dynamo exporter)",
    "optimum": "optimum-onnx main_export",
}


def export_float(
    student: StudentInfo, dtype: str, work_dir: Path, cfg: ExportConfig
) -> tuple[Path, str, list[str]]:
    """fp32/fp16 ONNX with ``cfg.onnx_exporter``; returns the file, the exporter used, and notes.

    The file is kept in ``student.cache`` (below 1 GB) so the int8 artifacts of the same export
    quantize it without exporting again.
    """
    key = f"onnx.{dtype}.{cfg.onnx_exporter}"
    cached = student.cache.get(key)
    path = work_dir / MODEL_FILE
    if cached is not None:
        path.write_bytes(cached[0])
        return path, cached[1], list(cached[2])
    notes: list[str] = []
    route = cfg.onnx_exporter
    if route == "optimum":
        require_optimum()
        if not _optimum_supports(student.model_type, student.task):
            notes.append(
                f"optimum-onnx has no ONNX config for {student.model_type}; exported with torch.onnx"
            )
            route = "torchscript"
        elif student.extra_outputs:
            notes.append(
                f"optimum-onnx exports the task's output only, not {student.extra_outputs}; exported with torch.onnx"
            )
            route = "torchscript"
    if route == "optimum":
        path = export_float_optimum(student, dtype, work_dir, cfg.opset)
    else:
        path = export_float_torch(student, dtype, work_dir, cfg.opset, exporter=route)
    exporter = EXPORTER_NAMES[route]
    if not (work_dir / EXTERNAL_DATA_FILE).exists() and path.stat().st_size < 2**30:
        student.cache[key] = (path.read_bytes(), exporter, tuple(notes))
    return path, exporter, notes
