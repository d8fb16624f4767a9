"""The ``gate`` verb: a report and a target in, every check judged, a result with the exit code CI reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.bench.gating.checks import _baseline_checks, _budget_checks, _regression_checks
from edgedistill.bench.gating.inputs import (
    GateInputError,
    check_report_figures,
    check_same_measurement,
    load_report,
)
from edgedistill.bench.gating.relative import RELATIVE_BUDGETS, relative_checks
from edgedistill.bench.gating.result import Check, GateResult


def gate(
    report: dict[str, Any] | str | Path,
    target: Any,
    *,
    baseline: dict[str, Any] | str | Path | None = None,
    allow_skipped: bool = False,
    allow_inconclusive: bool = False,
    strict: bool | None = None,
    min_effect: float | None = None,
    p_threshold: float | None = None,
) -> GateResult:
    """Judge a bench report against ``target``'s budgets (and a baseline report); see the package doc.

    Exit codes of the result: 0 pass, 1 fail, 3 inconclusive, 4 not judged (2: this raises
    `GateInputError`). ``allow_skipped``: nothing judged / budgets not judged exit 0 instead of 4;
    ``allow_inconclusive``: inconclusive checks exit 0 instead of 3. ``strict`` is what the default
    has become (inconclusive exits 3): ``True`` is accepted and changes nothing, ``False`` is refused.
    """
    from edgedistill.errors import ConfigError
    from edgedistill.targets import Target, load_target

    if strict is False:
        raise GateInputError(
            "strict=False no longer makes inconclusive checks pass: inconclusive exits 3 by default; "
            "pass allow_inconclusive=True (`--allow-inconclusive`) to let them pass"
        )

    report_path = None
    if not isinstance(report, dict):
        report_path = str(report)
        report = load_report(report)
    else:
        check_report_figures(report, "the report")
    if not isinstance(target, Target):
        try:
            target = load_target(target)
        except ConfigError as exc:
            raise GateInputError(str(exc)) from None
    if not report["artifacts"]:
        raise GateInputError("the report holds no artifacts; nothing to judge")
    check_same_measurement(report, target)
    regression = target.regression.model_dump()
    if min_effect is not None:
        regression["min_effect"] = min_effect
    if p_threshold is not None:
        regression["p_threshold"] = p_threshold
    budgets = target.budgets.model_dump()
    checks: list[Check] = []
    accepted = {}
    for entry in report["artifacts"]:
        if entry.get("role", "candidate") == "candidate":
            accepted[entry["name"]] = target.accepts(entry.get("format"), entry.get("precision")) is None
            checks += _budget_checks(entry, budgets, accepted[entry["name"]])
    checks += relative_checks(report, budgets, regression["p_threshold"], accepted)
    if not any(budgets.get(key) is not None for key in RELATIVE_BUDGETS):
        # with a budget relative to the teacher, the interleaved baseline *is* the teacher: a student is
        # meant to differ from it, and speedup_vs_teacher judges that comparison, not "no regression"
        checks += _regression_checks(report, regression)
    if baseline is not None:
        if isinstance(baseline, dict):
            check_report_figures(baseline, "the baseline report")
            base = baseline
        else:
            base = load_report(baseline, "baseline report")
        checks += _baseline_checks(report, base, regression)
    ran = {
        e.get("name"): e.get("ran") for e in report["artifacts"] if e.get("role", "candidate") == "candidate"
    }
    for check in checks:
        check.ran = ran.get(check.artifact)
    return GateResult(
        target=target.name,
        checks=checks,
        allow_skipped=allow_skipped,
        allow_inconclusive=allow_inconclusive,
        report_path=report_path,
        host=report.get("host"),
    )
