"""Relative budgets: a candidate against the teacher measured on the same target, in the same report.

``edgedistill bench CANDIDATE --baseline-artifact TEACHER_ARTIFACT`` measures the teacher
interleaved with every candidate (alternating fresh processes) and records one comparison per
candidate; that baseline artifact is "the teacher" here. Three budgets read it:

- ``speedup_vs_teacher`` (min, e.g. 3): the candidate is at least X times faster. Judged on the
  interval of the latency ratio candidate/teacher (`edgedistill.bench.stats.ratio_bounds`, the
  distribution-free bounds of the Hodges-Lehmann ratio over process medians, each one-sided at
  ``1 - regression.p_threshold``): passed when the whole interval is <= 1/X, failed when the whole
  interval is > 1/X, inconclusive when it straddles 1/X (or the processes are too few for a bound);
- ``size_vs_teacher`` (max, e.g. 0.2): model bytes of the candidate / the teacher's (deterministic);
- ``rss_vs_teacher`` (max): peak RSS of the candidate's measuring processes / the teacher's.

A relative budget in a target with no teacher in the report is *not judged* (exit 4) with the
fix in the message. `relative_to_teacher(report)` gives the same figures to any caller.
"""

from __future__ import annotations

from typing import Any

from edgedistill.bench.gating.result import Check

RELATIVE_BUDGETS = ("speedup_vs_teacher", "size_vs_teacher", "rss_vs_teacher")

_NO_TEACHER = (
    "no teacher in this report: measure the candidate against it with "
    "`edgedistill bench CANDIDATE --baseline-artifact TEACHER_ARTIFACT`"
)


def _teacher(report: dict[str, Any]) -> dict[str, Any] | None:
    found = [e for e in report.get("artifacts") or [] if e.get("role") == "baseline"]
    return found[0] if found else None


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return float(a) / float(b)


def relative_to_teacher(report: dict[str, Any], *, alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Per measured candidate: its speed-up over the teacher (estimate and bounds), size and RSS ratios.

    Speed-up = teacher latency / candidate latency, from the Hodges-Lehmann ratio of the process
    medians of the interleaved comparison and its one-sided ``1 - alpha`` bounds (None where no
    comparison exists or the processes are too few for a bound). Empty when the report holds no
    teacher (no ``--baseline-artifact``).
    """
    teacher = _teacher(report)
    if teacher is None:
        return {}
    comparisons = {c.get("candidate"): c for c in report.get("comparisons") or []}
    teacher_rss = (teacher.get("memory") or {}).get("peak_rss_mb")
    figures: dict[str, dict[str, Any]] = {}
    for entry in report.get("artifacts") or []:
        if entry.get("role", "candidate") != "candidate" or entry.get("status") != "measured":
            continue
        fig: dict[str, Any] = {
            "teacher": teacher.get("name"),
            "size_ratio": _ratio(entry.get("size_mb"), teacher.get("size_mb")),
            "rss_ratio": _ratio((entry.get("memory") or {}).get("peak_rss_mb"), teacher_rss),
            "speedup": None,
            "speedup_lower": None,
            "speedup_upper": None,
            "confidence": 1.0 - alpha,
            "processes": None,
        }
        comp = comparisons.get(entry.get("name"))
        cand = (comp or {}).get("candidate_round_medians_ms") or []
        base = (comp or {}).get("baseline_round_medians_ms") or []
        if cand and base:
            speedup, lower, upper = speedup_interval(cand, base, alpha)
            fig.update(
                speedup=speedup, speedup_lower=lower, speedup_upper=upper, processes=[len(cand), len(base)]
            )
        figures[entry["name"]] = fig
    return figures


def speedup_interval(
    candidate_medians: list[float], teacher_medians: list[float], alpha: float = 0.05
) -> tuple[float, float | None, float | None]:
    """Speed-up over the teacher (teacher / candidate latency, Hodges-Lehmann over process medians)
    and its one-sided ``1 - alpha`` bounds (None where the processes are too few for one)."""
    from edgedistill.bench.stats import hodges_lehmann_ratio, ratio_bounds

    lower, upper = ratio_bounds(candidate_medians, teacher_medians, alpha)
    return (
        1.0 / hodges_lehmann_ratio(candidate_medians, teacher_medians),
        1.0 / upper if upper else None,
        1.0 / lower if lower else None,
    )


def speedup_undecided(bounds: tuple[float | None, float | None], limit: float | None) -> bool:
    """Whether a speed-up's 95 % ``bounds`` (`speedup_interval`) leave ``speedup_vs_teacher: limit``
    undecided (the gate's "inconclusive"): the bench measures more processes before it gives up."""
    if limit is None:
        return False
    lower, upper = bounds
    return lower is None or upper is None or (lower < limit <= upper)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _speedup_check(name: str, fig: dict[str, Any], limit: float, emulated: bool) -> Check:
    budget = "speedup_vs_teacher"
    if emulated:
        return Check(
            name, budget, "skipped", "latency under emulation is not a device latency", None, limit, "x"
        )
    if fig["processes"] is None:
        why = "no interleaved comparison of this candidate with the teacher in the report"
        return Check(name, budget, "not_judged", f"{why}: {_NO_TEACHER}", None, limit, "x")
    lower, upper, speedup = fig["speedup_lower"], fig["speedup_upper"], fig["speedup"]
    where = (
        f"{_x(speedup)} faster than teacher {fig['teacher']} over {fig['processes'][0]} + "
        f"{fig['processes'][1]} processes"
    )
    if lower is None or upper is None:
        return Check(
            name,
            budget,
            "inconclusive",
            f"{where}; too few processes for a {fig['confidence']:.0%} bound (raise measurement.compare_rounds)",
            speedup,
            limit,
            "x",
        )
    interval = f"{fig['confidence']:.0%} bounds {_x(lower)}-{_x(upper)}"
    if lower >= limit:
        return Check(name, budget, "passed", f"{where}, {interval} >= {limit:g}x", speedup, limit, "x")
    if upper < limit:
        return Check(name, budget, "failed", f"{where}, {interval} < {limit:g}x", speedup, limit, "x")
    return Check(
        name,
        budget,
        "inconclusive",
        f"{where}, but {interval} straddle {limit:g}x: too noisy to decide (more compare_rounds)",
        speedup,
        limit,
        "x",
    )


def _ratio_check(name: str, budget: str, ratio: float | None, limit: float, what: str) -> Check:
    if ratio is None:
        return Check(
            name, budget, "not_judged", f"{what} of the candidate or the teacher unknown", None, limit, "x"
        )
    ok = ratio <= limit
    op = "<=" if ok else ">"
    return Check(
        name,
        budget,
        "passed" if ok else "failed",
        f"{what} {ratio:.3f}x the teacher's {op} {limit:g}x",
        ratio,
        limit,
        "x",
    )


def relative_checks(
    report: dict[str, Any], budgets: dict[str, Any], alpha: float, accepted: dict[str, bool]
) -> list[Check]:
    """One check per candidate x relative budget the target sets (see the module doc).

    ``accepted[name]``: the target takes that artifact (a skipped one is then not judged)."""
    wanted = {key: budgets.get(key) for key in RELATIVE_BUDGETS if budgets.get(key) is not None}
    if not wanted:
        return []
    teacher = _teacher(report)
    figures = relative_to_teacher(report, alpha=alpha)
    checks = []
    for entry in report.get("artifacts") or []:
        if entry.get("role", "candidate") != "candidate":
            continue
        name, status = entry["name"], entry.get("status")
        emulated = bool(entry.get("emulated"))
        for budget, limit in wanted.items():
            if status == "skipped":
                state = "not_judged" if accepted.get(name, True) else "skipped"
                checks.append(Check(name, budget, state, str(entry.get("reason")), None, limit, "x"))
            elif status != "measured":
                checks.append(
                    Check(name, budget, "skipped", "not measured: the run failed", None, limit, "x")
                )
            elif teacher is None:
                checks.append(Check(name, budget, "not_judged", _NO_TEACHER, None, limit, "x"))
            elif teacher.get("status") != "measured":
                why = f"the teacher {teacher.get('name')} was not measured: {teacher.get('reason')}"
                checks.append(Check(name, budget, "not_judged", why, None, limit, "x"))
            elif budget == "speedup_vs_teacher":
                checks.append(_speedup_check(name, figures[name], limit, emulated))
            elif budget == "size_vs_teacher":
                checks.append(_ratio_check(name, budget, figures[name]["size_ratio"], limit, "size"))
            elif emulated:
                reason = "memory under emulation is the emulator's (qemu-user), not a device's"
                checks.append(Check(name, budget, "skipped", reason, None, limit, "x"))
            else:
                checks.append(_ratio_check(name, budget, figures[name]["rss_ratio"], limit, "peak RSS"))
    return checks
