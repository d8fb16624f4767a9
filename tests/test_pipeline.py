"""`edgedistill run`: a tiny recipe end to end (distill -> export -> bench -> gate -> reports), re-runs
that skip finished stages, --force, resume after an interruption, and the gate's exit code.

One run folder is built once per module (about a minute on two cores); the other tests copy it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest
import yaml
from bench_helpers import FAST_TARGET, write_target

from edgedistill.cli import main as cli_main
from edgedistill.config import load_config
from edgedistill.pipeline import RunRecipe, run

ROOT = Path(__file__).resolve().parents[1]


def _recipe(teacher: Path, data: dict[str, Path], target: Path, **changes) -> dict:
    raw = {
        "version": 1,
        "distill": {
            "task": "sequence-classification",
            "teacher": {"path": str(teacher)},
            "student": {"layers": 1},
            "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 32},
            "training": {"max_steps": 6, "batch_size": 16, "lr": 1e-3, "save_steps": 3, "warmup_ratio": 0.0},
            "qat": {"mode": "int8", "start_fraction": 0.5, "calibration_batches": 2},
        },
        "export": {"formats": ["onnx", "openvino"], "precisions": ["fp32", "int8"], "parity_samples": 6},
        "bench": {"targets": [str(target)]},
    }
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return raw


def _write(folder: Path, raw: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_classifier, tiny_data):
    folder = tmp_path_factory.mktemp("pipeline")
    target = write_target(folder, "fast.yaml")
    recipe_path = _write(folder, _recipe(tiny_bert_classifier, tiny_data, target))
    events: list[tuple[str, str]] = []
    out = folder / "run"
    summary = run(
        load_config(RunRecipe, recipe_path),
        out,
        progress=False,
        on_stage=lambda s, st, _: events.append((s, st)),
    )
    return {"out": out, "summary": summary, "events": events, "recipe": recipe_path, "target": target}


def _copy_run(finished_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run["out"], out)
    # bench reports and states hold absolute paths of the original run; the copy is re-pointed
    state = json.loads((out / "run_state.json").read_text())
    text = json.dumps(state).replace(str(finished_run["out"]), str(out))
    (out / "run_state.json").write_text(text)
    return out


def _students(events: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The stages of the student; the teacher's reference export (stage `teacher`) runs among them."""
    return [e for e in events if e[0] != "teacher"]


def test_tiny_recipe_runs_every_stage_and_writes_the_reports(finished_run):
    out, summary, events = finished_run["out"], finished_run["summary"], finished_run["events"]
    stages = ["distill", "export", "teacher", "bench:test-fast", "teacher:test-fast"]
    assert [s for s, _ in events] == [*stages, "gate:test-fast"]
    assert summary["exit_code"] == 0, summary["verdicts"]
    assert (out / "distill" / "student" / "model.safetensors").is_file()
    for name in ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
        assert (out / "artifacts" / name / "manifest.json").is_file()
    rows = {r["artifact"]: r for r in summary["rows"]}
    assert set(rows) == {"onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"}
    for row in rows.values():
        assert row["status"] == "measured" and row["p95_ms"] > 0 and row["metric"] == "accuracy"
        assert 0.5 <= row["value"] <= 1.0 and row["size_mb"] > 0
        # against the teacher (issue 25): its speed-up over the teacher fp32 and its share of its accuracy
        assert row["speedup_vs_teacher"] > 0 and row["task_metric"] == "accuracy"
        assert row["pct_of_teacher"] > 50
    (teacher,) = summary["teacher_rows"]
    assert teacher["status"] == "measured" and teacher["p95_ms"] > 0 and teacher["task_value"] > 0.5
    assert (out / "reference" / "teacher" / "onnx-fp32" / "manifest.json").is_file()

    saved = json.loads((out / "summary.json").read_text())
    assert saved["exit_code"] == 0 and len(saved["rows"]) == 4
    assert set(saved["stages"]) == set(stages)
    md = (out / "summary.md").read_text()
    # every row says what ran, read back: fp32 artifacts as declared (the target's default policy)
    assert rows["onnx-int8"]["label"] == "onnx-int8 (ran f32+int8)" and rows["openvino-fp32"]["ran"] == "f32"
    assert "PASSED" in md and "| test-fast | onnx-int8 (ran f32+int8) | measured |" in md
    assert "| test-fast | teacher onnx-fp32 (ran f32) (reference) | measured |" in md
    assert "Measured on " in md
    page = (out / "report.html").read_text()
    assert (
        page.startswith("<!doctype html>")
        and "data:image/png;base64," in page
        and "onnx-int8 (ran f32+int8)" in page
    )
    assert "<script" not in page and not re.search(r"(src|href)=.http", page)  # opens offline
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1020, 660)
    import matplotlib.image

    assert matplotlib.image.imread(out / "pareto.png").shape[:2] == (660, 1020)
    for suffix in (".json", ".junit.xml", ".md"):
        assert (out / "gate" / f"test-fast{suffix}").is_file()


def test_rerun_skips_finished_stages_and_force_redoes_one(finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    recipe = load_config(RunRecipe, finished_run["recipe"])
    events: list[tuple[str, str]] = []
    summary = run(recipe, out, progress=False, on_stage=lambda s, st, _: events.append((s, st)))
    assert _students(events)[:3] == [
        ("distill", "skipped"),
        ("export", "skipped"),
        ("bench:test-fast", "skipped"),
    ]
    assert summary["exit_code"] == 0

    before = (out / "bench" / "test-fast.json").stat().st_mtime_ns
    events.clear()
    run(recipe, out, force=["bench"], progress=False, on_stage=lambda s, st, _: events.append((s, st)))
    assert _students(events)[:3] == [
        ("distill", "skipped"),
        ("export", "skipped"),
        ("bench:test-fast", "done"),
    ]
    assert (out / "bench" / "test-fast.json").stat().st_mtime_ns > before


def test_changed_export_config_redoes_export_and_bench_but_not_distill(finished_run, tmp_path):
    out = _copy_run(finished_run, tmp_path)
    raw = yaml.safe_load(finished_run["recipe"].read_text())
    raw["export"]["precisions"] = ["int8"]
    events: list[tuple[str, str]] = []
    summary = run(
        RunRecipe.model_validate(raw), out, progress=False, on_stage=lambda s, st, _: events.append((s, st))
    )
    assert _students(events)[:3] == [("distill", "skipped"), ("export", "done"), ("bench:test-fast", "done")]
    assert {r["artifact"] for r in summary["rows"]} == {"onnx-int8", "openvino-int8"}
    assert not (out / "artifacts" / "onnx-fp32").exists()  # stale artifacts of the old recipe are removed


def test_interrupted_run_resumes_at_the_stage_it_stopped_in(finished_run, tmp_path, monkeypatch):
    out = _copy_run(finished_run, tmp_path)
    recipe = load_config(RunRecipe, finished_run["recipe"])
    import edgedistill.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "stage_bench", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, out, force=["bench"], progress=False)
    state = json.loads((out / "run_state.json").read_text())
    assert state["stages"]["bench:test-fast"]["status"] == "running"
    assert state["stages"]["export"]["status"] == "done"

    monkeypatch.undo()
    events: list[tuple[str, str]] = []
    summary = run(recipe, out, progress=False, on_stage=lambda s, st, _: events.append((s, st)))
    assert _students(events)[:3] == [
        ("distill", "skipped"),
        ("export", "skipped"),
        ("bench:test-fast", "done"),
    ]
    assert summary["exit_code"] == 0


def test_a_failed_budget_is_the_exit_code_of_the_cli(finished_run, tmp_path, capsys):
    out = _copy_run(finished_run, tmp_path)
    strict_target = write_target(tmp_path, "fast.yaml", budgets={"artifact_size_mb": 0.001})
    raw = yaml.safe_load(finished_run["recipe"].read_text())
    raw["bench"]["targets"] = [str(strict_target)]
    recipe_path = _write(tmp_path, raw)
    code = cli_main(["run", str(recipe_path), "--out", str(out), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "gate:test-fast" in err and "FAILED" in err and "exit code 1" in err
    # budgets changed, measurements did not: the bench stage is reused, only the gate judges again
    assert re.search(r"bench:test-fast\s+skipped", err), err
    failed = json.loads((out / "summary.json").read_text())["rows"]
    assert all(any("artifact_size_mb" in c for c in r["failed_checks"]) for r in failed)


def test_bad_recipes_list_every_problem_and_unknown_force_is_refused(tmp_path, finished_run):
    from edgedistill.errors import ConfigError
    from edgedistill.pipeline import RunError

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"version": 1, "distill": {"teacher": {"path": "x"}, "student": {"layers": 0}}, "bogus": 1}
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config(RunRecipe, bad)
    assert "bogus" in str(err.value) and "distill.student.layers" in str(err.value)
    with pytest.raises(RunError, match="--force takes stages"):
        run(load_config(RunRecipe, finished_run["recipe"]), tmp_path / "x", force=["benchh"])


def test_example_recipes_validate_against_the_schema(tmp_path):
    import jsonschema

    from edgedistill.config import json_schema

    schema = json_schema(RunRecipe)
    for name in ("quickstart.yaml", "sst2.yaml", "fit.yaml"):
        raw = yaml.safe_load((ROOT / "examples" / name).read_text())
        jsonschema.validate(raw, schema)
        RunRecipe.model_validate(raw)
    assert FAST_TARGET["name"] == "test-fast"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b'{"version": 1}', "has no 'stages' object"),
        (b'{"version": 1, "stages": [1, 2]}', "has no 'stages' object"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (b'{"stages": {"distill": {"status": "done"', "is not valid JSON"),
        (b'{"stages": "\xff"}', "is not valid JSON"),
    ],
    ids=["no_stages", "stages_a_list", "a_list", "truncated", "not_utf8"],
)
def test_a_damaged_state_file_is_set_aside_and_every_stage_runs_again(tmp_path, caplog, text, problem):
    """Issue 25: these ended `edgedistill run` in "unexpected error KeyError / TypeError (a bug)"."""
    from edgedistill.pipeline import STATE_FILE, RunState

    path = tmp_path / STATE_FILE
    path.write_bytes(text)
    with caplog.at_level("WARNING", logger="edgedistill.pipeline"):
        state = RunState(tmp_path)
    assert state.get("distill") == {} and not state.is_done("distill", "fp")
    assert problem in caplog.text and str(path) in caplog.text and "every stage runs again" in caplog.text
    assert (tmp_path / f"{STATE_FILE}.damaged").read_bytes() == text
    state.mark("distill", status="done", fingerprint="fp", outputs={"student": "s"})
    assert state.is_done("distill", "fp")
    assert json.loads(path.read_text())["stages"]["distill"]["status"] == "done"


def test_a_damaged_stage_record_runs_that_stage_again(tmp_path, caplog):
    from edgedistill.pipeline import STATE_FILE, RunState

    stages = {
        "distill": {"status": "done", "fingerprint": "a", "outputs": {"student": "s"}},
        "export": ["done"],
        "bench:cpu": {"status": "done", "fingerprint": "b"},  # no outputs: nothing a skip could return
    }
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 1, "stages": stages}))
    with caplog.at_level("WARNING", logger="edgedistill.pipeline"):
        state = RunState(tmp_path)
    assert state.is_done("distill", "a")
    assert state.get("export") == {} and "stage 'export' is not an object" in caplog.text
    assert not state.is_done("bench:cpu", "b")


def test_the_distill_fingerprint_covers_every_teacher_of_teachers(tmp_path, tiny_bert_classifier, tiny_data):
    """Changing the second teacher's weights in place reruns distill: its folder is in the fingerprint."""
    from edgedistill.pipeline import _distill_fingerprint

    second = tmp_path / "second"
    shutil.copytree(tiny_bert_classifier, second)
    raw = _recipe(tiny_bert_classifier, tiny_data, tmp_path / "t.yaml")
    one = _distill_fingerprint(RunRecipe.model_validate(raw))
    raw["distill"]["teacher"] = None
    raw["distill"]["teachers"] = [{"path": str(tiny_bert_classifier)}, {"path": str(second)}]
    before = _distill_fingerprint(RunRecipe.model_validate(raw))
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    after = _distill_fingerprint(RunRecipe.model_validate(raw))
    assert len({one, before, after}) == 3
