"""`edgedistill fit` on tiny models, measured for real on this host: feasible and impossible budgets,
`--screen-only` and the full search resuming from it, the screening on a loopback ssh device,
`kill -9` and resume, several workers on one study (SQLite file and a real PostgreSQL).

Budgets are set from what the tiny teacher measures here (artifact size relative to the teacher:
deterministic on every CPU), never from a latency a test would have to judge.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from bench_helpers import write_target

from conftest import tiny_qat_recipe
from edgedistill.cli import main as cli_main
from edgedistill.config import load_config
from edgedistill.errors import ConfigError
from edgedistill.pipeline import RunRecipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _recipe(teacher: Path, data: dict[str, Path], target: Path, cache: Path, **fit) -> dict:
    raw = {
        "version": 1,
        "distill": {
            "task": "sequence-classification",
            "teacher": {"path": str(teacher)},
            "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 32},
            "training": {
                "max_steps": 8,
                "batch_size": 16,
                "lr": 1e-3,
                "save_steps": 100,
                "warmup_ratio": 0.0,
            },
            "qat": {"mode": "int8", "start_fraction": 0.5, "calibration_batches": 2},
        },
        "export": {"parity_samples": 4, "max_length": 32},
        "bench": {"targets": [str(target)], "teacher": False},
        "fit": {
            "space": {
                "layers": [1, 2],
                "intermediate_size": [32, None],
                "exports": [{"format": "onnx", "precision": "fp32"}],
            },
            # the tests' own load is no reason to measure again: every screening run is cached
            "cost": {
                "cache_dir": str(cache),
                "cache_max_other_cpu": 1.0,
                "measurement": {"min_iterations": 20, "min_seconds": 0.05, "warmup_iterations": 2},
            },
            "proxy": {"validation_fraction": 0.15, "min_steps": 2, "max_steps": 6, "reduction_factor": 3},
            "finalists": 1,
            **fit,
        },
    }
    return raw


def _write(folder: Path, raw: dict) -> Path:
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fit_setup(tmp_path_factory, tiny_bert_classifier, tiny_data):
    folder = tmp_path_factory.mktemp("fit")
    # budgets that only some shapes meet: at most 75 % of the teacher's size; nothing else can fail
    target = write_target(
        folder,
        "fit-target.yaml",
        budgets={
            "size_vs_teacher": 0.75,
            "max_accuracy_drop": 0.5,
            "min_accuracy": 0.0,
            "min_agreement": 0.0,
        },
    )
    return {
        "folder": folder,
        "target": target,
        "cache": folder / "cost-cache",
        "teacher": tiny_bert_classifier,
        "data": tiny_data,
    }


@pytest.fixture(scope="module")
def finished_fit(fit_setup):
    """`fit --screen-only` first (the user's first question), then the full search in the same OUT."""
    from edgedistill.fit import cost, fit

    s = fit_setup
    path = _write(s["folder"], _recipe(s["teacher"], s["data"], s["target"], s["cache"]))
    recipe = load_config(RunRecipe, path)
    out = s["folder"] / "run"
    measured, real = [], cost.measure

    def counting(model_dir, choice, *args, **kwargs):
        measured.append((Path(model_dir).name, choice.format, choice.precision))
        return real(model_dir, choice, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cost, "measure", counting)
        code = cli_main(["fit", str(path), "--out", str(out), "--quiet", "--screen-only"])
    screened = json.loads((out / "fit" / "fit_report.json").read_text())
    candidates_md = (out / "fit" / "candidates.md").read_text()

    def measure_again(*args, **kwargs):
        raise AssertionError(f"the full search measured {args[0]} again after --screen-only")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cost, "measure", measure_again)
        report = fit(recipe, out, progress=False)
    return {"out": out, "report": report, "recipe": recipe, "screen_only": {
        "code": code, "report": screened, "measured": measured, "candidates_md": candidates_md}}  # fmt: skip


def test_a_budget_only_some_shapes_meet_is_met_by_the_winner_and_the_gate_passes_it(finished_fit):
    out, report = finished_fit["out"], finished_fit["report"]
    assert report["exit_code"] == 0, report
    candidates = {c["shape"]["key"]: c for c in report["candidates"]}
    # the teacher-sized shape (both layers, the full FFN) is exactly the teacher: over 0.75 x its size
    assert not candidates["L0-1"]["feasible"] and "size_vs_teacher" in candidates["L0-1"]["why"]
    assert sum(c["feasible"] for c in candidates.values()) == 3
    winner = report["winner"]["shape"]["key"]
    assert candidates[winner]["feasible"]
    gate = json.loads((out / "gate" / "test-fast.json").read_text())
    assert gate["exit_code"] == 0 and gate["verdict"].startswith("PASSED"), gate
    # the search's report and candidates.md carry the final gate, not only "done"
    assert report["final_gates"] == [{"target": "test-fast", "verdict": gate["verdict"], "exit_code": 0}]
    assert f"gate `test-fast`: **{gate['verdict']}** (exit 0" in (out / "fit" / "candidates.md").read_text()
    size = next(c for c in gate["checks"] if c["budget"] == "size_vs_teacher")
    assert size["status"] == "passed" and size["value"] <= 0.75
    # the final run exports exactly the winner's pairs that passed at full measurement
    passed = [a["artifact"].split("-", 1) for a in report["winner"]["artifacts"] if a["passes_cost"]]
    exported = json.loads((out / "artifacts" / "export_report.json").read_text())
    assert exported["config"]["only"] == [{"format": f, "precision": p} for f, p in passed]
    # an ordinary run folder plus fit/
    for path in ("distill/student/config.json", "run_state.json", "summary.json", "report.html",
                 "fit/fit_report.json", "fit/candidates.md", "fit/costs.json", "fit/study.db"):  # fmt: skip
        assert (out / path).is_file(), path
    # ranked on the validation split carved from the training rows, never on the eval split
    split = json.loads((out / "fit" / "data" / "split.json").read_text())
    assert split["val_count"] > 0 and split["train_count"] + split["val_count"] == 256
    assert report["times"]["cost_cpu_s"] > 0 and report["times"]["proxy_cpu_s"] > 0
    assert report["search_cpu_vs_winner_distill"] > 0 and report["winner"]["distill_cpu_s"] > 0
    # people: the candidates with why each stopped, the plot, and the run report's fit section
    assert (out / "fit" / "pareto.png").is_file() and report["pareto_png"]
    assert "fit: the searched student" in (out / "report.html").read_text()
    assert "size_vs_teacher" in (out / "fit" / "candidates.md").read_text()


def test_the_proxy_trains_the_largest_feasible_shape_first(finished_fit):
    """Asynchronous successive halving promotes whatever beats the trials before it: the likeliest
    best (the largest measured artifact) goes first, so the rest can stop at the first rung."""
    report = finished_fit["report"]

    def size(candidate):
        return max(e["figures"]["size_mb"] for e in candidate["exports"] if e["feasible"])

    feasible = [c for c in report["candidates"] if c["feasible"]]
    first = min((c for c in feasible if c["trial"] is not None), key=lambda c: c["trial"])
    assert first["shape"]["key"] == max(feasible, key=size)["shape"]["key"]


def test_promising_first_orders_by_the_largest_feasible_artifact_then_by_key():
    from edgedistill.fit.proxy import promising_first

    def row(layers, sizes):
        exports = [{"feasible": ok, "figures": {"size_mb": mb}} for mb, ok in sizes]
        return {"shape": {"layers": layers}, "exports": exports}

    rows = [
        row([0, 5], [(14.0, True), (99.0, False)]),  # an infeasible export's size does not count
        row([0, 2, 5], [(20.0, True), (21.0, True)]),
        row([0, 1, 3, 5], [(None, True)]),  # no size measured: last
        row([0, 3], [(21.0, True)]),  # ties with L0-2-5 at 21 MB: by key
    ]
    assert [s.key for s in promising_first(rows)] == ["L0-2-5", "L0-3", "L0-5", "L0-1-3-5"]


def test_finalists_are_the_trials_that_ran_every_rung_then_the_furthest_pruned_runners_up():
    """The largest shape, trained first, often prunes every other at the first rung: the second
    finalist's place goes to the best of the furthest-reaching pruned trials, and says so."""
    from edgedistill.fit.proxy import finalist_order
    from edgedistill.fit.report import candidate_rows

    def trial(key, state, steps, value, pruned_at=None):
        return {"trial": 0, "state": state, "shape": {"layers": [0], "key": key}, "proxy_value": value,
                "proxy_steps": steps, "rung_values": {}, "pruned_at": pruned_at}  # fmt: skip

    trials = [
        trial("small", "pruned", 100, 0.86, "rung 0 (100 steps): 0.8600"),
        trial("big", "complete", 900, 0.93),
        trial("mid", "pruned", 300, 0.90, "rung 1 (300 steps): 0.9000"),
        trial("mid2", "pruned", 100, 0.91, "rung 0 (100 steps): 0.9100"),
        trial("running", "running", 0, None),
    ]
    assert [t["shape"]["key"] for t in finalist_order(trials)] == ["big", "mid", "mid2", "small"]
    row = {"shape": {"key": "mid"}, "exports": [], "feasible": True}
    final = {"shape": {"key": "mid"}, "passes": True, "artifacts": []}
    (mid,) = candidate_rows([row], trials, [final])
    assert (
        mid["why"]
        == "finalist (a runner-up pruned at rung 1 (300 steps): 0.9000); passed every cost budget at full measurement"
    )
    (mid,) = candidate_rows([row], trials, [])
    assert mid["why"] == "pruned by successive halving at rung 1 (300 steps): 0.9000"


def test_screening_rejects_a_size_over_budget_beyond_the_small_size_margin_and_keeps_a_close_latency():
    """A file's size is exact: 7 % over a size budget is over (the fit-3x search trained a 4-layer
    student 7 % over size_vs_teacher that its finalist's export could never pass); 7 % short of a
    speed-up is noise the full measurement decides."""
    from edgedistill.fit.config import CostConfig
    from edgedistill.fit.cost import judge

    teacher = {"status": "measured", "p50_ms": 20.0, "size_mb": 91.0}
    measured = {"status": "measured", "p50_ms": 20.0 / 2.8, "size_mb": 91.0 * 0.214}
    budgets = {"speedup_vs_teacher": 3, "size_vs_teacher": 0.2}
    size_margin = CostConfig().size_margin
    verdict = judge(measured, teacher, budgets, 1.25, size_margin)
    assert [o.split(":")[0] for o in verdict.over] == ["size_vs_teacher"] and not verdict.feasible
    assert [c.split(":")[0] for c in verdict.close] == ["speedup_vs_teacher"]
    within = judge({**measured, "size_mb": 91.0 * 0.203}, teacher, budgets, 1.25, size_margin)
    assert within.feasible and [c.split(":")[0] for c in within.close] == [
        "speedup_vs_teacher",
        "size_vs_teacher",
    ]


def test_finalist_cpu_file_reads_the_ledger_and_refuses_a_pre_ledger_resumed_one(tmp_path):
    """A file written before the CPU ledger by a resumed distillation covers its finishing session
    only: against it the search would look dearer than it is, so the ratio is None and the record
    says why and what to do. A ledger's total (any number of sessions) is judged."""
    from edgedistill.fit.candidates import _distill_cpu
    from edgedistill.io import atomic_write_json

    cpu_file = tmp_path / "final" / "L0-2-5" / "distill_cpu.json"
    cpu_file.parent.mkdir(parents=True)
    assert _distill_cpu(cpu_file)["distill_cpu_note"] == "not recorded"
    atomic_write_json(cpu_file, {"cpu_s": 812.5, "sessions": 3})
    assert _distill_cpu(cpu_file) == {
        "distill_cpu_s": 812.5,
        "distill_cpu_sessions": 3,
        "distill_reused_from": None,
        "distill_cpu_note": None,
    }
    # a distillation restored from fit.distill_cache keeps what it cost where it ran, and says where
    atomic_write_json(cpu_file, {"cpu_s": 812.5, "sessions": 1, "complete": True, "reused_from": "/a/final"})
    assert _distill_cpu(cpu_file)["distill_cpu_s"] == 812.5
    assert _distill_cpu(cpu_file)["distill_reused_from"] == "/a/final"
    atomic_write_json(cpu_file, {"cpu_s": 312.0, "resumed": True})
    record = _distill_cpu(cpu_file)
    assert record["distill_cpu_s"] is None
    assert "312.0 CPU s of its later sessions only" in record["distill_cpu_note"]
    assert str(cpu_file.parent / "distill") in record["distill_cpu_note"]
    atomic_write_json(cpu_file, {"cpu_s": 400.0, "sessions": 1, "complete": False})
    assert _distill_cpu(cpu_file)["distill_cpu_s"] is None


def test_screen_only_measures_each_shape_and_export_once_and_reports_the_feasible_set(finished_fit):
    screen = finished_fit["screen_only"]
    report = screen["report"]
    assert screen["code"] == 0 and report["status"] == "screened" and report["exit_code"] == 0, report
    assert {r["shape"] for r in report["feasible"]} == {"L1", "L1_f32", "L0-1_f32"}
    assert all(r["exports"] == ["onnx-fp32"] for r in report["feasible"])
    rows = {c["shape"]["key"]: c for c in report["candidates"]}
    assert set(rows) == {"L1", "L1_f32", "L0-1", "L0-1_f32"}
    assert not rows["L0-1"]["feasible"] and "size_vs_teacher" in rows["L0-1"]["why"]
    assert rows["L1"]["why"].startswith("feasible at screening: onnx-fp32")
    # measured cheapest first: the three smaller shapes fix the cost model's size line, and the full-size
    # L0-1 (about the teacher's size against 0.75) is skipped, unmeasured, with its prediction
    (skipped,) = rows["L0-1"]["exports"]
    assert skipped["figures"]["status"] == "skipped" and skipped["predicted"]["budget"] == "size_vs_teacher"
    assert skipped["predicted"]["points"] == 3 and "cost model" in rows["L0-1"]["why"]
    for key, row in rows.items():  # every other candidate's measured cost and verdict
        (e,) = row["exports"]
        if key != "L0-1":
            assert e["figures"]["status"] == "measured" and e["figures"]["size_mb"] > 0 and e["key"], e
        assert e["feasible"] == row["feasible"]
    # each (shape, export) measured once in this session, or served by the device cache: never twice
    fresh = [
        (k, e["format"], e["precision"])
        for k, c in rows.items()
        for e in c["exports"]
        if not e["cached"] and e["figures"]["status"] != "skipped"
    ]
    fresh += [] if report["teacher"].get("cached") else [("teacher", "onnx", "fp32")]
    assert sorted(screen["measured"]) == sorted(fresh) == sorted(set(fresh))
    assert report["times"]["cost_cpu_s"] > 0 and "proxy_cpu_s" not in report["times"]
    assert (
        "L0-1 | onnx-fp32" in screen["candidates_md"]
        and "over: size_vs_teacher: predicted" in screen["candidates_md"]
        and "skipped by the cost model" in screen["candidates_md"]
    )


def test_the_full_search_resumes_from_the_screening_and_counts_its_cpu_seconds(finished_fit, tmp_path):
    screened, report = finished_fit["screen_only"]["report"], finished_fit["report"]
    # measure_again (the fixture) fails on any measurement: everything came from the screening (the
    # shape the cost model skipped there is skipped again from the same points)
    assert all(
        e["cached"] or e["figures"]["status"] == "skipped" for c in report["candidates"] for e in c["exports"]
    )
    assert [s["mode"] for s in report["sessions"]] == ["screen-only", "full"]
    first = report["sessions"][0]
    assert first["cost_cpu_s"] == screened["times"]["cost_cpu_s"]
    # the final report's search cost includes the screen-only session's screening
    assert report["times"]["cost_cpu_s"] == round(
        first["cost_cpu_s"] + report["sessions"][1]["cost_cpu_s"], 2
    )
    assert report["times"]["cost_cpu_s"] >= screened["times"]["cost_cpu_s"]
    # every finished rung records its CPU seconds in its folder; the search counts the larger account
    rung_files = sorted((finished_fit["out"] / "fit" / "trials").glob("*/rung-*/cpu.json"))
    assert rung_files and len(rung_files) == sum(c["proxy_rungs"] for c in report["candidates"])
    rungs_cpu = round(sum(json.loads(f.read_text())["cpu_s"] for f in rung_files), 2)
    assert report["times"]["proxy_trials_cpu_s"] == rungs_cpu > 0
    search = report["times"]["cost_cpu_s"] + max(report["times"]["proxy_cpu_s"], rungs_cpu)
    assert report["search_cpu_s"] == round(search, 2)
    assert report["search_cpu_vs_winner_distill"] == round(search / report["winner"]["distill_cpu_s"], 3)
    # the run's own record serves a later session even where the device cache has nothing (a busy host)
    from edgedistill.fit.phases import Screening
    from edgedistill.fit.space import plan_shapes, read_teacher_config
    from edgedistill.pipeline import load_targets

    recipe = finished_fit["recipe"]
    empty = recipe.fit.model_copy(
        update={"cost": recipe.fit.cost.model_copy(update={"cache_dir": str(tmp_path / "none")})}
    )
    recipe = recipe.model_copy(update={"fit": empty})
    shutil.copytree(finished_fit["out"] / "fit" / "screened", tmp_path / "fit" / "screened")
    target = next(iter(load_targets(recipe).values()))
    config = read_teacher_config(recipe.distill.teacher.path)
    screening = Screening(recipe, target, tmp_path / "fit", config, lambda s: None)
    rows = screening.shapes(plan_shapes(recipe.fit, config, recipe.distill.task, target), screening.teacher())
    assert all(
        e["cached"] == "run" or e["figures"]["status"] == "skipped" for r in rows for e in r["exports"]
    )
    assert not (tmp_path / "fit" / "shapes").exists()


def test_a_second_search_on_the_same_device_measures_nothing_again(fit_setup, finished_fit, tmp_path):
    from edgedistill.fit.phases import Screening
    from edgedistill.fit.space import plan_shapes, read_teacher_config

    recipe = finished_fit["recipe"]
    target = next(iter(__import__("edgedistill.pipeline", fromlist=["x"]).load_targets(recipe).values()))
    config = read_teacher_config(recipe.distill.teacher.path)
    screening = Screening(recipe, target, tmp_path, config, lambda s: None)
    rows = screening.shapes(plan_shapes(recipe.fit, config, recipe.distill.task, target), screening.teacher())
    assert all(e["cached"] or e["figures"]["status"] == "skipped" for r in rows for e in r["exports"])
    assert not (tmp_path / "shapes").exists()  # nothing was even built


@pytest.fixture
def sshd(tmp_path):
    from edgedistill.loopback_ssh import Sshd, sshd_missing_reason

    if (reason := sshd_missing_reason()) is not None:
        pytest.skip(reason)
    with Sshd(tmp_path / "sshd") as server:
        yield server


def test_a_screening_on_a_loopback_ssh_device_measures_there_and_caches_apart_from_local(
    fit_setup, finished_fit, sshd, tmp_path
):
    """The same target measured through the ssh runner at 127.0.0.1: every candidate measured on the ssh
    device, cached under its own key; the device lock (this machine's) is taken and does not wait on itself."""
    from edgedistill.fit.cost import CostCache
    from edgedistill.fit.phases import Screening, this_machine
    from edgedistill.fit.space import plan_shapes, read_teacher_config
    from edgedistill.pipeline import load_targets

    s = fit_setup
    device = sshd.device(python=sys.executable, workdir=str(tmp_path / "board"), parity=False)
    budgets = yaml.safe_load(s["target"].read_text())["budgets"]
    target_file = write_target(tmp_path, "fit-target.yaml", budgets=budgets, device=device)
    raw = _recipe(s["teacher"], s["data"], target_file, s["cache"])
    raw["fit"]["space"]["layers"] = [1]  # two shapes and the teacher: enough to compare keys
    recipe = load_config(RunRecipe, _write(tmp_path, raw))
    target = next(iter(load_targets(recipe).values()))
    assert target.device.kind == "ssh" and this_machine(target.device)
    config = read_teacher_config(recipe.distill.teacher.path)
    screening = Screening(recipe, target, tmp_path / "fit", config, lambda text: None)
    teacher = screening.teacher()
    rows = screening.shapes(plan_shapes(recipe.fit, config, recipe.distill.task, target), teacher)
    assert sorted(r["shape"]["key"] for r in rows) == ["L1", "L1_f32"]
    local = {c["shape"]["key"]: c["exports"][0]["key"] for c in finished_fit["report"]["candidates"]}
    cache = CostCache(s["cache"])
    for key, entry in [("teacher", teacher)] + [(r["shape"]["key"], r["exports"][0]) for r in rows]:
        assert entry["cached"] is False, (key, "measured on the ssh device, not served from local")
        record = cache.get(entry["key"])
        assert record["figures"]["status"] == "measured", record["figures"]
        assert record["device"]["kind"] == "ssh", record["device"]
        assert entry["key"] != local.get(key, finished_fit["report"]["teacher"]["key"])
    assert (tmp_path / "fit" / "screened").is_dir()


def test_a_loopback_ssh_device_takes_this_machines_device_lock_and_a_remote_one_none(tmp_path):
    import fcntl
    from types import SimpleNamespace

    from edgedistill.fit.phases import device_lock, this_machine
    from edgedistill.targets import DeviceSpec

    for host, same in (("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True),
                       ("[::1]", True), ("board.lan", False), ("10.0.0.7", False)):  # fmt: skip
        assert this_machine(DeviceSpec(kind="ssh", host=host)) is same, host
    assert this_machine(DeviceSpec()) and not this_machine(DeviceSpec(kind="adb", serial="x"))
    for host, held in (("127.0.0.1", True), ("board.lan", False)):
        target = SimpleNamespace(device=DeviceSpec(kind="ssh", host=host))
        with device_lock(tmp_path, target, exclusive=True), open(tmp_path / "local-device.lock", "a+") as fh:
            try:  # a training run's shared lock would wait here while a loopback measurement runs
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                blocked = False
            except BlockingIOError:
                blocked = True
        assert blocked is held, host


def test_a_screening_run_on_a_busy_host_is_used_but_not_cached():
    from edgedistill.fit.cost import cacheable, other_cpu_share

    busy = {"status": "measured", "latency": {"rounds": [{"measure_seconds": 1.0, "other_cpu_seconds": 1.5}]}}
    quiet = {
        "status": "measured",
        "latency": {"rounds": [{"measure_seconds": 1.0, "other_cpu_seconds": 0.01}]},
    }
    cpus = os.cpu_count() or 1
    assert other_cpu_share(busy) == round(1.5 / cpus, 3) and other_cpu_share(quiet) == round(0.01 / cpus, 3)
    figures = {"status": "measured", "other_cpu_share": 0.4}
    assert not cacheable(figures, 0.25) and cacheable(figures, 1.0)
    assert cacheable({**figures, "other_cpu_share": 0.1}, 0.25)
    assert not cacheable({"status": "skipped", "other_cpu_share": 0.0}, 1.0)


def _near_tied_classifier(teacher: Path, folder: Path, seed: int) -> Path:
    """The teacher with class scores a hair apart: what an untrained pruned screening student has."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    with torch.no_grad():
        weight = model.classifier.weight
        noise = torch.randn(weight[1:].shape, generator=torch.Generator().manual_seed(seed))
        weight[1:] = weight[0] + 1e-6 * noise
        model.classifier.bias.zero_()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(folder)
    return folder


def test_screening_exports_leave_top1_unchecked_where_a_plain_export_refuses_the_same_student(
    fit_setup, tmp_path
):
    """int8 flips near-tied class scores at will: the same export refused by top-1 agreement alone
    is measured at screening (its value bounds still apply), and the export settings are untouched."""
    from edgedistill.export import ExportConfig, export
    from edgedistill.export.parity.report import ParityError
    from edgedistill.fit.config import ExportChoice
    from edgedistill.fit.cost import CostCache, measure
    from edgedistill.targets import load_target

    cfg = ExportConfig(formats=["onnx"], precisions=["int8"], parity_samples=16, max_length=32)
    # whether int8 flips a near tie depends on the hair's direction (int8 rounds both rows alike and
    # argmax breaks the tie one way): the first of a few seeded students a plain export refuses
    for seed in range(8):
        student = _near_tied_classifier(fit_setup["teacher"], tmp_path / f"student-{seed}", seed)
        try:
            export(student, tmp_path / f"plain-{seed}", cfg)
        except ParityError as exc:
            if "top1" in str(exc):
                break
    else:
        pytest.fail("a plain int8 export refused none of 8 near-tied students by top-1 agreement")

    target = load_target(str(fit_setup["target"]))
    key = "near-tied-onnx-int8"
    record = measure(student, ExportChoice(format="onnx", precision="int8"), target, cfg,
                     CostCache(tmp_path / "cache"), key, tmp_path / "work")  # fmt: skip
    assert record["figures"]["status"] == "measured", record["figures"]
    assert cfg.tolerances["int8"].min_top1_agreement == 0.9  # the finalists' exports keep every bound


def test_an_impossible_budget_ends_with_no_candidate_and_exit_1(fit_setup, tmp_path, capsys):
    s = fit_setup
    target = write_target(tmp_path, "impossible.yaml", budgets={"p95_latency_ms": 0.0001})
    recipe = _write(tmp_path, _recipe(s["teacher"], s["data"], target, s["cache"]))
    code = cli_main(["fit", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no candidate meets p95_latency_ms <= 0.0001 (best: " in err, err
    report = json.loads((tmp_path / "run" / "fit" / "fit_report.json").read_text())
    assert report["status"] == "no candidate" and not (tmp_path / "run" / "fit" / "study.db").exists()
    # --screen-only answers the same: nothing fits, exit 1
    code = cli_main(["fit", str(recipe), "--out", str(tmp_path / "screen"), "--quiet", "--screen-only"])
    err = capsys.readouterr().err
    assert code == 1 and "no candidate meets p95_latency_ms <= 0.0001 (best: " in err, err
    report = json.loads((tmp_path / "screen" / "fit" / "fit_report.json").read_text())
    assert report["status"] == "no candidate" and report["screen_only"] and report["feasible"] == []


def test_a_search_with_two_teachers_judges_against_the_first_and_caches_each_teacher_once(
    fit_setup, tmp_path
):
    """`teachers:` in a fit: the shapes and the relative budgets' teacher are the first teacher's (the
    one the student is cut from); every proxy trial and the finalist learn from both through the fit's
    teacher cache; the winner's report names both."""
    from edgedistill.fit import fit

    s = fit_setup
    raw = _recipe(s["teacher"], s["data"], s["target"], s["cache"], finalists=1)
    raw["distill"].pop("teacher")
    raw["distill"]["teachers"] = [
        {"path": str(s["teacher"]), "name": "first"},
        {"path": str(s["teacher"]), "name": "second", "weight": 2.0, "temperature": 2.0},
    ]
    raw["fit"]["space"]["layers"] = [1]
    report = fit(load_config(RunRecipe, _write(tmp_path, raw)), tmp_path / "run", progress=False)
    assert report["exit_code"] == 0, report
    assert report["teacher_source"]["path"] == str(s["teacher"])
    # one cache per teacher's weights and data, shared by every candidate: the two entries here are the
    # same files (a second model would add one), so all of fit's trials read one cache
    caches = [p for p in (tmp_path / "run" / "fit" / "teacher_cache").iterdir() if p.is_dir()]
    assert len(caches) == 1, caches
    distilled = json.loads((tmp_path / "run" / "distill" / "distill_report.json").read_text())
    assert [t["name"] for t in distilled["teachers"]] == ["first", "second"]


def test_a_space_that_cannot_be_built_is_refused_before_any_work_every_problem_at_once(fit_setup, tmp_path):
    s = fit_setup
    raw = _recipe(s["teacher"], s["data"], s["target"], s["cache"])
    raw["fit"]["space"] = {
        "layers": [1, 9],
        "intermediate_size": [1000],
        "exports": [{"format": "gguf", "precision": "q8_0"}, {"format": "onnx", "precision": "q9"}],
    }
    from edgedistill.fit import fit

    with pytest.raises(ConfigError) as err:
        fit(load_config(RunRecipe, _write(tmp_path, raw)), tmp_path / "run", progress=False)
    text = str(err.value)
    for where in (
        "fit.space.layers[1]",
        "fit.space.intermediate_size[0]",
        "fit.space.exports[0]",
        "fit.space.exports[1]",
    ):
        assert where in text, text
    assert not (tmp_path / "run" / "fit" / "costs.json").exists()


def test_a_fixed_student_beside_fit_is_refused_with_its_key(fit_setup, tmp_path):
    s = fit_setup
    raw = _recipe(s["teacher"], s["data"], s["target"], s["cache"])
    raw["distill"]["student"] = {"layers": 1}
    with pytest.raises(ConfigError, match=r"distill\.student\.layers"):
        load_config(RunRecipe, _write(tmp_path, raw))


# ------------------------------------------------------------------------------------------------
# workers, kill -9, several workers on one study
# ------------------------------------------------------------------------------------------------


def _fit_cli(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgedistill", "fit", str(recipe), "--out", str(out), "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(storage: str, name: str = "fit") -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _trained_rungs(out: Path) -> dict[str, list[float]]:
    """Per shape, the mtime of each finished rung's report: a rung trained twice would change it."""
    return {
        p.parent.parent.name + "/" + p.parent.name: p.stat().st_mtime
        for p in (out / "fit" / "trials").glob("*/rung-*/distill_report.json")
    }


def _shape_trials(trials) -> dict[str, list]:
    seen: dict[str, list] = {}
    for t in trials:
        if "shape" in t.user_attrs and "duplicate_of" not in t.user_attrs and t.state.name != "WAITING":
            seen.setdefault(t.params.get("shape"), []).append(t.state.name)
    return seen


@pytest.mark.slow
def test_kill_9_during_the_search_resumes_without_rerunning_finished_trials(fit_setup, tmp_path):
    s = fit_setup
    recipe = _write(tmp_path, _recipe(s["teacher"], s["data"], s["target"], s["cache"]))
    out = tmp_path / "run"
    storage = f"sqlite:///{out / 'fit' / 'study.db'}"
    proc = _fit_cli(recipe, out, "--worker")
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until one trial finished and the next one is running
        time.sleep(0.5)
        if (out / "fit" / "study.db").is_file():
            try:
                states = [t.state.name for t in _trials(storage)]
            except Exception:  # noqa: BLE001  the study is being created
                continue
            running = [t for t in _trials(storage) if t.state.name == "RUNNING"]
            if running and "worker" in running[0].user_attrs and ("COMPLETE" in states or "PRUNED" in states):
                break
        assert proc.poll() is None, proc.communicate()
    else:
        proc.kill()
        pytest.fail("the search never got to a second trial")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _trials(storage)
    finished = {t.params["shape"] for t in before if t.state.name in ("COMPLETE", "PRUNED")}
    killed = [t for t in before if t.state.name == "RUNNING"]
    assert finished and len(killed) == 1
    rungs_before = _trained_rungs(out)

    proc = _fit_cli(recipe, out, "--worker")
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr
    after = _trials(storage)
    per_shape = _shape_trials(after)
    for shape in finished:  # a finished trial is never run again
        assert per_shape[shape] in (["COMPLETE"], ["PRUNED"]), per_shape
    assert [t.state.name for t in after if t.number == killed[0].number] == ["FAIL"]
    assert per_shape[killed[0].params["shape"]][-1] in ("COMPLETE", "PRUNED")  # retried, finished
    assert set(per_shape) == {"L1", "L1_f32", "L0-1_f32"}
    for rung, mtime in rungs_before.items():  # and no finished rung trained again
        assert _trained_rungs(out)[rung] == mtime, rung


def _two_workers(recipe: Path, tmp_path: Path, storage: str) -> dict[str, list]:
    procs = [_fit_cli(recipe, tmp_path / f"w{i}", "--worker", "--storage", storage) for i in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=500)
        assert proc.returncode == 0, stderr
    per_shape = _shape_trials(_trials(storage))
    assert sorted(per_shape) == ["L0-1_f32", "L1", "L1_f32"], per_shape
    for shape, states in per_shape.items():  # each shape trained by exactly one trial
        assert len(states) == 1 and states[0] in ("COMPLETE", "PRUNED"), (shape, states)
    return per_shape


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_run_no_trial_twice(fit_setup, tmp_path):
    s = fit_setup
    recipe = _write(tmp_path, _recipe(s["teacher"], s["data"], s["target"], s["cache"]))
    _two_workers(recipe, tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


@pytest.fixture
def postgres(tmp_path):
    """A real PostgreSQL 15 (Debian's package) in a temporary folder, on 127.0.0.1, stopped afterwards."""
    initdb = PG_BIN / "initdb"
    if not initdb.is_file():
        pytest.skip(f"PostgreSQL is not installed here ({initdb} is missing; apt-get install postgresql)")
    pytest.importorskip(
        "psycopg",
        reason="psycopg (the dev extra: SQLAlchemy 2.1's default PostgreSQL driver) is not installed",
    )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    # pytest's own temporary folders are private to root: the server gets one the postgres user can enter
    folder = Path(tempfile.mkdtemp(prefix="edgedistill-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run([*as_postgres, str(initdb), "-D", str(folder / "data"), "-A", "trust", "-U", "fit"], check=True,
                   capture_output=True)  # fmt: skip
    opts = f"-k {folder} -p {port} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-o", opts, "-l",
                    str(folder / "log"), "-w", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://fit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-w", "stop", "-m", "fast"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_one_postgresql_study_run_no_trial_twice(fit_setup, tmp_path, postgres):
    s = fit_setup
    recipe = _write(tmp_path, _recipe(s["teacher"], s["data"], s["target"], s["cache"]))
    _two_workers(recipe, tmp_path, postgres)


@pytest.mark.slow
def test_a_causal_lm_student_is_found_under_decode_budgets_through_llama_cpp(lm_teacher, lm_data, tmp_path):
    """A 2-layer tiny Llama teacher, students of 1-2 layers x FFN 64/128, GGUF q8_0 measured through
    llama.cpp (decode tokens/s, time to first token), ranked by top-1 agreement with the teacher."""
    pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")
    from edgedistill.fit import fit

    target = write_target(
        tmp_path,
        "lm-target.yaml",
        budgets={"size_vs_teacher": 0.9, "min_decode_tokens_per_s": 1, "ttft_ms": 60000, "p95_latency_ms": None,
                 "p50_latency_ms": None, "max_accuracy_drop": None, "min_accuracy": None, "min_agreement": None},
    )  # fmt: skip
    raw = {
        "version": 1,
        "distill": {
            "task": "causal-lm",
            "teacher": {"path": str(lm_teacher)},
            "data": {"train": str(lm_data["train"]), "eval": str(lm_data["eval"]), "text_column": "text", "max_length": 48},
            "training": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0, "save_steps": 100},
        },
        "export": {"parity_samples": 2, "max_length": 32},
        "bench": {"targets": [str(target)], "teacher": False},
        "fit": {
            "space": {"layers": [1, 2], "intermediate_size": [64, None], "exports": [{"format": "gguf", "precision": "q8_0"}]},
            "cost": {"cache_dir": str(tmp_path / "cache"), "cache_max_other_cpu": 1.0,
                     "measurement": {"min_iterations": 3, "min_seconds": 0.05, "warmup_iterations": 1}},
            "proxy": {"validation_fraction": 0.2, "min_steps": 2, "max_steps": 4},
            "finalists": 1,
        },
    }  # fmt: skip
    report = fit(load_config(RunRecipe, _write(tmp_path, raw)), tmp_path / "run", progress=False)
    assert report["exit_code"] == 0, report
    candidates = {c["shape"]["key"]: c for c in report["candidates"]}
    # the yardstick is the teacher fp32: q8_0 files of every shape are near a quarter of its size
    assert all(c["feasible"] for c in candidates.values()), candidates
    decode = [e["figures"]["decode_tokens_per_s"] for c in candidates.values() for e in c["exports"]]
    assert all(v and v > 0 for v in decode), decode
    assert report["winner"]["metric"] == "top1_agreement_with_teacher"
    assert 0.0 <= report["winner"]["val_metric"] <= 1.0


def test_searches_over_one_teacher_and_data_can_share_the_teacher_output_cache(tmp_path):
    """The recipe's `training.teacher_cache_dir` is where every candidate reads the teacher's
    outputs (several searches compute them once); without it, OUT/fit/teacher_cache."""
    from types import SimpleNamespace

    from edgedistill.fit.candidates import teacher_cache

    def recipe(where):
        training = SimpleNamespace(teacher_cache_dir=where)
        losses = [SimpleNamespace(name="soft_kl")]
        return SimpleNamespace(
            distill=SimpleNamespace(task="sequence-classification", losses=losses, training=training)
        )

    assert teacher_cache(recipe(None), tmp_path)["teacher_cache_dir"] == str(tmp_path / "teacher_cache")
    assert teacher_cache(recipe("/shared/cache"), tmp_path)["teacher_cache_dir"] == "/shared/cache"


def test_a_second_search_with_a_distill_cache_trains_nothing_and_counts_what_it_reused(
    fit_setup, finished_fit, tmp_path
):
    """The first search's rungs and finalist, indexed into the cache, serve a second search whole:
    no distillation runs, the study and the winner come out the same, and the CPU account tells
    this search's own seconds from the reused rungs' (counted at what they cost where they ran)."""
    from edgedistill.fit import candidates, fit
    from edgedistill.fit.distill_cache import DistillCache, index_fit_dir

    first, first_fit = finished_fit["report"], finished_fit["out"] / "fit"
    cache = tmp_path / "distills"
    keys = index_fit_dir(DistillCache(cache), first_fit)
    rungs = sorted(first_fit.glob("trials/*/rung-*/cpu.json"))
    assert len(keys) == len(set(keys)) == len(rungs) + 1  # every rung and the finalist

    recipe = finished_fit["recipe"]
    recipe = recipe.model_copy(update={"fit": recipe.fit.model_copy(update={"distill_cache": str(cache)})})

    def train(*args, **kwargs):
        raise AssertionError(f"a distillation ran although the cache holds it: {args[1]}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(candidates, "_timed_distill", train)
        report = fit(recipe, tmp_path / "run", progress=False)

    assert report["winner"]["shape"] == first["winner"]["shape"]
    assert report["winner"]["val_metric"] == first["winner"]["val_metric"]
    assert report["winner"]["distill_reused_from"] == str(
        (first_fit / "final" / first["winner"]["shape"]["key"] / "distill").resolve()
    )
    assert report["winner"]["distill_cpu_s"] == first["winner"]["distill_cpu_s"]
    assert [(c["shape"]["key"], c["proxy_value"]) for c in report["candidates"]] == [
        (c["shape"]["key"], c["proxy_value"]) for c in first["candidates"]
    ]
    times = report["times"]
    assert times["proxy_trials_cpu_s"] == 0
    assert times["proxy_reused_cpu_s"] == first["times"]["proxy_trials_cpu_s"] > 0
    assert report["search_cpu_with_reused_s"] == round(
        report["search_cpu_s"] + times["proxy_reused_cpu_s"], 2
    )
    restored = json.loads(next((tmp_path / "run" / "fit" / "trials").glob("*/rung-0/cpu.json")).read_text())
    assert restored["reused_from"].startswith(str(first_fit.resolve())) and restored["cpu_s"] > 0
    # a restored folder names this search's files, not the first one's
    config = json.loads(
        next((tmp_path / "run" / "fit" / "trials").glob("*/rung-0/distill_config.json")).read_text()
    )
    assert config["data"]["train"].startswith(str(tmp_path / "run"))


def test_a_distillation_key_follows_content_not_where_files_lie(tiny_bert_classifier, tiny_data, tmp_path):
    import torch
    from safetensors.torch import save_file

    from edgedistill.fit.distill_cache import content_digest, distill_key

    base = tiny_qat_recipe(tiny_bert_classifier, tiny_data)
    moved = {k: shutil.copy(v, tmp_path / f"moved-{k}.tsv") for k, v in tiny_data.items()}
    same = tiny_qat_recipe(tiny_bert_classifier, moved, training={"teacher_cache_dir": str(tmp_path / "tc")})
    assert distill_key(same) == distill_key(base)  # moved rows, another teacher-cache folder
    changed = tmp_path / "changed.tsv"
    changed.write_text(Path(tiny_data["train"]).read_text() + "one more sentence\t1\n")
    assert distill_key(tiny_qat_recipe(tiny_bert_classifier, {**tiny_data, "train": changed})) != distill_key(
        base
    )
    assert distill_key(
        tiny_qat_recipe(tiny_bert_classifier, tiny_data, training={"lr": 2e-3})
    ) != distill_key(base)

    # safetensors and JSON are compared as content: header and key order do not count, values do
    t = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    for name, meta in (("x", {"p": "1", "q": "2"}), ("y", {"q": "2", "p": "1"})):
        (tmp_path / name).mkdir()
        save_file(t, tmp_path / name / "w.safetensors", metadata=meta)
        (tmp_path / name / "c.json").write_text(json.dumps(meta))
    assert content_digest(tmp_path / "x") == content_digest(tmp_path / "y")
    (tmp_path / "z").mkdir()
    save_file({**t, "b": torch.zeros(2, 2)}, tmp_path / "z" / "w.safetensors", metadata={"p": "1", "q": "2"})
    (tmp_path / "z" / "c.json").write_text(json.dumps({"p": "1", "q": "2"}))
    assert content_digest(tmp_path / "z") != content_digest(tmp_path / "x")


def test_when_no_finalist_passes_the_next_shapes_are_tried_skipping_those_that_would_miss_the_same_way():
    """fit_sst2's 6x search: both finalists left speedup_vs_teacher undecided in full; the next shape in
    the ranking screened slower in the same export is passed over, a faster one is distilled as a
    fallback, and the fallbacks stop at the first that passes or at fit.fallback_finalists."""
    from types import SimpleNamespace

    from edgedistill.fit.candidates import choose_finalists

    def costs_row(key, p50):
        return {
            "exports": [
                {"format": "openvino", "precision": "int8", "feasible": True, "figures": {"p50_ms": p50}}
            ]
        }

    costs = {"big": costs_row("big", 3.0), "mid": costs_row("mid", 3.5), "small": costs_row("small", 1.5),
             "tiny": costs_row("tiny", 1.2)}  # fmt: skip
    ranked = [{"shape": {"key": k}} for k in ("big", "mid", "small", "tiny")]
    passes = {"big": False, "mid": False, "small": True, "tiny": True}
    tried = []

    def distill_one(row, fallback):
        key = row["shape"]["key"]
        tried.append((key, fallback))
        failed = [] if passes[key] else ["speedup_vs_teacher: 5.46x ... straddle 6x: too noisy to decide"]
        return {"shape": {"key": key}, "passes": passes[key],
                "artifacts": [{"artifact": "openvino-int8", "failed": failed,
                               "failed_budgets": [x.split(":")[0] for x in failed]}]}  # fmt: skip

    cfg = SimpleNamespace(finalists=1, fallback_finalists=2)
    finalists, passed_over = choose_finalists(ranked, cfg, costs, distill_one)
    assert tried == [("big", False), ("small", True)]  # mid (3.5 ms) no faster than big (3.0 ms): passed over
    assert "no faster than big's 3.000 ms" in passed_over["mid"] and finalists[-1]["fallback"]
    passes["small"] = False
    tried.clear()
    finalists, _ = choose_finalists(
        ranked, SimpleNamespace(finalists=1, fallback_finalists=1), costs, distill_one
    )
    assert tried == [("big", False), ("small", True)] and not any(f["passes"] for f in finalists)
    tried.clear()
    choose_finalists(ranked, SimpleNamespace(finalists=1, fallback_finalists=0), costs, distill_one)
    assert tried == [("big", False)]
    # a finalist that failed only a size budget says nothing about a faster shape's latency
    passes["big"] = False
    tried.clear()

    def size_miss(row, fallback):
        out = distill_one(row, fallback)
        out["artifacts"][0]["failed"] = [] if out["passes"] else ["size_vs_teacher: 0.21 > 0.2"]
        out["artifacts"][0]["failed_budgets"] = [] if out["passes"] else ["size_vs_teacher"]
        return out

    choose_finalists(ranked, SimpleNamespace(finalists=1, fallback_finalists=1), costs, size_miss)
    assert tried == [("big", False), ("mid", True)]


def test_a_shape_whose_trial_failed_is_enqueued_again_and_a_finished_one_is_not():
    """SIGTERM or Ctrl-C leaves the running trial FAIL (neither heartbeats nor the dead-worker check
    retry it): the next run's enqueue puts that shape back, and never a shape already trained."""
    import optuna

    from edgedistill.fit import proxy
    from edgedistill.fit.space import Shape

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    shapes = [Shape(layers=(0, 5)), Shape(layers=(0, 2, 5))]
    proxy.enqueue(study, shapes)

    def objective(trial):
        key = trial.suggest_categorical("shape", [s.key for s in shapes])
        if key == shapes[1].key:
            raise KeyboardInterrupt  # what a polite stop looks like inside the trial
        return 0.5

    study.optimize(objective, n_trials=1)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=1)
    states = {t.params["shape"]: t.state.name for t in study.trials}
    assert states == {shapes[0].key: "COMPLETE", shapes[1].key: "FAIL"} and proxy.waiting(study) == 0
    proxy.enqueue(study, shapes)
    proxy.enqueue(study, shapes)  # idempotent: the waiting retry is live
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"]["shape"] for t in waiting] == [shapes[1].key]
    assert waiting[0].user_attrs["retry_of_failed"] is True


def test_the_winners_final_run_judges_relative_budgets_against_the_searchs_teacher(fit_setup):
    """fit_sst2's 6x search: its finalists were measured against the teacher ONNX fp32 (the first
    searched export) and the OpenVINO winner passed at 7.39x; the final run, whose export keeps only
    the winner's OpenVINO pair, then measured the teacher through OpenVINO (5.65x, inconclusive).
    The final run's reference is the search's: one yardstick from the screening to the gate."""
    from edgedistill.fit.search import final_recipe
    from edgedistill.teacher_reference import export_config, reference_format

    s = fit_setup
    raw = _recipe(s["teacher"], s["data"], s["target"], s["cache"])
    raw["export"]["formats"] = ["onnx", "openvino"]
    raw["fit"]["space"]["exports"] = [
        {"format": "onnx", "precision": "int8"},
        {"format": "openvino", "precision": "int8"},
    ]
    recipe = RunRecipe.model_validate(raw)
    winner = {
        "shape": {"layers": [0]},
        "artifacts": [
            {"path": "final/L0/artifacts/onnx-int8", "passes_cost": False},
            {"path": "final/L0/artifacts/openvino-int8", "passes_cost": True},
        ],
    }
    final = final_recipe(recipe, winner, {"train": str(s["data"]["train"]), "val": str(s["data"]["eval"])})
    assert final.export.formats == ["openvino"] and final.export.precisions == ["int8"]
    assert reference_format(recipe) == reference_format(final) == "onnx"
    assert export_config(final).formats == ["onnx"] and export_config(final).precisions == ["fp32"]
    # without `fit:` the reference stays the recipe's first export format
    plain = RunRecipe.model_validate({k: v for k, v in raw.items() if k != "fit"} | {
        "distill": {**raw["distill"], "student": {"layers": [0]}}, "export": {**raw["export"], "formats": ["openvino", "onnx"]}})  # fmt: skip
    assert reference_format(plain) == "openvino"
