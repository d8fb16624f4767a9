"""Shared by the bench and gate tests: tiny exported artifacts (built once per test session) and fast targets.

Artifacts come from the real exporter on the conftest tiny models; they are memoized in this
module so test files that each ask for them export only once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_CACHE: dict[str, Any] = {}

# Short measurements: enough iterations for p95 and the regression test, seconds not minutes.
FAST_TARGET: dict[str, Any] = {
    "version": 1,
    "name": "test-fast",
    "description": "tiny models, short measurements (tests only)",
    "runtime": {"threads": 1, "cpu_affinity": 1},
    "workload": {
        "batch_size": 1,
        "sequence_lengths": [16, 32],
        "prompt_tokens": 16,
        "generate_tokens": 8,
        "eval_batch_size": 4,
        "eval_max_length": 32,
    },
    "measurement": {
        "warmup_iterations": 3,
        "min_iterations": 40,
        "min_seconds": 0.2,
        "rounds": 1,
        "compare_rounds": 4,
        "timeout_s": 300,
    },
    "regression": {"min_effect": 0.05, "p_threshold": 0.05, "min_samples": 30, "min_rounds": 4},
    "budgets": {
        "p50_latency_ms": 1000,
        "p95_latency_ms": 2000,
        "peak_rss_mb": 4000,
        "artifact_size_mb": 50,
        "min_accuracy": 0.5,
        "max_accuracy_drop": 0.2,
        "min_agreement": 0.8,
        "min_cosine": 0.9,
        "ttft_ms": 5000,
        "min_decode_tokens_per_s": 1,
    },
}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def write_target(folder: Path, name: str = "target.yaml", **changes: Any) -> Path:
    """A target YAML: FAST_TARGET with nested ``changes`` merged in."""
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(_merge(FAST_TARGET, changes), sort_keys=False), encoding="utf-8")
    return path


def exported_artifacts(tmp_path_factory, classifier: Path, encoder: Path) -> dict[str, Path]:
    """onnx/openvino fp32+int8 of the tiny classifier, GGUF q8_0 of the tiny encoder and a tiny Llama."""
    if "artifacts" in _CACHE:
        return _CACHE["artifacts"]
    from tiny_llama import save_tiny_decoder

    from edgedistill.export import ExportConfig, export

    root = tmp_path_factory.mktemp("bench_artifacts")
    fast = {"parity_samples": 6, "calib_samples": 6, "int8_method": "dynamic"}
    export(
        classifier,
        root / "cls",
        ExportConfig(formats=["onnx", "openvino"], precisions=["fp32", "int8"], **fast),
    )
    export(encoder, root / "enc", ExportConfig(formats=["gguf"], precisions=["q8_0"], parity_samples=6))
    llama = save_tiny_decoder(root / "llama_student", "llama", train_steps=20)
    export(llama, root / "llama", ExportConfig(formats=["gguf"], precisions=["q8_0"], parity_samples=4))
    _CACHE["artifacts"] = {
        "onnx-fp32": root / "cls" / "onnx-fp32",
        "onnx-int8": root / "cls" / "onnx-int8",
        "openvino-fp32": root / "cls" / "openvino-fp32",
        "openvino-int8": root / "cls" / "openvino-int8",
        "gguf-enc": root / "enc" / "gguf-q8_0",
        "gguf-llama": root / "llama" / "gguf-q8_0",
        "classifier": Path(classifier),
        "encoder": Path(encoder),
    }
    return _CACHE["artifacts"]


def main_report(
    tmp_path_factory, artifacts: dict[str, Path], eval_tsv: Path
) -> tuple[dict[str, Any], Path, Path]:
    """One bench run over every runtime (with --data), shared by the bench and gate tests."""
    if "report" in _CACHE:
        return _CACHE["report"]
    from edgedistill.bench import bench

    folder = tmp_path_factory.mktemp("bench_report")
    target = write_target(folder)
    out = folder / "report.json"
    report = bench(
        [artifacts[k] for k in ("onnx-fp32", "onnx-int8", "openvino-int8", "gguf-enc", "gguf-llama")],
        target,
        data=eval_tsv,
        out=out,
    )
    _CACHE["report"] = (report, out, target)
    return _CACHE["report"]
