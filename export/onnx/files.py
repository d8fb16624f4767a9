"""ONNX files: saving (external data past 2 GB), checking, reading the signature and counting operators."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgedistill.export.core import (
    ExportError,
    TensorSpec,
)

if TYPE_CHECKING:
    import onnx


log = logging.getLogger(__name__)


MODEL_FILE = "model.onnx"


EXTERNAL_DATA_FILE = "model.onnx_data"


_TWO_GB = 2**31 - 1


QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


# Writing and reading ONNX files


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


def run_feeds(session, inputs: list[dict], model: str) -> list[dict[str, np.ndarray]]:
    """Every feed through an ONNX Runtime ``session``: output name -> array, one dict a feed.

    A feed missing an input the model needs is an ExportError naming ``model`` ("ONNX", "ORT").
    """
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    results = []
    for feed in inputs:
        missing = [n for n in names if n not in feed]
        if missing:
            raise ExportError(f"the {model} model needs inputs {missing} the tokenizer does not produce")
        results.append(dict(zip(outputs, session.run(None, {n: feed[n] for n in names}), strict=True)))
    return results
