"""The run's results for people: ``summary.json`` first, then ``summary.md``, ``pareto.png``, ``report.html``.

Everything is read back from the files the stages wrote (distill_report.json, export_report.json,
the bench reports, the gate results, the teacher's reference reports), so the reports can be rebuilt
from a run folder alone with `write_reports`. Each artifact is shown against the teacher: its
speed-up over the teacher fp32 measured on the same target (p50 over p50 of sequential runs, or the
interleaved comparison where the bench had the teacher as its baseline), and its
task metric beside the teacher's (classification: accuracy on the labelled eval data, also as a
share of the teacher's; sentence embeddings: cosine to the teacher's embeddings). ``report.html``
embeds its pictures and styles: it opens offline, from e-mail or a CI artifact, with no other file
beside it.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from edgedistill.io import atomic_write_json, atomic_write_text
from edgedistill.outputs import RECIPE_OUTPUTS
from edgedistill.plots import Budget, PlotPoint, pareto_plot
from edgedistill.teacher_reference import against_teacher, candidates, measured, teacher_row


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _metric(entry: dict[str, Any]) -> tuple[str | None, float | None]:
    acc = entry.get("accuracy") or {}
    if acc.get("status") != "measured":
        return None, None
    if acc.get("metric") == "accuracy":
        return "accuracy", acc.get("accuracy")
    return "cosine to torch student", acc.get("cosine_mean")


def _own_check(entry: dict[str, Any]) -> str | None:
    """How the file matches the torch student it came from: top-1 agreement, or embedding cosine."""
    acc = entry.get("accuracy") or {}
    if acc.get("status") != "measured":
        return None
    if acc.get("agreement") is not None:
        return f"top-1 agreement {acc['agreement']:.4f}"
    return f"cosine {acc['cosine_mean']:.4f}" if acc.get("cosine_mean") is not None else None


def _failed_checks(gate: dict[str, Any] | None, artifact: str) -> list[str]:
    checks = (gate or {}).get("checks") or []
    return [
        f"{c['budget']}: {c['message']}"
        for c in checks
        if c["artifact"] == artifact and c["status"] == "failed"
    ]


def _interleaved_speedups(report: dict[str, Any]) -> dict[str, float]:
    """Speed-ups over the teacher from the bench's interleaved comparison, where the teacher was its
    baseline (targets with budgets relative to the teacher); empty otherwise."""
    if not any(e.get("role") == "baseline" for e in report.get("artifacts") or []):
        return {}
    from edgedistill.bench.gating.relative import relative_to_teacher

    return {name: fig["speedup"] for name, fig in relative_to_teacher(report).items() if fig.get("speedup")}


def collect(
    out: Path, state: dict[str, Any], verdicts: list[dict[str, Any]], exit_code: int
) -> dict[str, Any]:
    """summary.json's content, from the files in the run folder."""
    distill = _read(out / "distill" / "distill_report.json") or {}
    exported = _read(out / "artifacts" / "export_report.json") or {}
    task = distill.get("task") or (distill.get("config") or {}).get("task")
    rows = []
    teacher_rows = []
    budgets: dict[str, dict[str, Any]] = {}
    host: dict[str, Any] = {}
    for verdict in verdicts:
        name = verdict["target"]
        report = _read(out / "bench" / f"{name}.json") or {}
        cpu = (report.get("host") or {}).get("cpu") or {}
        host = host or {
            "cpu": cpu.get("model"),
            "generation": cpu.get("generation"),
            "isa": [k for k, v in (cpu.get("isa") or {}).items() if v],
        }
        gate = _read(out / "gate" / f"{name}.json")
        budgets[name] = ((report.get("target") or {}).get("config") or {}).get("budgets") or {}
        teacher, scored = teacher_row(out, state, name, task)
        interleaved = _interleaved_speedups(report)
        if teacher is not None:
            teacher_rows.append(teacher)
        for entry in candidates(report):
            metric_name, metric = _metric(entry)
            rows.append(
                {
                    "target": name,
                    "artifact": entry.get("name"),
                    # what the runtime ran the artifact in (read back), e.g. an fp32 IR in bf16
                    "ran": entry.get("ran"),
                    "label": entry.get("label") or entry.get("name"),
                    "format": entry.get("format"),
                    "precision": entry.get("precision"),
                    **measured(entry),
                    "metric": metric_name,
                    "own_check": _own_check(entry),
                    "value": metric,
                    "failed_checks": _failed_checks(gate, entry.get("name")),
                }
            )
            against_teacher(rows[-1], teacher, task, scored.get(entry.get("name")))
            if interleaved.get(entry.get("name")):  # measured against the teacher in alternating processes
                rows[-1]["speedup_vs_teacher"] = round(interleaved[entry.get("name")], 3)
                rows[-1]["speedup_basis"] = "interleaved"
    student = distill.get("student") or {}
    teacher = distill.get("teacher") or {}
    return {
        "exit_code": exit_code,
        "verdicts": verdicts,
        "stages": state.get("stages", {}),
        "distill": {
            "task": task,
            "teacher": {k: teacher.get(k) for k in ("layers", "parameters", "metrics")},
            "student": {k: student.get(k) for k in ("layers", "parameters", "metrics", "evaluated_with")},
            "train_wall_time_s": (distill.get("training") or {}).get("train_wall_time_s"),
        },
        "artifacts": [
            {
                "name": Path(a["path"]).name,
                "path": a["path"],
                "size_mb": round(a["model_bytes"] / 1e6, 3),
                "quantization": (a.get("quantization") or {}).get("method"),
                "parity_passed": (a.get("parity") or {}).get("passed"),
            }
            for a in exported.get("artifacts", [])
        ],
        "export_skipped": exported.get("skipped", []),
        "budgets": budgets,
        "host": host,
        "rows": rows,
        # the teacher fp32, measured on each target like the artifacts: the reference, never gated
        "teacher_rows": teacher_rows,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cells(r: dict[str, Any]) -> tuple[str, str, str, str]:
    """A row's speed-up, task metric, share of the teacher and check against its own student, as text."""
    speedup = f"{r['speedup_vs_teacher']:.2f}x" if r.get("speedup_vs_teacher") else "-"
    if r.get("speedup_basis") == "interleaved":
        speedup += " (interleaved)"
    metric = f"{r['task_metric']} {_fmt(r['task_value'], 4)}" if r.get("task_metric") else "-"
    pct = f"{r['pct_of_teacher']:.1f} %" if r.get("pct_of_teacher") is not None else "-"
    own = r.get("own_check") or "-"
    return speedup, metric, pct, own


def _metric_items(metrics: dict[str, Any] | None, own_output: str) -> dict[tuple[str, str], Any]:
    """(output, metric) -> value. A generalist's second output keeps its metrics in a dict under the
    output's name; the task's own output's are the top-level ones, any dict among them (agreement
    with each teacher) spelled as dotted names."""
    items: dict[tuple[str, str], Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            output, prefix = (key, "") if key in RECIPE_OUTPUTS.values() else (own_output, f"{key}.")
            items |= {(output, f"{prefix}{name}"): v for name, v in value.items()}
        else:
            items[(own_output, key)] = value
    return items


def metrics_table(
    report: dict[str, Any], who: tuple[str, ...] = ("teacher", "student")
) -> list[tuple[str, ...]]:
    """The eval metrics of the models ``who`` names in ``report`` (a distill or finetune report, or the
    run summary's ``distill``) side by side: (output, metric, one value per model), one row per output
    and metric, the task's own output first. The run report's table and the verbs' console summary."""
    own_output = "embedding" if report.get("task") == "feature-extraction" else "logits"
    models = [_metric_items((report.get(name) or {}).get("metrics"), own_output) for name in who]
    # the last model's (the student's) metrics in their order, then any only the others have
    keys = sorted(
        dict.fromkeys(k for items in reversed(models) for k in items), key=lambda k: k[0] != own_output
    )
    return [(out, name, *(_fmt(items.get((out, name)), 4) for items in models)) for out, name in keys]


def _table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's teacher row (the reference, not gated) first, then its artifacts."""
    rows = []
    teachers = {t["target"]: t for t in summary.get("teacher_rows") or []}
    for target in dict.fromkeys(r["target"] for r in summary["rows"]):
        if target in teachers:
            t = teachers[target]
            rows.append(
                {
                    **t,
                    "label": f"{t['label']} (reference)",
                    "failed_checks": [],
                    "metric": None,
                    "value": None,
                    "speedup_vs_teacher": 1.0 if t.get("p50_ms") else None,
                    "pct_of_teacher": 100.0
                    if t.get("task_value") and t.get("task_metric") == "accuracy"
                    else None,
                    "gate_note": "reference, not gated",
                }
            )
        rows += [r for r in summary["rows"] if r["target"] == target]
    return rows


def summary_markdown(summary: dict[str, Any]) -> str:
    verdict = {0: "PASSED", 1: "FAILED", 4: "NOT-JUDGED"}.get(summary["exit_code"], "INCONCLUSIVE")
    lines = [f"## edgedistill run: {verdict} (exit {summary['exit_code']})", ""]
    d = summary["distill"]
    if d.get("student", {}).get("metrics"):
        lines += [
            f"Student: {d['student'].get('layers')} layers, {_fmt((d['student'].get('parameters') or 0) / 1e6, 1)}M "
            f"params (teacher {d['teacher'].get('layers')} layers).",
            "",
            "| output | metric | teacher | student |",
            "|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in metrics_table(d)]
        lines.append("")
    h = summary.get("host") or {}
    if h.get("cpu"):
        lines += [
            f"Measured on {h['cpu']} ({h.get('generation')}; ISA {', '.join(h.get('isa') or []) or 'unknown'}). "
            "`(ran …)`: the arithmetic each artifact ran in, read back from its runtime.",
            "",
        ]
    lines += [
        "Speed-up: the teacher fp32's p50 over the artifact's, both measured on the target (sequential "
        "runs; `interleaved`: from alternating fresh processes, where a budget is relative to the teacher). "
        "Task metric: "
        + (
            "accuracy on the labelled eval data."
            if d.get("task") == "sequence-classification"
            else "cosine to the teacher's embeddings on the eval data."
        )
        + " vs own student: the bench's check of each file against the torch student it came from "
        "(top-1 agreement, or cosine).",
        "",
        "| target | artifact | status | size MB | p50 ms | p95 ms | x vs teacher | peak RSS MB | task metric "
        "| % of teacher | vs own student | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _table_rows(summary):
        gate = (
            r.get("gate_note")
            or "; ".join(r["failed_checks"])
            or ("ok" if r["status"] == "measured" else (r["reason"] or "")[:80])
        )
        speedup, metric, pct, own = _cells(r)
        lines.append(
            f"| {r['target']} | {r.get('label') or r['artifact']} | {r['status']} | {_fmt(r['size_mb'])} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {speedup} | {_fmt(r['peak_rss_mb'], 0)} | {metric} "
            f"| {pct} | {own} | {gate} |"
        )
    lines += ["", "| target | verdict | exit |", "|---|---|---|"]
    lines += [f"| {v['target']} | {v['verdict']} | {v['exit_code']} |" for v in summary["verdicts"]]
    return "\n".join(lines) + "\n"


def pareto_png(summary: dict[str, Any], path: Path) -> bool:
    """Task metric (accuracy, or cosine to the teacher) vs p95 latency, the teacher as a reference
    point per target, marker area ~ artifact MB, one series per target, budget lines.

    Without a teacher reference (``bench.teacher: false``) the y axis is the bench's own metric.
    Returns False (and writes nothing) when no artifact has both figures.
    """
    rows = summary["rows"]
    use_task = any(r.get("task_value") is not None for r in rows)
    key, metric_of = ("task_value", "task_metric") if use_task else ("value", "metric")
    points = [
        PlotPoint(
            label=r["artifact"],
            latency_ms=r["p95_ms"],
            value=r[key],
            series=r["target"],
            size_mb=r["size_mb"],
        )
        for r in rows
        if r["p95_ms"] is not None and r[key] is not None
    ]
    if not points:
        return False
    metric = next(r[metric_of] for r in rows if r[key] is not None)
    reference = [
        PlotPoint(
            label=f"teacher ({t['target']})",
            latency_ms=t["p95_ms"],
            value=t["task_value"],
            series=t["target"],
        )
        for t in (summary.get("teacher_rows") or [])
        if use_task and t.get("p95_ms") and t.get("task_value") is not None
    ]
    floor_key = (
        "min_accuracy"
        if metric == "accuracy"
        else ("min_cosine" if metric == "cosine to torch student" else None)
    )
    budgets = [
        Budget(
            series=name,
            max_latency_ms=b.get("p95_latency_ms"),
            min_value=b.get(floor_key) if floor_key else None,
        )
        for name, b in summary["budgets"].items()
    ]
    return pareto_plot(
        points,
        budgets,
        reference,
        path,
        metric=metric,
        title="Task metric vs latency per target, the teacher as reference (marker area ~ artifact size)",
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;width:100%} th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.PASSED,.ok{color:#0a7d28;font-weight:600} .FAILED,.failed{color:#b00020;font-weight:600} .SKIPPED,.skipped,.INCONCLUSIVE,.NOT-JUDGED{color:#8a6d00;font-weight:600}
img{max-width:100%;border:1px solid #eee} .muted{color:#666;font-size:.85rem}
"""


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def report_html(summary: dict[str, Any], out: Path) -> str:
    e = html.escape
    verdict = {0: "PASSED", 1: "FAILED", 4: "NOT-JUDGED"}.get(summary["exit_code"], "INCONCLUSIVE")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>edgedistill run report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>edgedistill run: <span class='{verdict}'>{verdict}</span> (exit {summary['exit_code']})</h1>",
        f"<p class='muted'>{e(str(out))}</p>",
        f"<p class='muted'>Measured on {e(str((summary.get('host') or {}).get('cpu')))} "
        f"({e(str((summary.get('host') or {}).get('generation')))}); “ran …” is the arithmetic each artifact ran in, "
        "read back from its runtime.</p>",
        "<h2>Gate</h2><table><tr><th>target</th><th>verdict</th><th>exit code</th></tr>",
    ]
    for v in summary["verdicts"]:
        cls = v["verdict"].split(" ")[0]
        parts.append(
            f"<tr><td>{e(v['target'])}</td><td class='{cls}'>{e(v['verdict'])}</td><td>{v['exit_code']}</td></tr>"
        )
    parts.append("</table>")
    parts += ["<h2>Task metric vs latency</h2>", _img(out / "pareto.png", "pareto plot")]
    parts += [
        "<h2>Artifacts per target, against the teacher</h2>"
        "<p class='muted'>x vs teacher: the teacher fp32's p50 over the artifact's, both measured on the target "
        "(sequential runs; “interleaved”: from alternating fresh processes, where a budget is relative to the "
        "teacher). Task metric: accuracy on the labelled eval data, or for embeddings the cosine to the "
        "teacher's. vs own student: the bench's check of each file against the torch student it came from "
        "(top-1 agreement, or cosine).</p>"
        "<table><tr><th>target</th><th>artifact</th><th>status</th><th>size MB</th><th>p50 ms</th><th>p95 ms</th>"
        "<th>x vs teacher</th><th>peak RSS MB</th><th>task metric</th><th>% of teacher</th><th>vs own student</th>"
        "<th>failed budgets / reason</th></tr>"
    ]
    for r in _table_rows(summary):
        status = "failed" if r["failed_checks"] else ("ok" if r["status"] == "measured" else r["status"])
        note = "<br>".join(e(c) for c in r["failed_checks"]) or e(r.get("gate_note") or r["reason"] or "")
        speedup, metric, pct, own = _cells(r)
        parts.append(
            f"<tr><td>{e(r['target'])}</td><td>{e(str(r.get('label') or r['artifact']))}</td><td class='{e(status)}'>{e(status)}</td>"
            f"<td class='num'>{_fmt(r['size_mb'])}</td><td class='num'>{_fmt(r['p50_ms'])}</td>"
            f"<td class='num'>{_fmt(r['p95_ms'])}</td><td class='num'>{e(speedup)}</td>"
            f"<td class='num'>{_fmt(r['peak_rss_mb'], 0)}</td><td>{e(metric)}</td><td class='num'>{e(pct)}</td>"
            f"<td>{e(own)}</td><td>{note}</td></tr>"
        )
    parts.append("</table>")
    d = summary["distill"]
    parts.append("<h2>Distillation</h2><table><tr><th></th><th>layers</th><th>parameters</th></tr>")
    for who in ("teacher", "student"):
        m = d.get(who) or {}
        params = f"{(m.get('parameters') or 0) / 1e6:.1f}M" if m.get("parameters") else "-"
        parts.append(f"<tr><td>{who}</td><td>{_fmt(m.get('layers'))}</td><td>{params}</td></tr>")
    parts.append("</table><table><tr><th>output</th><th>metric</th><th>teacher</th><th>student</th></tr>")
    for output, metric, teacher, student in metrics_table(d):
        parts.append(
            f"<tr><td>{e(output)}</td><td>{e(metric)}</td><td class='num'>{e(teacher)}</td>"
            f"<td class='num'>{e(student)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_img(out / "distill" / "curves.png", "training curves"))
    from edgedistill.fit.report import html_section  # the student search, when fit made this run

    parts.append(html_section(out))
    parts.append(
        "<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>seconds</th><th>updated (UTC)</th></tr>"
    )
    for name, rec in summary["stages"].items():
        parts.append(
            f"<tr><td>{e(name)}</td><td>{e(rec.get('status', ''))}</td><td class='num'>{_fmt(rec.get('seconds'))}</td>"
            f"<td>{e(rec.get('updated_utc', ''))}</td></tr>"
        )
    parts.append(
        "</table><p class='muted'>Figures: summary.json in the same folder; bench/*.json hold every sample.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(
    out: Path, recipe: Any, state: dict[str, Any], verdicts: list[dict[str, Any]], exit_code: int
) -> dict[str, Any]:
    summary = collect(out, state, verdicts, exit_code)
    summary["pareto_png"] = str(out / "pareto.png") if pareto_png(summary, out / "pareto.png") else None
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    atomic_write_text(out / "report.html", report_html(summary, out))
    return summary
