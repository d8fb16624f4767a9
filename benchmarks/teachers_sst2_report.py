"""The summary of `benchmarks/teachers_sst2.py`: the teachers, the step cost, and the ensemble bar.

The bar (issue 26): the student of two teachers beats the student of the better single teacher at
equal steps, through its runtime -- dev accuracy of the ONNX int8 artifacts measured by
`edgedistill bench` with ONNX Runtime on SST-2 dev.
"""

from __future__ import annotations

import json
from pathlib import Path

STUDENTS = {"minilm": "MiniLM teacher alone", "mpnet": "MPNet teacher alone", "both": "both (combine: mean)"}


def _isa(cpu: dict) -> str:
    return " ".join(k for k, v in cpu["isa"].items() if v)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _teacher(report: dict | None, rows: int | str) -> dict | None:
    if report is None:
        return None
    return {
        "path": report["model"]["path"],
        "parameters": report["model"]["parameters"],
        "torch_dev_accuracy": report["model"]["metrics"].get("accuracy"),
        "train_rows": rows,
        "train_steps": report["training"]["steps"],
        "train_wall_time_s": report["training"]["train_wall_time_s"],
    }


def build_summary(
    out: Path, measured: dict, totals: dict, cpu: dict, rows_limit: int | None, mpnet: dict, mpnet_rows: int
) -> dict:
    host = measured["table"]["host"]["cpu"]
    name_of = {str(Path(f).resolve()): label.split(":", 1)[0] for label, f in measured["folders"].items()}
    students = {}
    for entry in measured["table"]["artifacts"]:
        name = name_of[str(Path(entry["path"]).resolve())]
        lat, acc = entry.get("latency") or {}, entry.get("accuracy") or {}
        rep = _read(out / f"student-{name}" / "distill_report.json") or {}
        students[name] = {
            "taught_by": STUDENTS[name],
            "artifact": "ONNX int8 (QAT ranges), ONNX Runtime",
            "status": entry["status"],
            "reason": entry.get("reason"),
            "size_mb": entry.get("size_mb"),
            "p50_ms": lat.get("p50_ms"),
            "dev_accuracy": acc.get("accuracy"),
            "torch_dev_accuracy": rep.get("student", {}).get("metrics", {}).get("accuracy"),
            "steps": rep.get("training", {}).get("steps"),
            "train_wall_time_s": rep.get("training", {}).get("train_wall_time_s"),
            "agreement": {t["name"]: t.get("student_agreement") for t in rep.get("teachers", [])},
            "ensemble_dev_accuracy": rep.get("ensemble", {}).get("metrics", {}).get("accuracy"),
            "command": rep.get("command"),
        }
    minilm_report = _read(out / "teacher" / "finetune_report.json") if rows_limit else None
    if minilm_report is None:
        minilm_report = _read(out.parent / "headline_sst2" / "teacher" / "finetune_report.json")
    teachers = {
        "minilm": _teacher(minilm_report, rows_limit or "all"),
        "mpnet": _teacher(_read(out / "mpnet-teacher" / "finetune_report.json"), rows_limit or mpnet_rows),
    }
    single = [students[n]["dev_accuracy"] for n in ("minilm", "mpnet") if n in students]
    both = students.get("both", {}).get("dev_accuracy")
    bar = None
    if both is not None and len(single) == 2 and None not in single:
        best = max(single)
        bar = {"both": both, "best_single": best, "points": round(100 * (both - best), 2), "met": both > best}
    return {
        "cpu": {"model": host.get("model"), "generation": host.get("generation"), "isa": _isa(host)},
        "train_rows": rows_limit or "all",
        "mpnet_source": {
            k: mpnet.get(k)
            for k in ("packages", "safetensors_sha256", "safetensors_bytes", "parameters", "left_out")
        },
        "step_cost": _read(out / "step_cost.json"),
        "teachers": teachers,
        "students": students,
        "ensemble_bar": bar,
        "stages": totals,
    }


def markdown(s: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    src = s["mpnet_source"]
    lines = [
        f"CPU: {s['cpu']['model']} ({s['cpu']['generation']}; ISA: {s['cpu']['isa']}); student training rows: "
        f"{s['train_rows']}; SST-2 dev (872) through ONNX Runtime int8.",
        f"MPNet: all-mpnet-base-v2 from PyPI ({', '.join(src['packages'] or {})}), model.safetensors sha256 "
        f"`{src['safetensors_sha256']}`, {src['safetensors_bytes']:,} bytes, {src['parameters']:,} parameters.",
        "",
        "| teacher | train rows | steps | torch dev acc | train loop s |",
        "|---|---|---|---|---|",
    ]
    for name, t in s["teachers"].items():
        if t:
            lines.append(
                f"| {name} | {t['train_rows']} | {t['train_steps']} | {pct(t['torch_dev_accuracy'])} | "
                f"{t['train_wall_time_s']:.0f} |"
            )
    lines += [
        "",
        "| student (3L-f384) | steps | ONNX int8 dev acc | torch dev acc | agreement | size MB | p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in s["students"].values():
        agree = ", ".join(f"{k} {pct(v)}" for k, v in st["agreement"].items() if v is not None) or "-"
        size = "-" if st["size_mb"] is None else f"{st['size_mb']:.1f}"
        p50 = "-" if st["p50_ms"] is None else f"{st['p50_ms']:.2f}"
        lines.append(
            f"| {st['taught_by']} | {st['steps']} | {pct(st['dev_accuracy'])} | "
            f"{pct(st['torch_dev_accuracy'])} | {agree} | {size} | {p50} |"
        )
    lines.append("")
    bar = s["ensemble_bar"]
    if bar:
        lines.append(
            f"- ensemble bar: both {pct(bar['both'])} vs best single {pct(bar['best_single'])} "
            f"({bar['points']:+.2f} points): {'met' if bar['met'] else 'not met'}"
        )
    cost = s["step_cost"]
    if cost:
        per = cost["median_step_s"]
        lines.append(
            f"- one fine-tuning step (batch 32, length 66): MPNet {per['mpnet']:.2f} s vs MiniLM "
            f"{per['minilm']:.2f} s, {cost['mpnet_vs_minilm']}x (median of {cost['rounds']} "
            f"alternating rounds)"
        )
    lines.append("- stage wall times (all sessions): " + ", ".join(
        f"{k} {v['wall_s']:.0f} s ({v['sessions']} session{'s' if v['sessions'] > 1 else ''})" for k, v in s["stages"].items()
    ))  # fmt: skip
    return "\n".join(lines) + "\n"
