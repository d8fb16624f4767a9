"""What a gate decides: one `Check` per budget, regression or baseline comparison, and the `GateResult` with its exit code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# 0 every check the target asks for was judged and passed; 1 a budget or regression failed, or an
# artifact errored; 2 invalid input (report, target, baseline); 3 a check was measured but cannot
# be decided (a noisy comparison, too few iterations for a percentile); 4 nothing was judged, or a
# budget could not be judged at all (hardware, device or runtime absent; no accuracy figure; a
# relative budget without the teacher in the report).
EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_INCONCLUSIVE, EXIT_NOT_JUDGED = 0, 1, 2, 3, 4

# worst first: what `edgedistill run` (several targets) exits with
_SEVERITY = (EXIT_INVALID, EXIT_FAIL, EXIT_NOT_JUDGED, EXIT_INCONCLUSIVE, EXIT_PASS)

STATUSES = ("passed", "failed", "error", "inconclusive", "not_judged", "skipped")


ENCODER_TASKS = ("sequence-classification", "feature-extraction")


ALL_TASKS = (*ENCODER_TASKS, "text-generation")


def worst_exit_code(codes: Iterable[int]) -> int:
    """The exit code of several gates: 2, then 1, then 4, then 3, else 0."""
    codes = list(codes)
    for code in _SEVERITY:
        if code in codes:
            return code
    return EXIT_PASS


@dataclass
class Check:
    artifact: str
    budget: str
    # passed | failed | error | inconclusive (measured, undecided) | not_judged (the figure the budget
    # needs does not exist: never measured here) | skipped (the budget does not concern this artifact)
    status: str
    message: str
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    # the arithmetic the artifact ran in (read back by the runtime), e.g. "bf16" for an fp32 IR
    ran: str | None = None

    @property
    def label(self) -> str:
        return f"{self.artifact} (ran {self.ran})" if self.ran else self.artifact


@dataclass
class GateResult:
    target: str
    checks: list[Check]
    allow_skipped: bool = False
    allow_inconclusive: bool = False
    report_path: str | None = None
    host: dict[str, Any] | None = None

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def nothing_judged(self) -> bool:
        """No check got a figure to judge (every artifact skipped or unmeasurable here)."""
        return not any(c.status in ("passed", "failed", "error", "inconclusive") for c in self.checks)

    @property
    def exit_code(self) -> int:
        if self.count("failed") or self.count("error"):
            return EXIT_FAIL
        if not self.allow_skipped and (self.nothing_judged or self.count("not_judged")):
            return EXIT_NOT_JUDGED
        if not self.allow_inconclusive and self.count("inconclusive"):
            return EXIT_INCONCLUSIVE
        return EXIT_PASS

    @property
    def verdict(self) -> str:
        code = self.exit_code
        if code == EXIT_FAIL:
            return "FAILED"
        if code == EXIT_NOT_JUDGED:
            return "NOT JUDGED"
        if code == EXIT_INCONCLUSIVE:
            return "INCONCLUSIVE"
        if self.nothing_judged:
            return "SKIPPED (allowed by --allow-skipped)"
        allowed = [
            what
            for what, status in (("inconclusive", "inconclusive"), ("not judged", "not_judged"))
            if self.count(status)
        ]
        return f"PASSED ({' and '.join(allowed)} checks allowed)" if allowed else "PASSED"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "allow_skipped": self.allow_skipped,
            "allow_inconclusive": self.allow_inconclusive,
            "counts": {s: self.count(s) for s in STATUSES},
            "checks": [asdict(c) for c in self.checks],
        }
