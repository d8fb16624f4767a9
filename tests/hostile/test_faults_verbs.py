"""`finetune`, `export`, `bench`, `generate` and `run` killed for real (SIGKILL, SIGTERM) and given a
full disk: the previous good output survives, nothing half-written is left, the rerun of the same
command finishes, and no measuring process outlives a killed bench."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from _faults_helpers import (
    ENV,
    bitwise_equal,
    complete_checkpoints,
    fill,
    finetune_args,
    kill_at_random,
    leftovers,
    max_abs_diff,
    run_cli,
    small_disk,
    start_cli,
    stop,
    tree_digest,
    wait_until,
    weights,
)

INTERRUPTED = "interrupted; run the same command again to resume"


# --- finetune -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_bert_classifier, tiny_data):
    out = tmp_path_factory.mktemp("ft") / "out"
    proc = run_cli(finetune_args(tiny_bert_classifier, tiny_data, out))
    assert proc.returncode == 0, proc.stderr
    return weights(out / "model")


@pytest.mark.slow
def test_finetune_kill9_at_a_step_boundary_resumes_to_the_same_weights(
    tmp_path, finetuned, tiny_bert_classifier, tiny_data
):
    out = tmp_path / "out"
    args = finetune_args(tiny_bert_classifier, tiny_data, out)
    proc = start_cli(args)
    assert wait_until(proc, lambda: 4 in complete_checkpoints(out / "checkpoints"))
    rc, _ = stop(proc, signal.SIGKILL)
    assert rc == -signal.SIGKILL and not (out / "model").exists()
    assert run_cli(args).returncode == 0
    got = weights(out / "model")
    assert bitwise_equal(got, finetuned), max_abs_diff(got, finetuned)


@pytest.mark.slow
def test_finetune_sigterm_is_an_interruption_and_resumes(
    tmp_path, finetuned, tiny_bert_classifier, tiny_data
):
    out = tmp_path / "out"
    args = finetune_args(tiny_bert_classifier, tiny_data, out)
    proc = start_cli(args)
    assert wait_until(proc, lambda: 2 in complete_checkpoints(out / "checkpoints"))
    rc, err = stop(proc, signal.SIGTERM)
    assert rc == 130 and INTERRUPTED in err and "Traceback" not in err, err
    assert not (out / "model").exists() and leftovers(out) == []
    assert run_cli(args).returncode == 0
    assert max_abs_diff(weights(out / "model"), finetuned) <= 1e-6


# --- export ---------------------------------------------------------------------------------------


def _export_args(student: Path, out: Path) -> list:
    return ["export", str(student), "--format", "onnx", "--precision", "fp32", "--out", str(out)] + [
        "--parity-samples",
        "4",
    ]


@pytest.fixture()
def exported(tmp_path, tiny_bert_classifier):
    out = tmp_path / "artifacts"
    proc = run_cli(_export_args(tiny_bert_classifier, out))
    assert proc.returncode == 0, proc.stderr
    return out


def _publishing(out: Path):
    return lambda: any(p.name.startswith(".onnx-fp32.") and p.name.endswith(".tmp") for p in out.iterdir())


def test_export_kill9_mid_export_keeps_the_previous_artifact(exported, tiny_bert_classifier):
    before = tree_digest(exported / "onnx-fp32")
    proc = start_cli(_export_args(tiny_bert_classifier, exported))
    alive = wait_until(proc, _publishing(exported))
    time.sleep(random.Random(7).uniform(0.0, 0.5))  # somewhere in tracing, parity or the manifest
    rc, _ = stop(proc, signal.SIGKILL)
    assert tree_digest(exported / "onnx-fp32") == before, "the previous artifact was damaged"
    if alive and rc == -signal.SIGKILL:
        assert leftovers(exported), "expected the killed export's temporary folder"
    proc = run_cli(_export_args(tiny_bert_classifier, exported))
    assert proc.returncode == 0, proc.stderr
    assert leftovers(exported) == [], "the rerun sweeps the dead export's temporaries"
    assert json.loads((exported / "onnx-fp32" / "manifest.json").read_text())["format"] == "onnx"


def test_export_sigterm_is_an_interruption_and_leaves_nothing_behind(exported, tiny_bert_classifier):
    before = tree_digest(exported / "onnx-fp32")
    proc = start_cli(_export_args(tiny_bert_classifier, exported))
    assert wait_until(proc, _publishing(exported))
    rc, err = stop(proc, signal.SIGTERM)
    assert rc == 130 and INTERRUPTED in err, err
    assert tree_digest(exported / "onnx-fp32") == before and leftovers(exported) == []


@pytest.mark.slow
def test_export_on_a_full_disk_is_typed_and_keeps_the_previous_artifact(tmp_path, tiny_bert_classifier):
    with small_disk(tmp_path / "disk", "24M") as disk:
        out = disk / "artifacts"
        assert run_cli(_export_args(tiny_bert_classifier, out)).returncode == 0
        before = tree_digest(out / "onnx-fp32")
        fill(disk, 256 << 10)
        proc = run_cli(_export_args(tiny_bert_classifier, out))
        assert proc.returncode == 2, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert "MiB free" in line and str(out) in line and "Traceback" not in proc.stderr, proc.stderr
        assert tree_digest(out / "onnx-fp32") == before and leftovers(out) == []


# --- bench ----------------------------------------------------------------------------------------


@pytest.fixture()
def bench_setup(exported, tmp_path, tiny_data):
    from bench_helpers import write_target

    target = write_target(tmp_path, measurement={"min_seconds": 3.0, "min_iterations": 40})
    report = tmp_path / "report.json"
    args = ["bench", str(exported / "onnx-fp32"), "--target", str(target), "--out", str(report), "--quiet"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**ENV, "TMPDIR": str(scratch)}
    return {"args": args, "report": report, "scratch": scratch, "env": env}


def _scratch(setup) -> list:
    return sorted(setup["scratch"].glob("edgedistill-bench-*"))  # (runtimes keep their own files there)


def _workers(proc) -> list:
    import psutil

    return [
        c
        for c in psutil.Process(proc.pid).children(recursive=True)
        if "edgedistill.bench._worker" in " ".join(c.cmdline())
    ]


def _start_bench(setup):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "edgedistill", *setup["args"]],
        env=setup["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "sigterm"])
def test_bench_killed_mid_measurement_leaves_no_worker_and_the_previous_report(bench_setup, sig):
    import psutil

    bench_setup["report"].write_text('{"previous": "good"}\n')
    proc = _start_bench(bench_setup)
    found: list = []
    assert wait_until(proc, lambda: bool(found.extend(_workers(proc)) or found), timeout=600)
    rc, err = stop(proc, sig)
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    _, alive = psutil.wait_procs(found, timeout=10)
    assert alive == [], f"measuring processes outlived bench: {alive}"
    assert bench_setup["report"].read_text() == '{"previous": "good"}\n'
    if sig == signal.SIGTERM:
        assert INTERRUPTED in err and _scratch(bench_setup) == []
    else:  # SIGKILL: the scratch folder stays until the next bench sweeps it
        assert _scratch(bench_setup), "expected the killed bench's scratch folder"
        import subprocess
        import sys

        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgedistill",
                *bench_setup["args"],
                "--set",
                "measurement.min_seconds=0.2",
            ],
            env=bench_setup["env"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(bench_setup["report"].read_text())["artifacts"]
        assert _scratch(bench_setup) == [], "the next bench sweeps a dead bench's scratch"


# --- generate -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_teacher(tmp_path_factory):
    from tiny_llama import save_tiny_decoder

    return save_tiny_decoder(tmp_path_factory.mktemp("faults_lm"), arch="llama", train_steps=5)


def _generate_args(teacher: Path, prompts: Path, out: Path) -> list:
    return ["generate", "--teacher", str(teacher), "--prompts", str(prompts), "--out", str(out)] + [
        "--max-new-tokens",
        "24",
        "--batch-size",
        "1",
        "--quiet",
    ]


@pytest.mark.slow
def test_generate_sigterm_and_repeated_kill9_resume_to_the_uninterrupted_samples(tmp_path, lm_teacher):
    from tiny_llama import SAMPLE_SENTENCES

    from edgedistill.compress.generate.store import read_store

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "\n".join(s.split(",")[0][:20] for s in SAMPLE_SENTENCES[:10]) + "\n", encoding="utf-8"
    )
    straight = tmp_path / "straight"
    assert run_cli(_generate_args(lm_teacher, prompts, straight)).returncode == 0
    out = tmp_path / "out"
    args = _generate_args(lm_teacher, prompts, out)
    proc = start_cli(args)
    samples = out / "samples.jsonl"
    if wait_until(proc, lambda: samples.is_file() and samples.read_bytes().count(b"\n") >= 2):
        rc, err = stop(proc, signal.SIGTERM)
        assert rc == 130 and INTERRUPTED in err, err
    else:
        stop(proc)
    rng = random.Random(3)
    for _ in range(2):
        kill_at_random(args, lambda: samples.is_file(), rng, window_s=1.0)
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    assert read_store(out) == read_store(straight)
    assert leftovers(out) == []


# --- run ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_kill9_in_distill_then_sigterm_in_bench_then_rerun_finishes(
    tmp_path, tiny_bert_classifier, tiny_data
):
    import yaml
    from bench_helpers import write_target

    target = write_target(tmp_path, "fast.yaml", measurement={"min_seconds": 2.0})
    recipe = {
        "version": 1,
        "distill": {
            "task": "sequence-classification",
            "teacher": {"path": str(tiny_bert_classifier)},
            "student": {"layers": 1},
            "data": {"train": str(tiny_data["train"]), "eval": str(tiny_data["eval"]), "max_length": 32},
            "training": {"max_steps": 6, "batch_size": 16, "lr": 1e-3, "save_steps": 1, "warmup_ratio": 0.0},
            "qat": {"mode": "none"},
        },
        "export": {"formats": ["onnx"], "precisions": ["fp32"], "parity_samples": 4},
        "bench": {"targets": [str(target)]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "--quiet"]
    ckpts = out / "distill" / "checkpoints" / "float"
    proc = start_cli(args)
    assert wait_until(proc, lambda: 3 in complete_checkpoints(ckpts))
    assert stop(proc, signal.SIGKILL)[0] == -signal.SIGKILL
    state = json.loads((out / "run_state.json").read_text())
    assert state["stages"]["distill"]["status"] == "running"

    proc = start_cli(args)
    assert wait_until(
        proc, lambda: (out / "run_state.json").is_file() and "bench:" in (out / "run_state.json").read_text()
    )
    rc, err = stop(proc, signal.SIGTERM)
    assert rc == 130 and INTERRUPTED in err, err
    state = json.loads((out / "run_state.json").read_text())
    assert state["stages"]["distill"]["status"] == "done" and state["stages"]["export"]["status"] == "done"

    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    assert "distill" in proc.stderr and "skipped" in proc.stderr
    assert (out / "summary.json").is_file() and leftovers(out) == []
