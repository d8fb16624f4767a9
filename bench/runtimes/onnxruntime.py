"""ONNX Runtime: ``model.onnx`` (and mobile ``model.ort``) artifacts in an `InferenceSession` with the target's threads and providers.

An ``.ort`` artifact also gets the session config entries its manifest's ``load`` names (the
saved runtime optimizations replayed, as on a reduced mobile build).

``intra_op_num_threads`` defaults to the target's ``threads``; ``inter_op_num_threads`` to 1
(sequential execution, so it matters only with ``execution_mode: parallel``). Every provider the
target names must be available, or the target is skipped here with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.bench.runtimes.base import Runtime, Session

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_HINTS = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (instead of onnxruntime) on a host with a CUDA driver",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino",
}


class OrtSession(Session):
    def __init__(self, artifact: dict[str, Any], options: dict[str, Any]):
        super().__init__(artifact, options)
        import onnxruntime as ort

        o = options["onnxruntime"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(o.get("intra_op_num_threads") or options["threads"])
        so.inter_op_num_threads = int(o.get("inter_op_num_threads") or 1)
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if o.get("execution_mode") == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _OPT_LEVELS[o.get("graph_optimization_level", "all")]
        )
        so.log_severity_level = 3
        for key, value in (o.get("session_config") or {}).items():
            so.add_session_config_entry(str(key), str(value))
        provider_options = o.get("provider_options") or {}
        providers = [
            (p, dict(provider_options.get(p, {}))) for p in o.get("providers") or ["CPUExecutionProvider"]
        ]
        model = next(
            (f for f in artifact.get("model_files", []) if f.endswith((".onnx", ".ort"))), "model.onnx"
        )
        from_manifest: dict[str, Any] = {}
        if model.endswith(".ort"):
            # replay the runtime optimizations the mobile conversion saved, as the export's parity did
            from_manifest = dict((artifact.get("load") or {}).get("session_config") or {})
            for key, value in from_manifest.items():
                so.add_session_config_entry(str(key), str(value))
        self.session = ort.InferenceSession(str(Path(artifact["path"]) / model), so, providers=providers)
        self.output_names = [out.name for out in self.session.get_outputs()]
        self.effective = {
            "providers": self.session.get_providers(),
            "intra_op_num_threads": so.intra_op_num_threads,
            "inter_op_num_threads": so.inter_op_num_threads,
            "execution_mode": o.get("execution_mode", "sequential"),
            "graph_optimization_level": o.get("graph_optimization_level", "all"),
            "session_config": {**from_manifest, **dict(o.get("session_config") or {})},
        }
        self.runtime_info = {"onnxruntime": ort.__version__, "device": ort.get_device()}

    def infer(self, feed: dict[str, np.ndarray]) -> Any:
        return self.session.run(None, feed)

    def outputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    formats = ("onnx", "ort")
    requires = (("onnxruntime", "onnx"),)
    packages = ("onnxruntime", "onnxruntime-gpu")

    def unavailable_reason(self, options: dict[str, Any], requires: str) -> str | None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = options["onnxruntime"].get("providers") or ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if not missing:
            return None
        hints = "; ".join(_HINTS[p] for p in missing if p in _HINTS)
        return (
            f"onnxruntime {ort.__version__} here lacks {', '.join(missing)} (available: {', '.join(available)})"
            + (f"; {hints}" if hints else "")
        )

    def load(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]) -> Session:
        return OrtSession(artifact, options)
