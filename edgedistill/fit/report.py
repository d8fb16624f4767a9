"""What `fit` leaves for people and CI: ``fit/fit_report.json`` first, then ``fit/candidates.md`` and ``fit/pareto.png``.

Every candidate is one row: its shape, each export's screened cost, why it was dropped (over
which budget at screening, pruned at which rung, failed which budget at full measurement), its
proxy figure, and for the winner the reason it won. The Pareto plot shows every measured
candidate's proxy figure against its screened p95, the budget lines, and the teacher as the
reference point.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgedistill.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def candidate_rows(
    rows: list[dict[str, Any]],
    trials: list[dict[str, Any]],
    finalists: list[dict[str, Any]],
    screen_only: bool = False,
    passed_over: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One record per shape: cost, proxy, final, and the reason it stopped where it did."""
    by_trial = {t["shape"]["key"]: t for t in trials}
    by_final = {f["shape"]["key"]: f for f in finalists}
    out = []
    for row in rows:
        key = row["shape"]["key"]
        trial, final = by_trial.get(key), by_final.get(key)
        if not row["feasible"]:
            why = "over budget at screening: " + "; ".join(
                f"{e['format']}-{e['precision']}: {', '.join(e['over'])}" for e in row["exports"]
            )
        elif screen_only:
            why = "feasible at screening: " + ", ".join(
                f"{e['format']}-{e['precision']}"
                + (f" (close: {'; '.join(e['close'])})" if e["close"] else "")
                for e in row["exports"]
                if e["feasible"]
            )
        elif trial is None:
            why = "not trained (the study did not reach it)"
        elif trial["state"] == "fail":
            why = (
                "its trial failed (a worker stopped or an error) and has not been retried yet: run fit again"
            )
        elif final is None:
            why = (
                f"pruned by successive halving at {trial['pruned_at'] or 'a rung'}"
                if trial["state"] == "pruned"
                else "completed the proxy, not among the finalists"
            ) + (f"; {passed_over[key]}" if key in (passed_over or {}) else "")
        else:
            # a pruned trial fills a finalist's place when too few ran every rung (proxy.finalist_order)
            was = (
                f" (a runner-up pruned at {trial['pruned_at'] or 'a rung'})"
                if trial["state"] == "pruned"
                else ""
            ) + (" (fallback: no finalist before it passed)" if final.get("fallback") else "")
            why = (
                f"finalist{was}; passed every cost budget at full measurement"
                if final["passes"]
                else f"finalist{was}; failed at full measurement: "
                + "; ".join(x for a in final["artifacts"] for x in a["failed"])
            )
        out.append(
            {
                "shape": row["shape"],
                "exports": row["exports"],
                "feasible": row["feasible"],
                "trial": trial["trial"] if trial else None,  # the study's order: the largest shape first
                "proxy_rungs": len(trial["rung_values"]) if trial else 0,
                "proxy_value": trial["proxy_value"] if trial else None,
                "proxy_steps": trial["proxy_steps"] if trial else 0,
                "trial_state": trial["state"] if trial else None,
                "final": final,
                "why": why,
            }
        )
    return out


def _best_p95(row: dict[str, Any]) -> float | None:
    values = [e["figures"].get("p95_ms") for e in row["exports"] if e["figures"].get("p95_ms") is not None]
    return min(values) if values else None


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict[str, Any], candidates: list[dict[str, Any]], metric: str) -> str:
    winner = (report.get("winner") or {}).get("shape", {}).get("key")
    lines = [
        f"# fit: {report.get('status')}",
        "",
        report.get("message") or (report.get("winner") or {}).get("reason", ""),
        "",
        *[
            f"The winner's final run on the eval split, gate `{g['target']}`: **{g['verdict']}** "
            f"(exit {g['exit_code']}; `gate/{g['target']}.md` says why)."
            for g in report.get("final_gates") or []
        ],
        *([""] if report.get("final_gates") else []),
        f"| shape | screened p95 ms (best export) | proxy {metric} | steps | state | why |",
        "|---|---|---|---|---|---|",
    ]
    for c in candidates:
        p95 = _best_p95(c)
        name = c["shape"]["key"] + (" **(winner)**" if c["shape"]["key"] == winner else "")
        proxy = f"{c['proxy_value']:.4f}" if c["proxy_value"] is not None else "-"
        lines.append(
            f"| {name} | {f'{p95:.3f}' if p95 is not None else '-'} | {proxy} | {c['proxy_steps']} | "
            f"{c['trial_state'] or '-'} | {c['why']} |"
        )
    lines += ["", "| shape | export | p50 ms | p95 ms | MB | screened verdict |", "|---|---|---|---|---|---|"]
    for c in candidates:
        for e in c["exports"]:
            f = e["figures"]
            verdict = "feasible" if e["feasible"] else "over: " + "; ".join(e["over"])
            lines.append(
                f"| {c['shape']['key']} | {e['format']}-{e['precision']} | {_num(f.get('p50_ms'))} | "
                f"{_num(f.get('p95_ms'))} | {_num(f.get('size_mb'), '.2f')} | {verdict} |"
            )
    times = report.get("times") or {}
    if times:
        sessions = len(report.get("sessions") or [])
        lines += [
            "",
            "CPU seconds by phase"
            + (f" (summed over {sessions} sessions)" if sessions > 1 else "")
            + ": "
            + ", ".join(f"{k.removesuffix('_cpu_s')} {v}" for k, v in times.items() if k.endswith("_cpu_s")),
        ]
    return "\n".join(lines) + "\n"


def pareto(
    candidates: list[dict[str, Any]],
    teacher: dict[str, Any] | None,
    budgets: dict[str, Any],
    metric: str,
    path: Path,
) -> bool:
    """Proxy figure vs screened p95 for every trained candidate, the p95 budget, the teacher as reference."""
    from edgedistill.plots import Budget, PlotPoint, pareto_plot

    points = [
        PlotPoint(
            label=c["shape"]["key"], latency_ms=_best_p95(c), value=c["proxy_value"], series="candidates"
        )
        for c in candidates
        if _best_p95(c) is not None and c["proxy_value"] is not None
    ]
    if not points:
        return False
    reference = []
    figures, value = (teacher or {}).get("figures") or {}, (teacher or {}).get("val_metric")
    if figures.get("p95_ms") is not None and value is not None:
        reference.append(
            PlotPoint(label="teacher fp32", latency_ms=figures["p95_ms"], value=value, series="teacher")
        )
    lines = [Budget(series="candidates", max_latency_ms=budgets.get("p95_latency_ms"))]
    return pareto_plot(
        points,
        lines,
        reference,
        path,
        metric=f"proxy {metric} (validation split)",
        title="fit: every trained candidate",
    )


def write_fit_report(
    out: Path,
    report: dict[str, Any],
    rows: list[dict[str, Any]],
    trials: list[dict[str, Any]],
    finalists: list[dict[str, Any]],
    target,
    task: str,
) -> dict[str, Any]:
    """Write fit_report.json, candidates.md and pareto.png under OUT/fit; returns the report."""
    import json

    from edgedistill.fit.proxy import METRIC

    fit_dir = out / "fit"
    costs = (
        json.loads((fit_dir / "costs.json").read_text(encoding="utf-8"))
        if (fit_dir / "costs.json").is_file()
        else {}
    )
    metric = METRIC[task]
    teacher = costs.get("teacher") or {}
    teacher["val_metric"] = _teacher_val_metric(fit_dir, metric)
    candidates = candidate_rows(
        rows,
        trials,
        finalists,
        screen_only=report.get("status") == "screened",
        passed_over=report.get("passed_over"),
    )
    budgets = target.budgets.model_dump(exclude_none=True)
    full = {
        **report,
        "target": target.name,
        "budgets": budgets,
        "teacher": teacher,
        "candidates": candidates,
        "exit_code": report.get("exit_code", 1),
    }
    atomic_write_json(fit_dir / "fit_report.json", full)
    atomic_write_text(fit_dir / "candidates.md", markdown(full, candidates, metric))
    drawn = pareto(candidates, teacher, budgets, metric, fit_dir / "pareto.png")
    full["pareto_png"] = str(fit_dir / "pareto.png") if drawn else None
    atomic_write_json(fit_dir / "fit_report.json", full)
    return full


def _teacher_val_metric(fit_dir: Path, metric: str) -> float | None:
    """The teacher's figure on the validation split, as any finished proxy rung measured it."""
    import json

    for path in sorted(fit_dir.glob("trials/*/rung-0/distill_report.json")):
        value = json.loads(path.read_text(encoding="utf-8"))["teacher"]["metrics"].get(metric)
        if value is not None:
            return value
    return None


def html_section(out: Path) -> str:
    """The run report's fit section: the search's candidates, why each stopped, and fit/pareto.png."""
    import html
    import json

    from edgedistill.report import _img

    path = out / "fit" / "fit_report.json"
    if not path.is_file():
        return ""
    report = json.loads(path.read_text(encoding="utf-8"))
    e = html.escape
    winner = (report.get("winner") or {}).get("shape", {}).get("key")
    parts = [
        "<h2>fit: the searched student</h2>",
        f"<p>{e(str((report.get('winner') or {}).get('reason') or report.get('message') or ''))}</p>",
        "<table><tr><th>shape</th><th>screened p95 ms (best export)</th><th>proxy</th><th>steps</th>"
        "<th>state</th><th>why</th></tr>",
    ]
    for c in report.get("candidates") or []:
        p95 = _best_p95(c)
        name = c["shape"]["key"] + (" (winner)" if c["shape"]["key"] == winner else "")
        proxy = f"{c['proxy_value']:.4f}" if c.get("proxy_value") is not None else "-"
        parts.append(
            f"<tr><td>{e(name)}</td><td class='num'>{'-' if p95 is None else f'{p95:.3f}'}</td>"
            f"<td class='num'>{proxy}</td><td class='num'>{c.get('proxy_steps', 0)}</td>"
            f"<td>{e(str(c.get('trial_state') or '-'))}</td><td>{e(c['why'])}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_img(out / "fit" / "pareto.png", "fit pareto plot"))
    return "\n".join(parts)
