"""What a gate reads: a bench report (or a baseline), checked to be one and measured as the target says."""

from __future__ import annotations

import json
import math
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
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise GateInputError(
            f"{what} {path} is {path.stat().st_size} bytes, more than a bench report holds ({MAX_REPORT_BYTES})"
        )
    try:
        report = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise GateInputError(
            f"{what} {path} is not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}; truncated?); "
            "re-run `edgedistill bench --out`"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise GateInputError(
            f"{what} {path} is not a JSON report ({exc}); re-run `edgedistill bench --out`"
        ) from None
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
    check_report_figures(report, f"{what} {path}")
    return report


MAX_REPORT_BYTES = 512 * 2**20


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a figure a bench report can hold")


def _bad_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)


# figures that can never be negative: times, sizes, rates, counts (accuracy_drop may be)
_NON_NEGATIVE = ("_ms", "_mb", "_per_s", "_bytes", "rounds_per_side")
_NON_NEGATIVE_KEYS = ("n", "bytes", "samples", "rows")


def _walk_figures(node: Any, where: str, problems: list[str]) -> None:
    if len(problems) >= 20:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{here}: {value} is not a finite number")
            elif (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and value < 0
                and (str(key).endswith(_NON_NEGATIVE) or key in _NON_NEGATIVE_KEYS)
            ):
                problems.append(f"{here}: {value} is negative")
            else:
                _walk_figures(value, here, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{where}[{i}]: {value} is not a finite number")
            elif (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and value < 0
                and where.endswith("_ms")
            ):
                problems.append(f"{where}[{i}]: {value} is negative")
            else:
                _walk_figures(value, f"{where}[{i}]", problems)


def _check_entry(entry: Any, i: int, problems: list[str]) -> None:
    where = f"artifacts[{i}]"
    if not isinstance(entry, dict):
        problems.append(f"{where}: a {type(entry).__name__}, not an object")
        return
    if not isinstance(entry.get("name"), str):
        problems.append(f"{where}.name: missing or not a string")
    if entry.get("status") not in ("measured", "skipped", "error"):
        problems.append(f"{where}.status: {entry.get('status')!r:.40} is not measured, skipped or error")
    if entry.get("status") != "measured" or entry.get("role", "candidate") != "candidate":
        return
    latency = entry.get("latency")
    if entry.get("task") == "text-generation" and isinstance(entry.get("lm"), dict):
        return
    # a measured entry holds its measurements: stripped ones must never pass a budget by absence
    if not isinstance(latency, dict) or not all(k in latency for k in ("n", "p50_ms")):
        problems.append(
            f"{where} ({entry.get('name')}): status is measured but its latency figures are missing"
        )
        return
    if _bad_number(latency["n"]) or latency["n"] < 1:
        problems.append(f"{where}.latency.n: {latency['n']!r:.40} timed iterations")
    for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_per_s"):
        if key in latency and _bad_number(latency[key]):
            problems.append(f"{where}.latency.{key}: {latency[key]!r:.40} is not a number")
    rounds = latency.get("rounds", [])
    if not isinstance(rounds, list) or any(
        not isinstance(r, dict) or _bad_number(r.get("median_ms")) or _bad_number(r.get("n")) for r in rounds
    ):
        problems.append(f"{where}.latency.rounds: each round needs numbers 'median_ms' and 'n'")
    for key in ("size_mb",):
        if key in entry and entry[key] is not None and _bad_number(entry[key]):
            problems.append(f"{where}.{key}: {entry[key]!r:.40} is not a number")


def _check_comparison(comp: Any, i: int, problems: list[str]) -> None:
    keys = (
        "candidate_round_medians_ms",
        "baseline_round_medians_ms",
        "candidate_samples_ms",
        "baseline_samples_ms",
    )
    if not isinstance(comp, dict) or not isinstance(comp.get("candidate"), str):
        problems.append(f"comparisons[{i}]: not an object naming its candidate")
        return
    for key in keys:
        values = comp.get(key)
        if not isinstance(values, list) or any(_bad_number(v) for v in values):
            problems.append(f"comparisons[{i}].{key}: missing or not a list of numbers")


def check_report_figures(report: dict[str, Any], source: str) -> None:
    """Every figure finite, times/sizes/rates never negative, measured entries holding their measurements."""
    problems: list[str] = []
    _walk_figures(report.get("artifacts"), "artifacts", problems)
    _walk_figures(report.get("comparisons"), "comparisons", problems)
    for i, entry in enumerate(report.get("artifacts") or []):
        _check_entry(entry, i, problems)
    comparisons = report.get("comparisons") or []
    if not isinstance(comparisons, list):
        problems.append("comparisons: not a list")
    else:
        for i, comp in enumerate(comparisons):
            _check_comparison(comp, i, problems)
    if problems:
        raise GateInputError(
            f"{source} holds figures a bench run cannot produce (hand-edited or damaged; re-run "
            "`edgedistill bench --out`):\n  " + "\n  ".join(problems[:20])
        )


_MEASUREMENT_KEYS = ("requires", "runtime", "workload", "device")
# what decides where a device measurement ran; how it is reached (user, key, timeouts, workdir,
# the adb binary, the sysroot cache) and whether parity is also run do not change its figures
_DEVICE_KEYS = ("kind", "host", "port", "serial", "python", "native", "qemu_cpu")
# test-only knobs reports written before they left the target schema still carry, at rest
_RETIRED_NEUTRAL = {"debug_extra_latency_ms": 0.0, "debug_slowdown_factor": 1.0}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    runtime = dict(config.get("runtime") or {})
    for key, neutral in _RETIRED_NEUTRAL.items():
        if key in runtime and runtime[key] == neutral:
            del runtime[key]
    config["runtime"] = runtime
    device = config.get("device") or {"kind": "local"}  # reports older than `device:` ran here
    if isinstance(device, dict):
        keys = _DEVICE_KEYS if device.get("kind", "local") != "local" else ("kind",)
        device = {key: device.get(key, "local" if key == "kind" else None) for key in keys}
    config["device"] = device
    return config


def check_same_measurement(report: dict[str, Any], target) -> None:
    """The budgets of ``target`` can judge ``report`` only if it was measured the same way (hardware,
    runtime settings, workload, and the device: a host report never meets a board's budgets)."""
    measured = _comparable((report.get("target") or {}).get("config") or {})
    wanted = _comparable(json.loads(target.model_dump_json()))
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
