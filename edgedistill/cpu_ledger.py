"""CPU seconds a resumable run has cost, kept across kills: ``cpu_ledger.json`` in its folder.

A run killed and started again resumes from the last state it saved (a Trainer checkpoint, a
finished phase). Its total should read as what one uninterrupted run costs, so the ledger
counts, per session:

- the setup (loading, tokenizing, the teacher cache) of the first session that reached training,
  and of no later one: a resumed session repeats it only because it was killed;
- its training CPU up to the last state it saved (`CpuLedger.saved`); what a killed session did
  after that is thrown away by the resume and done again by the next session, which counts it;
- the whole of the finishing session after its setup (training, evaluation, saving).

A session killed before its training started counts nothing. Every rule errs towards the smaller
total, so a ratio "search cost / one run" built on it never reads better than it is. CPU seconds
are this process's and its finished children's; under a multi-process launch, rank 0's only
(``world_size`` is recorded).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from edgedistill.io import atomic_write_json

LEDGER = "cpu_ledger.json"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (bench workers, exporters)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuLedger:
    """One session of a run in ``folder``: `training_starts`, `saved` after each save, `finished`.

    ``fresh=True`` (a run started from nothing) drops the sessions of an earlier run in the folder.
    ``write=False`` (ranks other than 0) keeps the books in memory only.
    """

    def __init__(self, folder: Path, *, fresh: bool, world_size: int = 1, write: bool = True):
        self.path = Path(folder) / LEDGER
        self.write = write
        self._start = cpu_seconds()
        self._train_start: float | None = None
        self.sessions = [] if fresh else _read(self.path)
        self.session: dict[str, Any] = {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "world_size": world_size,
            "setup_cpu_s": None,  # until its training starts
            "train_cpu_s_to_last_save": 0.0,
            "finished": False,
        }
        if not fresh and not self.sessions:  # a run resumed from before its folder had a ledger
            self.session["earlier_sessions_unknown"] = True
        self.sessions.append(self.session)
        self._flush()  # on the books from the start: a session killed in its setup is one too

    def training_starts(self) -> None:
        now = cpu_seconds()
        self._train_start = now
        self.session["setup_cpu_s"] = round(now - self._start, 2)
        self._flush()

    def saved(self) -> None:
        """A state a resume starts from was written: the training CPU so far is kept."""
        if self._train_start is None:
            return
        self.session["train_cpu_s_to_last_save"] = round(cpu_seconds() - self._train_start, 2)
        self._flush()

    def finished(self) -> dict[str, Any]:
        """The run is complete: its total (`total`) and the sessions it took."""
        self.saved()
        self.session["finished"] = True
        self._flush()
        return total(self.sessions)

    def _flush(self) -> None:
        if self.write:
            atomic_write_json(self.path, {"sessions": self.sessions})


def total(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """``cpu_s`` by the module's rules, ``sessions`` (how many reached training), ``resumed``, and
    ``complete`` (False when the run began before its folder had a ledger: earlier sessions unknown).

    Sessions after the first finished one (the same command run again on a complete run) are not
    part of the run's cost.
    """
    finished = next((i for i, s in enumerate(sessions) if s.get("finished")), len(sessions) - 1)
    trained = [s for s in sessions[: finished + 1] if s.get("setup_cpu_s") is not None]
    complete = not any(s.get("earlier_sessions_unknown") for s in sessions[: finished + 1])
    if not trained:
        return {"cpu_s": None, "sessions": 0, "resumed": False, "complete": complete}
    cpu = float(trained[0]["setup_cpu_s"]) + sum(float(s["train_cpu_s_to_last_save"]) for s in trained)
    return {
        "cpu_s": round(cpu, 2),
        "sessions": len(trained),
        "resumed": len(trained) > 1,
        "complete": complete,
    }


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    sessions = record.get("sessions") if isinstance(record, dict) else None
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []
