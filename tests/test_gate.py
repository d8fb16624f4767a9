"""The gate: budgets, exit codes, JUnit and Markdown, baselines. Mostly on synthetic reports (fast);
one end-to-end run goes through the command line on a real bench report."""

from __future__ import annotations

import copy
import json
import random
import xml.etree.ElementTree as ET

import pytest
from bench_helpers import FAST_TARGET, write_target

from edgedistill.bench.cli import main
from edgedistill.bench.gating import gate, junit_xml, markdown
from edgedistill.targets import load_target


def _samples(n: int, median: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + abs(rng.gauss(0, 0.02))) for _ in range(n)]


def _entry(name: str, task: str = "sequence-classification", p95: float = 5.0, n: int = 200, **extra) -> dict:
    samples = _samples(n, p95 * 0.8, sum(map(ord, name)))
    entry = {
        "role": "candidate",
        "name": name,
        "path": f"/x/{name}",
        "format": name.split("-")[0],
        "precision": name.split("-")[1],
        "task": task,
        "runtime": "onnxruntime",
        "size_mb": 10.0,
        "status": "measured",
        "reason": None,
        "latency": {
            "n": n,
            "p50_ms": p95 * 0.8,
            "p95_ms": p95,
            "p99_ms": p95 * 1.1,
            "throughput_per_s": 100.0,
            "samples_ms": samples,
            "rounds": [{"n": n, "median_ms": p95 * 0.8}],
        },
        "memory": {"peak_rss_mb": 100.0},
        "accuracy": {
            "status": "measured",
            "accuracy": 0.9,
            "reference_accuracy": 0.91,
            "accuracy_drop": 0.01,
            "agreement": 0.97,
            "reference": {"status": "measured"},
        },
        "lm": None,
    }
    entry.update(extra)
    return entry


def _report(target_file, entries: list[dict], comparisons: list[dict] | None = None) -> dict:
    target = load_target(target_file)
    return {
        "report_version": 1,
        "kind": "edgedistill-bench-report",
        "target": {"name": target.name, "config": json.loads(target.model_dump_json())},
        "host": {"cpu": {"model": "Test CPU", "logical_cores": 2, "isa": {"avx2": True, "avx512f": False}}},
        "artifacts": entries,
        "comparisons": comparisons or [],
    }


BUDGETS = {
    "p50_latency_ms": 12,
    "p95_latency_ms": 10,
    "p99_latency_ms": 20,
    "peak_rss_mb": 500,
    "artifact_size_mb": 50,
    "min_accuracy": 0.85,
    "max_accuracy_drop": 0.02,
    "min_agreement": 0.95,
}


def _only(budgets: dict) -> dict:
    """Exactly these budgets (the fast target's others unset)."""
    return {**{key: None for key in FAST_TARGET["budgets"]}, **budgets}


@pytest.fixture
def target_file(tmp_path):
    return write_target(tmp_path, budgets=_only(BUDGETS))


def _run(tmp_path, report: dict, *args: str) -> int:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return main(["gate", str(path), *args])


def test_budgets_pass_and_fail_with_one_testcase_per_artifact_and_budget(tmp_path, target_file):
    good, slow = _entry("onnx-int8"), _entry("openvino-int8", p95=14.0)
    report = _report(target_file, [good, slow])
    junit, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    code = _run(tmp_path, report, "--target", str(target_file), "--junit", str(junit), "--markdown", str(md))
    assert code == 1
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 2 * len(BUDGETS)
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert failed == [("edgedistill.test-fast.openvino-int8", "p95_latency_ms")]
    assert root.find("testsuite").get("failures") == "1" and root.get("tests") == str(2 * len(BUDGETS))
    text = md.read_text()
    assert (
        "**FAILED**" in text and "| artifact | check |" in text and "❌ FAIL" in text and "Test CPU" in text
    )
    # everything within budget: exit 0
    assert _run(tmp_path, _report(target_file, [good]), "--target", str(target_file)) == 0


def test_accuracy_floor_and_drop_fail_and_missing_data_is_inconclusive(tmp_path, target_file):
    worse = _entry("onnx-int8")
    worse["accuracy"].update(accuracy=0.8, accuracy_drop=0.11, agreement=0.85)
    result = gate(_report(target_file, [worse]), load_target(target_file))
    failed = {c.budget for c in result.checks if c.status == "failed"}
    assert failed == {"min_accuracy", "max_accuracy_drop", "min_agreement"} and result.exit_code == 1

    no_data = _entry("onnx-int8", accuracy=None)
    result = gate(_report(target_file, [no_data]), load_target(target_file))
    inconclusive = {c.budget: c.message for c in result.checks if c.status == "inconclusive"}
    assert set(inconclusive) == {"min_accuracy", "max_accuracy_drop", "min_agreement"}
    assert "--data" in inconclusive["min_accuracy"]
    assert result.exit_code == 0
    assert gate(_report(target_file, [no_data]), load_target(target_file), strict=True).exit_code == 3


def test_too_few_iterations_for_p99_is_inconclusive_and_strict_exits_3(tmp_path, target_file):
    few = _entry("onnx-int8", n=50)
    report = _report(target_file, [few])
    junit = tmp_path / "strict.xml"
    assert _run(tmp_path, report, "--target", str(target_file)) == 0
    assert _run(tmp_path, report, "--target", str(target_file), "--strict", "--junit", str(junit)) == 3
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["p99_latency_ms"].find("failure").get("type") == "inconclusive"
    assert cases["p95_latency_ms"].find("failure") is None


def test_skipped_and_errored_artifacts(tmp_path, target_file):
    skipped = {**_entry("onnx-fp32"), "status": "skipped", "reason": "target accepts precisions int8"}
    for key in ("latency", "memory", "accuracy"):
        skipped.pop(key)
    broken = {**_entry("openvino-int8"), "status": "error", "reason": "OpenVINO cannot compile"}
    result = gate(_report(target_file, [skipped, broken]), load_target(target_file))
    by_artifact = {}
    for c in result.checks:
        by_artifact.setdefault(c.artifact, set()).add(c.status)
    assert by_artifact["onnx-fp32"] == {"skipped"}
    assert "error" in by_artifact["openvino-int8"] and result.exit_code == 1
    root = ET.fromstring(junit_xml(result))
    skips = [c for c in root.iter("testcase") if c.find("skipped") is not None]
    assert any("accepts precisions" in c.find("skipped").get("message") for c in skips)
    assert root.find(".//error") is not None


def test_budgets_that_do_not_apply_to_the_task_are_skipped(tmp_path):
    target_file = write_target(
        tmp_path, budgets=_only({"ttft_ms": 10, "min_cosine": 0.99, "min_accuracy": 0.5})
    )
    lm = _entry(
        "gguf-q8_0",
        task="text-generation",
        accuracy=None,
        lm={"ttft_ms": {"p50_ms": 12.0}, "decode_tokens_per_s": {"p50": 50.0}},
    )
    result = gate(_report(target_file, [lm]), load_target(target_file))
    statuses = {c.budget: c.status for c in result.checks}
    assert statuses == {"ttft_ms": "failed", "min_cosine": "skipped", "min_accuracy": "skipped"}


def test_invalid_inputs_exit_2(tmp_path, target_file):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["gate", str(bad), "--target", str(target_file)]) == 2
    assert main(["gate", str(tmp_path / "missing.json"), "--target", str(target_file)]) == 2
    bad.write_text(json.dumps({"kind": "something else"}))
    assert main(["gate", str(bad), "--target", str(target_file)]) == 2
    report = _report(target_file, [_entry("onnx-int8")])
    assert _run(tmp_path, report, "--target", "no-such-target") == 2
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("version: 1\nname: x\nbudgets: {p95_latency_ms: -1}\n")
    assert _run(tmp_path, report, "--target", str(malformed)) == 2
    # budgets of a target measured differently cannot judge the report
    other = write_target(tmp_path, "other.yaml", runtime={"threads": 2})
    assert _run(tmp_path, report, "--target", str(other)) == 2
    assert main(["gate"]) == 2


def test_interleaved_comparison_in_the_report_is_rejudged_with_gate_thresholds(tmp_path, target_file):
    comparison = {
        "candidate": "onnx-int8",
        "baseline": "onnx-int8-old",
        "candidate_samples_ms": _samples(300, 1.08, 1),
        "baseline_samples_ms": _samples(300, 1.0, 2),
        "candidate_round_medians_ms": [1.08, 1.09, 1.07, 1.10, 1.08],
        "baseline_round_medians_ms": [1.0, 1.01, 0.99, 1.02, 1.0],
        "candidate_rounds": 5,
        "baseline_rounds": 5,
    }
    report = _report(target_file, [_entry("onnx-int8")], [comparison])
    target = load_target(target_file)
    check = [c for c in gate(report, target).checks if c.budget.startswith("regression")][0]
    assert check.status == "failed" and "interleaved" in check.message
    relaxed = [c for c in gate(report, target, min_effect=0.2).checks if c.budget.startswith("regression")][0]
    assert relaxed.status == "passed"
    few = copy.deepcopy(comparison)
    few.update(candidate_round_medians_ms=[1.08], candidate_rounds=1)
    check = [
        c
        for c in gate(_report(target_file, [_entry("onnx-int8")], [few]), target).checks
        if "regression" in c.budget
    ][0]
    assert check.status == "inconclusive" and "too few" in check.message


def test_baseline_report_comparison(tmp_path, target_file):
    cand = _entry("onnx-int8", size_mb=12.0)
    cand["latency"]["rounds"] = [{"n": 70, "median_ms": m} for m in (4.0, 4.05, 3.98, 4.02)]
    base = _entry("onnx-int8", size_mb=10.0)
    base["latency"]["rounds"] = [{"n": 70, "median_ms": m} for m in (4.01, 3.97, 4.03, 4.0)]
    base_file = tmp_path / "base.json"
    base_file.write_text(json.dumps(_report(target_file, [base])))
    result = gate(_report(target_file, [cand]), load_target(target_file), baseline=base_file)
    checks = {c.budget.split(" ")[0]: c for c in result.checks if "vs baseline" in c.budget}
    assert checks["regression_size"].status == "failed" and "+20.0%" in checks["regression_size"].message
    assert checks["regression_peak_rss"].status == "passed"
    assert (
        checks["regression_latency"].status == "passed"
        and "not interleaved" in checks["regression_latency"].message
    )
    # one process per side says nothing of drift: inconclusive, never a pass
    cand["latency"]["rounds"] = [{"n": 200, "median_ms": 4.0}]
    result = gate(_report(target_file, [cand]), load_target(target_file), baseline=base_file)
    lat = [c for c in result.checks if c.budget.startswith("regression_latency")][0]
    assert lat.status == "inconclusive"


def test_markdown_is_a_table_with_one_row_per_check(tmp_path, target_file):
    result = gate(_report(target_file, [_entry("onnx-int8")]), load_target(target_file))
    text = markdown(result)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(result.checks) == len(BUDGETS)
    assert text.startswith("## edgedistill gate: `test-fast` — **PASSED**")


# --------------------------------------------------------------------------------------------
# end to end through the command line, on a real report
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_report(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder, tiny_data):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("llama_cpp")
    from bench_helpers import exported_artifacts, main_report

    artifacts = exported_artifacts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder)
    return main_report(tmp_path_factory, artifacts, tiny_data["eval"]), artifacts


def test_cli_bench_then_gate_end_to_end(real_report, tmp_path, tiny_data):
    (_, report_path, target_path), artifacts = real_report
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(report_path), "--target", str(target_path), "--junit", str(junit)]) == 0
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    budgets = [k for k, v in FAST_TARGET["budgets"].items() if v is not None]
    assert len(cases) == 5 * len(budgets)
    # the same measurements against tight budgets fail
    tight = write_target(
        tmp_path, "tight.yaml", budgets=_only({"p50_latency_ms": 0.001, "artifact_size_mb": 0.001})
    )
    assert main(["gate", str(report_path), "--target", str(tight)]) == 1
    # the bench command line itself, with a short measurement
    out = tmp_path / "cli.json"
    fast = ["--set", "measurement.min_iterations=5", "--set", "measurement.min_seconds=0", "--quiet"]
    code = main(
        ["bench", str(artifacts["onnx-int8"]), "--target", str(target_path), "--out", str(out), *fast]
    )
    assert code == 0 and json.loads(out.read_text())["artifacts"][0]["latency"]["n"] >= 5
    # a folder that is not an artifact is invalid input: exit 2
    assert main(["bench", str(tmp_path), "--target", str(target_path), "--out", str(out)]) == 2
