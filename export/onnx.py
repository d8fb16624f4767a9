"""ONNX export with torch.onnx; optimum-onnx only when asked for (``onnx_exporter: optimum``).

- fp32 / fp16 (``ExportConfig.onnx_exporter``):
  - ``torchscript`` (default): torch.onnx's TorchScript exporter on the eager-attention model, with
    constant folding. On all-MiniLM-L6-v2 (128 tokens, 1 thread, ONNX Runtime 1.32) its graph ran
    as fast as optimum-onnx's (fp32 0.97-1.00x, dynamic int8 0.97x of optimum's time), while the
    dynamo exporter's ran 1.10x (fp32) and 1.23x (int8) slower: ONNX Runtime fuses the TorchScript
    graph's GELU into BiasGelu, not the dynamo graph's (docs/benchmarks.md, "ONNX exporters").
  - ``dynamo``: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the exporter torch
    develops further; same inputs, outputs and dynamic axes.
  - ``optimum``: ``optimum.exporters.onnx.main_export`` (extra ``[optimum]``; optimum-onnx 0.1.0
    pins transformers<4.58, so this route is for transformers 4.x installs).
- int8 from a QAT student: every NNCF quantizer switched to ONNX QuantizeLinear/DequantizeLinear
  pairs, TorchScript exporter (the dynamo one fails on NNCF models), so the file carries the
  learned scales exactly (narrow-range weights clipped to -127..127 as in training, see
  ``core.clip_narrow_range_on_export``); weight QuantizeLinear nodes are then folded into int8
  initializers (the file shrinks ~4x) and embedding tables gather int8 rows before scaling (ONNX
  Runtime would otherwise dequantize the whole vocabulary on every run).
- int8 from a float student: ONNX Runtime dynamic quantization (weights int8, activations
  quantized at run time), or static QDQ calibrated on ``--calib-data``, of the float file above.

Every file passes ``onnx.checker.check_model(full_check=True)`` before it is run for parity.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill import numerics
from edgedistill.errors import MissingDependencyError
from edgedistill.export.core import (
    ArtifactResult,
    ExportError,
    FormatPlugin,
    RuntimeRun,
    StudentInfo,
    TensorSpec,
    clip_narrow_range_on_export,
    example_batch,
    int8_method,
    model_input_names,
    task_output_names,
    traceable,
)

if TYPE_CHECKING:
    import onnx

    from edgedistill.export.config import ExportConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"
_OPTIMUM_TASKS = {
    "sequence-classification": "text-classification",
    "feature-extraction": "feature-extraction",
}
_TWO_GB = 2**31 - 1
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


# --------------------------------------------------------------------------------------------
# Writing and reading ONNX files
# --------------------------------------------------------------------------------------------


def save_onnx(model: onnx.ModelProto, path: Path) -> list[str]:
    """Save ``model``; weights go to an external data file only past protobuf's 2 GB limit."""
    import onnx

    if model.ByteSize() < _TWO_GB:
        onnx.save_model(model, str(path))
        return [path.name]
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA_FILE,
    )
    return [path.name, EXTERNAL_DATA_FILE]


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path.name} fails onnx.checker (full check): {exc}") from exc


def _dims(value_type) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)

    def spec(v) -> TensorSpec:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name
        return TensorSpec(v.name, dtype, _dims(v.type))

    initializers = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


# --------------------------------------------------------------------------------------------
# Float export
# --------------------------------------------------------------------------------------------


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


def _dynamic_axes(input_names: list[str], task: str) -> tuple[list[str], dict[str, dict[int, str]]]:
    output_names = task_output_names(task)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in input_names}
    axes[output_names[0]] = (
        {0: "batch_size", 1: "sequence_length"} if task == "feature-extraction" else {0: "batch_size"}
    )
    return output_names, axes


def export_module(
    module,
    example: dict[str, Any],
    path: Path,
    task: str,
    opset: int,
) -> Path:
    """torch.onnx (TorchScript exporter) of a module taking ``example``'s tensors positionally."""
    import torch

    input_names = list(example)
    output_names, axes = _dynamic_axes(input_names, task)
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
) -> Path:
    """torch.onnx's dynamo exporter (torch.export, then onnxscript's optimizer) of the same module.

    The graph is written at opset 18 or higher: 18 is the lowest opset the dynamo exporter writes
    natively (a lower one would pass through onnx's version converter after export).
    """
    import torch

    input_names = list(example)
    output_names, _ = _dynamic_axes(input_names, task)
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
    module = traceable(model, student.task, names)
    example = example_batch(student, tokenizer, names)
    write = export_module_dynamo if exporter == "dynamo" else export_module
    return write(module, example, work_dir / MODEL_FILE, student.task, opset)


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
    if route == "optimum":
        path = export_float_optimum(student, dtype, work_dir, cfg.opset)
    else:
        path = export_float_torch(student, dtype, work_dir, cfg.opset, exporter=route)
    exporter = EXPORTER_NAMES[route]
    if not (work_dir / EXTERNAL_DATA_FILE).exists() and path.stat().st_size < 2**30:
        student.cache[key] = (path.read_bytes(), exporter, tuple(notes))
    return path, exporter, notes


# --------------------------------------------------------------------------------------------
# int8 from a QAT student: QDQ with the learned scales, weights folded to int8
# --------------------------------------------------------------------------------------------


def set_qdq_export_mode(qmodel) -> int:
    """Switch every NNCF quantizer to ONNX Q/DQ pairs (ONNX Runtime refuses NNCF's FakeQuantize)."""
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    count = 0
    for module in qmodel.modules():
        if isinstance(module, BaseQuantizer):
            module._export_mode = QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS
            count += 1
    if not count:
        raise ExportError("the QAT model holds no NNCF quantizers; its QAT state did not load")
    return count


class _Graph:
    """Constants, consumers and rewrites of one ONNX graph, for the QDQ folding passes."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.constant_nodes = {n.output[0]: n for n in self.graph.node if n.op_type == "Constant"}

    def const(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if not name:
            return None
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.constant_nodes.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def consumers(self) -> dict[str, list]:
        users: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                users.setdefault(name, []).append(node)
        return users

    def drop_unused_initializers(self) -> None:
        """Remove initializers and Constant nodes nothing reads any more."""
        used = {name for node in self.graph.node for name in node.input} | {o.name for o in self.graph.output}
        keep = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        self.initializers = {i.name: i for i in keep}
        nodes = [n for n in self.graph.node if n.op_type != "Constant" or n.output[0] in used]
        if len(nodes) != len(self.graph.node):
            del self.graph.node[:]
            self.graph.node.extend(nodes)
            self.constant_nodes = {n.output[0]: n for n in nodes if n.op_type == "Constant"}


def _attr(node, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _broadcast(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    if values.ndim == 0 or values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis % rank] = values.size
    return values.reshape(shape)


_ELEMENTWISE_CONST_OPS = {"Min": np.minimum, "Max": np.maximum}


def _constant_value(g: _Graph, name: str, producers: dict[str, Any], chain: list) -> np.ndarray | None:
    """The value of ``name`` when it is a constant, or Min/Max/Clip of constants (then evaluated here).

    torch.onnx's constant folding leaves Min/Max on initializers alone; these come from
    `clip_narrow_range_on_export` clamping weights to their trained range. Nodes evaluated are
    appended to ``chain``.
    """
    value = g.const(name)
    if value is not None:
        return value
    node = producers.get(name)
    if node is None or node.op_type not in (*_ELEMENTWISE_CONST_OPS, "Clip"):
        return None
    values = []
    for inp in node.input:
        if not inp:  # Clip's optional min/max
            values.append(None)
            continue
        v = _constant_value(g, inp, producers, chain)
        if v is None:
            return None
        values.append(v)
    if node.op_type == "Clip":
        x, low, high = (values + [None, None])[:3]
        result = np.clip(x, low, high) if low is not None or high is not None else x
    else:
        result = values[0]
        for v in values[1:]:
            result = _ELEMENTWISE_CONST_OPS[node.op_type](result, v)
    chain.append(node)
    return np.asarray(result, dtype=values[0].dtype)


def fold_weight_quantizers(model: onnx.ModelProto) -> int:
    """Replace ``W(float) -> QuantizeLinear`` by an int8 initializer holding exactly what the node computes.

    ``W`` may be an initializer or Min/Max/Clip of constants (a weight clamped to its quantizer's
    trained range); that arithmetic is done here too. The DequantizeLinear after it stays, so the
    graph's numbers do not change; the file stores int8 instead of float weights. Returns the
    number of folded weights.
    """
    from onnx import numpy_helper

    g = _Graph(model)
    producers = {o: n for n in g.graph.node for o in n.output}
    folded, kept, evaluated = [], [], []
    for node in g.graph.node:
        if node.op_type == "QuantizeLinear":
            chain: list = []
            weight = _constant_value(g, node.input[0], producers, chain)
            scale = g.const(node.input[1])
            zero_point = g.const(node.input[2]) if len(node.input) > 2 else None
            if scale is not None and weight is not None and weight.dtype.kind == "f":
                zero_point = np.zeros((), np.uint8) if zero_point is None else zero_point
                axis = _attr(node, "axis", 1)
                info = np.iinfo(zero_point.dtype)
                scaled = weight.astype(np.float32) / _broadcast(scale.astype(np.float32), axis, weight.ndim)
                # QuantizeLinear rounds half to even, as np.rint does
                q = np.rint(scaled) + _broadcast(zero_point.astype(np.float32), axis, weight.ndim)
                q = np.clip(q, info.min, info.max).astype(zero_point.dtype)
                folded.append(numpy_helper.from_array(q, name=node.output[0]))
                evaluated.extend(chain)
                continue
        kept.append(node)
    # the Min/Max/Clip nodes just evaluated go too, unless something else still reads them
    candidates = {id(n) for n in evaluated}
    while candidates:
        used = {name for n in kept for name in n.input} | {o.name for o in g.graph.output}
        dead = {id(n) for n in kept if id(n) in candidates and not any(o in used for o in n.output)}
        if not dead:
            break
        kept = [n for n in kept if id(n) not in dead]
        candidates -= dead
    del g.graph.node[:]
    g.graph.node.extend(kept)
    g.graph.initializer.extend(folded)
    g.drop_unused_initializers()
    return len(folded)


def gather_int8_embeddings(model: onnx.ModelProto) -> int:
    """``DequantizeLinear(int8 table) -> Gather(ids)`` becomes ``Gather(int8 table, ids) -> scale``.

    Only the looked-up rows are dequantized. Per-row scales (NNCF's per-channel embedding
    quantizers use axis 0) are gathered with the rows; the arithmetic is the DequantizeLinear
    formula, ``(q - zero_point) * scale``, so results are unchanged.
    """
    from onnx import TensorProto, helper

    g = _Graph(model)
    users = g.consumers()
    producers = {o: n for n in g.graph.node for o in n.output}
    rewrites: dict[int, list] = {}
    dropped: set[int] = set()
    count = 0
    for gather in g.graph.node:
        if gather.op_type != "Gather" or _attr(gather, "axis", 0) != 0:
            continue
        dq = producers.get(gather.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in g.initializers:
            continue
        if any(u.op_type != "Gather" or u.input[0] != dq.output[0] for u in users.get(dq.output[0], [])):
            continue
        table = g.initializers[dq.input[0]]
        if len(table.dims) != 2:
            continue
        scale = g.const(dq.input[1])
        zero_point = g.const(dq.input[2]) if len(dq.input) > 2 else None
        if scale is None:
            continue
        axis = _attr(dq, "axis", 1) % 2
        prefix = gather.output[0] + "_int8"
        rows = helper.make_node("Gather", [dq.input[0], gather.input[1]], [prefix + "_rows"], axis=0)
        new_nodes = [rows]
        if scale.size == 1 or axis == 1:
            dq_inputs = [prefix + "_rows", dq.input[1]] + ([dq.input[2]] if len(dq.input) > 2 else [])
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    dq_inputs,
                    [gather.output[0]],
                    **({"axis": -1} if scale.size > 1 else {}),
                )
            )
        else:  # per-row scales: gather them with the rows
            as_float = helper.make_node("Cast", [prefix + "_rows"], [prefix + "_f"], to=TensorProto.FLOAT)
            new_nodes.append(as_float)
            value = prefix + "_f"
            if zero_point is not None and np.any(zero_point != 0):
                new_nodes += [
                    helper.make_node("Gather", [dq.input[2], gather.input[1]], [prefix + "_zp"], axis=0),
                    helper.make_node("Cast", [prefix + "_zp"], [prefix + "_zpf"], to=TensorProto.FLOAT),
                    helper.make_node("Unsqueeze", [prefix + "_zpf", prefix + "_axes"], [prefix + "_zpu"]),
                    helper.make_node("Sub", [value, prefix + "_zpu"], [prefix + "_c"]),
                ]
                value = prefix + "_c"
            new_nodes += [
                helper.make_node("Gather", [dq.input[1], gather.input[1]], [prefix + "_s"], axis=0),
                helper.make_node("Unsqueeze", [prefix + "_s", prefix + "_axes"], [prefix + "_su"]),
                helper.make_node("Mul", [value, prefix + "_su"], [gather.output[0]]),
            ]
            g.graph.initializer.append(helper.make_tensor(prefix + "_axes", TensorProto.INT64, [1], [-1]))
        rewrites[id(gather)] = new_nodes
        dropped.add(id(dq))
        count += 1
    if count:
        nodes = []
        for node in g.graph.node:
            if id(node) in dropped:
                continue
            nodes.extend(rewrites.get(id(node), [node]))
        del g.graph.node[:]
        g.graph.node.extend(nodes)
        g.drop_unused_initializers()
    return count


def export_qat_qdq(student: StudentInfo, work_dir: Path, cfg: ExportConfig) -> tuple[Path, dict[str, Any]]:
    """QAT student -> QDQ ONNX with the learned scales, weights stored as int8."""
    import onnx

    qmodel = student.load_qat_model()
    clipped = clip_narrow_range_on_export(qmodel)
    quantizers = set_qdq_export_mode(qmodel)
    tokenizer = student.load_tokenizer()
    names = model_input_names(qmodel, tokenizer)
    raw = export_module(
        traceable(qmodel, student.task, names),
        example_batch(student, tokenizer, names),
        work_dir / "qdq_raw.onnx",
        student.task,
        cfg.opset,
    )
    model = onnx.load(str(raw))
    folded = fold_weight_quantizers(model)
    gathers = gather_int8_embeddings(model)
    path = work_dir / MODEL_FILE
    save_onnx(model, path)
    return path, {
        "method": "qat",
        "description": "NNCF quantization-aware ranges exported as QuantizeLinear/DequantizeLinear (no recalibration)",
        "exporter": EXPORTER_NAMES["torchscript"],
        "nncf_quantizers": quantizers,
        "narrow_range_quantizers_clipped_on_export": clipped,
        "weights_folded_to_int8": folded,
        "embeddings_gathered_int8": gathers,
        "raw_qdq_bytes": raw.stat().st_size,
    }


# --------------------------------------------------------------------------------------------
# int8 from a float student: ONNX Runtime quantization
# --------------------------------------------------------------------------------------------


def quantize_ort_dynamic(fp32_path: Path, out_path: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: on all-MiniLM-L6-v2 per-tensor weights gave a worst sentence-embedding
    # cosine of 0.82 against torch, per-channel 0.97 (reduce_range made it worse: 0.64).
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)
    return {
        "method": "dynamic",
        "description": "onnxruntime quantize_dynamic: int8 per-channel weights, activations quantized at run time",
        "weight_type": "QInt8",
        "per_channel": True,
    }


def quantize_ort_static(
    fp32_path: Path, out_path: Path, student: StudentInfo, cfg: ExportConfig
) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edgedistill.export.parity import calibration_feeds

    feeds, source = calibration_feeds(student, cfg)
    input_names = [s.name for s in signature(fp32_path)[0]]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{k: v for k, v in f.items() if k in input_names} for f in feeds])

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(fp32_path),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {
        "method": "static",
        "description": "onnxruntime quantize_static (QDQ, MinMax), per-channel int8 weights, uint8 activations",
        "calibration": source,
        "calibration_samples": len(feeds),
    }


# --------------------------------------------------------------------------------------------
# The plugin
# --------------------------------------------------------------------------------------------


class OnnxPlugin(FormatPlugin):
    name = "onnx"
    precisions = ("fp32", "fp16", "int8")
    tasks = ("sequence-classification", "feature-extraction")
    requires = (("onnx", "onnx"), ("onnxruntime", "onnx"))
    # optimum's versions are recorded only when installed (onnx_exporter=optimum)
    tool_packages = ("onnx", "onnxruntime", "onnxscript", "optimum", "optimum-onnx")

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg: ExportConfig) -> str | None:
        if student.task == "text-generation":
            # planned: optimum-onnx "text-generation-with-past" and a parity check that feeds the KV cache
            return "ONNX export of decoders (with past key values) is not built yet; use --format openvino or gguf"
        return super().unsupported_reason(student, precision, cfg)

    def export(
        self, student: StudentInfo, precision: str, tmp_dir: Path, cfg: ExportConfig
    ) -> ArtifactResult:
        work = tmp_dir / ".work"
        work.mkdir()
        notes: list[str] = []
        reference = "float"
        quantization: dict[str, Any] = {
            "method": "none",
            "dtype": "float16" if precision == "fp16" else "float32",
        }
        method = int8_method(student, cfg, default_without_qat="dynamic") if precision == "int8" else None
        if method == "qat":
            model_path, quantization = export_qat_qdq(student, work, cfg)
            reference = "qat"
        else:
            model_path, exporter, float_notes = export_float(
                student, "fp16" if precision == "fp16" else "fp32", work, cfg
            )
            notes.extend(float_notes)
            quantization["exporter"] = exporter
            if method is not None:
                quantized = work / "model_int8.onnx"
                if method == "dynamic":
                    quantization = {**quantize_ort_dynamic(model_path, quantized), "exporter": exporter}
                else:
                    quantization = {
                        **quantize_ort_static(model_path, quantized, student, cfg),
                        "exporter": exporter,
                    }
                if student.has_qat:
                    notes.append(
                        "post-training quantization of a QAT student's float weights: the learned ranges "
                        "are not used (int8_method=" + method + ")"
                    )
                model_path = quantized
        check_onnx(model_path)
        files = [MODEL_FILE]
        shutil.move(str(model_path), tmp_dir / MODEL_FILE)
        if (model_path.parent / EXTERNAL_DATA_FILE).is_file():
            shutil.move(str(model_path.parent / EXTERNAL_DATA_FILE), tmp_dir / EXTERNAL_DATA_FILE)
            files.append(EXTERNAL_DATA_FILE)
        shutil.rmtree(work)
        inputs, outputs = signature(tmp_dir / MODEL_FILE)
        ops = op_counts(tmp_dir / MODEL_FILE)
        quantization["opset"] = cfg.opset
        quantization["quantized_ops"] = {
            k: v for k, v in ops.items() if k in QUANT_OPS or k.startswith("QLinear")
        }
        return ArtifactResult(
            files=files,
            inputs=inputs,
            outputs=outputs,
            reference=reference,
            quantization=quantization,
            notes=notes,
        )

    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        # ONNX Runtime's CPU defaults are the declared numerics (it never lowers an op's precision),
        # so the deployed run is this one; only its int8 kernels depend on the ISA (host in the manifest)
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(artifact_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise ExportError(f"onnxruntime cannot load the exported model: {exc}") from exc
        names = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        results = []
        for feed in inputs:
            missing = [n for n in names if n not in feed]
            if missing:
                raise ExportError(f"the ONNX model needs inputs {missing} the tokenizer does not produce")
            values = session.run(None, {n: feed[n] for n in names})
            results.append(dict(zip(outputs, values, strict=True)))
        return RuntimeRun(
            outputs=results,
            settings={
                "runtime": "onnxruntime",
                "session_options": "defaults",
                "providers": ["CPUExecutionProvider"],
            },
            read_back={"onnxruntime": ort.__version__, "providers": session.get_providers()},
            ran=numerics.onnx_graph_ran(artifact_dir / MODEL_FILE),
        )

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "session_options": "defaults; ONNX Runtime's CPU provider computes what the graph declares",
            "python": f"ort.InferenceSession({MODEL_FILE!r}, providers=['CPUExecutionProvider'])",
        }
