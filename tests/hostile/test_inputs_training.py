"""Non-finite training: hyperparameters refused by validation; a NaN loss or weight stops the
trainer with the step number and nothing is saved."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)

from edgedistill.compress.config import FinetuneRecipe
from edgedistill.compress.training import check_finite_weights
from edgedistill.errors import ConfigError, TrainingError

GOOD = "sentence\tlabel\n" + "".join(f"good sentence {i}\t{i % 2}\n" for i in range(16))


def _poisoned(tmp_path: Path, source: Path, key: str, row: int) -> Path:
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(source, tmp_path / "poisoned"))
    state = load_file(folder / "model.safetensors")
    name = next(k for k in state if k.endswith(key))
    state[name][row] = float("inf") if "token_type" in key else float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _recipe(model: Path, data: Path, **training) -> FinetuneRecipe:
    from edgedistill.config import validate

    raw = {
        "model": {"path": str(model)},
        "num_labels": 2,
        "data": {"train": str(data), "eval": str(data), "max_length": 16},
        "training": {"max_steps": 3, "batch_size": 4, "save_steps": 1000, "logging_steps": 1, **training},
    }
    return validate(FinetuneRecipe, raw, "test recipe")


@pytest.mark.parametrize(
    ("training", "key"),
    [({"lr": float("nan")}, "training.lr"), ({"lr": float("inf")}, "training.lr"),
     ({"max_steps": -1}, "training.max_steps"), ({"epochs": float("inf")}, "training.epochs"),
     ({"warmup_ratio": float("nan")}, "training.warmup_ratio"), ({"weight_decay": float("-inf")}, "training.weight_decay")],
    ids=["lr_nan", "lr_inf", "steps_negative", "epochs_inf", "warmup_nan", "decay_neg_inf"],
)  # fmt: skip
def test_non_finite_hyperparameters_refused(training, key, tmp_path):
    with pytest.raises(ConfigError) as info:
        _recipe(tmp_path, tmp_path / "d.tsv", **training)
    assert key in str(info.value), str(info.value)


def test_nan_weights_stop_at_step_1_nothing_saved(tmp_path, write, tiny_bert_encoder):
    from edgedistill.compress.finetuning import finetune

    model = _poisoned(tmp_path, tiny_bert_encoder, "word_embeddings.weight", slice(None))
    out = tmp_path / "out"
    with pytest.raises(TrainingError) as info:
        finetune(_recipe(model, write("d.tsv", GOOD)), out, progress=False)
    assert "training step 1: the loss is nan" in str(info.value), str(info.value)
    assert not (out / "model").exists() and not (out / "finetune_report.json").exists()


def test_non_finite_weight_with_finite_loss_stops_at_step_1(tmp_path, write, tiny_bert_encoder):
    """token type 1 is never used by single sentences: the loss stays finite, the weight does not."""
    from edgedistill.compress.finetuning import finetune

    model = _poisoned(tmp_path, tiny_bert_encoder, "token_type_embeddings.weight", 1)
    out = tmp_path / "out"
    with pytest.raises(TrainingError) as info:
        finetune(_recipe(model, write("d.tsv", GOOD)), out, progress=False)
    assert "training step 1: weight bert.embeddings.token_type_embeddings.weight is not finite" in str(
        info.value
    )
    assert not (out / "model").exists()


def test_check_finite_weights_names_the_parameter():
    layer = torch.nn.Linear(2, 2)
    check_finite_weights(layer, 5)  # finite: no error
    with torch.no_grad():
        layer.bias[0] = float("inf")
    with pytest.raises(TrainingError, match="training step 5: weight bias is not finite"):
        check_finite_weights(layer, 5)
