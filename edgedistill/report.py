"""The run's results for people: ``summary.json`` first, then ``summary.md``, ``pareto.png``, ``report.html``.

Everything is read back from the files the stages wrote (distill_report.json, export_report.json,
the bench reports, the gate results), so the reports can be rebuilt from a run folder alone with
`write_reports`. ``report.html`` embeds its pictures and styles: it opens offline, from e-mail or
a CI artifact, with no other file beside it.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from edgedistill.io import atomic_path, atomic_write_json, atomic_write_text

SERIES_STYLES = [("#1f77b4", "o"), ("#d62728", "s"), ("#2ca02c", "^"), ("#9467bd", "D"), ("#ff7f0e", "v")]


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _metric(entry: dict[str, Any]) -> tuple[str | None, float | None]:
    acc = entry.get("accuracy") or {}
    if acc.get("status") != "measured":
        return None, None
    if acc.get("metric") == "accuracy":
        return "accuracy", acc.get("accuracy")
    return "cosine to torch student", acc.get("cosine_mean")


def _failed_checks(gate: dict[str, Any] | None, artifact: str) -> list[str]:
    checks = (gate or {}).get("checks") or []
    return [
        f"{c['budget']}: {c['message']}"
        for c in checks
        if c["artifact"] == artifact and c["status"] == "failed"
    ]


def collect(
    out: Path, state: dict[str, Any], verdicts: list[dict[str, Any]], exit_code: int
) -> dict[str, Any]:
    """summary.json's content, from the files in the run folder."""
    distill = _read(out / "distill" / "distill_report.json") or {}
    exported = _read(out / "artifacts" / "export_report.json") or {}
    rows = []
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
        for entry in report.get("artifacts", []):
            if entry.get("role") != "candidate":
                continue
            latency = entry.get("latency") or {}
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
                    "status": entry.get("status"),
                    "reason": entry.get("reason"),
                    "size_mb": entry.get("size_mb"),
                    "p50_ms": latency.get("p50_ms"),
                    "p95_ms": latency.get("p95_ms"),
                    "peak_rss_mb": (entry.get("memory") or {}).get("peak_rss_mb"),
                    "metric": metric_name,
                    "value": metric,
                    "failed_checks": _failed_checks(gate, entry.get("name")),
                }
            )
    student = distill.get("student") or {}
    teacher = distill.get("teacher") or {}
    return {
        "exit_code": exit_code,
        "verdicts": verdicts,
        "stages": state.get("stages", {}),
        "distill": {
            "task": distill.get("task") or (distill.get("config") or {}).get("task"),
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
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    verdict = {0: "PASSED", 1: "FAILED", 4: "NOT-JUDGED"}.get(summary["exit_code"], "INCONCLUSIVE")
    lines = [f"## edgedistill run: {verdict} (exit {summary['exit_code']})", ""]
    d = summary["distill"]
    if d.get("student", {}).get("metrics"):
        shown = ", ".join(f"{k} {_fmt(v, 4)}" for k, v in d["student"]["metrics"].items())
        lines += [
            f"Student: {d['student'].get('layers')} layers, {_fmt((d['student'].get('parameters') or 0) / 1e6, 1)}M "
            f"params (teacher {d['teacher'].get('layers')} layers); {shown}.",
            "",
        ]
    h = summary.get("host") or {}
    if h.get("cpu"):
        lines += [
            f"Measured on {h['cpu']} ({h.get('generation')}; ISA {', '.join(h.get('isa') or []) or 'unknown'}). "
            "`(ran …)`: the arithmetic each artifact ran in, read back from its runtime.",
            "",
        ]
    lines += [
        "| target | artifact | status | size MB | p50 ms | p95 ms | peak RSS MB | metric | value | gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        gate = "; ".join(r["failed_checks"]) or (
            "ok" if r["status"] == "measured" else (r["reason"] or "")[:80]
        )
        lines.append(
            f"| {r['target']} | {r.get('label') or r['artifact']} | {r['status']} | {_fmt(r['size_mb'])} | {_fmt(r['p50_ms'])} "
            f"| {_fmt(r['p95_ms'])} | {_fmt(r['peak_rss_mb'], 0)} | {r['metric'] or '-'} | {_fmt(r['value'], 4)} | {gate} |"
        )
    lines += ["", "| target | verdict | exit |", "|---|---|---|"]
    lines += [f"| {v['target']} | {v['verdict']} | {v['exit_code']} |" for v in summary["verdicts"]]
    return "\n".join(lines) + "\n"


def pareto_png(summary: dict[str, Any], path: Path) -> bool:
    """Accuracy (or cosine) vs p95 latency; marker area ~ artifact MB; one series per target.

    Budget lines: each target's p95 budget (vertical) and accuracy floor (horizontal), dashed in
    the target's colour. Returns False (and writes nothing) when no artifact has both figures.
    """
    points = [r for r in summary["rows"] if r["p95_ms"] is not None and r["value"] is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
    targets = list(dict.fromkeys(r["target"] for r in summary["rows"]))
    labels: list[tuple[dict[str, Any], str]] = []
    max_mb = max((r["size_mb"] or 0) for r in points) or 1.0
    for i, target in enumerate(targets):
        color, marker = SERIES_STYLES[i % len(SERIES_STYLES)]
        mine = [r for r in points if r["target"] == target]
        if mine:
            ax.scatter(
                [r["p95_ms"] for r in mine],
                [r["value"] for r in mine],
                s=[40 + 700 * (r["size_mb"] or 0) / max_mb for r in mine],
                c=color,
                marker=marker,
                alpha=0.55,
                edgecolors="black",
                linewidths=0.6,
                label=f"{target}",
            )
            labels += [(r, color) for r in mine]
        budget = summary["budgets"].get(target) or {}
        if budget.get("p95_latency_ms"):
            ax.axvline(budget["p95_latency_ms"], color=color, linestyle="--", linewidth=1)
            ax.annotate(
                f"{target} p95 budget",
                (budget["p95_latency_ms"], 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color=color,
                ha="right",
                va="bottom",
            )
        floor = budget.get("min_accuracy") if points[0]["metric"] == "accuracy" else budget.get("min_cosine")
        if floor:
            ax.axhline(floor, color=color, linestyle=":", linewidth=1)
    metric = points[0]["metric"]
    ax.set_xlabel("p95 latency (ms, batch 1) - lower is better")
    ax.set_ylabel(f"{metric} - higher is better")
    ax.set_title("Accuracy vs latency per target (marker area ~ artifact size)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.25)
    ax.legend(title="target", loc="best", fontsize=8, markerscale=0.5)
    fig.tight_layout()
    _place_labels(fig, ax, labels)  # after the layout is final: placement works in screen space
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


# label offsets (points) tried in order until a label overlaps no other label
_OFFSETS = [(dx, dy) for dy in (8, -14, 22, -28, 36, -42, 50, -56, 64, -70) for dx in (10, -10)]


def _place_labels(fig, ax, labels: list[tuple[dict[str, Any], str]]) -> None:
    """Annotate each point with its artifact and size, moving labels until none overlap."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    placed = []
    for r, color in sorted(labels, key=lambda item: (item[0]["p95_ms"], -item[0]["value"])):
        text = f"{r['artifact']} ({_fmt(r['size_mb'], 1)} MB)"
        for dx, dy in _OFFSETS:
            note = ax.annotate(
                text,
                (r["p95_ms"], r["value"]),
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx > 0 else "right",
                fontsize=8,
                color=color,
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "alpha": 0.6},
            )
            note.update_positions(renderer)  # apply the offset before measuring
            box = Text.get_window_extent(note, renderer).expanded(1.06, 1.3)  # the text, not its leader line
            if not any(box.overlaps(other) for other in placed):
                break
            if (dx, dy) != _OFFSETS[-1]:
                note.remove()
        placed.append(box)


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
    parts += ["<h2>Accuracy vs latency</h2>", _img(out / "pareto.png", "pareto plot")]
    parts += [
        "<h2>Artifacts per target</h2><table><tr><th>target</th><th>artifact</th><th>status</th><th>size MB</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>peak RSS MB</th><th>metric</th><th>value</th><th>failed budgets / reason</th></tr>"
    ]
    for r in summary["rows"]:
        status = "failed" if r["failed_checks"] else ("ok" if r["status"] == "measured" else r["status"])
        note = "<br>".join(e(c) for c in r["failed_checks"]) or e(r["reason"] or "")
        parts.append(
            f"<tr><td>{e(r['target'])}</td><td>{e(str(r.get('label') or r['artifact']))}</td><td class='{e(status)}'>{e(status)}</td>"
            f"<td class='num'>{_fmt(r['size_mb'])}</td><td class='num'>{_fmt(r['p50_ms'])}</td>"
            f"<td class='num'>{_fmt(r['p95_ms'])}</td><td class='num'>{_fmt(r['peak_rss_mb'], 0)}</td>"
            f"<td>{e(r['metric'] or '-')}</td><td class='num'>{_fmt(r['value'], 4)}</td><td>{note}</td></tr>"
        )
    parts.append("</table>")
    d = summary["distill"]
    parts.append(
        "<h2>Distillation</h2><table><tr><th></th><th>layers</th><th>parameters</th><th>metrics</th></tr>"
    )
    for who in ("teacher", "student"):
        m = d.get(who) or {}
        metrics = ", ".join(f"{k} {_fmt(v, 4)}" for k, v in (m.get("metrics") or {}).items())
        params = f"{(m.get('parameters') or 0) / 1e6:.1f}M" if m.get("parameters") else "-"
        parts.append(
            f"<tr><td>{who}</td><td>{_fmt(m.get('layers'))}</td><td>{params}</td><td>{e(metrics)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_img(out / "distill" / "curves.png", "training curves"))
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
