"""Export students to ONNX, OpenVINO IR and GGUF, each artifact verified against torch in its runtime.

    from edgedistill.export import ExportConfig, export
    export("run/student", "artifacts", ExportConfig(formats=["onnx", "openvino"], precisions=["fp32", "int8"]))

Importing this package is cheap: the format plugins, and onnx/onnxruntime/openvino/optimum/nncf
with them, are imported only when an export runs.
"""

from __future__ import annotations

from edgedistill.plugins import lazy_exports

# public name -> module that defines it (imported on first access)
_EXPORTS = {
    "export": "edgedistill.export.core",
    "export_artifact": "edgedistill.export.core",
    "inspect_student": "edgedistill.export.core",
    "get_plugin": "edgedistill.export.core",
    "register_plugin": "edgedistill.export.core",
    "PLUGINS": "edgedistill.export.core",
    "FormatPlugin": "edgedistill.export.core",
    "ArtifactResult": "edgedistill.export.core",
    "TensorSpec": "edgedistill.export.core",
    "StudentInfo": "edgedistill.export.core",
    "ExportError": "edgedistill.export.core",
    "UnsupportedModelError": "edgedistill.export.core",
    "ExportConfig": "edgedistill.export.config",
    "Tolerance": "edgedistill.export.config",
    "FORMATS": "edgedistill.export.config",
    "PRECISIONS": "edgedistill.export.config",
    "ParityError": "edgedistill.export.parity",
    "ParityReport": "edgedistill.export.parity",
    "verify_manifest": "edgedistill.export.manifest",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
