"""Runtime plugins, registered by module path and imported only when used.

``import edgedistill.bench.runtimes`` imports no onnxruntime, openvino, llama_cpp or torch: each
plugin module imports its runtime inside its methods, and `get_runtime` imports the module only
when asked. A runtime whose package is missing raises `MissingDependencyError` with the pip extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgedistill.errors import EdgeDistillError
from edgedistill.plugins import load_plugin

if TYPE_CHECKING:
    from edgedistill.bench.runtimes.base import Runtime

RUNTIMES: dict[str, str] = {
    "onnxruntime": "edgedistill.bench.runtimes.onnxruntime:OnnxRuntime",
    "openvino": "edgedistill.bench.runtimes.openvino:OpenVINORuntime",
    "llamacpp": "edgedistill.bench.runtimes.llamacpp:LlamaCppRuntime",
    "torch": "edgedistill.bench.runtimes.torch:TorchRuntime",
    "executorch": "edgedistill.bench.runtimes.executorch:ExecuTorchRuntime",
}

# artifact format (manifest "format") -> the runtime that runs it
FORMAT_RUNTIMES: dict[str, str] = {
    "onnx": "onnxruntime",
    "ort": "onnxruntime",  # ONNX Runtime's mobile format, in the same runtime
    "executorch": "executorch",
    "openvino": "openvino",
    "gguf": "llamacpp",
    "torch": "torch",
}


def register_runtime(name: str, target: str, formats: tuple[str, ...] = ()) -> None:
    """Register (or replace) a runtime as ``"package.module:ClassName"``, optionally for formats."""
    if ":" not in target:
        raise ValueError(f"runtime target {target!r} must look like 'package.module:ClassName'")
    RUNTIMES[name] = target
    for fmt in formats:
        FORMAT_RUNTIMES[fmt] = name


def runtime_for_format(fmt: str) -> str:
    try:
        return FORMAT_RUNTIMES[fmt]
    except KeyError:
        raise EdgeDistillError(
            f"no runtime runs artifacts of format {fmt!r}; known formats: {', '.join(sorted(FORMAT_RUNTIMES))}"
        ) from None


def get_runtime(name: str) -> Runtime:
    """Import and instantiate the runtime plugin ``name``; a missing package names the pip extra."""
    try:
        target = RUNTIMES[name]
    except KeyError:
        raise EdgeDistillError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}") from None
    # plugin modules import their runtime inside methods; `requires` names what each one needs
    return load_plugin(target, f"Benchmarking with the {name} runtime", "all")
