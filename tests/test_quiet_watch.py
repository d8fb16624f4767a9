"""benchmarks/quiet.py: a training job is paused while another benchmark measures, resumed after.

Real processes and a real flock: a sleeping "training" group is stopped (state T) while the
"measuring" group holds the device lock exclusively, and runs again once the lock is released
and the grace period has passed; killing the watcher resumes what it paused.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WATCHER = Path(__file__).resolve().parents[1] / "benchmarks" / "quiet.py"


def _group(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, start_new_session=True)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_training_is_paused_while_the_lock_is_held_exclusively_and_resumed_after(tmp_path):
    lock = tmp_path / "local-device.lock"
    lock.touch()
    trainer = _group([sys.executable, "-c", "import time; time.sleep(120)"])
    measurer = _group([sys.executable, "-c", "import time; time.sleep(120)"])
    watcher = subprocess.Popen(
        [
            sys.executable,
            str(WATCHER),
            "--measurer",
            str(measurer.pid),
            "--lock",
            str(lock),
            "--pause",
            str(trainer.pid),
            "--grace",
            "0.5",
            "--poll",
            "0.1",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert _state(trainer.pid) != "T", "paused with nobody measuring"
        with open(lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # the measurement starts
            assert _wait_for(lambda: _state(trainer.pid) == "T"), "not paused during the measurement"
            fcntl.flock(fh, fcntl.LOCK_UN)
        assert _wait_for(lambda: _state(trainer.pid) != "T"), "not resumed after the measurement"
        with open(lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            assert _wait_for(lambda: _state(trainer.pid) == "T")
            watcher.send_signal(signal.SIGTERM)  # the watcher goes: what it paused runs again
            watcher.wait(timeout=10)
            assert _state(trainer.pid) != "T"
    finally:
        if watcher.poll() is None:
            watcher.kill()
        for proc in (trainer, measurer):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
