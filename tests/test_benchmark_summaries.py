"""benchmarks/common.py `write_summary`: a quick-mode run (--rows N, --smoke, a non-default --steps)
never reaches the committed docs/results, and every benchmark with a quick mode says when it is in it."""

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
