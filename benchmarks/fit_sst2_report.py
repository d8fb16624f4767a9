"""The summary of `fit_sst2.py`: one row per measured artifact, each search's winner, cost and candidates."""

from __future__ import annotations

from typing import Any

from edgedistill.bench.gating.relative import relative_to_teacher
from edgedistill.bench.system import cpu_info


def build_summary(
    measured: dict, fits: dict[str, dict], costs: dict[str, dict], rows: int | None, wall_s: float
) -> dict:
    report = measured["report"]
    by_path = {v: k for k, v in measured["folders"].items()}
    relative = relative_to_teacher(report)
    teacher = next((e for e in report["artifacts"] if e.get("role") == "baseline"), {})
    teacher_acc = (teacher.get("accuracy") or {}).get("accuracy")
    table = []
    for entry in report["artifacts"]:
        if entry.get("role", "candidate") != "candidate":
            continue
        acc = (entry.get("accuracy") or {}).get("accuracy")
        rel = relative.get(entry["name"], {})
        table.append(
            {
                "artifact": by_path.get(entry.get("path"), entry["name"]),
                "ran": entry.get("ran"),
                "dev_accuracy": acc,
                "of_teacher": acc / teacher_acc if acc is not None and teacher_acc else None,
                "speedup": rel.get("speedup"),
                "speedup_bounds": [rel.get("speedup_lower"), rel.get("speedup_upper")],
                "size_mb": entry.get("size_mb"),
                "size_ratio": rel.get("size_ratio"),
                "p50_ms": (entry.get("latency") or {}).get("p50_ms"),
            }
        )
    searches = {}
    for name, rep in fits.items():
        searches[name] = {
            "status": rep.get("status"),
            "message": rep.get("message"),
            "winner": (rep.get("winner") or {}).get("shape", {}).get("key"),
            "winner_reason": (rep.get("winner") or {}).get("reason"),
            "times": rep.get("times"),
            "cost": costs.get(name),
            "candidates": [
                {
                    k: c.get(k)
                    for k in ("shape", "feasible", "proxy_value", "proxy_steps", "trial_state", "why")
                }
                for c in rep.get("candidates") or []
            ],
        }
    return {
        "benchmark": "fit_sst2",
        "rows": rows,
        "cpu": cpu_info(),
        "teacher_dev_accuracy": teacher_acc,
        "teacher_p50_ms": (teacher.get("latency") or {}).get("p50_ms"),
        "table": table,
        "searches": searches,
        "wall_s": round(wall_s, 1),
    }


def _f(value: Any, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(summary: dict) -> str:
    cpu = summary["cpu"]
    lines = [
        f"fit on SST-2 ({'quick mode, first ' + str(summary['rows']) + ' rows' if summary['rows'] else 'full train split'}); "
        f"{cpu.get('model')} ({cpu.get('generation')}); teacher fp32 dev {_f(summary['teacher_dev_accuracy'])}",
        "",
        "| artifact | ran | dev acc | of teacher | speed-up (interleaved, 95% bounds) | MB | size vs teacher |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["table"]:
        lo, hi = r["speedup_bounds"]
        lines.append(
            f"| {r['artifact']} | {r['ran'] or '-'} | {_f(r['dev_accuracy'])} | {_f(r['of_teacher'], '.1%')} | "
            f"{_f(r['speedup'], '.2f')}x ({_f(lo, '.2f')}-{_f(hi, '.2f')}) | {_f(r['size_mb'], '.1f')} | {_f(r['size_ratio'], '.3f')} |"
        )
    for name, s in summary["searches"].items():
        cost = s.get("cost") or {}
        lines += [
            "",
            f"**{name}**: {s['status']}; winner {s['winner'] or '-'}. {s['winner_reason'] or s['message'] or ''}",
            f"search CPU {_f(cost.get('search_cpu_s'), '.0f')} s vs the winner's full distillation "
            f"{_f(cost.get('winner_distill_cpu_s'), '.0f')} s: ratio {_f(cost.get('ratio'), '.2f')}",
        ]
    return "\n".join(lines) + "\n"
