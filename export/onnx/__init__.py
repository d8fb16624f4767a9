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

Where things are: `files` (save, check, signature, op counts), `float_export` (torch.onnx or
optimum), `qdq` (QAT students to int8 QDQ, folding), `plugin` (`OnnxPlugin`, ONNX Runtime's
post-training quantization).
"""

from __future__ import annotations

from edgedistill.export.onnx.files import (
    EXTERNAL_DATA_FILE,
    MODEL_FILE,
    QUANT_OPS,
    check_onnx,
    op_counts,
    save_onnx,
    signature,
)
from edgedistill.export.onnx.float_export import (
    EXPORTER_NAMES,
    export_float,
    export_float_optimum,
    export_float_torch,
    export_module,
    export_module_dynamo,
    require_optimum,
)
from edgedistill.export.onnx.plugin import OnnxPlugin, quantize_ort_dynamic, quantize_ort_static
from edgedistill.export.onnx.qdq import (
    export_qat_qdq,
    fold_weight_quantizers,
    gather_int8_embeddings,
    set_qdq_export_mode,
)

__all__ = [
    "EXPORTER_NAMES",
    "EXTERNAL_DATA_FILE",
    "MODEL_FILE",
    "QUANT_OPS",
    "OnnxPlugin",
    "check_onnx",
    "export_float",
    "export_float_optimum",
    "export_float_torch",
    "export_module",
    "export_module_dynamo",
    "export_qat_qdq",
    "fold_weight_quantizers",
    "gather_int8_embeddings",
    "op_counts",
    "quantize_ort_dynamic",
    "quantize_ort_static",
    "require_optimum",
    "save_onnx",
    "set_qdq_export_mode",
    "signature",
]
