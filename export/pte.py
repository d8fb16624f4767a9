"""The ``executorch`` format: a ``model.pte`` lowered to XNNPACK, fp32 or int8 (extra ``[executorch]``).

fp32: ``torch.export`` (dynamic batch and sequence length) -> ``to_edge_transform_and_lower``
with the `XnnpackPartitioner` -> ``to_executorch``. int8: torchao's pt2e quantization with
ExecuTorch's `XNNPACKQuantizer` (symmetric, per-channel int8 weights) between the two exports:
``static`` (the default) calibrates int8 activations with MinMax observers on the calibration
sentences (``--calib-data``, else the built-in ones); ``dynamic`` quantizes activations at run
time. NNCF's learned QAT ranges cannot be handed to the XNNPACK quantizer (it places its own
observers), so a QAT student is quantized post-training from its float weights and the manifest
says so; parity then holds it against the float student.

The model takes the tokenizer's 2-D padding mask and turns it into the 4-D additive mask with
plain tensor ops: transformers' own mask builder indexes with tensors that pt2e's prepared graph
cannot run (``IndexError: tensors used as indices must be long``), and the values are the same.

Parity runs the file in ``executorch.runtime`` (the portable runtime with the XNNPACK delegate
compiled into the pip wheel), on the host CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.export.core import (
    ArtifactResult,
    ExportError,
    FormatPlugin,
    RuntimeRun,
    StudentInfo,
    TensorSpec,
    model_input_names,
    task_output_names,
)
from edgedistill.export.tracing import traceable
from edgedistill.io import atomic_write_json

if TYPE_CHECKING:
    from edgedistill.export.config import ExportConfig

log = logging.getLogger(__name__)

PTE_FILE = "model.pte"
# the order of the .pte's positional inputs and the name of its output (an app needs both)
IO_FILE = "executorch_io.json"
MAX_BATCH = 16


def _export(module, example: tuple, names: list[str], max_length: int):
    import torch
    from torch.export import Dim

    batch = Dim("batch", min=1, max=MAX_BATCH)
    seq = Dim("seq", min=2, max=max_length)
    shapes = tuple({0: batch, 1: seq} for _ in names)
    # the wrapper takes ``*tensors`` (one varargs parameter); the graph module pt2e returns takes
    # one parameter per tensor
    if isinstance(module, torch.fx.GraphModule):
        dynamic_shapes: tuple = shapes
    else:
        dynamic_shapes = (shapes,)
    try:
        return torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:  # torch.export raises many types (UserError, GuardOnDataDependent...)
        raise ExportError(f"torch.export of the student failed: {str(exc)[:1500]}") from exc


def quantize_pt2e(exported, feeds: list[dict[str, np.ndarray]], names: list[str], dynamic: bool):
    """The XNNPACK int8 graph module of ``exported`` (calibrated on ``feeds`` unless ``dynamic``)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    )
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for feed in feeds:
            prepared(*(torch.from_numpy(feed[n]) for n in names))
    return convert_pt2e(prepared)


def _xnnpack_nodes(program) -> dict[str, int]:
    """Delegated calls and the aten ops left outside XNNPACK (the portable kernels run those)."""
    counts: dict[str, int] = {"xnnpack_delegates": 0}
    for node in program.exported_program().graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            counts["xnnpack_delegates"] += 1
        elif not name.startswith(("getitem", "alloc", "sym_size")):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


class ExecuTorchPlugin(FormatPlugin):
    name = "executorch"
    precisions = ("fp32", "int8")
    tasks = ("sequence-classification", "feature-extraction")
    requires = (("executorch", "executorch"), ("torchao", "executorch"))
    tool_packages = ("executorch", "torchao")

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg: ExportConfig) -> str | None:
        if student.task == "text-generation":
            return "ExecuTorch export of decoders (KV cache, executorch's LLM export) is not built; use --format gguf"
        if precision == "int8" and cfg.int8_method == "qat":
            return (
                "executorch int8 cannot carry NNCF's learned QAT ranges (the XNNPACK quantizer places its "
                "own observers); use --int8-method static (calibrated) or dynamic, or --format onnx for QAT int8"
            )
        return super().unsupported_reason(student, precision, cfg)

    def export(
        self, student: StudentInfo, precision: str, tmp_dir: Path, cfg: ExportConfig
    ) -> ArtifactResult:
        # torchao logs a WARNING per CUDA-only extension it cannot load on a CPU build; not ours to show
        torchao_log = logging.getLogger("torchao")
        level = torchao_log.level
        torchao_log.setLevel(logging.ERROR)
        try:
            return self._export(student, precision, tmp_dir, cfg)
        finally:
            torchao_log.setLevel(level)

    def _export(
        self, student: StudentInfo, precision: str, tmp_dir: Path, cfg: ExportConfig
    ) -> ArtifactResult:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from edgedistill.export.core import example_batch
        from edgedistill.export.parity import calibration_feeds
        from edgedistill.export.parity.inputs import max_sequence_length

        tokenizer = student.load_tokenizer()
        model = student.load_model("eager")
        names = model_input_names(model, tokenizer)
        if "attention_mask" not in names:
            raise ExportError(
                f"{student.path}: the model's forward takes no attention_mask; executorch export needs one"
            )
        module = traceable(model, student.task, names, additive_mask=True)
        batch = example_batch(student, tokenizer, names)
        example = tuple(batch[n].to(torch.int64) for n in names)
        max_length = max_sequence_length(student, tokenizer, cfg)
        exported = _export(module, example, names, max_length)
        quantization: dict[str, Any] = {"method": "none", "dtype": "float32"}
        notes: list[str] = []
        if precision == "int8":
            method = "dynamic" if cfg.int8_method == "dynamic" else "static"
            feeds, source = ([], None) if method == "dynamic" else calibration_feeds(student, cfg)
            converted = quantize_pt2e(exported, feeds, names, dynamic=method == "dynamic")
            exported = _export(converted, example, names, max_length)
            quantization = {
                "method": method,
                "description": (
                    "torchao pt2e with XNNPACKQuantizer: symmetric per-channel int8 weights, "
                    + (
                        "int8 activations quantized at run time"
                        if method == "dynamic"
                        else "int8 activations"
                    )
                ),
                "ranges": "run-time (dynamic)" if method == "dynamic" else "calibrated: MinMax observers",
            }
            if source is not None:
                quantization.update(calibration=source, calibration_samples=len(feeds))
            if student.has_qat:
                notes.append(
                    "the QAT student's learned NNCF ranges are not used: the XNNPACK quantizer observes its "
                    f"own ({quantization['ranges']}) on the float weights"
                )
        try:
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            program = edge.to_executorch()
        except Exception as exc:  # exir raises many types
            raise ExportError(f"lowering to XNNPACK / ExecuTorch failed: {str(exc)[:1500]}") from exc
        (tmp_dir / PTE_FILE).write_bytes(program.buffer)
        out_name = task_output_names(student.task)[0]
        ran = "f32" if precision == "fp32" else "f32+int8"
        atomic_write_json(tmp_dir / IO_FILE, {"inputs": names, "output": out_name, "ran": ran})
        quantization["backend"] = "XNNPACK"
        quantization["graph"] = _xnnpack_nodes(program)
        quantization["dynamic_shapes"] = {"batch": [1, MAX_BATCH], "sequence": [2, max_length]}
        hidden = "hidden_size" if out_name == "last_hidden_state" else "num_labels"
        return ArtifactResult(
            files=[PTE_FILE],
            inputs=[TensorSpec(n, "int64", ["batch", "sequence"]) for n in names],
            outputs=[
                TensorSpec(
                    out_name,
                    "float32",
                    ["batch", "sequence", hidden] if out_name == "last_hidden_state" else ["batch", hidden],
                )
            ],
            reference="float",
            quantization=quantization,
            notes=notes,
        )

    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        # XNNPACK computes what the file declares (fp32, or int8 where quantized): no other defaults
        import json

        import torch
        from executorch.runtime import Runtime

        io_spec = json.loads((artifact_dir / IO_FILE).read_text(encoding="utf-8"))
        names, output = io_spec["inputs"], io_spec["output"]
        try:
            method = Runtime.get().load_program(str(artifact_dir / PTE_FILE)).load_method("forward")
        except Exception as exc:  # the runtime raises RuntimeError/ValueError
            raise ExportError(f"executorch.runtime cannot load {artifact_dir / PTE_FILE}: {exc}") from exc
        results = []
        for feed in inputs:
            missing = [n for n in names if n not in feed]
            if missing:
                raise ExportError(f"the .pte needs inputs {missing} the tokenizer does not produce")
            values = method.execute([torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names])
            results.append({output: values[0].numpy()})
        return RuntimeRun(
            outputs=results,
            settings={"runtime": "executorch.runtime", "backend": "XNNPACK", "method": "forward"},
            read_back={"executorch": _version("executorch"), "num_inputs": method.metadata.num_inputs()},
            ran=io_spec["ran"],
        )

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        return {
            "runtime": "executorch (XNNPACK delegate)",
            "inputs": [s.name for s in result.inputs],
            "python": f"Runtime.get().load_program({PTE_FILE!r}).load_method('forward').execute([...])",
            "android": f"Module.load({PTE_FILE!r}).forward(EValue.from(inputIds), ...)",
            "ios": f"Module(filePath: {PTE_FILE!r}).forward([inputIds, attentionMask, ...])",
        }


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
