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
from edgedistill.bench.gating import GateInputError, gate, junit_xml, markdown
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


def test_accuracy_floor_and_drop_fail_and_missing_data_is_not_judged(tmp_path, target_file):
    worse = _entry("onnx-int8")
    worse["accuracy"].update(accuracy=0.8, accuracy_drop=0.11, agreement=0.85)
    result = gate(_report(target_file, [worse]), load_target(target_file))
    failed = {c.budget for c in result.checks if c.status == "failed"}
    assert failed == {"min_accuracy", "max_accuracy_drop", "min_agreement"} and result.exit_code == 1

    # no --data: the accuracy budgets have no figure to judge; exit 4 (not judged), never a pass
    no_data = _entry("onnx-int8", accuracy=None)
    result = gate(_report(target_file, [no_data]), load_target(target_file))
    not_judged = {c.budget: c.message for c in result.checks if c.status == "not_judged"}
    assert set(not_judged) == {"min_accuracy", "max_accuracy_drop", "min_agreement"}
    assert "--data" in not_judged["min_accuracy"]
    assert result.exit_code == 4 and result.verdict == "NOT JUDGED"
    allowed = gate(_report(target_file, [no_data]), load_target(target_file), allow_skipped=True)
    assert allowed.exit_code == 0 and allowed.verdict == "PASSED (not judged checks allowed)"
    assert _run(tmp_path, _report(target_file, [no_data]), "--target", str(target_file)) == 4
    assert (
        _run(tmp_path, _report(target_file, [no_data]), "--target", str(target_file), "--allow-skipped") == 0
    )


def test_too_few_iterations_for_p99_is_inconclusive_and_exits_3_unless_allowed(tmp_path, target_file):
    few = _entry("onnx-int8", n=50)
    report = _report(target_file, [few])
    junit = tmp_path / "gate.xml"
    # inconclusive is never a pass by default; --strict (the old opt-in) is accepted and changes nothing
    assert _run(tmp_path, report, "--target", str(target_file), "--junit", str(junit)) == 3
    assert _run(tmp_path, report, "--target", str(target_file), "--strict") == 3
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["p99_latency_ms"].find("failure").get("type") == "inconclusive"
    assert cases["p95_latency_ms"].find("failure") is None
    allowed = tmp_path / "allowed.xml"
    assert (
        _run(tmp_path, report, "--target", str(target_file), "--allow-inconclusive", "--junit", str(allowed))
        == 0
    )
    cases = {c.get("name"): c for c in ET.parse(allowed).getroot().iter("testcase")}
    assert "inconclusive (allowed)" in cases["p99_latency_ms"].find("skipped").get("message")
    result = gate(report, load_target(target_file), allow_inconclusive=True)
    assert result.verdict == "PASSED (inconclusive checks allowed)"
    assert gate(report, load_target(target_file), strict=True).exit_code == 3
    with pytest.raises(GateInputError, match="allow_inconclusive"):
        gate(report, load_target(target_file), strict=False)


def test_skipped_and_errored_artifacts(tmp_path):
    target_file = write_target(tmp_path, precisions=["int8"], budgets=_only(BUDGETS))
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


# --------------------------------------------------------------------------------------------
# exit codes: one per row of the README's table
# --------------------------------------------------------------------------------------------


def _skipped(name: str, reason: str) -> dict:
    entry = {**_entry(name), "status": "skipped", "reason": reason}
    for key in ("latency", "memory", "accuracy"):
        entry.pop(key)
    return entry


def test_each_exit_code_of_the_table(tmp_path, target_file):
    from edgedistill.bench.gating import worst_exit_code

    target = ["--target", str(target_file)]
    assert _run(tmp_path, _report(target_file, [_entry("onnx-int8")]), *target) == 0
    assert _run(tmp_path, _report(target_file, [_entry("onnx-int8", p95=14.0)]), *target) == 1
    errored = {**_entry("onnx-int8"), "status": "error", "reason": "the runtime crashed"}
    assert _run(tmp_path, _report(target_file, [errored]), *target, "--allow-skipped") == 1
    assert main(["gate", str(tmp_path / "missing.json"), *target]) == 2
    assert _run(tmp_path, _report(target_file, [_entry("onnx-int8", n=50)]), *target) == 3
    board_off = _skipped("onnx-int8", "device ssh://board:22 is unavailable: connection refused")
    assert _run(tmp_path, _report(target_file, [board_off]), *target) == 4
    assert _run(tmp_path, _report(target_file, [board_off]), *target, "--allow-skipped") == 0
    # a failure outranks "not judged", which outranks "inconclusive": `edgedistill run` exits the worst
    assert (
        worst_exit_code([0, 3, 4]) == 4 and worst_exit_code([4, 1, 3]) == 1 and worst_exit_code([0, 3]) == 3
    )
    assert worst_exit_code([0, 0]) == 0 and worst_exit_code([]) == 0


def test_nothing_measured_is_not_judged_never_a_pass(tmp_path):
    """A CI job whose board is off, or whose target has no CUDA here, must not go green."""
    target_file = write_target(tmp_path, precisions=["int8"], budgets=_only(BUDGETS))
    target = load_target(target_file)
    no_gpu = _skipped("onnx-int8", "target requires a CUDA GPU; this host has none")
    result = gate(_report(target_file, [no_gpu]), target)
    assert {c.status for c in result.checks} == {"not_judged"}
    assert result.exit_code == 4 and result.verdict == "NOT JUDGED" and result.nothing_judged
    root = ET.fromstring(junit_xml(result))
    assert root.get("failures") == str(len(BUDGETS) + 1)
    judged = [c for c in root.iter("testcase") if c.get("name") == "judged"]
    assert judged and "nothing was judged" in judged[0].find("failure").get("message")
    assert "🚫 not judged" in markdown(result) and "exit 4" in markdown(result)
    # only artifacts the target does not take: skipped, but still nothing judged, so still exit 4
    fp32 = _skipped("onnx-fp32", "target test-fast accepts precisions int8; this artifact is fp32")
    result = gate(_report(target_file, [fp32]), target)
    assert {c.status for c in result.checks} == {"skipped"} and result.exit_code == 4
    allowed = gate(_report(target_file, [fp32]), target, allow_skipped=True)
    assert allowed.exit_code == 0 and allowed.verdict.startswith("SKIPPED")
    assert ET.fromstring(junit_xml(allowed)).get("failures") == "0"
    # one artifact judged, another not taken by the target: the judged one decides
    assert gate(_report(target_file, [_entry("onnx-int8"), fp32]), target).exit_code == 0
    # one judged, another the target takes but could not run here: not judged, exit 4
    assert gate(_report(target_file, [_entry("openvino-int8"), no_gpu]), target).exit_code == 4


def test_a_report_measured_elsewhere_cannot_meet_a_boards_budgets(tmp_path, target_file):
    report = _report(target_file, [_entry("onnx-int8")])
    board = write_target(tmp_path, "board.yaml", device={"kind": "ssh", "host": "board.local"})
    assert _run(tmp_path, report, "--target", str(board)) == 2
    with pytest.raises(GateInputError, match=r"device\.kind: report measured 'local', target says 'ssh'"):
        gate(report, load_target(board))
    # how the board is reached (user, key, time-outs) does not change what was measured
    ssh = {"kind": "ssh", "host": "board.local"}
    measured = write_target(tmp_path, "measured.yaml", device={**ssh, "user": "ci", "connect_timeout_s": 5})
    reached = write_target(tmp_path, "reached.yaml", device={**ssh, "user": "me", "key": "/k"})
    on_board = _report(measured, [_entry("onnx-int8")])
    gate(on_board, load_target(reached))
    other_board = write_target(tmp_path, "other.yaml", device={**ssh, "host": "board2.local"})
    with pytest.raises(GateInputError, match="device.host"):
        gate(on_board, load_target(other_board))


def test_test_only_slowdown_knobs_are_refused_in_a_target(tmp_path, target_file):
    from edgedistill.errors import ConfigError

    for knob, value in (("debug_slowdown_factor", 1.1), ("debug_extra_latency_ms", 2.0)):
        faked = write_target(tmp_path, "faked.yaml", runtime={knob: value})
        with pytest.raises(ConfigError, match=rf"runtime.*{knob}: test-only"):
            load_target(faked)
        assert _run(tmp_path, _report(target_file, [_entry("onnx-int8")]), "--target", str(faked)) == 2
    # reports written while the knobs were target fields carry them at their neutral values: still judged
    report = _report(target_file, [_entry("onnx-int8")])
    report["target"]["config"]["runtime"].update(debug_slowdown_factor=1.0, debug_extra_latency_ms=0.0)
    assert gate(report, load_target(target_file)).exit_code == 0
    report["target"]["config"]["runtime"]["debug_slowdown_factor"] = 1.1
    with pytest.raises(GateInputError, match="debug_slowdown_factor"):
        gate(report, load_target(target_file))


# --------------------------------------------------------------------------------------------
# relative budgets: against the teacher measured interleaved in the same report
# --------------------------------------------------------------------------------------------


def _medians(n: int, median: float, seed: int, spread: float = 0.03) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def _teacher_report(target_file, speedup: float, rounds: int = 10, seed: int = 0) -> dict:
    cand = _entry("onnx-int8", size_mb=10.0)
    teacher = {**_entry("onnx-fp32", size_mb=80.0), "role": "baseline", "name": "teacher-fp32"}
    teacher["memory"] = {"peak_rss_mb": 400.0}
    cand_medians = _medians(rounds, 1.0, seed)
    base_medians = _medians(rounds, speedup, seed + 1)
    comparison = {
        "candidate": "onnx-int8",
        "baseline": "teacher-fp32",
        "candidate_samples_ms": _samples(40 * rounds, 1.0, seed),
        "baseline_samples_ms": _samples(40 * rounds, speedup, seed + 1),
        "candidate_round_medians_ms": cand_medians,
        "baseline_round_medians_ms": base_medians,
        "candidate_rounds": rounds,
        "baseline_rounds": rounds,
    }
    return _report(target_file, [cand, teacher], [comparison])


def test_speedup_size_and_rss_against_the_teacher(tmp_path):
    from edgedistill.bench.gating import relative_to_teacher

    def checks(speedup_budget, report, **budgets):
        target_file = write_target(tmp_path, budgets=_only({"speedup_vs_teacher": speedup_budget, **budgets}))
        result = gate(report, load_target(target_file))
        return result, {c.budget: c for c in result.checks}

    report = _teacher_report(write_target(tmp_path), speedup=4.0)
    figures = relative_to_teacher(report)["onnx-int8"]
    assert figures["teacher"] == "teacher-fp32" and figures["speedup"] == pytest.approx(4.0, rel=0.05)
    assert figures["speedup_lower"] < figures["speedup"] < figures["speedup_upper"]
    assert figures["size_ratio"] == pytest.approx(0.125) and figures["rss_ratio"] == pytest.approx(0.25)
    # the whole interval above 3x: passed; below 5x: failed; straddling 4x: inconclusive
    result, by = checks(3.0, report, size_vs_teacher=0.2, rss_vs_teacher=0.5)
    assert by["speedup_vs_teacher"].status == "passed" and "4.0" in by["speedup_vs_teacher"].message
    assert by["size_vs_teacher"].status == by["rss_vs_teacher"].status == "passed"
    assert result.exit_code == 0
    result, by = checks(5.0, report, size_vs_teacher=0.1, rss_vs_teacher=0.2)
    assert by["speedup_vs_teacher"].status == "failed" and result.exit_code == 1
    assert by["size_vs_teacher"].status == by["rss_vs_teacher"].status == "failed"
    result, by = checks(figures["speedup"], report)
    assert by["speedup_vs_teacher"].status == "inconclusive" and result.exit_code == 3
    assert "straddle" in by["speedup_vs_teacher"].message
    # two processes a side cannot bound the ratio at 95%: inconclusive, never a pass
    few = _teacher_report(write_target(tmp_path), speedup=4.0, rounds=2)
    _, by = checks(3.0, few)
    assert (
        by["speedup_vs_teacher"].status == "inconclusive"
        and "too few processes" in by["speedup_vs_teacher"].message
    )


def test_with_a_relative_budget_the_teacher_baseline_is_no_regression_baseline(tmp_path):
    # a student as slow as the teacher is judged by speedup_vs_teacher alone (failed), not also as an
    # inconclusive "regression" against a teacher it was never meant to equal
    report = _teacher_report(write_target(tmp_path, "measured.yaml"), speedup=1.0)
    target_file = write_target(tmp_path, "relative.yaml", budgets=_only({"speedup_vs_teacher": 3.0}))
    result = gate(report, load_target(target_file))
    assert [c.budget for c in result.checks] == ["speedup_vs_teacher"]
    assert result.checks[0].status == "failed" and result.exit_code == 1
    # without a relative budget the same baseline is a regression baseline, as ever
    plain = gate(report, load_target(write_target(tmp_path, "plain.yaml", budgets=_only({}))))
    assert any(c.budget.startswith("regression_latency") for c in plain.checks)


def test_a_relative_budget_without_the_teacher_is_not_judged(tmp_path):
    target_file = write_target(tmp_path, budgets=_only({"speedup_vs_teacher": 3, "size_vs_teacher": 0.2}))
    report = _report(target_file, [_entry("onnx-int8")])
    result = gate(report, load_target(target_file))
    assert {c.status for c in result.checks} == {"not_judged"} and result.exit_code == 4
    assert all("--baseline-artifact" in c.message for c in result.checks)
    assert _run(tmp_path, report, "--target", str(target_file)) == 4


def test_run_takes_the_gate_opt_outs_and_a_recipe_cannot_ask_inconclusive_to_pass_by_strict_false():
    from edgedistill.bench.gating import GateOptions
    from edgedistill.cli import build_parser
    from edgedistill.errors import ConfigError
    from edgedistill.pipeline import RunRecipe

    args = build_parser().parse_args(
        ["run", "r.yaml", "--out", "o", "--allow-skipped", "--allow-inconclusive"]
    )
    assert args.allow_skipped and args.allow_inconclusive
    assert GateOptions().gate_kwargs() == {"allow_skipped": False, "allow_inconclusive": False}
    assert GateOptions(strict=True).gate_kwargs()["allow_inconclusive"] is False  # the old opt-in: a no-op
    distill = {"teacher": {"path": "t"}, "student": {"layers": 1}}
    recipe = {"version": 1, "distill": distill, "gate": {"strict": False}}
    from edgedistill.config import validate

    with pytest.raises(ConfigError, match=r"gate\.strict.*allow_inconclusive"):
        validate(RunRecipe, recipe, "recipe.yaml")
    recipe["gate"] = {"allow_skipped": True}
    assert validate(RunRecipe, recipe, "recipe.yaml").gate.gate_kwargs()["allow_skipped"] is True


def test_a_teacher_that_was_not_measured_leaves_relative_budgets_not_judged(tmp_path):
    report = _teacher_report(write_target(tmp_path), speedup=4.0)
    teacher = report["artifacts"][1]
    teacher.update(status="skipped", reason="no candidate was measured against it")
    for key in ("latency", "memory", "accuracy"):
        teacher.pop(key)
    report["comparisons"] = []
    target_file = write_target(tmp_path, budgets=_only({"size_vs_teacher": 0.2}))
    [check] = gate(report, load_target(target_file)).checks
    assert check.status == "not_judged" and "teacher-fp32 was not measured" in check.message
