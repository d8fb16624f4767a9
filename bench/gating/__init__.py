"""The gate: a bench report x a target's budgets (x a baseline) -> pass / fail / inconclusive, for CI.

Every artifact x budget becomes one `Check`:

- ``passed`` / ``failed``: the measured figure against the budget's limit;
- ``inconclusive``: measured, but it cannot decide: too few samples (a p99 from fewer than 100
  iterations, a comparison with too few processes) or an interval that straddles the limit;
- ``not_judged``: the figure the budget needs does not exist: the target's hardware, device or
  runtime was absent (an artifact the target accepts, skipped by the bench), no ``--data`` for an
  accuracy budget, no teacher in the report for a relative budget;
- ``skipped``: the budget does not concern this artifact (a format or precision the target does
  not take, a budget for another task, a latency under emulation); never passed, never failed;
- ``error``: the artifact could not be measured at all (counts as a failure).

Regression checks compare the candidate with its baseline (see `edgedistill.bench.stats`):
comparisons measured interleaved by ``edgedistill bench --baseline-artifact`` are judged from
the report itself; ``--baseline base.json`` compares with an earlier report (separate jobs:
more exposed to drift, and said so in the message).

Relative budgets (``speedup_vs_teacher``, ``size_vs_teacher``, ``rss_vs_teacher``) judge each
candidate against the teacher measured in the same report (``--baseline-artifact``); see
`relative` and its public `relative_to_teacher(report)`.

Exit codes (worst first where several apply: 1, then 4, then 3):

- 0 every check judged and passed (or only what ``allow_*`` allows is left);
- 1 a budget or regression failed, or an artifact errored;
- 2 invalid input (report, target, baseline): raised as `GateInputError`;
- 3 inconclusive: a check was measured but cannot decide (``allow_inconclusive`` lets it pass);
- 4 not judged: nothing was judged at all (every check skipped), or some budget could not be
  judged (``allow_skipped`` lets it pass).

Where things are: `inputs` (load_report, check_same_measurement), `checks` (budgets,
regressions, baselines), `relative` (budgets against the teacher), `result` (Check, GateResult,
exit codes), `options` (GateOptions: the opt-outs, a run recipe's ``gate:``), `verdict` (`gate`),
`outputs` (junit_xml, markdown, text_summary, write_outputs).
"""

from __future__ import annotations

from edgedistill.bench.gating.checks import BudgetSpec
from edgedistill.bench.gating.inputs import GateInputError, check_same_measurement, load_report
from edgedistill.bench.gating.options import GateOptions
from edgedistill.bench.gating.outputs import junit_xml, markdown, text_summary, write_outputs
from edgedistill.bench.gating.relative import RELATIVE_BUDGETS, relative_to_teacher
from edgedistill.bench.gating.result import (
    ALL_TASKS,
    ENCODER_TASKS,
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INVALID,
    EXIT_NOT_JUDGED,
    EXIT_PASS,
    Check,
    GateResult,
    worst_exit_code,
)
from edgedistill.bench.gating.verdict import gate

__all__ = [
    "ALL_TASKS",
    "ENCODER_TASKS",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_INVALID",
    "EXIT_NOT_JUDGED",
    "EXIT_PASS",
    "RELATIVE_BUDGETS",
    "BudgetSpec",
    "Check",
    "GateInputError",
    "GateOptions",
    "GateResult",
    "check_same_measurement",
    "gate",
    "junit_xml",
    "load_report",
    "markdown",
    "relative_to_teacher",
    "text_summary",
    "worst_exit_code",
    "write_outputs",
]
