"""Stopping a CLI run mid-write, for the resume tests of sample stores (generate, synthesize)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def start_and_stop(command: list[str], env: dict, samples: Path, after: int, how: int) -> tuple[bool, str]:
    """Start ``command``, send ``how`` once ``samples`` has ``after`` lines; (stopped mid-run, stderr)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if samples.exists() and samples.read_bytes().count(b"\n") >= after:
            break
        time.sleep(0.002)
    stopped = proc.poll() is None
    if stopped:
        proc.send_signal(how)
    proc.wait()
    return stopped and proc.returncode != 0, proc.stderr.read().decode()
