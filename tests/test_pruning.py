"""Structured pruning of teacher-initialised students (heads and feed-forward neurons).

The central check: units whose output weights are zero contribute nothing, so activation
importance must rank them last, and removing them must leave the model's outputs unchanged --
before and after a save/load round trip, for a BERT encoder (transformers' pruned_heads) and a
llama decoder with grouped key/value heads (sliced projections, explicit head_dim).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny_llama import tiny_decoder_config
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from conftest import tiny_bert_config, tiny_qat_recipe
from edgedistill.compress import pruning
from edgedistill.compress.config import DistillRecipe, StudentConfig
from edgedistill.errors import ModelLoadError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD = 16  # head size of the tiny models below (64 dims / 4 heads)
# transformers 5 removed prune_heads / config.pruned_heads: BERT head pruning is a 4.x feature
# (`make test-compat` runs these tests on 4.57); on 5.x it is refused with the way out.
BERT_HEAD_PRUNING = pruning.encoder_head_pruning_supported(
    BertForSequenceClassification(tiny_bert_config(100))
)
needs_bert_head_pruning = pytest.mark.skipif(
    not BERT_HEAD_PRUNING,
    reason="transformers 5 removed BERT head pruning (tested on 4.57 by make test-compat)",
)


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(vocab_size=100)).eval()  # 4 heads, FFN 256


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**tiny_decoder_config(100), tie_word_embeddings=False)).eval()


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 8:] = 0  # padding must not count towards importance
    return {"input_ids": torch.randint(0, 100, (3, 12), generator=generator), "attention_mask": mask}


@torch.no_grad()
def _kill(model, dead_heads: list[list[int]], dead_neurons: slice) -> None:
    """Zero the output-projection columns of some heads and some neurons' down-projection columns."""
    for layer, heads in zip(pruning.layer_parts(model), dead_heads, strict=True):
        for h in heads:
            layer.linear("o").weight[:, h * HEAD : (h + 1) * HEAD] = 0
        layer.linear("down").weight[:, dead_neurons] = 0


@needs_bert_head_pruning
def test_bert_dead_heads_and_neurons_are_pruned_and_outputs_do_not_change(tmp_path):
    model = _bert()
    _kill(model, [[1, 3], [0, 2]], slice(100, None))
    batch = _batch()
    with torch.no_grad():
        reference = model(**batch).logits
    info = pruning.prune_student(model, heads=2, ffn=100, method="activation", batches=[batch])
    assert info["kept_heads"] == [[0, 2], [1, 3]]
    assert model.config.pruned_heads == {0: [1, 3], 1: [0, 2]} and model.config.intermediate_size == 100
    assert info["parameters_after"] < 0.65 * info["parameters_before"]
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (32, 64)
    assert layer.intermediate.dense.weight.shape == (100, 64) and layer.output.dense.weight.shape == (64, 100)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference, atol=1e-6)
    model.save_pretrained(tmp_path)  # transformers re-applies config.pruned_heads on load
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, reference, atol=1e-6)


@pytest.mark.skipif(BERT_HEAD_PRUNING, reason="transformers 4.x still prunes BERT heads")
def test_bert_head_pruning_on_transformers_5_is_refused_before_any_change():
    model = _bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ModelLoadError, match=r"removed in 5\.0.*student\.intermediate_size.*transformers>=4\.57,<4\.58"
    ):
        pruning.prune_student(model, heads=2, ffn=100, method="activation", batches=[_batch()])
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # feed-forward pruning alone needs no prune_heads and keeps the outputs of dead neurons' model
    _kill(model, [[], []], slice(100, None))
    batch = _batch()
    with torch.no_grad():
        reference = model(**batch).logits
    info = pruning.prune_student(model, heads=None, ffn=100, method="activation", batches=[batch])
    assert info["intermediate_size"] == 100 and info["heads_per_layer"] == 4
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference, atol=1e-6)


def test_gqa_decoder_is_pruned_by_whole_key_value_groups_and_reloads(tmp_path):
    model = _llama()
    # layer 0 loses key/value group 0 (query heads 0, 1), layer 1 group 1 (heads 2, 3)
    _kill(model, [[0, 1], [2, 3]], slice(None, 64))
    batch = _batch()
    with torch.no_grad():
        reference = model(**batch).logits
    info = pruning.prune_student(model, heads=2, ffn=64, method="activation", batches=[batch])
    assert info["kept_heads"] == [[2, 3], [0, 1]]
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, HEAD)
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (32, 64) and attention.k_proj.weight.shape == (16, 64)
    assert attention.o_proj.weight.shape == (64, 32) and model.model.layers[0].mlp.down_proj.in_features == 64
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, reference, atol=1e-5)


def test_magnitude_importance_is_data_free():
    model = _bert()
    with torch.no_grad():  # head 2 of layer 0 and neuron 5 of layer 1 lose every weight
        attention = model.bert.encoder.layer[0].attention
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight[2 * HEAD : 3 * HEAD] = 0
        attention.output.dense.weight[:, 2 * HEAD : 3 * HEAD] = 0
        model.bert.encoder.layer[1].intermediate.dense.weight[5] = 0
    head_scores, neuron_scores = pruning.importance(model, None, "magnitude")
    assert int(head_scores[0].argmin()) == 2 and int(neuron_scores[1].argmin()) == 5
    with pytest.raises(ValueError, match="calibration batches"):
        pruning.importance(model, None, "activation")


def test_targets_pruning_cannot_reach_are_refused_with_the_valid_choices():
    llama = _llama()
    with pytest.raises(ModelLoadError, match=r"2 query heads per key/value head.*choose one of \[2, 4\]"):
        pruning.check_targets(llama.config, heads=3, ffn=None)
    with pytest.raises(ModelLoadError, match="teacher has 4 heads per layer; pruning only removes heads"):
        pruning.check_targets(llama.config, heads=8, ffn=None)
    with pytest.raises(ModelLoadError, match="feed-forward size is 128; pruning only removes neurons"):
        pruning.check_targets(llama.config, heads=None, ffn=200)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(
        ModelLoadError, match=r"does not know the layout of GPT2LMHeadModel.*student.hidden_size"
    ):
        pruning.layer_parts(gpt2)


def test_recipe_and_cli_flags_select_pruning():
    from edgedistill.cli import _overrides, build_parser

    assert StudentConfig(layers=3, num_attention_heads=6).prunes(teacher_hidden=384)
    assert StudentConfig(layers=3, hidden_size=384, intermediate_size=768).prunes(teacher_hidden=384)
    assert not StudentConfig(layers=3, hidden_size=256, num_attention_heads=4).prunes(teacher_hidden=384)
    assert not StudentConfig(layers=3).prunes(teacher_hidden=384)
    with pytest.raises(ValidationError, match="give either `path`"):
        StudentConfig(path="some/student", num_attention_heads=2)
    # every teacher layer kept, each pruned
    recipe = DistillRecipe.model_validate({"teacher": {"path": "t"}, "student": {"num_attention_heads": 6}})
    assert recipe.student.prunes(teacher_hidden=384)
    args = build_parser().parse_args(
        ["distill", "--teacher", "t", "--student-layers", "3", "--student-heads", "6", "--student-ffn", "768"]
        + ["--prune-importance", "magnitude", "--out", "o"]
    )
    overrides = _overrides(args)
    assert overrides["student.num_attention_heads"] == 6 and overrides["student.intermediate_size"] == 768
    assert overrides["student.prune.importance"] == "magnitude"


@pytest.mark.slow
def test_distilled_pruned_qat_student_exports_with_parity(tmp_path, tiny_bert_classifier, tiny_data):
    """distill builds the pruned student on training batches, records what it kept, trains it through
    NNCF int8 fake-quant, and the student exports to ONNX and OpenVINO (float, and int8 from the
    learned ranges) with parity against torch in each runtime;
    llama.cpp's BERT cannot hold per-layer head counts, so GGUF is refused with the way out."""
    from edgedistill.compress.distillation import distill
    from edgedistill.export import ExportConfig, export
    from edgedistill.export.core import ExportError

    heads = 2 if BERT_HEAD_PRUNING else 4  # transformers 5: feed-forward pruning only
    recipe = tiny_qat_recipe(
        tiny_bert_classifier,
        tiny_data,
        student={"intermediate_size": 96, **({"num_attention_heads": 2} if BERT_HEAD_PRUNING else {})},
        losses=[{"name": "soft_kl"}, {"name": "hard_ce"}, {"name": "hidden_mse"}],
    )
    report = distill(recipe, tmp_path / "kd", progress=False)
    info = report["student"]["pruning"]
    assert info["importance"] == "activation" and info["calibration_batches"] >= 1
    assert info["heads_per_layer"] == heads and info["teacher_heads_per_layer"] == 4
    assert info["intermediate_size"] == 96 and info["teacher_intermediate_size"] == 256
    meta = json.loads((tmp_path / "kd" / "student" / "edgedistill.json").read_text())
    assert meta["pruning"]["kept_heads"] == info["kept_heads"]
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "kd" / "student")
    assert sum(p.numel() for p in student.parameters()) == info["parameters_after"]
    assert student.bert.encoder.layer[0].attention.self.query.out_features == heads * HEAD
    assert student.bert.encoder.layer[0].intermediate.dense.out_features == 96

    cfg = ExportConfig(
        formats=["onnx", "openvino"], precisions=["fp32", "int8"], parity_samples=8, calib_samples=8
    )
    exported = export(tmp_path / "kd" / "student", tmp_path / "export", cfg)
    assert len(exported["artifacts"]) == 4
    for artifact in exported["artifacts"]:
        assert artifact["parity"]["passed"], artifact["path"]
        if artifact["precision"] == "int8":
            assert artifact["quantization"]["method"] == "qat" and artifact["parity"]["reference"] == "qat"
    fp32 = next(a for a in exported["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    assert max(o["max_abs_diff"] for o in fp32["parity"]["outputs"]) < 1e-4
    if BERT_HEAD_PRUNING:
        with pytest.raises(ExportError, match="pruned_heads.*ONNX or OpenVINO"):
            gguf = ExportConfig(formats=["gguf"], precisions=["fp32"], task="feature-extraction")
            export(tmp_path / "kd" / "student", tmp_path / "gguf", gguf)
        assert not (tmp_path / "gguf" / "gguf-fp32").exists()


def test_pruned_decoder_runs_in_llama_cpp_like_torch(tmp_path, lm_teacher):
    """Fewer heads than hidden/head_dim: the GGUF states key/value length, llama.cpp agrees with torch."""
    from edgedistill.export import ExportConfig, export

    model = AutoModelForCausalLM.from_pretrained(lm_teacher).eval()
    pruning.prune_student(model, heads=2, ffn=96, method="magnitude")
    model.save_pretrained(tmp_path / "pruned")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(lm_teacher).save_pretrained(tmp_path / "pruned")
    report = export(
        tmp_path / "pruned", tmp_path / "out", ExportConfig(formats=["gguf"], precisions=["fp32"])
    )
    (artifact,) = report["artifacts"]
    logits = artifact["parity"]["outputs"][0]
    assert artifact["parity"]["passed"] and logits["top1_agreement"] == 1.0
    assert np.isfinite(logits["max_abs_diff"]) and logits["max_abs_diff"] < 1e-3
