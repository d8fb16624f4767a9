"""The run report against the teacher (issue 25): the teacher's row, each artifact's speed-up over it
and its task metric beside the teacher's; pareto.png with the teacher as a reference point and a
log latency axis fitted to the points, budgets drawn without stretching it.

Built from a hand-written run folder (the files the stages write), so no model runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedistill.plots import Budget, PlotPoint, pareto_plot
from edgedistill.report import write_reports


def _entry(name: str, p50: float, p95: float, size_mb: float, accuracy: dict) -> dict:
    return {
        "role": "candidate",
        "name": name,
        "label": name,
        "format": name.split("-")[0],
        "precision": name.split("-")[1],
        "status": "measured",
        "size_mb": size_mb,
        "latency": {"p50_ms": p50, "p95_ms": p95},
        "memory": {"peak_rss_mb": 200.0},
        "accuracy": {"status": "measured", **accuracy},
    }


def _run_folder(out: Path, task: str) -> dict:
    """A finished run with two artifacts and the teacher measured on target `cpu`."""
    (out / "distill").mkdir(parents=True)
    (out / "bench").mkdir()
    (out / "reference").mkdir()
    (out / "distill" / "distill_report.json").write_text(json.dumps({"task": task}))
    if task == "sequence-classification":
        own = [
            {"metric": "accuracy", "accuracy": 0.88, "agreement": 0.99},
            {"metric": "accuracy", "accuracy": 0.86, "agreement": 0.97},
        ]
        teacher_acc = {"metric": "accuracy", "accuracy": 0.90}
    else:
        own = [{"metric": "cosine to reference", "cosine_mean": 0.9999}] * 2
        teacher_acc = {"metric": "cosine to reference", "cosine_mean": 1.0}
    candidates = [_entry("onnx-fp32", 10.0, 12.0, 60.0, own[0]), _entry("onnx-int8", 4.0, 5.0, 15.0, own[1])]
    (out / "bench" / "cpu.json").write_text(json.dumps({"artifacts": candidates}))
    teacher = [_entry("onnx-fp32", 20.0, 24.0, 91.0, teacher_acc)]
    (out / "reference" / "cpu.json").write_text(json.dumps({"artifacts": teacher}))
    outputs = {"report": str(out / "reference" / "cpu.json"), "vs_teacher": None}
    if task == "feature-extraction":
        scored = [
            _entry("onnx-fp32", 9.0, 11.0, 60.0, {"cosine_mean": 0.87}),
            _entry("onnx-int8", 3.0, 4.0, 15.0, {"cosine_mean": 0.86}),
        ]
        outputs["vs_teacher"] = str(out / "reference" / "cpu.vs_teacher.json")
        Path(outputs["vs_teacher"]).write_text(json.dumps({"artifacts": scored}))
    return {"stages": {"teacher:cpu": {"status": "done", "outputs": outputs}}}


VERDICTS = [{"target": "cpu", "verdict": "passed", "exit_code": 0}]


def test_classification_rows_stand_against_the_teacher(tmp_path):
    out = tmp_path / "run"
    state = _run_folder(out, "sequence-classification")
    summary = write_reports(out, None, state, VERDICTS, 0)
    rows = {r["artifact"]: r for r in summary["rows"]}
    assert rows["onnx-int8"]["speedup_vs_teacher"] == pytest.approx(5.0)  # teacher p50 20 / 4
    assert rows["onnx-int8"]["pct_of_teacher"] == pytest.approx(100 * 0.86 / 0.90, abs=0.01)
    assert rows["onnx-fp32"]["task_metric"] == "accuracy" and rows["onnx-fp32"]["task_value"] == 0.88
    assert summary["teacher_rows"][0]["task_value"] == 0.90 and summary["teacher_rows"][0]["p95_ms"] == 24.0
    md = (out / "summary.md").read_text()
    assert "| cpu | teacher onnx-fp32 (reference) | measured |" in md and "reference, not gated" in md
    assert "| 5.00x |" in md and "95.6 %" in md and "| top-1 agreement 0.9700 |" in md
    page = (out / "report.html").read_text()
    assert "teacher onnx-fp32 (reference)" in page and "x vs teacher" in page
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_embedding_rows_show_the_cosine_to_the_teacher_not_only_to_their_student(tmp_path):
    out = tmp_path / "run"
    state = _run_folder(out, "feature-extraction")
    summary = write_reports(out, None, state, VERDICTS, 0)
    rows = {r["artifact"]: r for r in summary["rows"]}
    assert rows["onnx-int8"]["task_metric"] == "cosine to teacher" and rows["onnx-int8"]["task_value"] == 0.86
    assert rows["onnx-int8"]["value"] == 0.9999  # the bench's own check against the torch student stays
    assert rows["onnx-int8"]["pct_of_teacher"] is None
    md = (out / "summary.md").read_text()
    assert "cosine to teacher 0.8600" in md and "| cosine 0.9999 |" in md  # both, in their columns


def test_without_a_teacher_reference_the_report_is_as_before(tmp_path):
    out = tmp_path / "run"
    _run_folder(out, "sequence-classification")
    summary = write_reports(out, None, {"stages": {}}, VERDICTS, 0)
    assert summary["teacher_rows"] == [] and all(r["speedup_vs_teacher"] is None for r in summary["rows"])
    assert summary["pareto_png"] and "(reference)" not in (out / "summary.md").read_text()


def test_pareto_axis_is_log_and_fits_the_points_not_a_far_budget(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    points = [PlotPoint("a", 4.0, 0.86, "cpu", 15.0), PlotPoint("b", 10.0, 0.88, "cpu", 60.0)]
    teacher = [PlotPoint("teacher", 20.0, 0.90, "cpu")]
    budgets = [Budget("cpu", max_latency_ms=500.0, min_value=0.5)]
    assert pareto_plot(points, budgets, teacher, tmp_path / "p.png", metric="accuracy")
    ax = figures[0].axes[0]
    low, high = ax.get_xlim()
    assert ax.get_xscale() == "log" and 1.0 < low < 4.0 and 20.0 < high < 60.0  # 500 ms is not on the axis
    y_low, y_high = ax.get_ylim()
    assert 0.8 < y_low < 0.86 and 0.90 < y_high < 0.95  # nor is the 0.5 floor
    texts = [t.get_text() for t in ax.texts]
    assert any("500 ms" in t and "→" in t for t in texts) and any("floor 0.5" in t for t in texts)
    assert any(t.startswith("teacher") for t in texts)
    assert not pareto_plot([], budgets, [], tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_an_interleaved_comparison_with_the_teacher_gives_the_speedup(tmp_path):
    """Where a budget is relative to the teacher, the bench measured it interleaved: that ratio is shown."""
    out = tmp_path / "run"
    state = _run_folder(out, "sequence-classification")
    report = json.loads((out / "bench" / "cpu.json").read_text())
    report["artifacts"].append({**_entry("onnx-fp32", 20.0, 24.0, 91.0, {}), "role": "baseline"})
    medians = {"candidate_round_medians_ms": [4.0] * 6, "baseline_round_medians_ms": [18.0] * 6}
    report["comparisons"] = [{"candidate": "onnx-int8", "baseline": "onnx-fp32", **medians}]
    (out / "bench" / "cpu.json").write_text(json.dumps(report))
    summary = write_reports(out, None, state, VERDICTS, 0)
    rows = {r["artifact"]: r for r in summary["rows"]}
    assert rows["onnx-int8"]["speedup_vs_teacher"] == pytest.approx(4.5)  # 18 / 4, not the sequential 5.0
    assert rows["onnx-int8"]["speedup_basis"] == "interleaved"
    assert rows["onnx-fp32"]["speedup_basis"] == "sequential p50"
    assert "4.50x (interleaved)" in (out / "summary.md").read_text()


# A generalist's distill_report.json (compress/distill_phases.evaluate): the logits' metrics at the top,
# the agreement with each logits teacher keyed by its name, the sentence embedding's metrics nested.
GENERALIST_DISTILL = {
    "task": "sequence-classification",
    "teacher": {"layers": 2, "parameters": 4_000_000, "metrics": {"accuracy": 0.9, "examples": 256}},
    "student": {
        "layers": 1,
        "parameters": 1_000_000,
        "metrics": {
            "accuracy": 0.85,
            "agreement_with_teacher": 0.95,
            "kl_to_teacher": 0.12,
            "examples": 256,
            "agreement_with_teachers": {"sentiment": 0.95},
            "agreement_with_ensemble": 0.95,
            "sentence_embedding": {
                "recall_at_10": 0.5,
                "examples": 256,
                "cosine_to_teacher": 0.81,
                "teacher": "embedder",
            },
        },
    },
}


def test_a_generalist_student_shows_one_row_per_output_and_metric(tmp_path):
    out = tmp_path / "run"
    state = _run_folder(out, "sequence-classification")
    (out / "distill" / "distill_report.json").write_text(json.dumps(GENERALIST_DISTILL))
    write_reports(out, None, state, VERDICTS, 0)
    md = (out / "summary.md").read_text()
    assert "| output | metric | teacher | student |" in md
    assert "| logits | accuracy | 0.9000 | 0.8500 |" in md
    assert "| logits | agreement_with_teachers.sentiment | - | 0.9500 |" in md
    assert "| sentence_embedding | cosine_to_teacher | - | 0.8100 |" in md
    assert "| sentence_embedding | teacher | - | embedder |" in md
    assert "{" not in md  # no Python dict printed
    page = (out / "report.html").read_text()
    assert (
        "<td>sentence_embedding</td><td>cosine_to_teacher</td><td class='num'>-</td><td class='num'>0.8100</td>"
        in page
    )
    assert "<td>logits</td><td>accuracy</td><td class='num'>0.9000</td><td class='num'>0.8500</td>" in page
    assert "{&#x27;" not in page and "{'" not in page


def test_the_distill_console_summary_shows_a_generalist_as_rows(tmp_path, monkeypatch, capsys):
    """`edgedistill distill`'s closing lines: the same output/metric rows as summary.md, no Python dict."""
    import sys
    import types

    from edgedistill import cli

    monkeypatch.setattr("edgedistill.config.load_config", lambda *args, **kwargs: None)
    # distill itself is replaced by its report: no teacher, no torch
    fake = types.ModuleType("edgedistill.compress.distillation")
    fake.distill = lambda *args, **kwargs: GENERALIST_DISTILL
    monkeypatch.setitem(sys.modules, "edgedistill.compress.distillation", fake)
    monkeypatch.setenv("COLUMNS", "120")
    args = cli.build_parser().parse_args(["distill", "--out", str(tmp_path), "--quiet"])
    assert cli.cmd_distill(args) == 0
    err = capsys.readouterr().err
    assert "{" not in err, err
    lines = [" ".join(line.replace("│", " ").split()) for line in err.splitlines()]
    assert "logits accuracy 0.9000 0.8500" in lines, err
    assert "logits agreement_with_teachers.sentiment - 0.9500" in lines, err
    assert "sentence_embedding cosine_to_teacher - 0.8100" in lines, err
    assert any(str(tmp_path / "distill_report.json") in line for line in lines), err


def test_the_teacher_row_shows_the_same_figures_of_its_bench_entry_as_the_artifacts(tmp_path):
    out = tmp_path / "run"
    state = _run_folder(out, "sequence-classification")
    summary = write_reports(out, None, state, VERDICTS, 0)
    figures = ("status", "reason", "size_mb", "p50_ms", "p95_ms", "peak_rss_mb")
    teacher = summary["teacher_rows"][0]
    assert [teacher[k] for k in figures] == ["measured", None, 91.0, 20.0, 24.0, 200.0]
    int8 = next(r for r in summary["rows"] if r["artifact"] == "onnx-int8")
    assert [int8[k] for k in figures] == ["measured", None, 15.0, 4.0, 5.0, 200.0]
