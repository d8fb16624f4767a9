"""benchmarks/common.py `write_summary`: a quick-mode run (--rows N, --smoke, a non-default --steps)
never reaches the committed docs/results, and every benchmark with a quick mode says when it is in it.
`run_main`: every script's in-process library output goes to its third-party log, its own lines and
its children's errors to the console."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def common(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmarks_common_under_test", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "bench-results")
    monkeypatch.setattr(module, "PUBLISHED", tmp_path / "docs" / "results")
    return module


def test_a_quick_run_never_overwrites_the_published_summary(common, tmp_path, capsys):
    published = tmp_path / "docs" / "results" / "lm_smollm2" / "summary.json"
    full = tmp_path / "bench-results" / "lm_smollm2"
    full.mkdir(parents=True)
    common.write_summary(full, {"run": "full"}, "# full\n", echo=False)
    assert json.loads(published.read_text()) == {"run": "full"}

    # a quick run, even one pointed (--out) at the full run's folder, stays under bench-results
    for out in (full, tmp_path / "bench-results" / "lm_smollm2-rows16"):
        out.mkdir(parents=True, exist_ok=True)
        common.write_summary(out, {"run": "quick"}, "# quick\n", echo=False, quick=True)
        assert json.loads((out / "summary.json").read_text()) == {"run": "quick"}
        assert "[not published] quick mode" in capsys.readouterr().out
    assert json.loads(published.read_text()) == {"run": "full"}
    assert sorted(p.parent.name for p in (tmp_path / "docs" / "results").rglob("summary.json")) == [
        "lm_smollm2"
    ]


def _flags(tree: ast.AST) -> set[str]:
    return {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    }


def test_every_benchmark_with_a_quick_mode_tells_write_summary():
    """A script with --rows, --smoke or --steps passes quick= to every write_summary call."""
    checked = []
    for script in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        if not _flags(tree) & {"--rows", "--smoke", "--steps"}:
            continue
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "write_summary"
        ]
        for call in calls:
            assert "quick" in {kw.arg for kw in call.keywords}, (
                f"{script.name}:{call.lineno} publishes quick runs"
            )
        checked += [script.name] * bool(calls)
    assert {
        "lm_smollm2.py",
        "fit_sst2.py",
        "headline_sst2.py",
        "lm_sst2.py",
        "bench_harness.py",
        "gguf_qat_minilm.py",
    } <= set(checked)


def test_gguf_qat_minilm_publishes_only_its_default_steps(monkeypatch):
    """--steps N other than the default trains less (or more) than the docs' table: a check."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling `common`
    spec = importlib.util.spec_from_file_location(
        "gguf_qat_minilm_under_test", BENCHMARKS / "gguf_qat_minilm.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert not script.quick_run(script.parse_args([]))
    assert not script.quick_run(script.parse_args(["--steps", str(script.STEPS), "--seed", "1"]))
    assert script.quick_run(script.parse_args(["--steps", "20"]))


def _teachers_report():
    spec = importlib.util.spec_from_file_location(
        "teachers_sst2_report_under_test", BENCHMARKS / "teachers_sst2_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_teachers_sst2_bars_are_never_met_when_a_figure_is_missing(tmp_path):
    """The generalist's three bars and the data-free bar: judged from the bench report, and "not judged"
    (never met) when a figure is missing: here the embedding-only student's recall and the interleaved
    comparison of the generalist."""
    report = _teachers_report()

    def entry(name, accuracy, recall=None):
        embedding = (
            {} if recall is None else {"sentence_embedding": {"recall_at_10": recall, "cosine_mean": 0.9}}
        )
        return {
            "path": str(tmp_path / name),
            "status": "measured",
            "size_mb": 15.0,
            "latency": {"p50_ms": 2.0},
            "accuracy": {"accuracy": accuracy, **embedding},
        }

    measured = {
        "folders": {
            f"{n}: 3L-f384 ONNX int8 (QAT ranges)": str(tmp_path / n) for n in ("minilm", "generalist")
        },
        "table": {
            "artifacts": [entry("minilm", 0.88), entry("generalist", 0.885, recall=0.8)],
            "comparisons": [],
        },
    }
    g = report.generalist_summary(tmp_path, measured, {"torch_dev_accuracy": 0.89})
    assert g["bars"]["accuracy"]["verdict"] == "met" and g["bars"]["accuracy"]["ratio"] == round(
        0.885 / 0.89, 4
    )
    assert g["bars"]["recall_at_10"]["verdict"] == "not judged"  # no embedding-only student measured
    assert g["bars"]["latency"]["verdict"] == "not judged"  # no interleaved comparison
    assert g["all_bars_met"] is False and "not judged" in "\n".join(report.generalist_markdown(g))

    measured["table"]["comparisons"] = [
        {
            "candidate_path": str(tmp_path / "generalist"),
            "result": {
                "candidate_median_ms": 2.1,
                "baseline_median_ms": 2.0,
                "ratio": 1.05,
                "ratio_upper": 1.08,
                "candidate_rounds": 10,
                "verdict": "regressed",
                "reason": "+5.0% vs baseline",
            },
        }
    ]
    g = report.generalist_summary(tmp_path, measured, {"torch_dev_accuracy": 0.89})
    assert g["bars"]["latency"]["verdict"] == "not met" and g["bars"]["latency"]["p50_ratio"] == 1.05

    # data-free: no LM-written student measured -> its bar is not judged; a student without a figure neither
    measured["folders"] = {
        "minilm: x": str(tmp_path / "minilm"),
        "free-corpus: x": str(tmp_path / "free-corpus"),
    }
    measured["table"] = {"artifacts": [entry("minilm", 0.88), entry("free-corpus", None)], "comparisons": []}
    d = report.data_free_summary(tmp_path, measured, {"torch_dev_accuracy": 0.89})
    assert d["bar"]["verdict"] == "not judged"
    assert d["students"]["free-corpus"]["retention"]["verdict"] == "not judged"
    assert d["students"]["minilm"]["retention"]["verdict"] == "met"
    assert "| SST-2 train (real data) |" in "\n".join(report.data_free_markdown(d))


# --------------------------------------------------------------------------------------------
# Third-party output: every script's in-process library work runs inside common.run_main
# --------------------------------------------------------------------------------------------


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"


def test_every_benchmark_script_runs_its_main_through_run_main():
    """``sys.exit(run_main(main))``: warnings and library messages go to bench-results/logs, as the CLI's."""
    scripts = []
    for script in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        if not any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            continue
        guards = [node for node in tree.body if _is_main_guard(node)]
        assert len(guards) == 1, f"{script.name}: no `if __name__ == '__main__':`"
        calls = [ast.unparse(n) for n in ast.walk(guards[0]) if isinstance(n, ast.Call)]
        assert "sys.exit(run_main(main))" in calls, f"{script.name}: {calls}"
        assert "main()" not in calls, f"{script.name} calls main() outside run_main"
        scripts.append(script.name)
    assert len(scripts) >= 19 and {"headline_sst2.py", "run_all.py", "mpnet_teacher.py"} <= set(scripts)


_STARTS_A_CHILD = {"run", "call", "check_call", "check_output", "Popen"}


def test_every_child_a_benchmark_starts_says_where_its_stderr_goes():
    """Inside run_main file descriptor 2 is the third-party log, and a child inherits it: its error would
    not reach the console. So every child's stderr is said: captured, into a log, or ``sys.stderr``."""
    children = []
    for script in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            if not (isinstance(func, ast.Attribute) and ast.unparse(func.value) == "subprocess"):
                continue
            if func.attr in _STARTS_A_CHILD:
                said = {kw.arg for kw in node.keywords} & {"stderr", "capture_output"}
                assert said, f"{script.name}:{node.lineno} starts a child whose stderr is the third-party log"
                children.append(f"{script.name}:{node.lineno}")
    assert len(children) >= 8, children


RUN_MAIN_SCRIPT = """
import logging, os, subprocess, sys, warnings
from pathlib import Path

sys.path.insert(0, {benchmarks!r})
import common

common.RESULTS = Path(sys.argv[1])


def main():
    print("progress on stdout", flush=True)
    print("[done] our own line on stderr", file=sys.stderr)
    warnings.warn("a library deprecates something", FutureWarning)
    logging.getLogger("somelib").warning("somelib complains")
    os.write(2, b"native code prints to fd 2\\n")
    say = [sys.executable, "-c", "import sys; print(sys.argv[1], file=sys.stderr)"]
    subprocess.run([*say, "a child told to use the console"], check=True, stderr=sys.stderr)
    subprocess.run([*say, "a child left to inherit fd 2"], check=True)
    log = common.third_party_log("demo_bench").read_text(encoding="utf-8")
    print("live log:", "somelib complains" in log and "native code prints" in log, flush=True)
    failing = [sys.executable, "-c", "import sys; print('child progress'); sys.exit('child error: bad input')"]
    common.run_logged(failing, common.RESULTS / "commands.log")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
"""


def test_run_main_keeps_the_scripts_lines_on_the_console_and_library_output_in_its_log(tmp_path):
    import subprocess

    script = tmp_path / "demo_bench.py"
    script.write_text(RUN_MAIN_SCRIPT.format(benchmarks=str(BENCHMARKS)), encoding="utf-8")
    results = tmp_path / "results"
    results.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(results)], capture_output=True, text=True, timeout=120
    )
    log_file = results / "logs" / "demo_bench.third-party.log"
    console, log = proc.stdout + proc.stderr, log_file.read_text(encoding="utf-8")
    assert proc.returncode == 1 and "CalledProcessError" in proc.stderr  # the failure's traceback
    assert proc.stderr.count(f"[log] third-party warnings and messages: {log_file}") == 1
    assert "progress on stdout" in proc.stdout and "[done] our own line on stderr" in proc.stderr
    assert "live log: True" in proc.stdout  # written as it happens: a benchmark killed hours in keeps it
    assert "a child told to use the console" in proc.stderr
    # the failing CLI step's error: its output is in commands.log, its last lines on the console
    assert "| child error: bad input" in proc.stderr and "| child progress" in proc.stderr
    assert "child error: bad input" in (results / "commands.log").read_text(encoding="utf-8")
    for noise in ("FutureWarning", "somelib complains", "native code prints", "a child left to inherit"):
        assert noise not in console, console
        assert noise in log, log
    assert "our own line" not in log and "child error" not in log


def test_fit_sst2_bars_compare_each_winner_with_the_hand_made_headline_and_in_its_runtime():
    """Each winner against the hand-made headline (ONNX Runtime int8, the issue's bar) and against the
    hand-made student in the winner's runtime: met only when dev accuracy and speed-up are both at
    least the hand-made's; a slower winner whose bounds overlap is "not met (within noise)"; a
    missing hand-made row or search cost ratio is "not judged"."""
    spec = importlib.util.spec_from_file_location(
        "fit_sst2_report_under_test", BENCHMARKS / "fit_sst2_report.py"
    )
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)

    def row(name, acc, speedup, bounds):
        return {"artifact": name, "dev_accuracy": acc, "speedup": speedup, "speedup_bounds": bounds}

    table = [
        row("fit-3x winner L0-2-5 onnx-int8", 0.895, 4.1, [3.9, 4.4]),
        row("fit-6x winner L0-2-3-5_f384 onnx-int8", 0.884, 5.3, [5.0, 5.6]),
        row("fit-6x winner L0-2-3-5_f384 openvino-int8", 0.884, 6.0, [5.7, 6.3]),
        row("headline 3L-f384 onnx-int8 (QAT ranges, hand-made)", 0.8807, 5.0, [4.7, 5.3]),
    ]
    searches = {
        "fit-3x": {"cost": {"ratio": 1.4}},
        "fit-6x": {"cost": {"ratio": None, "not_judged": "resumed"}},
    }
    bars = {b["bar"]: b for b in report.bars(table, searches)}
    assert bars["fit-3x winner onnx-int8 vs the hand-made headline (onnx-int8)"]["verdict"] == "not met"
    assert bars["fit-6x winner onnx-int8 vs the hand-made headline (onnx-int8)"]["verdict"] == "met"
    # the OpenVINO winner beats the ONNX Runtime headline; no hand-made OpenVINO row to hold it to
    assert bars["fit-6x winner openvino-int8 vs the hand-made headline (onnx-int8)"]["verdict"] == "met"
    assert bars["fit-6x winner vs hand-made, openvino-int8"]["verdict"] == "not judged"
    assert "fit-6x winner vs hand-made, onnx-int8" not in bars  # the same comparison as the headline's
    faster_hand = [
        *table,
        row("headline 3L-f384 openvino-int8 (QAT ranges, hand-made)", 0.8807, 9.0, [8.5, 9.5]),
    ]
    strict = {b["bar"]: b for b in report.bars(faster_hand, {})}
    assert strict["fit-6x winner vs hand-made, openvino-int8"]["verdict"] == "not met"
    assert bars["fit-3x search CPU <= 2x the winner's distillation"]["verdict"] == "met"
    assert bars["fit-6x search CPU <= 2x the winner's distillation"]["verdict"] == "not judged"
    # the head-to-head run (winner interleaved with the hand-made artifact) decides speed when present
    key = "fit-3x winner L0-2-5 onnx-int8 vs onnx-int8"
    bar = "fit-3x winner onnx-int8 vs the hand-made headline (onnx-int8)"
    for verdict, expected in (("unchanged", "met"), ("improved", "met"), ("regressed", "not met"),
                              ("inconclusive", "not judged")):  # fmt: skip
        direct = {
            "verdict": verdict,
            "speedup_over_hand_made": 1.0,
            "bounds": [0.9, 1.1],
            "processes": [10, 10],
        }
        judged = {b["bar"]: b for b in report.bars(table, searches, {key: direct})}[bar]
        assert judged["verdict"] == expected, verdict
    less_accurate = [row("fit-3x winner L0-2-5 onnx-int8", 0.87, 4.1, [3.9, 4.4]), table[-1]]
    direct = {
        "verdict": "improved",
        "speedup_over_hand_made": 1.2,
        "bounds": [1.1, 1.3],
        "processes": [10, 10],
    }
    assert report.bars(less_accurate, {}, {key: direct})[0]["verdict"] == "not met"
    # an inconclusive head-to-head measured again with more processes: the second run decides, the
    # first is shown beside it
    again = {**direct, "verdict": "regressed", "speedup_over_hand_made": 0.91, "bounds": [0.84, 0.99],
             "processes": [40, 40], "first_run": {**direct, "verdict": "inconclusive", "bounds": [0.86, 1.39],
                                                  "processes": [20, 20]}}  # fmt: skip
    judged = report.bars(table, searches, {key: again})
    line = report.markdown({"cpu": {}, "rows": None, "teacher_dev_accuracy": 0.89, "table": [], "searches": {},
                            "bars": judged})  # fmt: skip
    assert (
        judged[0]["verdict"] == "not met"
        and "(a first run, 20 + 20 processes: 1.20x, 0.86-1.39, inconclusive)" in line
    )
    # the winner's final gate is shown with the search, never only "done"
    gated = report.markdown({"cpu": {}, "rows": None, "teacher_dev_accuracy": 0.89, "table": [], "bars": [],
                             "searches": {"fit-6x": {"status": "done", "winner": "L0-2-3-5_f384", "winner_reason": "best",
                                                     "message": None, "cost": {}, "final_gates": [
                                                         {"target": "cpu", "verdict": "INCONCLUSIVE", "exit_code": 3,
                                                          "not_passed": ["speedup_vs_teacher: straddles 6x"]}]}}})  # fmt: skip
    assert "gate `cpu`: **INCONCLUSIVE** (exit 3); speedup_vs_teacher: straddles 6x" in gated
    close = report.bars([row("fit-3x winner L0-2-5 onnx-int8", 0.9, 4.8, [4.5, 5.1]), table[-1]], {})
    assert close[0]["verdict"] == "not met (within noise)"
    assert "| fit-3x winner onnx-int8 vs the hand-made headline (onnx-int8) | not met |" in report.markdown(
        {
            "cpu": {},
            "rows": None,
            "teacher_dev_accuracy": 0.89,
            "table": [],
            "searches": {},
            "bars": list(bars.values()),
        }
    )


def test_fit_sst2_lists_the_teacher_of_every_interleaved_comparison_in_the_order_measured():
    """The speed-up over the teacher moves between runs because the teacher's own latency does: the
    summary lists every comparison with the teacher fp32 (and only those), oldest first."""
    spec = importlib.util.spec_from_file_location(
        "fit_sst2_report_drift_under_test", BENCHMARKS / "fit_sst2_report.py"
    )
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)

    def comp(candidate, baseline_path, cand, base):
        return {"candidate": candidate, "baseline_path": baseline_path, "candidate_rounds": len(cand),
                "candidate_round_medians_ms": cand, "baseline_round_medians_ms": base}  # fmt: skip

    late = {"created_utc": "2026-12-07T22:00:00Z", "comparisons": [
        comp("openvino-int8", "/r/fit-6x/run/reference/teacher/onnx-fp32", [3.0, 3.2, 2.8], [18.0, 19.0, 17.0]),
        comp("openvino-int8", "/r/headline_sst2/artifacts/ours/onnx-int8", [3.0], [3.1]),  # a head-to-head
    ]}  # fmt: skip
    early = {"created_utc": "2026-12-07T17:00:00Z", "comparisons": [
        comp("onnx-int8", "/r/fit-3x/run/fit/teacher/onnx-fp32", [4.0, 5.0], [25.0, 27.0])]}  # fmt: skip
    rows = report.teacher_drift([("final run", late), ("finalist", early)])
    assert [r["report"] for r in rows] == ["finalist", "final run"]
    assert rows[0]["teacher_ms"] == 26.0 and rows[1]["speedup_of_medians"] == 6.0
    text = report.drift_markdown(rows)
    assert "across 2 interleaved comparisons" in text and "18.0-26.0 ms" in text
