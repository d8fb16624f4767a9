"""What one bench run measures: the target's workload and measurement settings resolved once, for every artifact."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.bench.artifact import Artifact

# Measuring


@dataclass
class _Plan:
    """Resolved settings shared by every job of one bench run."""

    target: Any  # edgedistill.targets.Target
    options: dict[str, Any]
    cpus: list[int] | None
    warnings: list[str]
    work_dir: Path
    device: Any = None  # edgedistill.bench.devices: where jobs run (None: this host)

    def job(
        self, kind: str, artifact: Artifact, overrides: Mapping[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        options = dict(self.options)
        options.update(overrides or {})
        return {
            "kind": kind,
            "artifact": artifact.job_dict(),
            "options": options,
            "workload": self.target.workload.model_dump(),
            "measurement": self.target.measurement.model_dump(),
            "cpus": self.cpus,
            **extra,
        }

    def run(self, job: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
        """Run one job on the target's device (``local``: on this host, e.g. a torch reference)."""
        from edgedistill.bench.harness import run_worker

        folder = Path(tempfile.mkdtemp(prefix=f"{job['kind']}-", dir=self.work_dir))
        m = self.target.measurement
        poll = m.rss_poll_interval_ms / 1000.0
        if self.device is not None and not local:
            return self.device.run(job, timeout_s=m.timeout_s, poll_interval_s=poll, work_dir=folder)
        if local and self.device is not None:
            job = {
                **job,
                "options": {
                    **job["options"],
                    "threads": self.options.get("host_threads") or job["options"]["threads"],
                },
                "cpus": None,
            }
        return run_worker(job, timeout_s=m.timeout_s, poll_interval_s=poll, work_dir=folder)
