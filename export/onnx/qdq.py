"""QAT students to int8 ONNX: NNCF's QDQ export with the learned scales, weight quantizers folded into int8 initializers, int8 embeddings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.export.core import (
    ExportError,
    StudentInfo,
    clip_narrow_range_on_export,
    example_batch,
    model_input_names,
    traceable,
)

if TYPE_CHECKING:
    import onnx

    from edgedistill.export.config import ExportConfig

from edgedistill.export.onnx.files import MODEL_FILE, save_onnx
from edgedistill.export.onnx.float_export import EXPORTER_NAMES, export_module
from edgedistill.export.tracing import output_names

log = logging.getLogger(__name__)


# int8 from a QAT student: QDQ with the learned scales, weights folded to int8


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
    outputs = output_names(student)
    raw = export_module(
        traceable(qmodel, student.task, names, outputs=outputs),
        example_batch(student, tokenizer, names),
        work_dir / "qdq_raw.onnx",
        student.task,
        cfg.opset,
        outputs,
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
