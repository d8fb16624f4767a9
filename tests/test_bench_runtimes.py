"""The bench harness on real ONNX Runtime / OpenVINO / llama.cpp sessions of tiny exported artifacts.

One shared bench run (every runtime, with --data) backs most checks; the interleaved A/A and
slowdown comparisons, the skipped GPU target, mobile-class filtering and hash checks run their own.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("llama_cpp")
# its A/A and slowdown comparisons judge latency differences of 5%: `make test` runs them alone,
# after the parallel pass, never beside another test's load
pytestmark = pytest.mark.serial

from bench_helpers import exported_artifacts, main_report, write_target  # noqa: E402

from edgedistill.bench import bench, gate  # noqa: E402
from edgedistill.bench.harness import MeasurementError, run_worker  # noqa: E402
from edgedistill.errors import EdgeDistillError  # noqa: E402
from edgedistill.targets import load_target  # noqa: E402


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder):
    return exported_artifacts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder)


@pytest.fixture(scope="session")
def report(tmp_path_factory, artifacts, tiny_data):
    return main_report(tmp_path_factory, artifacts, tiny_data["eval"])


def _entry(report: dict, fmt: str, precision: str, task: str | None = None) -> dict:
    found = [
        a
        for a in report["artifacts"]
        if a["format"] == fmt and a["precision"] == precision and (task is None or a["task"] == task)
    ]
    assert len(found) == 1, [a["name"] for a in report["artifacts"]]
    return found[0]


def test_report_is_written_and_describes_host_target_and_data(report):
    data, path, _ = report
    assert json.loads(path.read_text()) == json.loads(json.dumps(data))
    assert data["kind"] == "edgedistill-bench-report" and data["report_version"] == 1
    host = data["host"]
    assert host["cpu"]["model"] and host["cpu"]["logical_cores"] >= 1
    assert "avx2" in host["cpu"]["isa"] and "amx_int8" in host["cpu"]["isa"]
    assert host["os"]["system"] == "Linux"
    for lib in ("onnxruntime", "openvino", "llama-cpp-python", "numpy"):
        assert lib in host["libraries"]
    assert data["target"]["name"] == "test-fast" and data["target"]["config"]["workload"][
        "sequence_lengths"
    ] == [16, 32]
    assert data["data"]["rows"] == 64 and data["data"]["labelled"]


def test_every_runtime_was_measured_with_latency_memory_and_its_threads(report):
    data = report[0]
    assert len(data["artifacts"]) == 5
    for entry in data["artifacts"]:
        assert entry["status"] == "measured", entry.get("reason")
        lat = entry["latency"]
        assert lat["n"] >= 40 and len(lat["samples_ms"]) == lat["n"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        # session creation and first inference are reported apart from the steady state
        assert lat["session_create_ms"] > 0 and lat["first_inference_ms"] > 0
        assert sum(r["measure_seconds"] for r in lat["rounds"]) >= 0.2
        mem = entry["memory"]
        assert mem["peak_rss_mb"] >= mem["rss_after_session_mb"] > mem["rss_start_mb"] > 0
        assert mem["child_vmhwm_mb"] and mem["polled_peak_rss_mb"] and mem["rss_polls"] > 0
        # a tiny model in a fresh process: far below the parent's torch-laden footprint
        assert mem["peak_rss_mb"] < 400
        applied = entry["applied"]
        assert applied["threads"] == 1 and applied["pinned"] and len(applied["cpus"]) == 1
        assert applied["threads_env"]["OMP_NUM_THREADS"] == "1"
        assert entry["manifest"]["verified"] and entry["files_sha256"]
        assert entry["size_mb"] > 0
    ort = _entry(data, "onnx", "int8")["applied"]["effective"]
    assert ort["intra_op_num_threads"] == 1 and ort["providers"] == ["CPUExecutionProvider"]
    ov = _entry(data, "openvino", "int8")["applied"]["effective"]
    assert ov["INFERENCE_NUM_THREADS"] == "1" and ov["NUM_STREAMS"] == "1"
    llama = _entry(data, "gguf", "q8_0", "text-generation")["applied"]["effective"]
    assert llama["n_threads"] == 1 and llama["n_gpu_layers"] == 0
    # both sequence lengths were cycled through
    assert set(_entry(data, "onnx", "fp32")["latency"]["by_workload"]) == {"seq16", "seq32"}


def test_accuracy_runs_through_each_runtime_and_agrees_with_the_torch_reference(report, artifacts):
    data = report[0]
    for fmt, precision in (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "int8")):
        acc = _entry(data, fmt, precision)["accuracy"]
        assert acc["status"] == "measured" and acc["n"] == 64
        assert acc["reference"]["path"] == str(artifacts["classifier"].resolve())
        assert acc["accuracy"] > 0.8 and acc["reference_accuracy"] > 0.8
        assert acc["agreement"] >= 0.95 and abs(acc["accuracy_drop"]) <= 0.05
    assert _entry(data, "onnx", "fp32")["accuracy"]["max_abs_logit_diff"] < 1e-3
    emb = _entry(data, "gguf", "q8_0", "feature-extraction")["accuracy"]
    assert emb["metric"] == "cosine to reference" and emb["cosine_mean"] > 0.99
    lm = _entry(data, "gguf", "q8_0", "text-generation")
    assert lm["accuracy"]["status"] == "not measured"


def test_llama_cpp_decoder_reports_ttft_and_decode_speed(report):
    lm = _entry(report[0], "gguf", "q8_0", "text-generation")["lm"]
    assert lm["prompt_tokens"] == 16 and lm["generate_tokens"] == 8
    assert (
        0
        < lm["ttft_ms"]["p50_ms"]
        < _entry(report[0], "gguf", "q8_0", "text-generation")["latency"]["p50_ms"]
    )
    assert lm["decode_tokens_per_s"]["p50"] > 0 and len(lm["ttft_samples_ms"]) == lm["ttft_ms"]["n"]


def test_aa_comparison_of_one_artifact_never_fails_the_gate_and_an_injected_slowdown_does(
    artifacts, tmp_path
):
    # Process medians of this 0.3 ms model are bimodal on the 2-core host (measured 2026-12-03:
    # 0.26 ms in some fresh processes, 0.38-0.41 ms in others, one artifact), so an A/A look often
    # shows a >= 5% effect without evidence ("inconclusive", then extended) and, at a p threshold
    # of 0.05, a false verdict in up to 1 run in 10 (2 x 0.05): CI once got "inconclusive", a local run
    # "improved" at a ratio of 0.73. The claim is the gate's: one artifact against itself never
    # fails it. p_threshold 0.002 bounds that false alarm at 0.4% over both looks; 6 processes a
    # side (p >= 1/924) still detect a 3x slowdown, which no process state can hide.
    target = load_target(
        write_target(
            tmp_path,
            measurement={
                "min_iterations": 100,
                "min_seconds": 0.3,
                "compare_rounds": 6,
                "max_compare_rounds": 12,
            },
            regression={"p_threshold": 0.002},
        )
    )
    art = artifacts["onnx-int8"]
    same = bench([art], target, baseline_artifact=art)
    comparison = same["comparisons"][0]
    first = comparison["looks"][0]
    assert comparison["interleaved"] and first["rounds_per_side"] == 6
    assert comparison["result"]["verdict"] in ("unchanged", "inconclusive"), comparison["looks"]
    # only an inconclusive first look is extended, and then to max_compare_rounds a side
    assert comparison["extended"] == (first["verdict"] == "inconclusive")
    sides = 12 if comparison["extended"] else 6
    assert comparison["candidate_rounds"] == comparison["baseline_rounds"] == sides
    assert [a["role"] for a in same["artifacts"]] == ["candidate", "baseline"]
    # never a failure; "inconclusive" (an interval too wide to exclude +5%) exits 3, not 0; the fast
    # target's accuracy budgets have no figure here (no --data), which --allow-skipped lets pass
    [check] = [c for c in gate(same, target).checks if c.budget.startswith("regression")]
    assert check.status in ("passed", "inconclusive"), check
    assert gate(same, target, allow_skipped=True).exit_code == (0 if check.status == "passed" else 3)

    # the test-only knob stretches every timed inference of the candidate 3x
    slow = bench([art], target, baseline_artifact=art, candidate_overrides={"debug_slowdown_factor": 3.0})
    result = slow["comparisons"][0]["result"]
    assert result["verdict"] == "regressed", result
    assert result["ratio"] > 2.0 and result["p_slower"] < 0.002
    applied = slow["artifacts"][0]["applied"]
    assert applied["overrides"] == {"debug_slowdown_factor": 3.0} and "TEST-ONLY" in applied["warnings"][-1]
    verdict = gate(slow, target)
    assert verdict.exit_code == 1
    assert [c.status for c in verdict.checks if c.budget.startswith("regression")] == ["failed"]


def test_an_inconclusive_first_look_is_extended_and_decided_on_all_processes(artifacts, tmp_path):
    # a p threshold no 2-process look can reach makes the first look inconclusive by construction;
    # the extension then alternates on (round 3 is A B again) up to max_compare_rounds a side.
    # The injected slowdown is 10x: at 1.5x one baseline process disturbed by this 2-core machine
    # once overlapped a candidate one in CI (p 1/3 instead of 1/6), and 3x was not always enough with
    # two training jobs on the cores; the exact p values of fully separated looks are checked without
    # timing in test_bench_targets.
    target = load_target(
        write_target(
            tmp_path,
            measurement={"min_seconds": 0.1, "compare_rounds": 2, "max_compare_rounds": 4},
            regression={"min_rounds": 2, "p_threshold": 0.1},
        )
    )
    art = artifacts["onnx-int8"]
    report = bench([art], target, baseline_artifact=art, candidate_overrides={"debug_slowdown_factor": 10.0})
    comparison = report["comparisons"][0]
    first, second = comparison["looks"]
    assert first["rounds_per_side"] == 2 and first["verdict"] == "inconclusive"
    assert first["p_slower"] >= 1 / 6 - 1e-12  # the smallest one-sided p with 2 a side
    assert comparison["extended"] and second["rounds_per_side"] == comparison["candidate_rounds"] == 4
    assert comparison["baseline_rounds"] == 4 and second["p_slower"] < 0.1
    assert second["verdict"] == comparison["result"]["verdict"] == "regressed"
    verdict = gate(report, target)
    [check] = [c for c in verdict.checks if c.budget.startswith("regression")]
    assert check.status == "failed" and "extended to 4 processes a side" in check.message


def test_a_speedup_budget_the_first_look_leaves_undecided_is_extended_like_an_inconclusive_verdict(
    artifacts, tmp_path
):
    # 2 processes a side decide "regressed" for a 10x slowdown at p 1/6 < 0.2, but give no 95 % bound
    # of the speed-up (the smallest one-sided p is 1/6 > 0.05): the target's speedup_vs_teacher budget
    # is undecided, so the bench measures on to max_compare_rounds, where a bound exists; the same
    # target without the budget stops at the first look.
    def run(budgets):
        target = load_target(
            write_target(
                tmp_path,
                f"t{len(budgets)}.yaml",
                measurement={"min_seconds": 0.1, "compare_rounds": 2, "max_compare_rounds": 4},
                regression={"min_rounds": 2, "p_threshold": 0.2},
                budgets=budgets,
            )
        )
        art = artifacts["onnx-int8"]
        report = bench(
            [art], target, baseline_artifact=art, candidate_overrides={"debug_slowdown_factor": 10.0}
        )
        return report["comparisons"][0], target, report

    plain, _, _ = run({})
    assert plain["looks"][0]["verdict"] == "regressed" and not plain["extended"]
    assert plain["looks"][0]["speedup_bounds"] == [None, None]
    budgeted, target, report = run({"speedup_vs_teacher": 0.5})
    first, second = budgeted["looks"]
    assert first["verdict"] == "regressed" and first["speedup_bounds"] == [None, None]
    assert budgeted["extended"] and second["rounds_per_side"] == 4 and None not in second["speedup_bounds"]
    # the gate judges the budget on all 4 + 4 processes: about 0.1x, clearly under 0.5x
    [check] = [c for c in gate(report, target, allow_skipped=True).checks if c.budget == "speedup_vs_teacher"]
    assert check.status == "failed" and "4 + 4 processes" in check.message


def test_the_baseline_artifact_gets_its_own_accuracy_on_the_same_data(artifacts, tiny_data, tmp_path):
    """A report quoting "x % of the teacher" needs the teacher's accuracy through its runtime, on the
    same rows as the candidates'."""
    target = load_target(
        write_target(
            tmp_path, measurement={"min_seconds": 0.05, "compare_rounds": 2, "max_compare_rounds": 2}
        )
    )
    report = bench(
        [artifacts["onnx-int8"]], target, baseline_artifact=artifacts["onnx-fp32"], data=tiny_data["eval"]
    )
    cand, base = report["artifacts"]
    assert base["role"] == "baseline" and base["accuracy"]["n"] == cand["accuracy"]["n"] == 64
    assert (
        0.0 <= base["accuracy"]["accuracy"] <= 1.0
        and base["accuracy"]["metric"] == cand["accuracy"]["metric"]
    )


def test_gpu_target_is_not_judged_here_never_passed_or_failed(artifacts, tmp_path):
    from edgedistill.bench.system import nvidia_gpus

    if nvidia_gpus() is not None:
        pytest.skip("this host has an NVIDIA GPU")
    report = bench([artifacts["onnx-int8"], artifacts["gguf-llama"]], "gpu-cuda", out=tmp_path / "gpu.json")
    for entry in report["artifacts"]:
        assert entry["status"] == "skipped" and "CUDA" in entry["reason"]
        assert "latency" not in entry
    # nothing was measured: exit 4 (not judged), never 0; --allow-skipped is the explicit opt-out
    result = gate(tmp_path / "gpu.json", "gpu-cuda")
    assert result.exit_code == 4 and result.verdict == "NOT JUDGED"
    assert {c.status for c in result.checks} == {"not_judged"}
    allowed = gate(tmp_path / "gpu.json", "gpu-cuda", allow_skipped=True)
    assert allowed.exit_code == 0 and allowed.verdict.startswith("SKIPPED")


def test_mobile_class_measures_int8_pinned_and_skips_float_artifacts(artifacts):
    target = load_target(
        "mobile-class",
        {
            "measurement.min_iterations": 20,
            "measurement.min_seconds": 0.1,
            "measurement.warmup_iterations": 2,
        },
    )
    report = bench([artifacts["onnx-fp32"], artifacts["onnx-int8"]], target)
    fp32, int8 = report["artifacts"]
    assert fp32["status"] == "skipped" and "accepts precisions" in fp32["reason"] and "fp32" in fp32["reason"]
    assert int8["status"] == "measured"
    import os

    allowed = sorted(os.sched_getaffinity(0))
    assert int8["applied"]["cpus"] == allowed[:2] and int8["applied"]["threads"] == 2
    assert int8["applied"]["effective"]["intra_op_num_threads"] == 2
    assert set(int8["latency"]["by_workload"]) == {"seq32", "seq64"}
    if len(allowed) < 2:
        assert int8["applied"]["warnings"]


def test_changed_artifact_file_fails_with_the_file_named(artifacts, tmp_path):
    copy = tmp_path / "onnx-int8"
    shutil.copytree(artifacts["onnx-int8"], copy)
    with open(copy / "model.onnx", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    with pytest.raises(EdgeDistillError, match=r"model\.onnx: sha256 differs"):
        bench([copy], write_target(tmp_path))
    (copy / "manifest.json").unlink()
    (copy / "config.json").unlink()
    with pytest.raises(EdgeDistillError, match="no manifest.json"):
        bench([copy], write_target(tmp_path))


def test_an_onnx_folder_from_another_tool_is_measured_unverified(artifacts, tiny_data, tmp_path):
    """e.g. optimum's ORTQuantizer output as a baseline: config.json + one *.onnx, no manifest."""
    foreign = tmp_path / "optimum-int8"
    shutil.copytree(artifacts["onnx-int8"], foreign)
    (foreign / "manifest.json").unlink()
    (foreign / "model.onnx").rename(foreign / "model_quantized.onnx")
    target = load_target(write_target(tmp_path, measurement={"min_iterations": 10, "min_seconds": 0.05}))
    report = bench([foreign], target, data=tiny_data["eval"])
    entry = report["artifacts"][0]
    assert entry["status"] == "measured", entry.get("reason")
    assert (entry["format"], entry["precision"], entry["runtime"]) == ("onnx", "int8", "onnxruntime")
    assert entry["manifest"]["verified"] is False and "model_quantized.onnx" in entry["files_sha256"]
    assert entry["accuracy"]["accuracy"] > 0.5


def test_a_failing_measuring_process_becomes_a_clear_error(artifacts, tmp_path):
    target = load_target(write_target(tmp_path))
    job = {
        "kind": "latency",
        "artifact": {
            "path": str(tmp_path),
            "name": "broken",
            "format": "onnx",
            "precision": "fp32",
            "task": "sequence-classification",
            "runtime": "onnxruntime",
            "model_files": ["model.onnx"],
            "inputs": [],
        },
        "options": {**target.runtime.model_dump(), "threads": 1, "cpus": None},
        "workload": target.workload.model_dump(),
        "measurement": target.measurement.model_dump(),
        "cpus": None,
    }
    (tmp_path / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(MeasurementError, match="model.onnx|Protobuf|INVALID"):
        run_worker(job, timeout_s=60, poll_interval_s=0.01, work_dir=tmp_path / "job")


def test_a_student_folder_is_benchmarked_with_the_torch_runtime(artifacts, tmp_path):
    target = load_target(write_target(tmp_path, measurement={"min_iterations": 10, "min_seconds": 0.05}))
    report = bench([artifacts["classifier"]], target)
    entry = report["artifacts"][0]
    assert entry["status"] == "measured" and entry["format"] == "torch" and entry["runtime"] == "torch"
    assert entry["manifest"] is None and "model.safetensors" in entry["files_sha256"]
    assert entry["applied"]["effective"]["num_threads"] == 1
    assert np.isfinite(entry["latency"]["p50_ms"])


def test_gpu_target_on_a_gpu_host_without_cuda_runtime_builds_is_skipped_per_runtime(artifacts, monkeypatch):
    """With an NVIDIA GPU present, each runtime still says why it cannot use it (CPU-only builds here)."""
    import onnxruntime as ort

    from edgedistill.bench import system

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setattr(system, "nvidia_gpus", lambda: ["Fake GPU, 999.0"])
    paths = [artifacts["onnx-int8"], artifacts["openvino-int8"], artifacts["gguf-llama"]]
    report = bench(paths, "gpu-cuda")
    reasons = {a["format"]: a["reason"] for a in report["artifacts"]}
    assert all(a["status"] == "skipped" for a in report["artifacts"])
    assert "CUDAExecutionProvider" in reasons["onnx"] and "onnxruntime-gpu" in reasons["onnx"]
    assert "not GPU" in reasons["openvino"]
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        assert "offload" in reasons["gguf"]


@pytest.mark.parametrize("text", ['{"pad_token": "[PAD]"', "[1, 2]", '{"pad_token": "\xff"}'])
def test_a_damaged_tokenizer_config_is_an_artifact_error_not_pad_id_0(tmp_path, text, tiny_bert_encoder):
    """Issue 25: the runtimes' tokenizer swallowed a corrupt tokenizer_config.json and padded with id 0."""
    from edgedistill.bench.runtimes.base import ArtifactTokenizer
    from edgedistill.errors import ArtifactError

    folder = tmp_path / "artifact"
    shutil.copytree(tiny_bert_encoder, folder)
    assert ArtifactTokenizer(folder).pad_id == 0  # [PAD] is id 0 in the fixture's vocabulary
    (folder / "tokenizer_config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ArtifactError, match="tokenizer_config.json"):
        ArtifactTokenizer(folder)


def test_artifacts_with_the_same_folder_name_get_the_shortest_path_tails_that_tell_them_apart(tmp_path):
    """fit_sst2 benched two winners at .../final/<shape>/artifacts/openvino-int8: one parent folder
    was not enough, and the report's comparisons (looked up by name) mixed them up."""
    from types import SimpleNamespace

    from edgedistill.bench.core import _unique_names

    paths = [
        tmp_path / "fit-3x" / "final" / "L0-2-3-5_f768" / "artifacts" / "openvino-int8",
        tmp_path / "fit-6x" / "final" / "L0-2-3-5_f384" / "artifacts" / "openvino-int8",
        tmp_path / "ours" / "onnx-int8",
        tmp_path / "x" / "y" / "artifacts" / "onnx-fp32",
    ]
    opened = [SimpleNamespace(name=p.name, path=p) for p in paths]
    _unique_names(opened)
    assert [a.name for a in opened] == [
        "L0-2-3-5_f768/artifacts/openvino-int8",
        "L0-2-3-5_f384/artifacts/openvino-int8",
        "onnx-int8",
        "onnx-fp32",
    ]
