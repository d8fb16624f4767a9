"""``OUT/run_state.json`` of `edgedistill run`: the fingerprint, status and outputs of every stage.

A stage records a fingerprint of its inputs (`digest` of its config, `path_digest` of the files it
reads) when it finishes; a re-run skips a stage whose fingerprint is unchanged. A damaged state file
is set aside (``run_state.json.damaged``) and every stage runs again: nothing is lost by that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from edgedistill.io import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

STATE_FILE = "run_state.json"


def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (sorted keys): a stage's config fingerprint."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def path_digest(path: str | Path | None) -> str | None:
    """sha256 over a file, or over every file of a folder (names and contents); None for hub ids."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        return digest({f.relative_to(p).as_posix(): sha256_file(f) for f in files})
    return f"not-a-local-path:{path}"


class RunState:
    """``OUT/run_state.json``: per stage its fingerprint, status and timing, written atomically."""

    def __init__(self, out: Path):
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = {"version": 1, "stages": {}}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        """Read the state file; a damaged one is set aside and every stage runs again.

        Nothing is lost by that: distill resumes from its last checkpoint, and export and bench
        redo work whose outputs the state can no longer vouch for. A stage record that is not an
        object is dropped the same way (that stage runs again).
        """
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            problem = f"is not valid JSON ({exc})"
        else:
            if not isinstance(data, dict):
                problem = f"holds a JSON {type(data).__name__}, not an object"
            elif not isinstance(data.get("stages"), dict):
                problem = "has no 'stages' object"
            else:
                stages = data["stages"]
                data["stages"] = {k: v for k, v in stages.items() if isinstance(v, dict)}
                for name in sorted(set(stages) - set(data["stages"])):
                    log.warning("%s: stage %r is not an object; that stage runs again", self.path, name)
                self.data = data
                return
        aside = self.path.with_name(STATE_FILE + ".damaged")
        self.path.replace(aside)
        log.warning(
            "%s %s (kept as %s); every stage runs again, distill resuming from its last checkpoint. "
            "Nothing to fix by hand; delete --out to start afresh.",
            self.path,
            problem,
            aside.name,
        )

    def get(self, stage: str) -> dict[str, Any]:
        return self.data["stages"].get(stage, {})

    def is_done(self, stage: str, fingerprint: str) -> bool:
        record = self.get(stage)
        return (
            record.get("status") == "done"
            and record.get("fingerprint") == fingerprint
            # a record without them cannot be skipped (bench's outputs are its report's path)
            and isinstance(record.get("outputs"), (dict, str))
        )

    def mark(self, stage: str, **record: Any) -> None:
        self.data["stages"][stage] = {
            **record,
            "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.path, self.data)
