"""`edgedistill distill` killed for real (SIGKILL, SIGTERM) at step boundaries, at random moments and
mid-save: the rerun of the same command resumes from the last COMPLETE checkpoint and ends with the
same weights as an uninterrupted run (bitwise on this CPU; the tolerance asserted is 1e-6).

The recipe: 8 steps, a checkpoint every step, float KD for steps 1-4 and int8 QAT for 5-8, so a
kill can land in either phase or on the boundary between them.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path

import pytest
from _faults_helpers import (
    bitwise_equal,
    complete_checkpoints,
    distill_args,
    kill_at_random,
    kill_at_step,
    leftovers,
    max_abs_diff,
    run_cli,
    start_cli,
    stop,
    tree_digest,
    wait_until,
    weights,
)

STEPS = 8  # float 1-4, qat 5-8


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_bert_classifier, tiny_data):
    """The uninterrupted run, from an empty working folder (to see nothing lands outside --out)."""
    root = tmp_path_factory.mktemp("straight")
    cwd = root / "cwd"
    cwd.mkdir()
    inputs_before = {**tree_digest(tiny_bert_classifier), **tree_digest(tiny_data["train"].parent)}
    proc = run_cli(distill_args(tiny_bert_classifier, tiny_data, root / "out", steps=STEPS), cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return {
        "out": root / "out",
        "root": root,
        "cwd": cwd,
        "weights": weights(root / "out" / "student"),
        "inputs_before": inputs_before,
    }


def _assert_same_as_straight(out: Path, straight: dict) -> float:
    got = weights(out / "student")
    diff = max_abs_diff(got, straight["weights"])
    assert diff <= 1e-6, f"resumed weights differ from the uninterrupted run by {diff}"
    return diff


def test_outputs_land_only_inside_out(straight, tiny_bert_classifier, tiny_data):
    assert list(straight["cwd"].iterdir()) == []
    assert sorted(p.name for p in straight["root"].iterdir()) == ["cwd", "out"]
    after = {**tree_digest(tiny_bert_classifier), **tree_digest(tiny_data["train"].parent)}
    assert after == straight["inputs_before"], "the teacher or the data changed"
    assert leftovers(straight["out"]) == []


@pytest.fixture(scope="module")
def killed_in_float(tmp_path_factory, tiny_bert_classifier, tiny_data):
    """A run SIGKILLed right after float checkpoint-3 is complete (a step boundary)."""
    out = tmp_path_factory.mktemp("killed_float") / "out"
    alive, rc, _ = kill_at_step(
        distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS), out / "checkpoints" / "float", 3
    )
    assert alive and rc == -signal.SIGKILL
    assert not (out / "student").exists()
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


TORN = {
    "empty": lambda c: [p.unlink() for p in list(c.iterdir())],
    "no_trainer_state": lambda c: (c / "trainer_state.json").unlink(),
    "truncated_trainer_state": lambda c: (c / "trainer_state.json").write_text('{"global_step": 4, "log_h'),
    "no_optimizer": lambda c: [
        (c / n).unlink() for n in ("optimizer.pt", "scheduler.pt", "trainer_state.json")
    ],
}


@pytest.mark.parametrize("kind", sorted(TORN))
def test_torn_checkpoint_is_skipped_for_the_last_complete(kind, killed_in_float, tmp_path):
    from transformers.trainer_utils import get_last_checkpoint

    from edgedistill.compress.training import last_checkpoint

    out = _copy(killed_in_float, tmp_path / "out")
    phase = out / "checkpoints" / "float"
    newest = max(complete_checkpoints(phase))
    torn = phase / f"checkpoint-{newest + 1}"
    shutil.copytree(phase / f"checkpoint-{newest}", torn)
    TORN[kind](torn)
    assert get_last_checkpoint(str(phase)) == str(torn)  # the landed code resumed from the torn folder
    assert last_checkpoint(phase) == str(phase / f"checkpoint-{newest}")
    assert not torn.exists(), "the torn folder is removed so Trainer's rotation never counts it"


def test_rerun_after_a_torn_checkpoint_resumes_to_the_same_weights(
    killed_in_float, tmp_path, straight, tiny_bert_classifier, tiny_data
):
    out = _copy(killed_in_float, tmp_path / "out")
    phase = out / "checkpoints" / "float"
    torn = phase / f"checkpoint-{max(complete_checkpoints(phase)) + 1}"
    torn.mkdir()  # killed right after Trainer's makedirs: the empty folder the landed code choked on
    (torn / "model.safetensors").write_bytes(b"\0" * 100)  # and a torn weights file
    proc = run_cli(distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS))
    assert proc.returncode == 0, proc.stderr
    _assert_same_as_straight(out, straight)
    assert json.loads((out / "distill_report.json").read_text())["training"]["resumed"] is True


def test_kill9_at_a_float_step_boundary_resumes_to_the_same_weights(
    killed_in_float, tmp_path, straight, tiny_bert_classifier, tiny_data
):
    out = _copy(killed_in_float, tmp_path / "out")
    proc = run_cli(distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS))
    assert proc.returncode == 0, proc.stderr
    resumed = weights(out / "student")
    assert bitwise_equal(resumed, straight["weights"]), max_abs_diff(resumed, straight["weights"])


def test_kill9_at_a_qat_step_boundary_resumes_to_the_same_weights(
    tmp_path, straight, tiny_bert_classifier, tiny_data
):
    out = tmp_path / "out"
    args = distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS)
    alive, rc, _ = kill_at_step(args, out / "checkpoints" / "qat", 2)  # global step 6
    assert alive and rc == -signal.SIGKILL
    assert (out / "checkpoints" / "float" / "final.safetensors").is_file()
    assert (out / "checkpoints" / "qat" / "nncf_init" / "nncf_config.json").is_file()
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    resumed = weights(out / "student")
    assert bitwise_equal(resumed, straight["weights"]), max_abs_diff(resumed, straight["weights"])


@pytest.mark.slow
def test_repeated_kill9_at_random_moments_resumes_to_the_same_weights(
    tmp_path, straight, tiny_bert_classifier, tiny_data
):
    """Three SIGKILLs at seeded random moments once training has begun (mid-step, mid-save, in QAT
    calibration...), then one rerun to the end: same weights (<= 1e-6; bitwise here)."""
    out = tmp_path / "out"
    args = distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS)
    rng = random.Random(20261203)
    killed = 0
    for _ in range(3):
        began = lambda: (out / "checkpoints").is_dir() or (out / "student").is_dir()  # noqa: E731
        alive, _ = kill_at_random(args, began, rng, window_s=2.0)
        killed += alive
        if (out / "student").is_dir():
            break
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    diff = _assert_same_as_straight(out, straight)
    print(f"killed mid-run {killed} time(s); max |resumed - straight| = {diff}")
    assert leftovers(out) == []


@pytest.mark.slow
def test_sigterm_is_an_interruption_and_resumes(tmp_path, straight, tiny_bert_classifier, tiny_data):
    out = tmp_path / "out"
    args = distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS)
    proc = start_cli(args)
    assert wait_until(proc, lambda: 2 in complete_checkpoints(out / "checkpoints" / "float"))
    rc, err = stop(proc, signal.SIGTERM)
    assert rc == 130, err
    assert "interrupted; run the same command again to resume" in err and "Traceback" not in err
    assert not (out / "student").exists() and leftovers(out) == []
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    _assert_same_as_straight(out, straight)


@pytest.mark.slow
def test_full_disk_during_checkpointing_is_typed_and_resumes_after_space_is_freed(
    tmp_path, straight, tiny_bert_classifier, tiny_data
):
    """--out on a 3 MiB tmpfs: a checkpoint (weights + Adam state, about 1 MiB) cannot be written.
    The run stops with one line naming the folder and the free space (exit 2); with space freed
    (the tmpfs grown) the same command resumes from the last complete checkpoint to the same weights."""
    from _faults_helpers import resize, small_disk

    with small_disk(tmp_path / "disk", "3M") as disk:
        out = disk / "out"
        args = distill_args(tiny_bert_classifier, tiny_data, out, steps=STEPS)
        proc = run_cli(args)
        assert proc.returncode == 2, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("edgedistill distill: error: ") and "MiB free" in line, proc.stderr
        assert str(out / "checkpoints") in line and "Traceback" not in proc.stderr
        assert not (out / "student").exists() and leftovers(out) == []
        resize(disk, "64M")
        proc = run_cli(args)
        assert proc.returncode == 0, proc.stderr
        _assert_same_as_straight(out, straight)
