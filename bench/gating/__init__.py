"""The gate: a bench report x a target's budgets (x a baseline) -> pass / fail / inconclusive, for CI.

Every artifact x budget becomes one `Check`:

- ``passed`` / ``failed``: the measured figure against the budget's limit;
- ``skipped``: the target could not run here (hardware absent, format or precision not accepted)
  or the budget does not apply to the artifact's task; never passed, never failed;
- ``inconclusive``: the figure was not measured (no ``--data`` for an accuracy budget) or rests
  on too few samples (a p99 from fewer than 100 iterations, a comparison with too few processes);
- ``error``: the artifact could not be measured at all (counts as a failure).

Regression checks compare the candidate with its baseline (see `edgedistill.bench.stats`):
comparisons measured interleaved by ``edgedistill bench --baseline-artifact`` are judged from
the report itself; ``--baseline base.json`` compares with an earlier report (separate jobs:
more exposed to drift, and said so in the message).

Exit codes: 0 pass, 1 a budget or regression failed (or an artifact errored), 2 invalid input,
3 inconclusive (only with ``strict``; otherwise inconclusive checks are reported and pass).

Where things are: `inputs` (load_report, check_same_measurement), `checks` (budgets,
regressions, baselines), `result` (Check, GateResult, exit codes), `verdict` (`gate`),
`outputs` (junit_xml, markdown, text_summary, write_outputs).
"""

from __future__ import annotations

from edgedistill.bench.gating.checks import BudgetSpec
from edgedistill.bench.gating.inputs import GateInputError, check_same_measurement, load_report
from edgedistill.bench.gating.outputs import junit_xml, markdown, text_summary, write_outputs
from edgedistill.bench.gating.result import (
    ALL_TASKS,
    ENCODER_TASKS,
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INVALID,
    EXIT_PASS,
    Check,
    GateResult,
)
from edgedistill.bench.gating.verdict import gate

__all__ = [
    "ALL_TASKS",
    "ENCODER_TASKS",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_INVALID",
    "EXIT_PASS",
    "BudgetSpec",
    "Check",
    "GateInputError",
    "GateResult",
    "check_same_measurement",
    "gate",
    "junit_xml",
    "load_report",
    "markdown",
    "text_summary",
    "write_outputs",
]
