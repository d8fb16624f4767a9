"""Teacher loading is safe by default; students are built from teacher layers or fresh and narrower."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgedistill.compress import models
from edgedistill.compress.config import ModelSource, StudentConfig
from edgedistill.errors import ModelLoadError


@pytest.mark.parametrize(
    "n,k,expected", [(6, 3, [0, 2, 5]), (6, 2, [0, 5]), (12, 6, [0, 2, 4, 7, 9, 11]), (6, 1, [5])]
)
def test_uniform_layer_selection(n, k, expected):
    assert models.select_layers(n, k) == expected


def test_layer_selection_errors():
    with pytest.raises(ModelLoadError, match="only 2 layers"):
        models.select_layers(2, 3)
    with pytest.raises(ModelLoadError, match="out of range"):
        models.select_layers(2, [0, 4])


def test_student_copies_selected_teacher_layers(tiny_bert_classifier):
    teacher = models.load_model(ModelSource(path=str(tiny_bert_classifier)), "sequence-classification")
    student, selected = models.build_student(teacher, StudentConfig(layers=[1]), "sequence-classification")
    assert selected == [1] and student.config.num_hidden_layers == 1
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(
        s["bert.encoder.layer.0.attention.self.query.weight"],
        t["bert.encoder.layer.1.attention.self.query.weight"],
    )
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(
        s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"]
    )
    assert teacher.config.num_hidden_layers == 2, "the teacher must not be modified"


def test_narrower_student_is_fresh(tiny_bert_encoder):
    teacher = models.load_model(ModelSource(path=str(tiny_bert_encoder)), "feature-extraction")
    student, selected = models.build_student(
        teacher, StudentConfig(layers=1, hidden_size=32), "feature-extraction"
    )
    assert selected is None
    assert student.config.hidden_size == 32 and student.config.num_attention_heads == 2
    assert student.config.intermediate_size == 128 and student.config.num_hidden_layers == 1


def test_missing_teacher(tmp_path):
    with pytest.raises(ModelLoadError, match="not found.*does not exist"):
        models.load_model(ModelSource(path=str(tmp_path / "nope")), "sequence-classification")


def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model folder: it has no config.json"):
        models.load_model(ModelSource(path=str(tmp_path)), "sequence-classification")


def test_pickle_only_weights_refused_then_allowed(tmp_path, tiny_bert_classifier):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert_classifier, folder)
    model = models.load_model(ModelSource(path=str(folder)), "sequence-classification")
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only pickle weights.*allow_pickle"):
        models.load_model(ModelSource(path=str(folder)), "sequence-classification")
    loaded = models.load_model(ModelSource(path=str(folder), allow_pickle=True), "sequence-classification")
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
