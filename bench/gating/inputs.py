"""What a gate reads: a bench report (or a baseline), checked to be one and measured as the target says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgedistill.bench.gating.result import EXIT_INVALID
from edgedistill.errors import EdgeDistillError


class GateInputError(EdgeDistillError):
    """The report, target or baseline handed to the gate is unusable (exit code 2)."""

    exit_code = EXIT_INVALID


# Inputs


def load_report(path: str | Path, what: str = "report") -> dict[str, Any]:
    from edgedistill.bench.core import REPORT_KIND, REPORT_VERSION

    path = Path(path)
    if not path.is_file():
        raise GateInputError(
            f"{what} {path} does not exist; pass the JSON written by `edgedistill bench --out`"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GateInputError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(report, dict) or report.get("kind") != REPORT_KIND:
        raise GateInputError(
            f"{what} {path} is not an edgedistill bench report (its 'kind' is not {REPORT_KIND!r})"
        )
    if report.get("report_version") != REPORT_VERSION:
        raise GateInputError(
            f"{what} {path} has report_version {report.get('report_version')!r}; this gate reads version {REPORT_VERSION}"
        )
    if not isinstance(report.get("artifacts"), list) or not isinstance(report.get("target"), dict):
        raise GateInputError(f"{what} {path} lacks 'artifacts' or 'target'; it is truncated or hand-edited")
    return report


_MEASUREMENT_KEYS = ("requires", "runtime", "workload")


def check_same_measurement(report: dict[str, Any], target) -> None:
    """The budgets of ``target`` can judge ``report`` only if it was measured the same way."""
    measured = (report.get("target") or {}).get("config") or {}
    wanted = json.loads(target.model_dump_json())
    diffs = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif a != b:
            diffs.append(f"{where}: report measured {a!r}, target says {b!r}")

    for key in _MEASUREMENT_KEYS:
        walk(measured.get(key), wanted.get(key), key)
    if diffs:
        raise GateInputError(
            f"the report was measured on target {report['target'].get('name')!r} with settings that differ from "
            f"target {target.name!r}, so its budgets cannot judge it:\n  "
            + "\n  ".join(diffs[:20])
            + "\nRe-run `edgedistill bench` with this target, or gate with the target the report was measured on."
        )
