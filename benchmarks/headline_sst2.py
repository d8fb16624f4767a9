"""The headline (issue 13, part 1): one int8 student against a fully trained teacher, end to end.

all-MiniLM-L6-v2 is fine-tuned on the **full** SST-2 train split (the teacher), students are
distilled from it, every model is exported, and all artifacts are measured in one run on this CPU
with `edgedistill bench` (SST-2 dev through each runtime; latency at the `cpu` target's 128
tokens; each int8 candidate timed against the fp32 teacher in alternating fresh processes). The
bars, for dev accuracy through ONNX Runtime int8: >= 98.5 % of the teacher's fp32 dev accuracy,
>= 3x lower p50 than the teacher fp32 (interleaved), >= 5x smaller; ahead of the textbook route
and of optimum's ORTQuantizer on accuracy at no more latency.

Stages, in order (``--only`` runs a prefix; finished ones are skipped, so an interrupted run
continues where it stopped: a training stage resumes from its last checkpoint):

1. ``teacher``   -- `edgedistill finetune` of all-MiniLM-L6-v2 on SST-2 train, 1 epoch, lr 5e-5;
2. ``ours``      -- the headline student: 3 of the teacher's layers, each keeping all 12 heads and 384
   of its 1536 feed-forward neurons (activation importance), KD (soft_kl + hard_ce, T=4, alpha=0.7,
   teacher logits cached once) for 2 epochs, NNCF int8 QAT for the last half-epoch;
3. ``ours-1ep``  -- the same for 1 epoch, QAT for its second half (the same QAT steps): what the
   second epoch buys;
4. ``ours-hidden`` -- ``ours-1ep`` plus hidden-state matching (hidden_mse, each layer's output
   against the teacher layer it was copied from; live teacher): what the hidden term buys;
5. ``textbook``  -- the shape and steps of ``ours-1ep``, logit KD in fp32 only (then post-training
   dynamic int8 at export): the route most tutorials take; ``textbook-2ep``: the same for the
   2 epochs of ``ours`` (ONNX int8 only: its latency is the textbook's);
6. ``ours-3L``   -- the unpruned 3-layer student with the recipe of ``ours-1ep``, for the pruning trade-off;
7. ``export``    -- ONNX fp32/int8 and OpenVINO fp32/int8 of the QAT students (int8 from their
   learned ranges), ONNX fp32 + ORT dynamic int8 of the textbook student and of the teacher, and
   optimum's ORTQuantizer (the avx512_vnni / avx2 config of this CPU) on the textbook student
   (needs optimum-onnx: it runs in ``.venv-compat`` when this environment lacks it);
8. ``bench``     -- `edgedistill bench` on ``cpu`` with SST-2 dev, then every int8 candidate
   interleaved with the teacher fp32 (``--baseline-artifact``).

Every stage's wall time is appended to ``stages.json`` (a resumed stage has one entry per
session), and every CLI command to ``commands.log``. Results: ``summary.{json,md}`` (table 1 of
docs/benchmarks.md section 11) with the CPU model and ISA of the machine on every row.

    python benchmarks/headline_sst2.py [--data ../shared/data/sst2] [--rows N] [--only teacher ours]

``--rows N`` is the quick mode: teacher and students train on the first N rows (results in
``bench-results/headline_sst2-rowsN``). The full run on a 2-core CPU takes hours; the GPU figures
of section 1 are not mixed in.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from common import (
    CLI,
    RESULTS,
    ROOT,
    minilm,
    parser,
    run,
    run_logged,
    run_main,
    sst2_flags,
    sst2_missing,
    write_summary,
)
from headline_sst2_report import build_summary, markdown, stage_report

from edgedistill.io import atomic_write_json

# All 12 heads kept: transformers 5 removed prune_heads, and at 128 tokens a quarter of the
# feed-forward neurons costs about what half the heads and half the neurons do (both ~885k
# weights a layer, about a quarter of the teacher's per-layer matmul work).
PRUNED = ["--student-layers", "3", "--student-ffn", "384"]
KD_OPTS = ["--temperature", "4", "--alpha", "0.7", "--lr", "1e-4"]
KD = ["--losses", "soft_kl:1,hard_ce:1", *KD_OPTS]
# + each student layer's output matched to the teacher layer it was copied from (the default
# layer map: 1->1, 2->3, 3->6); hidden states are not cached, so the teacher runs live
KD_HIDDEN = ["--losses", "soft_kl:1,hard_ce:1,hidden_mse:1", *KD_OPTS]
ONE_EPOCH = ["--epochs", "1", "--qat", "int8", "--qat-start", "0.5"]  # QAT for the second half
# two epochs, QAT for the last half-epoch: the QAT steps (the costly ones) of ONE_EPOCH, twice the float steps
TWO_EPOCHS = ["--epochs", "2", "--qat", "int8", "--qat-start", "0.75"]
# name -> (distill flags, cached teacher logits?) of each student
STUDENTS = {
    "ours": ([*PRUNED, *KD, *TWO_EPOCHS], True),
    "ours-1ep": ([*PRUNED, *KD, *ONE_EPOCH], True),
    "ours-hidden": ([*PRUNED, *KD_HIDDEN, *ONE_EPOCH], False),
    "textbook": ([*PRUNED, *KD, "--epochs", "1", "--qat", "none"], True),
    "textbook-2ep": ([*PRUNED, *KD, "--epochs", "2", "--qat", "none"], True),
    "ours-3L": (["--student-layers", "3", *KD, *ONE_EPOCH], True),
}
# Recipe ablations share the headline's shape, so their latency is the headline's: only their ONNX
# int8 artifact is exported and measured (dev accuracy through the runtime), not interleaved.
ABLATIONS = ("ours-1ep", "ours-hidden", "textbook-2ep")
TRAINED = ("teacher", *STUDENTS)
STAGES = (*TRAINED, "export", "bench")
SAVE_STEPS = "200"  # a checkpoint every ~4 minutes of the teacher's training on 2 cores


class Stages:
    """``stages.json``: one entry per stage per session -- started (UTC), wall seconds, outcome."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: list[dict] = json.loads(path.read_text()) if path.is_file() else []

    @contextmanager
    def time(self, stage: str, cpu: dict):
        entry = {
            "stage": stage,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpu": f"{cpu['model']} ({cpu['generation']})",
            "wall_s": None,
            "outcome": "running",
        }
        self.entries.append(entry)
        atomic_write_json(self.path, self.entries)
        started = time.perf_counter()
        try:
            yield
            entry["outcome"] = "done"
        except BaseException as exc:  # an interrupted stage is recorded as such, then re-raised
            entry["outcome"] = f"interrupted: {type(exc).__name__}"
            raise
        finally:
            entry["wall_s"] = round(time.perf_counter() - started, 1)
            atomic_write_json(self.path, self.entries)

    def totals(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for e in self.entries:
            t = out.setdefault(e["stage"], {"wall_s": 0.0, "sessions": 0, "done": False})
            t["wall_s"] = round(t["wall_s"] + (e["wall_s"] or 0.0), 1)
            t["sessions"] += 1
            t["done"] = t["done"] or e["outcome"] == "done"
        return out


def train_flags(data: Path, rows: int | None) -> list[str]:
    subset = ["--max-train-samples", str(rows)] if rows else []
    return [*sst2_flags(data), *subset, "--save-steps", SAVE_STEPS]


def train_teacher(out: Path, data: Path, rows: int | None, log: Path) -> dict:
    cmd = [
        *CLI, "finetune", "--model", str(minilm()), "--epochs", "1", "--lr", "5e-5", "--out", str(out / "teacher"),
        *train_flags(data, rows),
    ]  # fmt: skip
    return run(cmd, stage_report(out, "teacher"), log)


def train_student(name: str, out: Path, data: Path, rows: int | None, log: Path) -> dict:
    flags, cached = STUDENTS[name]
    cache = ["--cache-teacher-outputs", "--set", f"training.teacher_cache_dir={out / 'teacher_cache'}"]
    cmd = [
        *CLI, "distill", "--teacher", str(out / "teacher" / "model"), *flags,
        *(cache if cached else []), "--out", str(out / name), *train_flags(data, rows),
    ]  # fmt: skip
    return run(cmd, stage_report(out, name), log)


def export_all(out: Path, data: Path, optimum_python: Path | None) -> dict[str, str]:
    """Every artifact of the table (skipped when its manifest exists); label -> folder."""
    from edgedistill.export import ExportConfig, export

    calib = {"calib_data": data / "dev.tsv", "calib_text_column": "sentence", "parity_samples": 32}
    art = out / "artifacts"

    def once(model: Path, dest: Path, formats: list[str], precisions: list[str], **kw) -> None:
        want = [dest / f"{f}-{p}" / "manifest.json" for f in formats for p in precisions]
        if not all(w.is_file() for w in want):
            export(model, dest, ExportConfig(formats=formats, precisions=precisions, **calib, **kw))

    teacher = out / "teacher" / "model"
    once(teacher, art / "teacher", ["onnx"], ["fp32"])
    once(teacher, art / "teacher", ["onnx"], ["int8"], int8_method="dynamic")
    folders = {
        "teacher 6L ONNX fp32": art / "teacher" / "onnx-fp32",
        "teacher 6L ONNX int8 (ORT dynamic PTQ)": art / "teacher" / "onnx-int8",
    }
    for name, (flags, _) in STUDENTS.items():
        qat = flags[flags.index("--qat") + 1] != "none"
        student = out / name / "student"
        if not (student / "config.json").is_file():
            continue  # not trained yet (--only): its rows are left out
        shape = "3L" if name == "ours-3L" else "3L-f384"
        if name in ABLATIONS:
            once(student, art / name, ["onnx"], ["int8"], int8_method="qat" if qat else "dynamic")
            how = "QAT ranges" if qat else "ORT dynamic PTQ"
            folders[f"{name}: {shape} ONNX int8 ({how})"] = art / name / "onnx-int8"
        elif qat:
            once(student, art / name, ["onnx", "openvino"], ["fp32", "int8"])
            folders[f"{name}: {shape} ONNX int8 (QAT ranges)"] = art / name / "onnx-int8"
            folders[f"{name}: {shape} OpenVINO int8 (QAT ranges)"] = art / name / "openvino-int8"
            folders[f"{name}: {shape} ONNX fp32"] = art / name / "onnx-fp32"
            folders[f"{name}: {shape} OpenVINO fp32"] = art / name / "openvino-fp32"
            if name == "ours":  # the QAT weights through the textbook's quantizer: graph cost vs ranges
                once(student, art / f"{name}-dynamic", ["onnx"], ["int8"], int8_method="dynamic")
                folders[f"{name}: {shape} ONNX int8 (ORT dynamic PTQ of the QAT weights)"] = (
                    art / f"{name}-dynamic" / "onnx-int8"
                )
        else:
            once(student, art / name, ["onnx"], ["fp32"])
            once(student, art / name, ["onnx"], ["int8"], int8_method="dynamic")
            folders[f"{name}: {shape} ONNX fp32 (logit KD)"] = art / name / "onnx-fp32"
            folders[f"{name}: {shape} ONNX int8 (ORT dynamic PTQ)"] = art / name / "onnx-int8"
            optimum = ortquantizer(student, art / f"{name}-optimum", optimum_python, out / "commands.log")
            if optimum is not None:
                folders[f"{name}: {shape} ONNX int8 (optimum ORTQuantizer {optimum[1]})"] = optimum[0]
    return {label: str(folder) for label, folder in folders.items()}


def ortquantizer(student: Path, work: Path, python: Path | None, log: Path) -> tuple[Path, str] | None:
    """optimum's ORTQuantizer (dynamic, this CPU's config) on ``student``: (folder, config) or None.

    Runs here when optimum-onnx imports, else in ``python`` (the transformers-4.57 environment
    ``make test-compat`` builds), else is left out with the reason printed. Either way in a child
    process whose output goes to ``log`` (commands.log)."""
    done = work / "int8" / "ortquantizer.json"
    if not done.is_file():
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[3]); from export_sst2 import optimum_dynamic_int8; "
            "from pathlib import Path; p, name = optimum_dynamic_int8(Path(sys.argv[1]), Path(sys.argv[2])); "
            "json.dump({'onnx': p.name, 'config': name}, open(Path(sys.argv[2]) / 'int8' / 'ortquantizer.json', 'w'))"
        )
        from edgedistill.plugins import is_installed

        exe = sys.executable if is_installed("optimum.onnxruntime") else (str(python) if python else None)
        if exe is None:
            print(
                "[skip] ORTQuantizer: optimum-onnx is not installed here; pass --optimum-python",
                file=sys.stderr,
            )
            return None
        run_logged([exe, "-c", code, str(student), str(work), str(Path(__file__).parent)], log)
    info = json.loads(done.read_text())
    return work / "int8", info["config"]


# --rows (quick mode) also shortens the measurement: fewer iterations and fresh processes a side.
QUICK_MEASUREMENT = {
    "measurement.min_iterations": 20,
    "measurement.min_seconds": 0.5,
    "measurement.compare_rounds": 5,
    "measurement.max_compare_rounds": 5,
}


def bench_all(out: Path, data: Path, folders: dict[str, str], quick: bool) -> dict:
    """`edgedistill bench` of every artifact on ``cpu`` with SST-2 dev, then the interleaved bar."""
    from edgedistill.bench import bench
    from edgedistill.targets import load_target

    target = load_target("cpu", QUICK_MEASUREMENT if quick else None)

    table_path, pairs_path = out / "bench_cpu.json", out / "interleaved_cpu.json"
    if not _covers(table_path, list(folders.values())):
        bench(list(folders.values()), target, data=data / "dev.tsv", out=table_path, progress=True)
    candidates = [f for label, f in folders.items() if "int8" in label and not label.startswith(ABLATIONS)]
    teacher = folders["teacher 6L ONNX fp32"]
    # an interleaved report lists its baseline among its artifacts (role "baseline")
    if not _covers(pairs_path, [*candidates, teacher]):
        bench(
            candidates,
            target,
            baseline_artifact=teacher,
            out=pairs_path,
            progress=True,
        )
    return {"table": json.loads(table_path.read_text()), "pairs": json.loads(pairs_path.read_text())}


def _covers(report: Path, folders: list[str]) -> bool:
    """True when ``report`` exists and measured exactly these artifact folders (else measure again)."""
    if not report.is_file():
        return False
    measured = {str(Path(a["path"]).resolve()) for a in json.loads(report.read_text())["artifacts"]}
    return measured == {str(Path(f).resolve()) for f in folders}


def main() -> int:
    ap = parser(__doc__, sst2=True)
    ap.add_argument("--rows", type=int, default=None, help="quick mode: train on the first N rows only")
    ap.add_argument("--out", type=Path, default=None, help="default bench-results/headline_sst2[-rowsN]")
    ap.add_argument("--only", nargs="+", choices=STAGES, help="run just these stages (in the fixed order)")
    ap.add_argument(
        "--optimum-python",
        type=Path,
        default=ROOT / ".venv-compat" / "bin" / "python",
        help="a Python with optimum-onnx, for the ORTQuantizer row (default: .venv-compat's)",
    )
    args = ap.parse_args()
    if sst2_missing(args.data):
        return 2
    out = args.out or RESULTS / ("headline_sst2" + (f"-rows{args.rows}" if args.rows else ""))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    from edgedistill.bench.system import cpu_info

    cpu = cpu_info()
    # SIGTERM (a CI timeout, the end of a session) unwinds like Ctrl-C, so stages.json records it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    stages = Stages(out / "stages.json")
    wanted = [s for s in STAGES if not args.only or s in args.only]
    optimum_python = args.optimum_python if args.optimum_python.is_file() else None
    folders: dict[str, str] = {}
    measured = None
    for stage in wanted:
        if stage in TRAINED and stage_report(out, stage).is_file():
            print(f"[done] {stage}: {stage_report(out, stage)}")
            continue
        with stages.time(stage, cpu):
            if stage == "teacher":
                train_teacher(out, args.data, args.rows, log)
            elif stage in STUDENTS:
                train_student(stage, out, args.data, args.rows, log)
            elif stage == "export":
                folders = export_all(out, args.data, optimum_python)
                atomic_write_json(out / "artifacts.json", folders)
            elif stage == "bench":
                folders = folders or json.loads((out / "artifacts.json").read_text())
                measured = bench_all(out, args.data, folders, quick=args.rows is not None)
    if measured is not None:
        summary = build_summary(out, measured, folders, stages.totals(), cpu, args.rows, list(TRAINED))
        write_summary(out, summary, markdown(summary), quick=args.rows is not None)
    else:
        print(json.dumps(stages.totals(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
