"""The checks: each budget of a target against a report entry, regressions against a baseline report, baseline comparisons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgedistill.bench.gating.relative import RELATIVE_BUDGETS
from edgedistill.bench.gating.result import ALL_TASKS, ENCODER_TASKS, Check

# Budgets: where each figure lives in an artifact entry


@dataclass(frozen=True)
class BudgetSpec:
    key: str  # Budgets field
    unit: str
    kind: str  # "max": value <= limit passes; "min": value >= limit passes
    tasks: tuple[str, ...]
    read: Callable[[dict[str, Any]], tuple[float | None, str | None]]  # (value, why it is missing)
    min_samples: int = 0


def _get(entry: dict[str, Any], *path: str) -> Any:
    node: Any = entry
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _latency(q: int) -> Callable[[dict[str, Any]], tuple[float | None, str | None]]:
    def read(entry: dict[str, Any]) -> tuple[float | None, str | None]:
        return _get(entry, "latency", f"p{q}_ms"), "no latency measured"

    return read


def _lm(*path: str) -> Callable[[dict[str, Any]], tuple[float | None, str | None]]:
    def read(entry: dict[str, Any]) -> tuple[float | None, str | None]:
        if not entry.get("lm"):
            return None, f"not measured: the {entry.get('runtime')} runtime does not generate with a KV cache"
        return _get(entry, "lm", *path), "not measured"

    return read


def _acc(key: str) -> Callable[[dict[str, Any]], tuple[float | None, str | None]]:
    def read(entry: dict[str, Any]) -> tuple[float | None, str | None]:
        acc = entry.get("accuracy")
        if not acc:
            return None, "not measured: run `edgedistill bench` with --data"
        if acc.get("status") != "measured":
            return None, f"not measured: {acc.get('reason')}"
        value = acc.get(key)
        if value is None and key in ("agreement", "accuracy_drop", "cosine_mean"):
            ref = acc.get("reference") or {}
            return None, f"no reference to compare with ({ref.get('reason') or ref.get('status') or 'none'})"
        return value, "not measured (the data has no labels?)"

    return read


BUDGETS: tuple[BudgetSpec, ...] = (
    BudgetSpec("p50_latency_ms", "ms", "max", ALL_TASKS, _latency(50), 1),
    BudgetSpec("p95_latency_ms", "ms", "max", ALL_TASKS, _latency(95), 20),
    BudgetSpec("p99_latency_ms", "ms", "max", ALL_TASKS, _latency(99), 100),
    BudgetSpec(
        "min_throughput_per_s",
        "seq/s",
        "min",
        ENCODER_TASKS,
        lambda e: (_get(e, "latency", "throughput_per_s"), "no latency measured"),
    ),
    BudgetSpec("ttft_ms", "ms", "max", ("text-generation",), _lm("ttft_ms", "p50_ms")),
    BudgetSpec(
        "min_decode_tokens_per_s", "tok/s", "min", ("text-generation",), _lm("decode_tokens_per_s", "p50")
    ),
    BudgetSpec(
        "peak_rss_mb",
        "MB",
        "max",
        ALL_TASKS,
        lambda e: (_get(e, "memory", "peak_rss_mb"), "no memory measured"),
    ),
    BudgetSpec("artifact_size_mb", "MB", "max", ALL_TASKS, lambda e: (e.get("size_mb"), "size unknown")),
    BudgetSpec("min_accuracy", "", "min", ("sequence-classification",), _acc("accuracy")),
    BudgetSpec("max_accuracy_drop", "", "max", ("sequence-classification",), _acc("accuracy_drop")),
    BudgetSpec("min_agreement", "", "min", ("sequence-classification",), _acc("agreement")),
    BudgetSpec("min_cosine", "", "min", ("feature-extraction",), _acc("cosine_mean")),
)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return f"{value:.4g}"


_TIMING_KEYS = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "min_throughput_per_s", "ttft_ms",
                "min_decode_tokens_per_s")  # fmt: skip


def _emulated_reason(entry: dict[str, Any], key: str) -> str | None:
    """Budgets an emulated device (qemu-user) cannot speak for: its timings and its memory are the emulator's."""
    if not entry.get("emulated"):
        return None
    if key in _TIMING_KEYS:
        return "latency under emulation is not a device latency"
    if key == "peak_rss_mb":
        return "memory under emulation is the emulator's (qemu-user), not a device's"
    return None


def _budget_checks(entry: dict[str, Any], budgets: dict[str, Any], accepted: bool = True) -> list[Check]:
    """Every budget of the target against one candidate entry.

    ``accepted``: the target takes this artifact's format and precision, so an entry the bench
    skipped was skipped for want of hardware, a device or a runtime: its budgets are *not judged*
    (exit 4), where one the target does not take is merely skipped.
    """
    name, task, status = entry["name"], entry.get("task"), entry.get("status")
    unmeasured = "not_judged" if accepted else "skipped"
    checks = []
    if status == "error":
        checks.append(Check(name, "run", "error", f"could not be measured: {entry.get('reason')}"))
    for spec in BUDGETS:
        limit = budgets.get(spec.key)
        if limit is None:
            continue
        if status == "skipped":
            checks.append(Check(name, spec.key, unmeasured, str(entry.get("reason")), None, limit, spec.unit))
            continue
        if status == "error":
            checks.append(
                Check(name, spec.key, "skipped", "not measured: the run failed", None, limit, spec.unit)
            )
            continue
        emulated = _emulated_reason(entry, spec.key)
        if emulated:
            checks.append(Check(name, spec.key, "skipped", emulated, None, limit, spec.unit))
            continue
        if task not in spec.tasks:
            checks.append(
                Check(
                    name,
                    spec.key,
                    "skipped",
                    f"applies to {', '.join(spec.tasks)} artifacts, not {task}",
                    None,
                    limit,
                    spec.unit,
                )
            )
            continue
        value, why_missing = spec.read(entry)
        if value is None:
            checks.append(
                Check(name, spec.key, "not_judged", why_missing or "not measured", None, limit, spec.unit)
            )
            continue
        n = _get(entry, "latency", "n") or 0
        if spec.min_samples and n < spec.min_samples:
            checks.append(
                Check(
                    name,
                    spec.key,
                    "inconclusive",
                    f"{n} timed iterations cannot estimate this percentile (need {spec.min_samples}); raise measurement.min_iterations",
                    value,
                    limit,
                    spec.unit,
                )
            )
            continue
        ok = value <= limit if spec.kind == "max" else value >= limit
        op = ("<=" if ok else ">") if spec.kind == "max" else (">=" if ok else "<")
        unit = f" {spec.unit}" if spec.unit else ""
        checks.append(
            Check(
                name,
                spec.key,
                "passed" if ok else "failed",
                f"{_fmt(value)}{unit} {op} {_fmt(limit)}{unit}",
                value,
                limit,
                spec.unit,
            )
        )
    if not checks and status == "skipped":
        checks.append(Check(name, "run", unmeasured, str(entry.get("reason"))))
    relative = any(budgets.get(key) is not None for key in RELATIVE_BUDGETS)  # judged in `relative`
    if not checks and status == "measured" and not relative:
        checks.append(Check(name, "run", "passed", "measured; the target sets no budget"))
    return checks


# Regressions


def _verdict_check(artifact: str, budget: str, result: dict[str, Any], note: str = "") -> Check:
    status = {"regressed": "failed", "inconclusive": "inconclusive"}.get(result["verdict"], "passed")
    message = f"{result['verdict']}: {result['reason']}" + (f" ({note})" if note else "")
    return Check(artifact, budget, status, message, result.get("ratio"), 1.0 + result["min_effect"], "x")


def _regression_checks(report: dict[str, Any], regression: dict[str, Any]) -> list[Check]:
    from edgedistill.bench.stats import compare_processes

    checks = []
    emulated = bool((report.get("device") or {}).get("emulated"))
    for comp in report.get("comparisons") or []:
        if emulated:  # timings under qemu-user say nothing of a device's regression
            name = f"regression_latency vs {comp['baseline']}"
            checks.append(
                Check(comp["candidate"], name, "skipped", "latency under emulation is not a device latency")
            )
            continue
        result = compare_processes(
            comp["candidate_round_medians_ms"],
            comp["baseline_round_medians_ms"],
            candidate_n=len(comp["candidate_samples_ms"]),
            baseline_n=len(comp["baseline_samples_ms"]),
            **regression,
        )
        looks = comp.get("looks") or []
        note = "measured interleaved"
        if len(looks) > 1:
            note += (
                f"; extended to {looks[-1]['rounds_per_side']} processes a side after an inconclusive "
                f"first look of {looks[0]['rounds_per_side']}"
            )
        checks.append(
            _verdict_check(comp["candidate"], f"regression_latency vs {comp['baseline']}", result, note)
        )
    return checks


def _match(entry: dict[str, Any], baseline_entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    same_name = [b for b in baseline_entries if b.get("name") == entry.get("name")]
    if len(same_name) == 1:
        return same_name[0]
    same_kind = [
        b
        for b in baseline_entries
        if (b.get("format"), b.get("precision")) == (entry.get("format"), entry.get("precision"))
    ]
    return same_kind[0] if len(same_kind) == 1 else None


def _baseline_checks(
    report: dict[str, Any], baseline: dict[str, Any], regression: dict[str, Any]
) -> list[Check]:
    """Candidate entries vs the matching entries of an earlier report (measured in another job)."""
    from edgedistill.bench.stats import compare_processes

    checks = []
    base_entries = [
        b
        for b in baseline.get("artifacts") or []
        if b.get("status") == "measured" and b.get("role", "candidate") == "candidate"
    ]
    for entry in report.get("artifacts") or []:
        if entry.get("role", "candidate") != "candidate":
            continue
        name = entry["name"]
        base = _match(entry, base_entries)
        if entry.get("emulated") or (base or {}).get("emulated"):
            reason = "latency under emulation is not a device latency"
            checks.append(Check(name, "regression_latency vs baseline report", "skipped", reason))
            continue
        if entry.get("status") != "measured":
            reason = (
                entry.get("reason") if entry.get("status") == "skipped" else "not measured: the run failed"
            )
            checks.append(Check(name, "regression_latency vs baseline report", "skipped", str(reason)))
            continue
        if base is None:
            checks.append(
                Check(
                    name,
                    "regression_latency vs baseline report",
                    "not_judged",
                    "no measured artifact of the same name or format-precision in the baseline report",
                )
            )
            continue
        cand_rounds = _get(entry, "latency", "rounds") or []
        base_rounds = _get(base, "latency", "rounds") or []
        result = compare_processes(
            [r["median_ms"] for r in cand_rounds],
            [r["median_ms"] for r in base_rounds],
            candidate_n=sum(r["n"] for r in cand_rounds),
            baseline_n=sum(r["n"] for r in base_rounds),
            **regression,
        )
        checks.append(
            _verdict_check(
                name,
                f"regression_latency vs baseline {base['name']}",
                result,
                "separate jobs, not interleaved: `edgedistill bench --baseline-artifact` is more robust",
            )
        )
        min_effect = regression["min_effect"]
        for budget, path, unit in (
            ("regression_size", ("size_mb",), "MB"),
            ("regression_peak_rss", ("memory", "peak_rss_mb"), "MB"),
        ):
            cand_value, base_value = _get(entry, *path), _get(base, *path)
            if cand_value is None or base_value is None or base_value <= 0:
                continue
            ratio = cand_value / base_value
            ok = ratio < 1.0 + min_effect
            checks.append(
                Check(
                    name,
                    f"{budget} vs baseline {base['name']}",
                    "passed" if ok else "failed",
                    f"{_fmt(cand_value)} {unit} vs {_fmt(base_value)} {unit} ({(ratio - 1) * 100:+.1f}%, limit +{min_effect * 100:.1f}%)",
                    ratio,
                    1.0 + min_effect,
                    "x",
                )
            )
    return checks
