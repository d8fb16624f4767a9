"""Parity results: per-output differences, the report a manifest records, and the errors that stop an export."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgedistill import host
from edgedistill.errors import EdgeDistillError
from edgedistill.export.config import RUN_PRECISION_TOLERANCES

# Varied English: short and long, questions, numbers, punctuation, names, a little noise.


class ParityError(EdgeDistillError):
    """An artifact's outputs differ from torch beyond the tolerance of its precision."""

    def __init__(self, report: ParityReport, message: str | None = None):
        self.report = report
        super().__init__(
            message
            or (
                f"parity failed for {report.artifact} against {report.reference_name}:\n"
                f"{report.table()}\n"
                f"No artifact was written (an earlier good one is kept). If the difference is expected, "
                f"loosen the bound, e.g. --set tolerances.{report.tolerance_name or report.precision}.<bound>=<value>; a float "
                f"mismatch usually means an op the exporter or runtime handles differently."
            )
        )


class DeployedParityError(ParityError):
    """The file passed parity, but the runtime's defaults on this host compute something else."""

    def __init__(self, report: ParityReport, load: dict[str, Any]):
        deployed = report.deployed
        assert deployed is not None
        ran = deployed.runtime.get("ran")
        props = (
            load.get("compile_properties") or load.get("settings") or "the settings in the manifest's load"
        )
        super().__init__(
            report,
            f"{report.artifact} computes what it declares (parity passed with {report.runtime.get('settings')}), "
            f"but loaded with the runtime's defaults on this CPU ({host.generation()}) it ran {ran} and differs "
            f"from {report.reference_name} beyond the tolerance for that precision:\n{deployed.table()}\n"
            f"No artifact was written. Fix: apps must load it with {props} (the manifest's `load` section "
            f"says so), or accept the difference with --set tolerances.{_loosened_by(ran) or report.tolerance_name or report.precision}"
            f".<bound>=<value>.",
        )


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    # max |diff| over max |reference|: the bound that follows the arithmetic (bf16 ~2^-8)
    max_rel_diff: float | None = None
    top1_agreement: float | None = None
    cosine_min: float | None = None
    cosine_mean: float | None = None
    checked: bool = True
    failures: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    artifact: str
    precision: str
    reference: str
    samples: int
    runs: int
    lengths: list[int]
    tolerance: dict[str, Any]
    outputs: list[OutputParity]
    # the runtime settings asked for, what the runtime read back, and the arithmetic that ran
    runtime: dict[str, Any] = field(default_factory=dict)
    # the same check with the runtime's defaults on this host (None: the defaults are these settings)
    deployed: ParityReport | None = None
    # the `tolerances` entry the bounds come from: the precision, or qat-exact (see export.config)
    tolerance_name: str = ""

    @property
    def passed(self) -> bool:
        return all(not o.failures for o in self.outputs) and (self.deployed is None or self.deployed.passed)

    @property
    def reference_name(self) -> str:
        return {
            "float": "the float32 torch student",
            "qat": "the NNCF fake-quant torch student",
            "gguf-qat": "the GGUF fake-quant torch student",
        }.get(self.reference, self.reference)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        if self.deployed is not None:
            data["deployed"]["passed"] = self.deployed.passed
        return data

    def table(self) -> str:
        tol = self.tolerance

        def bound(value: float | None, op: str, applies: bool = True) -> str:
            return "-" if value is None or not applies else f"{op}{value:.7g}"

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.6g}"

        rows = [
            ("output", "max_abs", "bound", "max_rel", "bound", "top1", "bound", "cos_min", "bound", "result")
        ]
        for o in self.outputs:
            result = (
                "unchecked" if not o.checked else ("FAIL: " + "; ".join(o.failures) if o.failures else "ok")
            )
            rows.append(
                (
                    o.name,
                    num(o.max_abs_diff),
                    bound(tol.get("max_abs_diff"), "<="),
                    num(o.max_rel_diff),
                    bound(tol.get("max_rel_diff"), "<="),
                    num(o.top1_agreement),
                    bound(tol.get("min_top1_agreement"), ">=", o.top1_agreement is not None),
                    num(o.cosine_min),
                    bound(tol.get("min_cosine"), ">=", o.name == "sentence_embedding"),
                    result,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.append(f"  ({self.samples} sentences, lengths {min(self.lengths)}-{max(self.lengths)} tokens)")
        return "\n".join(lines)


def _loosened_by(ran: str | None) -> str | None:
    """The run precision whose tolerance applies to ``ran`` (``bf16``, ``fp16``), if any."""
    words = (ran or "").replace("+", " ").split()
    return next((RUN_PRECISION_TOLERANCES[w] for w in words if w in RUN_PRECISION_TOLERANCES), None)
