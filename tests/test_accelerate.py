"""Distillation scales out through `accelerate launch` (2 CPU processes, gloo backend).

accelerate 1.x starts a single process for `--cpu` unless mpirun is configured; two local CPU
processes come from its torchrun launcher (`--multi_gpu --num_processes 2`), and our Trainer
arguments pick the gloo backend when there is no CUDA device.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Loaded into every process of the launch (PYTHONPATH): a `sys.addaudithook` that logs, per rank,
# every write (open for writing, rename/replace, mkdir, remove) under the run's --out folder.
WRITE_AUDIT = """
import os, sys
_out = os.environ.get("WRITE_AUDIT_OUT")
if _out:
    _out = os.path.realpath(_out)
    _log = os.path.join(os.environ["WRITE_AUDIT_LOG"], "writes-rank" + os.environ.get("RANK", "single"))
    _busy = []
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def _under(path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None
        path = os.path.realpath(path)
        return os.path.relpath(path, _out) if (path + os.sep).startswith(_out + os.sep) else None

    def _audit(event, args):
        if _busy:
            return
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _writing)
            paths = [path] if writes else []
        elif event in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree"):
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        rels = [r for r in map(_under, paths) if r is not None]
        if rels:
            _busy.append(1)
            try:
                with open(_log, "a") as fh:
                    fh.write(event + " " + " ".join(rels) + "\\n")
            finally:
                _busy.pop()

    sys.addaudithook(_audit)
"""


def _writes(audit: Path) -> dict[str, list[str]]:
    return {
        p.name.removeprefix("writes-rank"): p.read_text().splitlines() for p in audit.glob("writes-rank*")
    }


def _run_distill(args: list[str], out: Path, port: int, processes: int) -> tuple[dict, dict[str, list[str]]]:
    """`edgedistill distill ARGS --out OUT` in ``processes`` local CPU processes (2: `accelerate
    launch`, 1: a plain run); its report and every write each rank made under OUT."""
    audit = out.parent / f"audit-{out.name}"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(WRITE_AUDIT)
    if processes == 1:
        cmd = [sys.executable, "-m", "edgedistill", "distill", *args]
    else:
        accelerate = Path(sys.executable).with_name("accelerate")
        if not accelerate.exists():
            accelerate = shutil.which("accelerate")
        cmd = [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
        ]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "edgedistill", "distill", *args]
    cmd += ["--quiet", "--out", str(out), "--overwrite"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(port), WRITE_AUDIT_OUT=str(out))
    env.update(
        WRITE_AUDIT_LOG=str(audit),
        PYTHONPATH=os.pathsep.join(filter(None, [str(audit), env.get("PYTHONPATH")])),
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "distill_report.json").read_text())
    assert report["training"]["world_size"] == processes
    return report, _writes(audit)


def _launch_distill(args: list[str], out: Path, port: int) -> dict:
    """Two processes and one on the same recipe: one writer, and the same evaluation on rank 0.

    The README promises that only rank 0 writes the student and the report; Trainer's per-rank RNG
    state in each checkpoint is the one file another rank may write. Evaluation runs on rank 0 over
    the whole eval split, so the teacher's figures and the untrained student's equal the
    single-process run's; the trained student's differ (two half batches, other dropout draws).
    """
    two, writes = _run_distill(args, out, port, processes=2)
    one, single = _run_distill(args, out.with_name(out.name + "-single"), port, processes=1)
    assert set(writes) == {"0", "1"} and set(single) == {"single"}, set(writes)
    assert any(w.endswith("distill_report.json") for w in writes["0"]), writes["0"][-5:]
    rng_state = r"open \S*checkpoint-\d+/rng_state_1\.pth|os\.mkdir \S*checkpoint-\d+"
    others = [w for w in writes["1"] if not re.fullmatch(rng_state, w)]
    assert others == [], others  # rank 1 wrote nothing but its RNG state (and made its folder)
    files = {p.relative_to(out).as_posix() for p in out.iterdir()} - {".rank0-ready"}
    single_out = out.with_name(out.name + "-single")
    assert files == {p.relative_to(single_out).as_posix() for p in single_out.iterdir()}
    assert sorted(os.listdir(out / "student")) == sorted(os.listdir(single_out / "student"))
    assert two["data"] == one["data"] and two["teacher"] == one["teacher"]
    before_two, before_one = (
        two["student"]["metrics_before_training"],
        one["student"]["metrics_before_training"],
    )
    assert before_two.keys() == before_one.keys() and before_two, before_two
    for key, value in before_one.items():
        if isinstance(value, float):
            assert abs(before_two[key] - value) <= 1e-5 * max(1.0, abs(value)), (key, before_two, before_one)
    assert two["student"]["metrics"].keys() == one["student"]["metrics"].keys()
    assert two["training"]["steps"] == one["training"]["steps"]
    return two


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_bert_classifier, tiny_data):
    args = [
        "--teacher",
        str(tiny_bert_classifier),
        "--task",
        "sequence-classification",
        "--student-layers",
        "1",
    ]
    args += ["--train", str(tiny_data["train"]), "--eval", str(tiny_data["eval"])]
    args += ["--max-steps", "4", "--batch-size", "8", "--max-length", "32"]
    args += ["--losses", "soft_kl:1,hard_ce:1,hidden_mse:1"]
    report = _launch_distill(args, tmp_path / "ddp", port=29517)
    assert report["student"]["metrics"]["kl_to_teacher"] >= 0


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_causal_lm(tmp_path, lm_teacher, lm_data):
    args = ["--task", "causal-lm", "--teacher", str(lm_teacher), "--student-layers", "1"]
    args += ["--train", str(lm_data["train"]), "--eval", str(lm_data["eval"]), "--text-column", "text"]
    args += ["--max-steps", "4", "--batch-size", "4", "--max-length", "48"]
    args += ["--set", f"data.cache_dir={tmp_path / 'cache'}"]
    report = _launch_distill(args, tmp_path / "ddp", port=29519)
    assert report["student"]["metrics"]["perplexity"] > 1
