"""Real processes for the fault tests: the `edgedistill` CLI in a subprocess, killed (SIGKILL) or
stopped (SIGTERM) at a chosen moment, and a small tmpfs to fill a disk for real.

A kill "at a step boundary" waits until Trainer's ``checkpoint-N`` is complete on disk (its
``trainer_state.json``, written last, parses); a kill "at a random moment" sleeps a seeded random
time once training has started, so it lands in a step, in a save, or between.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
CLI = [sys.executable, "-m", "edgedistill"]


def distill_args(
    teacher: Path, data: dict[str, Path], out: Path, *, steps: int = 8, qat: str = "int8"
) -> list:
    """A tiny KD run (1-layer student, batch 16) that checkpoints every step; int8 QAT from step steps/2."""
    return [
        "distill",
        "--teacher",
        str(teacher),
        "--student-layers",
        "1",
        "--task",
        "sequence-classification",
        "--train",
        str(data["train"]),
        "--eval",
        str(data["eval"]),
        "--max-length",
        "32",
        "--max-steps",
        str(steps),
        "--batch-size",
        "16",
        "--lr",
        "1e-3",
        "--save-steps",
        "1",
        "--qat",
        qat,
        "--qat-start",
        "0.5",
        "--set",
        "qat.calibration_batches=2",
        "--set",
        "training.warmup_ratio=0.0",
        "--set",
        "training.save_total_limit=3",
        "--out",
        str(out),
        "--quiet",
    ]


def finetune_args(model: Path, data: dict[str, Path], out: Path, steps: int = 8) -> list:
    return [
        "finetune",
        "--model",
        str(model),
        "--layers",
        "1",
        "--task",
        "sequence-classification",
        "--train",
        str(data["train"]),
        "--eval",
        str(data["eval"]),
        "--max-length",
        "32",
        "--max-steps",
        str(steps),
        "--batch-size",
        "16",
        "--save-steps",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]


def run_cli(args: list, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def start_cli(args: list, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *map(str, args)], env=ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> bool:
    """Poll ``ready`` until it holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return proc.poll() is None
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting; the process is {'alive' if proc.poll() is None else 'gone'}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 300) -> tuple[int, str]:
    """Send ``sig`` and wait; returns (exit status, stderr)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def complete_checkpoints(folder: Path) -> list[int]:
    """Steps of the checkpoints in ``folder`` whose trainer_state.json (written last) is complete."""
    steps = []
    for ckpt in folder.glob("checkpoint-*"):
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        steps.append(int(ckpt.name.split("-")[1]))
    return sorted(steps)


def kill_at_step(args: list, phase_dir: Path, step: int, sig: int = signal.SIGKILL) -> tuple[bool, int, str]:
    """Start the CLI, kill it once ``phase_dir/checkpoint-<step>`` is complete; (killed mid-run, rc, stderr)."""
    proc = start_cli(args)
    alive = wait_until(proc, lambda: step in complete_checkpoints(phase_dir))
    rc, err = stop(proc, sig)
    return alive, rc, err


def kill_at_random(args: list, started: Callable[[], bool], rng: random.Random, window_s: float) -> tuple:
    """Start the CLI; once ``started()`` holds, sleep U(0, window_s) and SIGKILL; (killed mid-run, rc)."""
    proc = start_cli(args)
    alive = wait_until(proc, started)
    if alive:
        time.sleep(rng.uniform(0.0, window_s))
    alive = alive and proc.poll() is None
    rc, _ = stop(proc, signal.SIGKILL)
    return alive, rc


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a) if a else 0.0


def bitwise_equal(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def leftovers(folder: Path) -> list[str]:
    """Temporaries the atomic writes use (``.<name>.<pid>.*.tmp``, ``.<name>.old``) anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob(".*")
        if p.name.endswith(".tmp") or p.name.endswith(".old")
    )


def tree_digest(folder: Path) -> dict[str, str]:
    from edgedistill.io import sha256_file

    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "3M") mounted on ``folder``; skips where mounting is not allowed.

    Measured here: root in this sandbox may mount tmpfs, so a full disk is a real ENOSPC. Where it
    may not (no root, no CAP_SYS_ADMIN), the test is skipped with the reason mount gave.
    """
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs to fill a disk for real here: {proc.stderr.strip() or proc.returncode}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Write a ballast file until only about ``leave_bytes`` are free on ``folder``'s file system."""
    import shutil

    ballast = folder / "ballast.bin"
    free = shutil.disk_usage(folder).free - leave_bytes
    with open(ballast, "wb") as fh:
        with contextlib.suppress(OSError):
            fh.write(b"\0" * max(0, free))
    return ballast
