"""What a gate writes for CI and people: JUnit XML (one testcase per check), Markdown, a text summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgedistill.bench.gating.checks import _fmt
from edgedistill.bench.gating.result import STATUSES, GateResult
from edgedistill.io import atomic_write_text

# Outputs


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one testcase per artifact x target x budget (or regression check)."""
    # what does not exit 0 is a failure in JUnit too; what is allowed (or merely skipped) is skipped
    nothing = result.nothing_judged and not result.allow_skipped
    undecided = {
        "inconclusive": result.allow_inconclusive,
        "not_judged": result.allow_skipped,
    }
    failures = result.count("failed") + int(nothing)
    failures += sum(result.count(s) for s, allowed in undecided.items() if not allowed)
    skipped = result.count("skipped") + sum(result.count(s) for s, allowed in undecided.items() if allowed)
    suites = ET.Element("testsuites", name="edgedistill gate")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"edgedistill.gate.{result.target}",
        tests=str(len(result.checks) + int(nothing)),
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
        elif check.status in undecided:
            what = check.status.replace("_", " ")
            if undecided[check.status]:
                ET.SubElement(case, "skipped", message=f"{what} (allowed): {check.message}")
            else:
                ET.SubElement(case, "failure", message=f"{what}: {check.message}", type=check.status)
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", message=check.message)
        else:
            ET.SubElement(case, "system-out").text = check.message
    if nothing:  # every check skipped: the gate judged nothing, and says so as a failing testcase
        case = ET.SubElement(
            suite, "testcase", classname=f"edgedistill.{result.target}", name="judged", time="0"
        )
        message = "nothing was judged: every check was skipped (exit 4; --allow-skipped lets it pass)"
        ET.SubElement(case, "failure", message=message, type="not_judged").text = message
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
    "not_judged": "🚫 not judged",
    "skipped": "⏭️ skipped",
}


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result: GateResult) -> str:
    """A Markdown summary for a CI step summary ($GITHUB_STEP_SUMMARY)."""
    cpu = (result.host or {}).get("cpu") or {}
    isa = ", ".join(k for k, v in (cpu.get("isa") or {}).items() if v) or "unknown"
    counts = ", ".join(f"{result.count(s)} {s}" for s in STATUSES if result.count(s))
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
    lines += [
        "",
        f"Exit code {result.exit_code}. "
        + _EXIT_NOTE.format(
            inconclusive="pass (--allow-inconclusive)" if result.allow_inconclusive else "exit 3",
            not_judged="pass (--allow-skipped)" if result.allow_skipped else "exit 4",
        ),
    ]
    return "\n".join(lines) + "\n"


_EXIT_NOTE = (
    "Inconclusive checks (measured, undecided) {inconclusive}; checks not judged (no figure: "
    "hardware, device or runtime absent, no --data, no teacher) and a gate that judged nothing {not_judged}."
)


def text_summary(result: GateResult) -> str:
    width = max([len(f"{c.label}  {c.budget}") for c in result.checks] + [10])
    lines = [f"edgedistill gate: target {result.target}: {result.verdict}"]
    for c in result.checks:
        label = f"{c.label}  {c.budget}"
        lines.append(f"  {c.status.upper():<12} {label:<{width}}  {c.message}")
    if result.nothing_judged:
        lines.append("  nothing was judged: every check was skipped")
    lines.append(f"exit code {result.exit_code}")
    return "\n".join(lines)


def write_outputs(
    result: GateResult, junit: str | Path | None = None, markdown_path: str | Path | None = None
) -> None:
    if junit is not None:
        atomic_write_text(junit, junit_xml(result))
    if markdown_path is not None:
        atomic_write_text(markdown_path, markdown(result))
