"""Parent side of a measurement: start the measuring process, watch its memory, collect its result.

`run_worker` writes the job as JSON, starts ``python -m edgedistill.bench._worker`` with the
thread-count variables set, polls the child's RSS with psutil while it runs, and returns the
child's result with the parent's memory figures added. Peak RSS is the larger of the polled
peak and the child's own ``VmHWM`` (``/proc/self/status``, the kernel's high-water mark of the
child's address space, which catches peaks between polls).

``ru_maxrss`` (from ``wait4`` or ``getrusage``) is deliberately *not* used: Linux carries the
high-water mark of the address space a process had before ``exec`` into it, and Python starts
children with ``vfork``, so a child's ``ru_maxrss`` reports the *parent's* peak (measured here:
a 67 MB child reported 266 MB, the parent's RSS). A child that fails, dies or overstays its time
limit becomes a `MeasurementError` carrying the tail of its stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgeDistillError

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class MeasurementError(EdgeDistillError):
    """A measuring process failed: the runtime refused the artifact, crashed, or timed out."""


def resolve_cpus(cpu_affinity: int | list[int] | None) -> tuple[list[int] | None, str | None, list[str]]:
    """(CPUs to pin to or None, why the host cannot honour it or None, warnings)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cpu_affinity is None:
        return None, None, []
    if allowed is None:
        return None, None, ["this OS cannot pin processes to CPUs; cpu_affinity was not applied"]
    if isinstance(cpu_affinity, int):
        if cpu_affinity > len(allowed):
            return (
                allowed,
                None,
                [
                    f"cpu_affinity asks for {cpu_affinity} CPUs but this host allows {len(allowed)}; pinned to all {len(allowed)}"
                ],
            )
        return allowed[:cpu_affinity], None, []
    missing = [c for c in cpu_affinity if c not in allowed]
    if missing:
        return None, f"cpu_affinity names CPUs {missing} this host does not offer (allowed: {allowed})", []
    return sorted(cpu_affinity), None, []


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in THREAD_ENV:
        env[key] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_worker(
    job: dict[str, Any], *, timeout_s: float, poll_interval_s: float, work_dir: str | Path
) -> dict[str, Any]:
    """Run one job in a fresh measuring process (files in ``work_dir``); returns its result with ``memory`` completed."""
    import psutil

    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    job_file, result_file = folder / "job.json", folder / "result.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    stderr_file = folder / "stderr.txt"
    cmd = [sys.executable, "-m", "edgedistill.bench._worker", str(job_file), str(result_file)]
    cpu_before = psutil.cpu_times()
    with open(stderr_file, "wb") as err, open(folder / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=worker_env(int(job["options"]["threads"])),
            stdout=out,
            stderr=err,
            preexec_fn=_die_with_parent(),
        )
    try:
        return _watch(proc, job, folder, cpu_before, timeout_s, poll_interval_s)
    except BaseException:  # Ctrl-C or SIGTERM (edgedistill.signals): no measuring process outlives bench
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise


def _die_with_parent():
    """A preexec_fn that makes the measuring process get SIGKILL when bench dies (even by kill -9).

    ctypes is loaded here, in the parent: importing after fork in a threaded process can deadlock.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _watch(proc, job, folder: Path, cpu_before, timeout_s: float, poll_interval_s: float) -> dict[str, Any]:
    import psutil

    result_file, stderr_file = folder / "result.json", folder / "stderr.txt"
    polled_peak, polls = 0, 0
    started = time.monotonic()
    status, rusage, timed_out = None, None, False
    try:
        watched = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        watched = None
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if watched is not None:
            try:
                polled_peak = max(polled_peak, watched.memory_info().rss)
                polls += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                watched = None
        if time.monotonic() - started > timeout_s:
            timed_out = True
            os.kill(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(poll_interval_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.monotonic() - started
    cpu_after = psutil.cpu_times()
    stderr_tail = stderr_file.read_text(encoding="utf-8", errors="replace")[-3000:]
    if timed_out:
        raise MeasurementError(
            f"the measuring process ran past its limit of {timeout_s:.0f} s and was killed "
            f"(raise measurement.timeout_s, or lower min_iterations/min_seconds).\n{stderr_tail}"
        )
    if not result_file.is_file():
        raise MeasurementError(
            f"the measuring process exited with code {proc.returncode} without a result "
            f"(a crash inside the runtime?). Its stderr ends with:\n{stderr_tail or '(empty)'}"
        )
    result = json.loads(result_file.read_text(encoding="utf-8"))
    if not result.get("ok"):
        detail = result.get("traceback") or ""
        raise MeasurementError(f"{result.get('error')}\n{detail}".rstrip())
    memory = result.setdefault("memory", {})
    memory["polled_peak_rss_mb"] = round(polled_peak / 1e6, 2) if polls else None
    memory["polls"] = polls
    candidates = [v for v in (memory.get("polled_peak_rss_mb"), memory.get("vmhwm_mb")) if v is not None]
    if not candidates:
        raise MeasurementError("no memory figure for the measuring process (no /proc and no psutil reading)")
    memory["peak_rss_mb"] = max(candidates)
    busy = sum(
        getattr(cpu_after, k) - getattr(cpu_before, k) for k in ("user", "system", "nice", "irq", "softirq")
    )
    child_cpu = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0
    result["host"] = {
        "wall_seconds": wall_s,
        "child_cpu_seconds": child_cpu,
        # CPU time everything else on the host used while this process ran: a noise indicator
        "other_cpu_seconds": max(0.0, busy - child_cpu),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    return result
