"""Hostile bench reports and baselines read by `gate`: exit 2 with the reason, never a pass."""

from __future__ import annotations

import json

import pytest
from _artifacts_helpers import bench_report, report_entry
from bench_helpers import FAST_TARGET, write_target

from edgedistill.bench.cli import main
from edgedistill.bench.gating import GateInputError, gate


@pytest.fixture
def target(tmp_path):
    # only the budgets the entries below carry figures for: an unmeasured one (accuracy) exits 4
    budgets = {**dict.fromkeys(FAST_TARGET["budgets"]), "p50_latency_ms": 10, "artifact_size_mb": 50}
    return write_target(tmp_path, budgets={**budgets, "peak_rss_mb": 500})


def _write(tmp_path, report, name="report.json"):
    path = tmp_path / name
    path.write_text(report if isinstance(report, str) else json.dumps(report))
    return path


def _gate_exit(tmp_path, target, report, capsys, *extra) -> tuple[int, str]:
    code = main(["gate", str(_write(tmp_path, report)), "--target", str(target), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_good_report_passes(tmp_path, target, capsys):
    assert _gate_exit(tmp_path, target, bench_report(target, [report_entry()]), capsys)[0] == 0


def test_truncated_report(tmp_path, target, capsys):
    text = json.dumps(bench_report(target, [report_entry()]))
    code, out = _gate_exit(tmp_path, target, text[: len(text) // 2], capsys)
    assert code == 2 and "report.json" in out and "line 1 column" in out and "truncated" in out


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_another_report_version(tmp_path, target, capsys, version):
    report = bench_report(target, [report_entry()])
    report["report_version"] = version
    code, out = _gate_exit(tmp_path, target, report, capsys)
    assert code == 2 and "report_version" in out


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_figures(tmp_path, target, capsys, constant):
    text = json.dumps(bench_report(target, [report_entry()])).replace(
        '"p50_ms": 4.0', f'"p50_ms": {constant}'
    )
    assert constant in text
    code, out = _gate_exit(tmp_path, target, text, capsys)
    assert code == 2 and constant in out and "report.json" in out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("latency", "p50_ms"), -1.0),
        (("size_mb",), -5.0),
        (("memory", "peak_rss_mb"), -100.0),
        (("latency", "n"), -3),
    ],
)
def test_negative_figures_never_pass(tmp_path, target, capsys, path, value):
    entry = report_entry()
    node = entry
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    code, out = _gate_exit(tmp_path, target, bench_report(target, [entry]), capsys)
    assert code == 2 and path[-1] in out and "negative" in out


def test_negative_latency_samples(tmp_path, target, capsys):
    entry = report_entry()
    entry["latency"]["samples_ms"][3] = -0.5
    code, out = _gate_exit(tmp_path, target, bench_report(target, [entry]), capsys)
    assert code == 2 and "samples_ms[3]" in out


@pytest.mark.parametrize("strip", ["latency", "all"])
def test_stripped_measurements_never_pass_even_without_strict(tmp_path, target, capsys, strip):
    entry = report_entry()
    if strip == "all":
        for key in ("latency", "memory", "size_mb", "accuracy"):
            entry.pop(key)
    else:
        entry["latency"] = None
    code, out = _gate_exit(tmp_path, target, bench_report(target, [entry]), capsys)
    assert code == 2 and "latency figures are missing" in out


def test_entry_that_is_not_an_object(tmp_path, target, capsys):
    code, out = _gate_exit(tmp_path, target, bench_report(target, ["onnx-int8"]), capsys)
    assert code == 2 and "artifacts[0]" in out


def test_entry_without_name_or_status(tmp_path, target, capsys):
    entry = report_entry()
    del entry["name"]
    entry["status"] = "great"
    code, out = _gate_exit(tmp_path, target, bench_report(target, [entry]), capsys)
    assert code == 2 and "artifacts[0].name" in out and "artifacts[0].status" in out


def test_comparison_with_missing_rounds(tmp_path, target, capsys):
    report = bench_report(target, [report_entry()])
    report["comparisons"] = [{"candidate": "onnx-int8", "baseline": "b", "candidate_round_medians_ms": [1.0]}]
    code, out = _gate_exit(tmp_path, target, report, capsys)
    assert code == 2 and "baseline_round_medians_ms" in out


def test_hostile_baseline_report(tmp_path, target, capsys):
    good = _write(tmp_path, bench_report(target, [report_entry()]), "good.json")
    base = report_entry(p50=3.0)
    base["latency"]["rounds"] = [{"n": 10}]  # no median: was a KeyError
    bad = _write(tmp_path, bench_report(target, [base]), "base.json")
    code = main(["gate", str(good), "--target", str(target), "--baseline", str(bad)])
    out = capsys.readouterr()
    assert code == 2 and "base.json" in out.err and "median_ms" in out.err


def test_baseline_with_negative_latency(tmp_path, target):
    good = bench_report(target, [report_entry()])
    base = bench_report(target, [report_entry(p50=-3.0)])
    with pytest.raises(GateInputError, match="negative"):
        gate(good, target, baseline=base)


def test_python_api_checks_dict_reports_too(target):
    entry = report_entry()
    entry["latency"]["p50_ms"] = float("nan")
    with pytest.raises(GateInputError, match="finite"):
        gate(bench_report(target, [entry]), target)


def test_report_not_utf8(tmp_path, target, capsys):
    path = tmp_path / "report.json"
    path.write_bytes(b"\xff\xfe{}")
    assert main(["gate", str(path), "--target", str(target)]) == 2
    assert "report.json" in capsys.readouterr().err
