"""Distillation scales out through `accelerate launch` (2 CPU processes, gloo backend).

accelerate 1.x starts a single process for `--cpu` unless mpirun is configured; two local CPU
processes come from its torchrun launcher (`--multi_gpu --num_processes 2`), and our Trainer
arguments pick the gloo backend when there is no CUDA device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _launch_distill(args: list[str], out: Path, port: int) -> dict:
    """`accelerate launch` two local CPU processes of `edgedistill distill ARGS --out OUT`; its report."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        accelerate = shutil.which("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "edgedistill", "distill", *args]
    cmd += ["--quiet", "--out", str(out), "--overwrite"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(port))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "distill_report.json").read_text())
    assert report["training"]["world_size"] == 2
    return report


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
