"""Benchmark harness and release gate: latency, memory, size and accuracy of artifacts on device targets.

    from edgedistill.bench import bench, gate
    report = bench(["artifacts/onnx-int8"], "mobile-class", data="sst2/dev.tsv", out="report.json")
    result = gate("report.json", "mobile-class")  # exit_code: 0 pass, 1 fail, 3 inconclusive, 4 not judged

Every measurement runs in a fresh process (`edgedistill.bench._worker`) so its peak memory is
the artifact's own; runtimes are plugins (`edgedistill.bench.runtimes`). Importing this package
is cheap: no onnxruntime, openvino, llama_cpp, nncf or torch until a measurement runs.
"""

from __future__ import annotations

from edgedistill.plugins import lazy_exports

# public name -> module that defines it (imported on first access)
_EXPORTS = {
    "bench": "edgedistill.bench.core",
    "open_artifact": "edgedistill.bench.artifact",
    "Artifact": "edgedistill.bench.artifact",
    "read_eval_data": "edgedistill.bench.accuracy",
    "accuracy_block": "edgedistill.bench.accuracy",
    "REPORT_VERSION": "edgedistill.bench.core",
    "gate": "edgedistill.bench.gating",
    "load_report": "edgedistill.bench.gating",
    "junit_xml": "edgedistill.bench.gating",
    "markdown": "edgedistill.bench.gating",
    "Check": "edgedistill.bench.gating",
    "GateResult": "edgedistill.bench.gating",
    "GateInputError": "edgedistill.bench.gating",
    "relative_to_teacher": "edgedistill.bench.gating",
    "worst_exit_code": "edgedistill.bench.gating",
    "ratio_bounds": "edgedistill.bench.stats",
    "compare_processes": "edgedistill.bench.stats",
    "mann_whitney_u": "edgedistill.bench.stats",
    "summarize": "edgedistill.bench.stats",
    "run_worker": "edgedistill.bench.harness",
    "MeasurementError": "edgedistill.bench.harness",
    "system_info": "edgedistill.bench.system",
    "get_runtime": "edgedistill.bench.runtimes",
    "register_runtime": "edgedistill.bench.runtimes",
    "RUNTIMES": "edgedistill.bench.runtimes",
    "add_bench_parsers": "edgedistill.bench.cli",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
