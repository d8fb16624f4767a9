"""CPU and wall seconds of each `fit` phase, summed over every session that worked on one OUT.

A search may take several sessions: ``--screen-only`` first ("which shapes fit my device?"),
then the full search resuming from its screening; or a run killed and started again. The bar
compares the whole search's CPU time with one full distillation, so each finished phase adds
its seconds to ``OUT/fit/times.json`` as it ends (under a file lock: workers may share OUT),
and the report quotes the totals. A session killed in the middle of a phase loses that phase's
part: it is not counted, and the next session measures only what it does again. CPU seconds are
this process's and its children's: a measurement on an ssh or adb device spends that device's
CPU, which is not counted (on a loopback ssh device too: sshd's processes are not our children).
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Any

from edgedistill.cpu_ledger import cpu_seconds
from edgedistill.io import atomic_write_json


class PhaseTimes:
    """``lap(name)`` ends a phase: its seconds go to this session and to OUT's running totals."""

    def __init__(self, fit_dir: Path, mode: str):
        self.path = fit_dir / "times.json"
        self.session: dict[str, Any] = {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mode": mode,
        }
        self._clock = (cpu_seconds(), time.perf_counter())
        self._index: int | None = None  # this session's place in the file's list

    def lap(self, name: str) -> None:
        now = (cpu_seconds(), time.perf_counter())
        spent = {
            f"{name}_cpu_s": round(now[0] - self._clock[0], 2),
            f"{name}_wall_s": round(now[1] - self._clock[1], 2),
        }
        self._clock = now
        self.session.update(spent)
        with open(self.path.with_suffix(".lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                ledger = self._read()
                for key, value in spent.items():
                    ledger["totals"][key] = round(ledger["totals"].get(key, 0.0) + value, 2)
                if self._index is None:
                    self._index = len(ledger["sessions"])
                    ledger["sessions"].append({})
                ledger["sessions"][self._index] = dict(self.session)
                atomic_write_json(self.path, ledger)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def totals(self) -> dict[str, float]:
        """Every session's seconds per phase (``cost_cpu_s``: all the screening this OUT ever paid)."""
        return dict(self._read()["totals"])

    def sessions(self) -> list[dict[str, Any]]:
        return list(self._read()["sessions"])

    def _read(self) -> dict[str, Any]:
        try:
            ledger = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            ledger = {}
        if not isinstance(ledger, dict):
            ledger = {}
        return {"totals": dict(ledger.get("totals") or {}), "sessions": list(ledger.get("sessions") or [])}
