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


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_bert_classifier, tiny_data):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        accelerate = shutil.which("accelerate")
    out = tmp_path / "ddp"
    cmd = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "edgedistill",
        "distill",
        "--teacher",
        str(tiny_bert_classifier),
        "--task",
        "sequence-classification",
        "--student-layers",
        "1",
        "--train",
        str(tiny_data["train"]),
        "--eval",
        str(tiny_data["eval"]),
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--losses",
        "soft_kl:1,hard_ce:1,hidden_mse:1",
        "--quiet",
        "--out",
        str(out),
        "--overwrite",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT="29517")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "distill_report.json").read_text())
    assert report["training"]["world_size"] == 2
    assert report["student"]["metrics"]["kl_to_teacher"] >= 0
