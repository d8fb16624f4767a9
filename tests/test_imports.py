"""`import edgedistill` stays light: no optional heavy dependency is imported."""

from __future__ import annotations

import subprocess
import sys

HEAVY = [
    "nncf",
    "openvino",
    "llama_cpp",
    "onnxruntime",
    "optimum",
    "executorch",
    "torchao",
    "optuna",
    "sqlalchemy",
]


def test_import_edgedistill_imports_no_heavy_dependency():
    code = (
        "import sys, edgedistill, edgedistill.compress, edgedistill.cli, edgedistill.compress.qat, "
        "edgedistill.export, edgedistill.bench, edgedistill.targets, edgedistill.fit, edgedistill.pipeline\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", f"imported at package import time: {out}"


def test_every_loss_module_imports_and_registers():
    from edgedistill.compress.losses import LOSSES

    assert {"soft_kl", "hard_ce", "hidden_mse", "attention_kl", "embedding_cosine", "embedding_mse"} <= set(
        LOSSES
    )


def test_cli_help_lists_the_verbs():
    out = subprocess.run(
        [sys.executable, "-m", "edgedistill", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for verb in ("distill", "finetune", "schema", "fit"):
        assert verb in out
