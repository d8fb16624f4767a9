"""What a gate decides: one `Check` per budget, regression or baseline comparison, and the `GateResult` with its exit code."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_INCONCLUSIVE = 0, 1, 2, 3


ENCODER_TASKS = ("sequence-classification", "feature-extraction")


ALL_TASKS = (*ENCODER_TASKS, "text-generation")


@dataclass
class Check:
    artifact: str
    budget: str
    status: str  # passed | failed | skipped | inconclusive | error
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
    strict: bool
    report_path: str | None = None
    host: dict[str, Any] | None = None

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def exit_code(self) -> int:
        if self.count("failed") or self.count("error"):
            return EXIT_FAIL
        if self.strict and self.count("inconclusive"):
            return EXIT_INCONCLUSIVE
        return EXIT_PASS

    @property
    def verdict(self) -> str:
        code = self.exit_code
        if code == EXIT_FAIL:
            return "FAILED"
        if code == EXIT_INCONCLUSIVE:
            return "INCONCLUSIVE"
        if self.checks and all(c.status == "skipped" for c in self.checks):
            return "SKIPPED"
        return "PASSED" if not self.count("inconclusive") else "PASSED (with inconclusive checks)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "strict": self.strict,
            "counts": {s: self.count(s) for s in ("passed", "failed", "error", "inconclusive", "skipped")},
            "checks": [asdict(c) for c in self.checks],
        }
