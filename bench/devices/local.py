"""``local``: this host, today's behaviour (`edgedistill.bench.harness.run_worker`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class LocalDevice:
    kind = "local"
    emulated = False

    def __init__(self, spec: dict[str, Any] | None = None, run_dir: Path | None = None):
        self.spec = spec or {"kind": "local"}

    def open(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "emulated": False, "note": "the bench host itself (see host)"}

    def runtime_reason(self, runtime: Any) -> str | None:
        return None  # the host's runtime checks (`Runtime.unavailable_reason`) apply

    def run(
        self, job: dict[str, Any], *, timeout_s: float, poll_interval_s: float, work_dir: Path
    ) -> dict[str, Any]:
        from edgedistill.bench.harness import run_worker

        return run_worker(job, timeout_s=timeout_s, poll_interval_s=poll_interval_s, work_dir=work_dir)

    def close(self) -> None:
        """Nothing to release."""
