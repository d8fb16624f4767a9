"""The ``ort`` format: ONNX Runtime's mobile format (``model.ort``) and the operator list of a reduced build.

The ONNX file comes from the ``onnx`` plugin (same exporters, same int8 methods: QAT QDQ, dynamic
or static), then `onnxruntime.tools.convert_onnx_models_to_ort` converts it with the *runtime*
optimization style (the optimizations a minimal build can replay are saved in the file, applied
when the session sets ``session.enable_saved_runtime_optimizations=1``; the graph itself stays
hardware-neutral) for the ``arm`` target platform (QDQ int8 nodes are kept for ARM's int8
kernels). ``required_operators_and_types.config`` lists every operator (and, with type
reduction, the types) the file needs: pass it to ONNX Runtime's ``build.py --minimal_build
--include_ops_by_config`` to build a runtime holding only those kernels.

Parity runs the ``.ort`` file in an ONNX Runtime `InferenceSession` (a full build loads ORT
format files) with the saved runtime optimizations replayed, as an app on a reduced build would.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.export.core import ArtifactResult, ExportError, RuntimeRun, StudentInfo
from edgedistill.export.onnx.plugin import OnnxPlugin

if TYPE_CHECKING:
    from edgedistill.export.config import ExportConfig

ORT_FILE = "model.ort"
OPS_CONFIG = "required_operators_and_types.config"
TARGET_PLATFORM = "arm"
# what an app sets so the runtime optimizations saved in the file are replayed
SESSION_CONFIG = {"session.enable_saved_runtime_optimizations": "1"}


def convert_to_ort(onnx_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """``onnx_path`` -> ``out_dir/model.ort`` and ``out_dir/required_operators_and_types.config``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    src = out_dir / ".onnx_in"
    src.mkdir()
    shutil.copy2(onnx_path, src / "model.onnx")
    data = onnx_path.parent / "model.onnx_data"
    if data.is_file():
        shutil.copy2(data, src / data.name)
    converted = out_dir / ".ort_out"
    log = io.StringIO()  # the tool prints its progress; keep it for an error message
    try:
        with contextlib.redirect_stdout(log):
            convert_onnx_models_to_ort(
                src,
                output_dir=converted,
                optimization_styles=[OptimizationStyle.Runtime],
                target_platform=TARGET_PLATFORM,
                enable_type_reduction=True,
            )
    except Exception as exc:  # the converter raises whatever ONNX Runtime raised
        raise ExportError(
            f"onnxruntime's convert_onnx_models_to_ort failed on {onnx_path.name}: {exc}\n{log.getvalue()[-2000:]}"
        ) from exc
    ort_files = sorted(converted.glob("*.ort"))
    configs = sorted(converted.glob("*.config"))
    if len(ort_files) != 1 or len(configs) != 1:
        raise ExportError(
            f"convert_onnx_models_to_ort wrote {[p.name for p in converted.iterdir()]} in {converted}; "
            f"expected one .ort file and one .config file"
        )
    shutil.move(str(ort_files[0]), out_dir / ORT_FILE)
    shutil.move(str(configs[0]), out_dir / OPS_CONFIG)
    shutil.rmtree(src)
    shutil.rmtree(converted)
    return out_dir / ORT_FILE, out_dir / OPS_CONFIG


def read_ops_config(path: Path) -> dict[str, list[str]]:
    """``{domain;opset: [ops]}`` from a required-operators config (type annotations dropped)."""
    table: dict[str, list[str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain_opset, _, ops = line.partition(";")
        opset, _, names = ops.partition(";")
        key = f"{domain_opset or 'ai.onnx'};{opset}"
        table[key] = sorted({op.split("{")[0].strip() for op in _split_ops(names) if op.strip()})
    return table


def _split_ops(names: str) -> list[str]:
    # "Add{...},MatMul" — commas inside the {type json} belong to the types, not the list
    out, depth, start = [], 0, 0
    for i, ch in enumerate(names):
        depth += ch in "{["
        depth -= ch in "}]"
        if ch == "," and depth == 0:
            out.append(names[start:i])
            start = i + 1
    out.append(names[start:])
    return out


class OrtPlugin(OnnxPlugin):
    name = "ort"
    precisions = ("fp32", "int8")
    tasks = ("sequence-classification", "feature-extraction")

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg: ExportConfig) -> str | None:
        if precision == "fp16":
            return "ort offers fp32 and int8 (ONNX Runtime mobile's CPU kernels are fp32/int8); use --format onnx for fp16"
        return super().unsupported_reason(student, precision, cfg)

    def export(
        self, student: StudentInfo, precision: str, tmp_dir: Path, cfg: ExportConfig
    ) -> ArtifactResult:
        onnx_dir = tmp_dir / ".onnx"
        onnx_dir.mkdir()
        result = super().export(student, precision, onnx_dir, cfg)
        _, config = convert_to_ort(onnx_dir / "model.onnx", tmp_dir)
        shutil.rmtree(onnx_dir)
        ops = read_ops_config(config)
        result.files = [ORT_FILE]
        result.quantization = {
            **result.quantization,
            "ort_format": {
                "optimization_style": "runtime",
                "target_platform": TARGET_PLATFORM,
                "operators_config": OPS_CONFIG,
                "type_reduction": True,
                "operators": ops,
            },
        }
        result.notes.append(
            f"converted from the onnx-{precision} file with convert_onnx_models_to_ort (runtime optimization "
            f"style, target platform {TARGET_PLATFORM}); {OPS_CONFIG} lists the {sum(map(len, ops.values()))} "
            f"operators a reduced build needs"
        )
        return result

    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        import onnxruntime as ort

        so = ort.SessionOptions()
        for key, value in SESSION_CONFIG.items():
            so.add_session_config_entry(key, value)
        try:
            session = ort.InferenceSession(
                str(artifact_dir / ORT_FILE), so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types
            raise ExportError(f"onnxruntime cannot load {artifact_dir / ORT_FILE}: {exc}") from exc
        names = [i.name for i in session.get_inputs()]
        output_names = [o.name for o in session.get_outputs()]
        results = []
        for feed in inputs:
            missing = [n for n in names if n not in feed]
            if missing:
                raise ExportError(f"the ORT model needs inputs {missing} the tokenizer does not produce")
            results.append(
                dict(zip(output_names, session.run(None, {n: feed[n] for n in names}), strict=True))
            )
        quantized = "+int8" if _has_int8_ops(artifact_dir / OPS_CONFIG) else ""
        return RuntimeRun(
            outputs=results,
            settings={
                "runtime": "onnxruntime",
                "model_format": "ORT",
                "session_config": dict(SESSION_CONFIG),
                "providers": ["CPUExecutionProvider"],
            },
            read_back={"onnxruntime": ort.__version__, "providers": session.get_providers()},
            ran="f32" + quantized,
        )

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime (mobile / minimal build)",
            "session_config": dict(SESSION_CONFIG),
            "reduced_build": f"build.py --minimal_build --include_ops_by_config {OPS_CONFIG} --enable_reduced_operator_type_support",
            "python": (
                f"so = ort.SessionOptions(); so.add_session_config_entry("
                f"'session.enable_saved_runtime_optimizations', '1'); ort.InferenceSession({ORT_FILE!r}, so)"
            ),
        }


def _has_int8_ops(config: Path) -> bool:
    ops = {op for names in read_ops_config(config).values() for op in names}
    return bool(ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul"}) or any(
        op.startswith(("QLinear", "DynamicQuant")) for op in ops
    )
