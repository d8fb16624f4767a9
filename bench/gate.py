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
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgeDistillError
from edgedistill.io import atomic_write_text

EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_INCONCLUSIVE = 0, 1, 2, 3
ENCODER_TASKS = ("sequence-classification", "feature-extraction")
ALL_TASKS = (*ENCODER_TASKS, "text-generation")


class GateInputError(EdgeDistillError):
    """The report, target or baseline handed to the gate is unusable (exit code 2)."""

    exit_code = EXIT_INVALID


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


# --------------------------------------------------------------------------------------------
# Budgets: where each figure lives in an artifact entry
# --------------------------------------------------------------------------------------------


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


def _budget_checks(entry: dict[str, Any], budgets: dict[str, Any]) -> list[Check]:
    name, task, status = entry["name"], entry.get("task"), entry.get("status")
    checks = []
    if status == "error":
        checks.append(Check(name, "run", "error", f"could not be measured: {entry.get('reason')}"))
    for spec in BUDGETS:
        limit = budgets.get(spec.key)
        if limit is None:
            continue
        if status == "skipped":
            checks.append(Check(name, spec.key, "skipped", str(entry.get("reason")), None, limit, spec.unit))
            continue
        if status == "error":
            checks.append(
                Check(name, spec.key, "skipped", "not measured: the run failed", None, limit, spec.unit)
            )
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
                Check(name, spec.key, "inconclusive", why_missing or "not measured", None, limit, spec.unit)
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
        checks.append(Check(name, "run", "skipped", str(entry.get("reason"))))
    if not checks and status == "measured":
        checks.append(Check(name, "run", "passed", "measured; the target sets no budget"))
    return checks


# --------------------------------------------------------------------------------------------
# Regressions
# --------------------------------------------------------------------------------------------


def _verdict_check(artifact: str, budget: str, result: dict[str, Any], note: str = "") -> Check:
    status = {"regressed": "failed", "inconclusive": "inconclusive"}.get(result["verdict"], "passed")
    message = f"{result['verdict']}: {result['reason']}" + (f" ({note})" if note else "")
    return Check(artifact, budget, status, message, result.get("ratio"), 1.0 + result["min_effect"], "x")


def _regression_checks(report: dict[str, Any], regression: dict[str, Any]) -> list[Check]:
    from edgedistill.bench.stats import compare_processes

    checks = []
    for comp in report.get("comparisons") or []:
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
                    "inconclusive",
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


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_report(path: str | Path, what: str = "report") -> dict[str, Any]:
    from edgedistill.bench.core import REPORT_KIND, REPORT_VERSION

    path = Path(path)
    if not path.is_file():
        raise GateInputError(
            f"{what} {path} does not exist; pass the JSON written by `edgedistill bench --out`"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GateInputError(f"{what} {path} is not valid JSON: {exc}") from None
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
    return report


_MEASUREMENT_KEYS = ("requires", "runtime", "workload")


def check_same_measurement(report: dict[str, Any], target) -> None:
    """The budgets of ``target`` can judge ``report`` only if it was measured the same way."""
    measured = (report.get("target") or {}).get("config") or {}
    wanted = json.loads(target.model_dump_json())
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


def gate(
    report: dict[str, Any] | str | Path,
    target: Any,
    *,
    baseline: dict[str, Any] | str | Path | None = None,
    strict: bool = False,
    min_effect: float | None = None,
    p_threshold: float | None = None,
) -> GateResult:
    """Judge a bench report against ``target``'s budgets (and a baseline report); see the module doc."""
    from edgedistill.errors import ConfigError
    from edgedistill.targets import Target, load_target

    report_path = None
    if not isinstance(report, dict):
        report_path = str(report)
        report = load_report(report)
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
    for entry in report["artifacts"]:
        if entry.get("role", "candidate") == "candidate":
            checks += _budget_checks(entry, budgets)
    checks += _regression_checks(report, regression)
    if baseline is not None:
        base = baseline if isinstance(baseline, dict) else load_report(baseline, "baseline report")
        checks += _baseline_checks(report, base, regression)
    ran = {
        e.get("name"): e.get("ran") for e in report["artifacts"] if e.get("role", "candidate") == "candidate"
    }
    for check in checks:
        check.ran = ran.get(check.artifact)
    return GateResult(
        target=target.name, checks=checks, strict=strict, report_path=report_path, host=report.get("host")
    )


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one testcase per artifact x target x budget (or regression check)."""
    failures = result.count("failed") + (result.count("inconclusive") if result.strict else 0)
    skipped = result.count("skipped") + (0 if result.strict else result.count("inconclusive"))
    suites = ET.Element("testsuites", name="edgedistill gate")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"edgedistill.gate.{result.target}",
        tests=str(len(result.checks)),
        failures=str(failures),
        errors=str(result.count("error")),
        skipped=str(skipped),
    )
    props = ET.SubElement(suite, "properties")
    cpu = (result.host or {}).get("cpu") or {}
    for key, value in (
        ("target", result.target),
        ("verdict", result.verdict),
        ("cpu", cpu.get("model")),
        ("isa", ",".join(k for k, v in (cpu.get("isa") or {}).items() if v)),
        ("report", result.report_path),
    ):
        if value:
            ET.SubElement(props, "property", name=key, value=str(value))
    for check in result.checks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"edgedistill.{result.target}.{check.artifact}",
            name=check.budget,
            time="0",
        )
        if check.ran:
            ET.SubElement(ET.SubElement(case, "properties"), "property", name="ran", value=check.ran)
        if check.status == "failed":
            ET.SubElement(case, "failure", message=check.message, type="budget").text = check.message
        elif check.status == "error":
            ET.SubElement(case, "error", message=check.message[:500], type="run").text = check.message
        elif check.status == "inconclusive":
            if result.strict:
                ET.SubElement(case, "failure", message=f"inconclusive: {check.message}", type="inconclusive")
            else:
                ET.SubElement(case, "skipped", message=f"inconclusive: {check.message}")
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", message=check.message)
        else:
            ET.SubElement(case, "system-out").text = check.message
    suites.set("tests", suite.get("tests"))
    suites.set("failures", suite.get("failures"))
    suites.set("errors", suite.get("errors"))
    suites.set("skipped", suite.get("skipped"))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


_ICONS = {
    "passed": "✅ pass",
    "failed": "❌ FAIL",
    "error": "💥 error",
    "inconclusive": "❔ inconclusive",
    "skipped": "⏭️ skipped",
}


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: GateResult) -> str:
    """A Markdown summary for a CI step summary ($GITHUB_STEP_SUMMARY)."""
    cpu = (result.host or {}).get("cpu") or {}
    isa = ", ".join(k for k, v in (cpu.get("isa") or {}).items() if v) or "unknown"
    counts = ", ".join(
        f"{result.count(s)} {s}"
        for s in ("passed", "failed", "error", "inconclusive", "skipped")
        if result.count(s)
    )
    lines = [
        f"## edgedistill gate: `{result.target}` — **{result.verdict}**",
        "",
        f"{counts or 'no checks'}. Host: {cpu.get('model') or 'unknown CPU'} ({cpu.get('generation') or 'generation unknown'}), "
        f"{cpu.get('logical_cores')} logical cores, ISA: {isa}. `(ran …)`: the arithmetic each artifact ran in, read back from its runtime.",
        "",
        "| artifact | check | value | limit | result | detail |",
        "|---|---|---:|---:|---|---|",
    ]
    for c in result.checks:
        unit = f" {c.unit}" if c.unit and c.value is not None else ""
        lines.append(
            f"| `{_md(c.label)}` | {_md(c.budget)} | {_fmt(c.value)}{unit} | {_fmt(c.limit)} | {_ICONS[c.status]} | {_md(c.message)} |"
        )
    lines.append("")
    if result.strict:
        lines.append("Strict mode: inconclusive checks fail the gate (exit 3).")
    else:
        lines.append(
            "Inconclusive checks are reported but do not fail the gate (use --strict to make them exit 3)."
        )
    return "\n".join(lines) + "\n"


def text_summary(result: GateResult) -> str:
    width = max([len(f"{c.label}  {c.budget}") for c in result.checks] + [10])
    lines = [f"edgedistill gate: target {result.target}: {result.verdict}"]
    for c in result.checks:
        label = f"{c.label}  {c.budget}"
        lines.append(f"  {c.status.upper():<12} {label:<{width}}  {c.message}")
    return "\n".join(lines)


def write_outputs(
    result: GateResult, junit: str | Path | None = None, markdown_path: str | Path | None = None
) -> None:
    if junit is not None:
        atomic_write_text(junit, junit_xml(result))
    if markdown_path is not None:
        atomic_write_text(markdown_path, markdown(result))
