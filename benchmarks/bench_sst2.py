"""Benchmark of the bench stage on SST-2 (issue: bench, item 4): the teacher vs its students.

The fine-tuned teacher (fp32 ONNX, the artifact a team would ship without edgedistill) and the
3-layer QAT student's artifacts (from `benchmarks/export_sst2.py`) are measured with
`edgedistill bench` on the `cpu` and `mobile-class` targets, with SST-2 dev through each runtime,
then judged with `edgedistill gate`. The bar: the 3-layer int8 student is >= 3x faster (p50) and
>= 5x smaller than the fp32 teacher on the same target. `mobile-class` runs quantized artifacts
only, so the teacher appears there as its post-training dynamic int8 ONNX.

    python benchmarks/bench_sst2.py [--export-results bench-results/export_sst2] [--data ../shared/data/sst2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_sst2 import DEFAULT_DATA, ROOT  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-results", type=Path, default=ROOT / "bench-results" / "export_sst2")
    ap.add_argument("--teacher", type=Path, help="teacher folder (default: the one export_sst2.py trained)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench_sst2")
    args = ap.parse_args()
    ours = args.export_results / "ours"
    teacher = args.teacher or args.export_results / "teacher" / "model"
    if not (ours / "onnx-int8" / "manifest.json").is_file() or not (teacher / "config.json").is_file():
        print(f"run benchmarks/export_sst2.py first (needs {ours}/onnx-int8 and {teacher})", file=sys.stderr)
        return 2
    if not (args.data / "dev.tsv").is_file():
        print(f"SST-2 not found under {args.data}: pass --data DIR with dev.tsv", file=sys.stderr)
        return 2

    from edgedistill.bench import bench, gate
    from edgedistill.export import ExportConfig, export

    out = args.out
    calib = {"calib_data": args.data / "dev.tsv", "calib_text_column": "sentence", "parity_samples": 32}
    teacher_art = out / "teacher"
    if not (teacher_art / "onnx-int8" / "manifest.json").is_file():
        export(teacher, teacher_art, ExportConfig(formats=["onnx"], precisions=["fp32"], **calib))
        export(
            teacher,
            teacher_art,
            ExportConfig(formats=["onnx"], precisions=["int8"], int8_method="dynamic", **calib),
        )
    artifacts = [
        teacher_art / "onnx-fp32",
        teacher_art / "onnx-int8",
        ours / "onnx-fp32",
        ours / "onnx-int8",
        ours / "openvino-int8",
    ]
    labels = {
        str(teacher_art / "onnx-fp32"): "teacher 6L ONNX fp32",
        str(teacher_art / "onnx-int8"): "teacher 6L ONNX int8 (ORT dynamic)",
        str(ours / "onnx-fp32"): "student 3L ONNX fp32",
        str(ours / "onnx-int8"): "student 3L ONNX int8 (QAT)",
        str(ours / "openvino-int8"): "student 3L OpenVINO int8 (QAT)",
    }
    rows, verdicts = [], {}
    for target in ("cpu", "mobile-class"):
        path = out / f"{target}.json"
        report = bench(artifacts, target, data=args.data / "dev.tsv", out=path, progress=True)
        result = gate(report, target)
        verdicts[target] = {
            "verdict": result.verdict,
            "failed": [vars(c) for c in result.checks if c.status == "failed"],
        }
        for entry in report["artifacts"]:
            acc = entry.get("accuracy") or {}
            lat = entry.get("latency") or {}
            rows.append(
                {
                    "target": target,
                    "model": labels.get(str(Path(entry["path"])), entry["name"]),
                    "status": entry["status"],
                    "reason": entry.get("reason"),
                    "size_mb": entry.get("size_mb"),
                    "p50_ms": lat.get("p50_ms"),
                    "p95_ms": lat.get("p95_ms"),
                    "peak_rss_mb": (entry.get("memory") or {}).get("peak_rss_mb"),
                    "dev_accuracy": acc.get("accuracy"),
                }
            )
    host = report["host"]["cpu"]
    ratios = {}
    for target in ("cpu", "mobile-class"):
        by = {r["model"]: r for r in rows if r["target"] == target and r["status"] == "measured"}
        base = by.get("teacher 6L ONNX fp32") or by.get("teacher 6L ONNX int8 (ORT dynamic)")
        student = by.get("student 3L ONNX int8 (QAT)")
        if base and student:
            ratios[target] = {
                "baseline": next(k for k, v in by.items() if v is base),
                "speedup_p50": round(base["p50_ms"] / student["p50_ms"], 2),
                "smaller": round(base["size_mb"] / student["size_mb"], 2),
            }
    summary = {
        "cpu": {k: host.get(k) for k in ("model", "logical_cores", "isa")},
        "rows": rows,
        "ratios": ratios,
        "gate": verdicts,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def markdown(summary: dict) -> str:
    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    lines = [
        f"CPU: {summary['cpu']['model']} ({summary['cpu']['logical_cores']} logical cores)",
        "",
        "| target | model | status | size MB | p50 ms | p95 ms | peak RSS MB | SST-2 dev acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        acc = f(100 * r["dev_accuracy"]) if r["dev_accuracy"] is not None else "-"
        status = r["status"] if r["status"] == "measured" else f"{r['status']}: {(r['reason'] or '')[:60]}"
        lines.append(
            f"| {r['target']} | {r['model']} | {status} | {f(r['size_mb'], 1)} | {f(r['p50_ms'])} | {f(r['p95_ms'])} "
            f"| {f(r['peak_rss_mb'], 0)} | {acc} |"
        )
    lines.append("")
    for target, r in summary["ratios"].items():
        lines.append(
            f"- {target}: student 3L int8 (QAT) vs {r['baseline']}: {r['speedup_p50']}x faster (p50), {r['smaller']}x smaller"
        )
    for target, g in summary["gate"].items():
        failed = "; ".join(f"{c['artifact']} {c['budget']}" for c in g["failed"]) or "none"
        lines.append(f"- gate on {target}: {g['verdict']} (failed budgets: {failed})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
