"""Benchmark of the bench stage on SST-2 (issue: bench, item 4): the teacher vs its students.

The fine-tuned teacher (fp32 ONNX, the artifact a team would ship without edgedistill), the
3-layer QAT student's artifacts (from `benchmarks/export_sst2.py`) and a second 3-layer QAT student
whose layers are pruned to half their heads and feed-forward neurons (trained here with the same
recipe on the same rows, `distill --student-heads 6 --student-ffn 768`) are measured with
`edgedistill bench` on the `cpu` and `mobile-class` targets, with SST-2 dev through each runtime,
then judged with `edgedistill gate`. The bar: a 3-layer int8 student is >= 3x faster (p50) and
>= 5x smaller than the fp32 teacher on the same target. `mobile-class` runs quantized artifacts
only, so the teacher appears there as its post-training dynamic int8 ONNX.

    python benchmarks/bench_sst2.py [--export-results bench-results/export_sst2] [--data ../shared/data/sst2]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import CLI, RESULTS, parser, run, run_main, sst2_flags, sst2_missing, write_summary

# The pruned student: the same 3 teacher layers as export_sst2.py's student, with half the heads
# (6 of 12) and half the feed-forward neurons (768 of 1536) kept by activation importance, then the
# same KD + QAT int8 recipe on the same rows.
PRUNED_HEADS, PRUNED_FFN = 6, 768


def build_pruned_student(data: Path, teacher: Path, out: Path, train_samples: int) -> Path:
    """3 teacher layers pruned to PRUNED_HEADS heads and PRUNED_FFN neurons, KD + QAT int8."""
    run_dir = out / f"3L-h{PRUNED_HEADS}-f{PRUNED_FFN}-KD-QAT"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        *CLI, "distill", "--teacher", str(teacher),
        "--student-layers", "3", "--student-heads", str(PRUNED_HEADS), "--student-ffn", str(PRUNED_FFN),
        "--epochs", "1", "--lr", "1e-4", "--qat", "int8", "--qat-start", "0.5",
        "--losses", "soft_kl:1,hard_ce:1", "--temperature", "4", "--alpha", "0.7", "--out", str(run_dir),
        *sst2_flags(data), "--max-train-samples", str(train_samples),
    ]  # fmt: skip
    run(
        cmd,
        run_dir / "distill_report.json",
        out / "commands.log",
    )
    return run_dir / "student"


def main() -> int:
    ap = parser(__doc__, "bench_sst2", sst2=True)
    ap.add_argument("--export-results", type=Path, default=RESULTS / "export_sst2")
    ap.add_argument("--teacher", type=Path, help="teacher folder (default: the one export_sst2.py trained)")
    ap.add_argument("--train-samples", type=int, default=8000, help="SST-2 rows for the pruned student")
    args = ap.parse_args()
    ours = args.export_results / "ours"
    teacher = args.teacher or args.export_results / "teacher" / "model"
    if not (ours / "onnx-int8" / "manifest.json").is_file() or not (teacher / "config.json").is_file():
        print(f"run benchmarks/export_sst2.py first (needs {ours}/onnx-int8 and {teacher})", file=sys.stderr)
        return 2
    if sst2_missing(args.data, ("dev.tsv",), "dev.tsv"):
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
    pruned_student = build_pruned_student(args.data, teacher, out, args.train_samples)
    pruned = out / "pruned-export"
    if not (pruned / "openvino-int8" / "manifest.json").is_file():
        export(
            pruned_student,
            pruned,
            ExportConfig(formats=["onnx", "openvino"], precisions=["fp32", "int8"], **calib),
        )
    pruned_name = f"student 3L-h{PRUNED_HEADS}-f{PRUNED_FFN}"
    artifacts = [
        teacher_art / "onnx-fp32",
        teacher_art / "onnx-int8",
        ours / "onnx-fp32",
        ours / "onnx-int8",
        ours / "openvino-int8",
        pruned / "onnx-fp32",
        pruned / "onnx-int8",
        pruned / "openvino-int8",
    ]
    labels = {
        str(teacher_art / "onnx-fp32"): "teacher 6L ONNX fp32",
        str(teacher_art / "onnx-int8"): "teacher 6L ONNX int8 (ORT dynamic)",
        str(ours / "onnx-fp32"): "student 3L ONNX fp32",
        str(ours / "onnx-int8"): "student 3L ONNX int8 (QAT)",
        str(ours / "openvino-int8"): "student 3L OpenVINO int8 (QAT)",
        str(pruned / "onnx-fp32"): f"{pruned_name} ONNX fp32",
        str(pruned / "onnx-int8"): f"{pruned_name} ONNX int8 (QAT)",
        str(pruned / "openvino-int8"): f"{pruned_name} OpenVINO int8 (QAT)",
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
    ratios = []
    for target in ("cpu", "mobile-class"):
        by = {r["model"]: r for r in rows if r["target"] == target and r["status"] == "measured"}
        base = by.get("teacher 6L ONNX fp32") or by.get("teacher 6L ONNX int8 (ORT dynamic)")
        for name in ("student 3L ONNX int8 (QAT)", f"{pruned_name} ONNX int8 (QAT)"):
            student = by.get(name)
            if base and student:
                ratios.append(
                    {
                        "target": target,
                        "student": name,
                        "baseline": next(k for k, v in by.items() if v is base),
                        "speedup_p50": round(base["p50_ms"] / student["p50_ms"], 2),
                        "smaller": round(base["size_mb"] / student["size_mb"], 2),
                    }
                )
    # The speed bar side by side: each int8 student alternating with the fp32 teacher in fresh
    # processes (A B, B A, ...), so machine noise hits both alike; speedup = 1 / Hodges-Lehmann ratio.
    interleaved = bench(
        [ours / "onnx-int8", pruned / "onnx-int8"],
        "cpu",
        baseline_artifact=teacher_art / "onnx-fp32",
        out=out / "interleaved_cpu.json",
        progress=True,
    )
    side_by_side = []
    for c in interleaved["comparisons"]:
        r = c["result"]
        side_by_side.append(
            {
                "student": labels[str(Path(c["candidate_path"]))],
                "baseline": labels[str(Path(c["baseline_path"]))],
                "processes_per_side": r["candidate_rounds"],
                "student_median_ms": round(r["candidate_median_ms"], 2),
                "teacher_median_ms": round(r["baseline_median_ms"], 2),
                "hodges_lehmann_ratio": round(r["ratio"], 4),
                "speedup": round(1 / r["ratio"], 2),
                "p_faster": r["p_faster"],
            }
        )
    pruned_report = json.loads((pruned_student.parent / "distill_report.json").read_text())
    summary = {
        "cpu": {k: host.get(k) for k in ("model", "logical_cores", "isa")},
        "rows": rows,
        "ratios": ratios,
        "interleaved_cpu": side_by_side,
        "pruned_student": {
            "command": pruned_report.get("command"),
            "pruning": pruned_report["student"]["pruning"],
            "parameters": pruned_report["student"]["parameters"],
            "torch_dev_accuracy_fake_quant": pruned_report["student"]["metrics"].get("accuracy"),
            "train_wall_time_s": pruned_report["training"]["train_wall_time_s"],
        },
        "gate": verdicts,
    }
    write_summary(out, summary, markdown(summary))
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
    for r in summary["ratios"]:
        lines.append(
            f"- {r['target']}: {r['student']} vs {r['baseline']}: {r['speedup_p50']}x faster (p50), "
            f"{r['smaller']}x smaller"
        )
    for r in summary["interleaved_cpu"]:
        lines.append(
            f"- cpu, interleaved ({r['processes_per_side']} fresh processes a side, alternating): {r['student']} "
            f"{r['student_median_ms']} ms vs {r['baseline']} {r['teacher_median_ms']} ms: {r['speedup']}x faster "
            f"(Hodges-Lehmann ratio {r['hodges_lehmann_ratio']}, one-sided p {r['p_faster']:.2g})"
        )
    p = summary["pruned_student"]["pruning"]
    lines.append(
        f"- pruned student: {p['heads_per_layer']}/{p['teacher_heads_per_layer']} heads and "
        f"{p['intermediate_size']}/{p['teacher_intermediate_size']} feed-forward neurons per layer "
        f"({p['importance']} importance), {p['parameters_before']:,} -> {p['parameters_after']:,} parameters"
    )
    for target, g in summary["gate"].items():
        failed = "; ".join(f"{c['artifact']} {c['budget']}" for c in g["failed"]) or "none"
        lines.append(f"- gate on {target}: {g['verdict']} (failed budgets: {failed})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_main(main))
