"""Keep the machine quiet while another benchmark measures: pause training jobs, resume them after.

Two long benchmarks share the two cores of this machine (one torch thread each). A latency
measurement needs the cores to itself, and `fit` knows when it measures: it holds its device lock
(``<fit cache>/local-device.lock``) exclusively while it does. A benchmark's own comparison bench
runs fresh ``edgedistill.bench._worker`` processes. This watcher pauses the process groups it is
given (SIGSTOP) while either is seen, and resumes them (SIGCONT) once neither has been seen for
``--grace`` seconds (the pause between two fresh worker processes must not resume them).

A paused group that is measuring itself would time its own stall, so a group with a bench worker
of its own is never paused; the harness's busy-CPU check then reports the overlap. On exit (Ctrl-C,
SIGTERM, the measuring job gone) every group it paused is resumed.

    python benchmarks/quiet.py --measurer PGID [--lock FILE] --pause PGID [PGID ...]

This is a tool for running benchmarks side by side, not a benchmark (`run_all.py` does not run it).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import time
from pathlib import Path

from common import run_main

WORKER = b"edgedistill.bench._worker"


def lock_held_exclusively(path: Path | None) -> bool:
    """True when someone holds PATH's flock exclusively (a shared probe cannot get it)."""
    if path is None or not path.is_file():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def groups_with_a_bench_worker() -> set[int]:
    """Process groups of the running ``edgedistill.bench._worker`` processes."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if WORKER in (entry / "cmdline").read_bytes():
                found.add(os.getpgid(int(entry.name)))
        except (OSError, ProcessLookupError):
            continue
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def watch(measurer: int, pause: list[int], lock: Path | None, grace: float, poll: float) -> int:
    paused: set[int] = set()
    last_busy = float("-inf")

    def resume_all(*_):
        for pgid in sorted(paused):
            try:
                os.killpg(pgid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            print(f"[quiet] resumed {pgid}", flush=True)
        paused.clear()

    def stop(signum, _frame):
        resume_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while group_alive(measurer):
            workers = groups_with_a_bench_worker()
            if lock_held_exclusively(lock) or measurer in workers:
                last_busy = time.monotonic()
                for pgid in pause:
                    if pgid in paused or not group_alive(pgid):
                        continue
                    if pgid in workers:  # measuring itself: pausing it would time the stall
                        continue
                    os.killpg(pgid, signal.SIGSTOP)
                    paused.add(pgid)
                    print(
                        f"[quiet] {time.strftime('%H:%M:%S')} paused {pgid}: {measurer} measures", flush=True
                    )
            elif paused and time.monotonic() - last_busy > grace:
                print(f"[quiet] {time.strftime('%H:%M:%S')} {measurer} done measuring", flush=True)
                resume_all()
            time.sleep(poll)
    finally:
        resume_all()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measurer", type=int, required=True, help="process group of the measuring benchmark")
    ap.add_argument("--lock", type=Path, help="fit's device lock file (held exclusively while it measures)")
    ap.add_argument("--pause", type=int, nargs="+", required=True, help="process groups to pause meanwhile")
    ap.add_argument("--grace", type=float, default=60.0, help="seconds without a measurement before resuming")
    ap.add_argument("--poll", type=float, default=1.0)
    args = ap.parse_args()
    return watch(args.measurer, args.pause, args.lock, args.grace, args.poll)


if __name__ == "__main__":
    sys.exit(run_main(main))
