"""Targets, runtime registry, statistics and import hygiene of the bench stage (no runtime sessions)."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from edgedistill.errors import ConfigError, EdgeDistillError, MissingDependencyError
from edgedistill.targets import Target, builtin_targets, load_target

HEAVY = ["onnxruntime", "openvino", "llama_cpp", "nncf", "torch", "transformers", "scipy"]


def test_import_bench_and_targets_imports_no_runtime_or_torch():
    code = (
        "import sys, edgedistill.bench, edgedistill.targets, edgedistill.bench.runtimes, edgedistill.bench.gating, "
        "edgedistill.bench.stats, edgedistill.bench.cli\n"
        "edgedistill.targets.load_target('mobile-class')\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", f"imported at import time: {out}"


def test_builtin_targets_load_and_describe_themselves():
    assert {"cpu", "mobile-class", "gpu-cuda"} <= set(builtin_targets())
    for name in builtin_targets():
        target = load_target(name)
        assert target.version == 1 and target.name == name
        assert target.description and target.emulates and target.does_not_emulate
    mobile = load_target("mobile-class")
    assert mobile.workload.batch_size == 1
    assert mobile.runtime.threads == 2 and mobile.runtime.cpu_affinity == 2
    assert "fp32" not in mobile.precisions and "int8" in mobile.precisions and "q4_k_m" in mobile.precisions
    assert mobile.budgets.peak_rss_mb is not None
    honest = " ".join(mobile.does_not_emulate).lower()
    for limitation in ("arm", "neon", "big.little", "thermal", "bandwidth"):
        assert limitation in honest
    assert mobile.accepts("onnx", "fp32") and mobile.accepts("onnx", "int8") is None
    gpu = load_target("gpu-cuda")
    assert gpu.requires == "cuda" and gpu.runtime.llamacpp.n_gpu_layers == -1


def test_load_target_by_path_with_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nname: mine\nbudgets: {p95_latency_ms: 3}\n")
    target = load_target(path, {"measurement.min_seconds": 0.5, "budgets.peak_rss_mb": 100})
    assert target.name == "mine" and target.measurement.min_seconds == 0.5
    assert target.budgets.p95_latency_ms == 3 and target.budgets.peak_rss_mb == 100
    # an explicit null removes a budget (a recipe's `set:` or `--set budgets.p95_latency_ms=null`)
    assert load_target(path, {"budgets.p95_latency_ms": None}).budgets.p95_latency_ms is None
    assert load_target("cpu", {"budgets.p50_latency_ms": None}).budgets.p50_latency_ms is None


def test_malformed_target_lists_every_error_with_its_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 2\n"
        "name: bad\n"
        "precisions: [int8, int3]\n"
        "runtime: {threads: -1, cpu_affinity: [0, 0], onnxruntime: {providerz: [x]}}\n"
        "workload: {batch_size: 0, sequence_lengths: []}\n"
        "budgets: {p95_latency_ms: fast, min_accuracy: 2}\n"
        "colour: blue\n"
    )
    with pytest.raises(ConfigError) as info:
        load_target(path)
    paths = {p for p, _ in info.value.problems}
    expected = {
        "version",
        "precisions",
        "runtime.threads",
        "runtime.cpu_affinity",
        "runtime.onnxruntime.providerz",
        "workload.batch_size",
        "workload.sequence_lengths",
        "budgets.p95_latency_ms",
        "budgets.min_accuracy",
        "colour",
    }
    assert paths == expected, paths
    message = str(info.value)
    assert f"{len(info.value.problems)} problem(s)" in message and "unknown key" in message


def test_extension_below_the_first_look_is_refused_with_both_numbers(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nname: t\nmeasurement: {compare_rounds: 10, max_compare_rounds: 6}\n")
    with pytest.raises(ConfigError) as info:
        load_target(path)
    assert "max_compare_rounds (6) is below compare_rounds (10)" in str(info.value)
    assert load_target("cpu").measurement.max_compare_rounds == 20


def test_unknown_target_name_lists_the_builtins():
    with pytest.raises(ConfigError, match="mobile-class"):
        load_target("no-such-target")


def test_gpu_layers_on_a_cpu_target_is_refused():
    with pytest.raises(Exception, match="requires: cuda"):
        Target.model_validate({"name": "x", "runtime": {"llamacpp": {"n_gpu_layers": 4}}})


def test_every_registered_runtime_imports_and_serves_a_format():
    from edgedistill.bench.runtimes import FORMAT_RUNTIMES, RUNTIMES, get_runtime

    assert set(RUNTIMES) == {"onnxruntime", "openvino", "llamacpp", "torch", "executorch"}
    for name in RUNTIMES:
        try:
            runtime = get_runtime(name)
        except MissingDependencyError:
            if name != "executorch":  # the optional extra [executorch]; the others are in [all]
                raise
            continue
        assert runtime.name == name
        assert all(FORMAT_RUNTIMES[f] == name for f in runtime.formats)


def test_missing_runtime_package_names_the_pip_extra(monkeypatch):
    import importlib.util

    from edgedistill.bench import runtimes

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"edgedistill\[gguf\]") as info:
        runtimes.get_runtime("llamacpp")
    assert "llama-cpp-python" in str(info.value)
    with pytest.raises(EdgeDistillError, match="unknown runtime"):
        runtimes.get_runtime("tensorrt")


def test_system_info_records_cpu_isa_os_and_versions():
    from edgedistill.bench.system import system_info

    info = system_info()
    cpu = info["cpu"]
    assert cpu["logical_cores"] >= 1 and cpu["allowed_cpus"]
    assert {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"} <= set(cpu["isa"])
    assert isinstance(cpu["vnni"], bool) and isinstance(cpu["amx"], bool)
    assert info["os"]["system"] and info["libraries"]["python"] and "numpy" in info["libraries"]


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def _medians(n: int, ratio: float, seed: int, spread: float = 0.04) -> list[float]:
    """Process medians of a model whose processes scatter like the benchmark host's (+-4%)."""
    rng = random.Random(seed)
    return [ratio * math.exp(rng.gauss(0, spread)) for _ in range(n)]


def test_compare_verdicts_need_effect_evidence_and_enough_processes():
    from edgedistill.bench.stats import compare_processes

    def compare(cand, base, **kw):
        return compare_processes(cand, base, candidate_n=100 * len(cand), baseline_n=100 * len(base), **kw)

    base = _medians(10, 1.0, 1)
    assert compare(_medians(10, 1.0, 2), base)["verdict"] == "unchanged"
    slower = compare(_medians(10, 1.15, 3), base)
    assert slower["verdict"] == "regressed" and slower["ratio"] == pytest.approx(1.15, rel=0.05)
    assert slower["p_slower"] < 0.01 and "10 + 10 processes" in slower["reason"]
    faster = compare(_medians(10, 0.8, 4), base)
    assert faster["verdict"] == "improved" and faster["p_faster"] < 0.01
    # significant but below the minimum effect: does not matter
    tiny = compare(_medians(10, 1.03, 5, spread=0.002), _medians(10, 1.0, 6, spread=0.002))
    assert tiny["verdict"] == "unchanged" and tiny["p_slower"] < 0.001
    # too few iterations or processes: never a pass
    few = compare_processes(_medians(10, 1.0, 7), base, candidate_n=10, baseline_n=1000)
    assert few["verdict"] == "inconclusive" and "too few" in few["reason"] and "iterations" in few["reason"]
    one_process = compare(_medians(1, 1.0, 8), base)
    assert one_process["verdict"] == "inconclusive" and "compare_rounds" in one_process["reason"]
    # a big effect without evidence is inconclusive, not a pass
    wild = compare([0.9, 1.5, 1.6, 0.95, 1.45], [1.0, 1.01, 0.99, 1.02, 0.98])
    assert wild["ratio"] > 1.05 and wild["p_slower"] >= 0.05 and wild["verdict"] == "inconclusive"
    # fully separated process medians: the exact one-sided p is 1 / C(2n, n), so 2 a side can never
    # reach p 0.1 (1/6: inconclusive, which an extension must settle) and 4 a side can (1/70)
    for n, p_exact, verdict in ((2, 1 / 6, "inconclusive"), (4, 1 / 70, "regressed")):
        separated = compare(
            [2.0 + i for i in range(n)], [1.0 + i / 10 for i in range(n)], p_threshold=0.1, min_rounds=2
        )
        assert separated["p_slower"] == pytest.approx(p_exact) and separated["verdict"] == verdict, separated


def test_one_odd_process_moves_the_verdict_no_more_than_one_observation_should():
    """What pooled iterations got wrong: one slow process (a neighbour's burst) of 10 on the
    candidate side made thousands of slow iterations; as one of 10 process medians it cannot
    flag a regression on its own."""
    from edgedistill.bench.stats import compare_processes, hodges_lehmann_ratio

    base = _medians(10, 1.0, 11)
    cand = _medians(9, 1.0, 12) + [1.6]
    result = compare_processes(cand, base, candidate_n=1000, baseline_n=1000)
    # not a regression; its upper bound (+5.6%) does not exclude +5% either: inconclusive (extended)
    assert result["verdict"] == "inconclusive" and result["ratio"] < 1.05 and result["ratio_upper"] > 1.05
    assert hodges_lehmann_ratio([2.0, 4.0], [1.0, 2.0]) == pytest.approx(2.0)


def test_summarize_percentiles():
    from edgedistill.bench.stats import summarize

    s = summarize(list(range(1, 101)))
    assert s["n"] == 100 and s["p50_ms"] == pytest.approx(50.5) and s["p99_ms"] == pytest.approx(99.01)
    assert s["min_ms"] == 1 and s["max_ms"] == 100
