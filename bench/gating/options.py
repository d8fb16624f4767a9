"""How a gate treats what it could not decide: the ``gate:`` section of a run recipe, and `gate()`'s keywords."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from edgedistill.config import StrictModel


class GateOptions(StrictModel):
    """Opt-outs from the non-zero exit codes of a gate that did not decide (both off by default)."""

    allow_skipped: bool = Field(
        False, description="nothing judged, or a budget not judged (no figure): exit 0 instead of 4"
    )
    allow_inconclusive: bool = Field(False, description="a check measured but undecided: exit 0 instead of 3")
    strict: bool | None = Field(
        None, description="retired: inconclusive exits 3 by default; true is accepted, false is refused"
    )

    @field_validator("strict")
    @classmethod
    def _strict_retired(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError(
                "strict: false no longer lets inconclusive checks pass (they exit 3 by default); "
                "use allow_inconclusive: true (--allow-inconclusive) and remove strict"
            )
        return value

    def gate_kwargs(self) -> dict[str, Any]:
        """The keywords of `edgedistill.bench.gating.gate` these options stand for."""
        return {"allow_skipped": self.allow_skipped, "allow_inconclusive": self.allow_inconclusive}
