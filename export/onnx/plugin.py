"""The ``onnx`` format of ``edgedistill export``: fp32/fp16 and int8 (QAT QDQ, or ONNX Runtime's dynamic/static quantization)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill import numerics
from edgedistill.export.core import (
    ArtifactResult,
    ExportError,
    FormatPlugin,
    RuntimeRun,
    StudentInfo,
    int8_method,
)

if TYPE_CHECKING:
    from edgedistill.export.config import ExportConfig

from edgedistill.export.onnx.files import (
    EXTERNAL_DATA_FILE,
    MODEL_FILE,
    QUANT_OPS,
    check_onnx,
    op_counts,
    run_feeds,
    signature,
)
from edgedistill.export.onnx.float_export import export_float
from edgedistill.export.onnx.qdq import export_qat_qdq

log = logging.getLogger(__name__)


# int8 from a float student: ONNX Runtime quantization


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


# The plugin


class OnnxPlugin(FormatPlugin):
    name = "onnx"
    precisions = ("fp32", "fp16", "int8")
    tasks = ("sequence-classification", "feature-extraction")
    requires = (("onnx", "onnx"), ("onnxruntime", "onnx"))
    several_outputs = True  # a generalist's logits and sentence_embedding in one graph
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
        results = run_feeds(session, inputs, "ONNX")
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
