"""GGUF quantization-aware training for BERT sentence embedders (task feature-extraction).

The encoder twin of tests/test_gguf_qat.py, on the tiny BERT of tests/conftest.py:

- the fake-quant tensor rule is what the exporter writes for BERT (token embeddings Q8_0 at 4 bits,
  position / token-type tables, norms and biases F32, the pooler left out, F16 fallbacks);
- a BertModel trained a few steps through Q4_0 fake quantization, saved as float weights and
  exported by the real exporter: the file's weights are the fake-quant weights bit for bit, and
  llama.cpp's mean-pooled embeddings match the torch fake-quant model far more closely than the
  float model's;
- ``qat.mode gguf_q4_0`` through `distill` for feature-extraction, and the refusals (a classifier,
  a model llama.cpp's BERT graph cannot run), before any training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from gguf_qat_helpers import assert_q4_0_export_holds_trained_weights  # noqa: E402

from conftest import make_sentences, tiny_bert_config  # noqa: E402
from edgedistill.compress.config import DistillRecipe  # noqa: E402
from edgedistill.compress.gguf_quant import attach_gguf_fake_quant  # noqa: E402
from edgedistill.compress.losses import mean_pool  # noqa: E402
from edgedistill.errors import UnsupportedModelError  # noqa: E402
from edgedistill.export import gguf as G  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTS = [t for t, _ in make_sentences(8, seed=5)]
EMBEDDING_LOSSES = ["embedding_cosine", "hidden_mse", "attention_kl"]


def _bert(folder: Path, tokenizer_dir: Path, *, hidden: int = 64, seed: int = 1, **config):
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = tiny_bert_config(len(tok), hidden=hidden)
    for key, value in config.items():
        setattr(cfg, key, value)
    model = BertModel(cfg).eval()  # with a pooler, as AutoModel loads a BERT checkpoint
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


def _same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got, want = got.astype(np.float32).reshape(want.shape), want.astype(np.float32)
    differ = got.view(np.uint32) != want.view(np.uint32)
    assert not differ.any(), f"{what}: {int(differ.sum())} of {want.size} values differ"


def _embeddings(model, sequences) -> list[np.ndarray]:
    """Mean over the tokens of the last hidden state: llama.cpp's MEAN pooling of the exported file."""
    with torch.no_grad():
        return [
            model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(dim=0).numpy() for ids in sequences
        ]


# --------------------------------------------------------------------------- tensor rule


@pytest.mark.parametrize("hidden, precision", [(64, "q4_0"), (64, "q8_0"), (48, "q4_0")])
def test_bert_fake_quant_rule_is_the_exporters_rule(tmp_path, tiny_tokenizer_dir, hidden, precision):
    model, _ = _bert(tmp_path / "m", tiny_tokenizer_dir, hidden=hidden)
    exported = G.write_gguf(tmp_path / "m", tmp_path / "m.gguf", precision, task="feature-extraction")
    with attach_gguf_fake_quant(model, precision) as handle:
        report = handle.report()
        assert {t["tensor"]: t["type"] for t in report["tensors"]} == exported["tensors"]
        for key in ("fallbacks", "overrides"):
            assert sorted(report[key], key=str) == sorted(exported[key], key=str), key
        types = {t["parameter"]: t["type"] for t in report["tensors"]}
        # the pooler is not part of llama.cpp's embedding model: neither exported nor fake-quantized
        assert not any(name.startswith("pooler.") for name in types)
        assert "pooler.dense.weight" not in report["fake_quantized"]
        for table in ("position_embeddings", "token_type_embeddings"):
            assert types[f"embeddings.{table}.weight"] == "F32"  # llama.cpp keeps these tables F32
        assert types["embeddings.LayerNorm.weight"] == types["encoder.layer.0.output.LayerNorm.bias"] == "F32"
        assert types["encoder.layer.0.attention.self.query.bias"] == "F32"
        # no output.weight: token_embd is the output projection, kept at 8 bits under a 4-bit file
        assert report["output_tensor"] == "token_embd.weight"
        want = precision.upper()
        if hidden == 48:  # rows of 48 take F16; ffn_down's rows are the intermediate size, 192
            assert types["encoder.layer.0.attention.self.query.weight"] == "F16"
            assert types["encoder.layer.0.output.dense.weight"] == want
            assert types["embeddings.word_embeddings.weight"] == "F16"
        else:
            assert types["encoder.layer.1.intermediate.dense.weight"] == want
            assert types["embeddings.word_embeddings.weight"] == "Q8_0"
    assert not any(".parametrizations." in n for n, _ in model.named_parameters())


# --------------------------------------------------------------------------- trained, exported, run


def test_bert_qat_student_exported_to_q4_0_runs_in_llama_cpp_like_its_fake_quant_model(
    tmp_path, tiny_tokenizer_dir
):
    pytest.importorskip("llama_cpp")
    import gguf

    student, tok = _bert(tmp_path / "init", tiny_tokenizer_dir)
    sequences = [tok(t)["input_ids"] for t in TEXTS]
    batch = tok(TEXTS, padding=True, return_tensors="pt")

    def pooled():
        return mean_pool(student(**batch).last_hidden_state, batch["attention_mask"])

    target = torch.randn(len(TEXTS), 64, generator=torch.Generator().manual_seed(3))  # a task to learn
    handle = attach_gguf_fake_quant(student, "q4_0")
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student.train()
    losses = []
    for _ in range(12):
        loss = 1 - torch.nn.functional.cosine_similarity(pooled(), target).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    student.eval()
    assert losses[-1] < losses[0], losses
    handle.remove()  # the latent float weights are what gets saved and exported
    student.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    path = tmp_path / "student.gguf"
    result = G.write_gguf(tmp_path / "student", path, "q4_0", task="feature-extraction")
    assert result["tensor_types"] == {"F32": 24, "Q4_0": 12, "Q8_0": 1}, result["tensor_types"]

    with attach_gguf_fake_quant(student, "q4_0") as handle:
        quantized, plan = handle.quantized_weights(), handle.plan
    stored = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    checked = 0
    for rule in plan.tensors:
        t = stored[rule.gguf_name]
        decoded = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rule.shape)
        if rule.ggml_type == "F32":  # stored as is: the latent weight itself
            want = dict(student.named_parameters())[rule.source].detach().numpy()
        else:
            want, checked = quantized[rule.source].numpy(), checked + 1
        _same_bits(decoded, want, f"{rule.gguf_name} ({rule.ggml_type})")
    assert checked == 13

    with G.GGUFRunner(path, task="feature-extraction", kv_cache="f32") as runner:
        llama_cpp = [runner.embed_ids(ids) for ids in sequences]

    def gap(embeddings) -> float:
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(embeddings, llama_cpp, strict=True)]))

    ptq = gap(_embeddings(student, sequences))
    with attach_gguf_fake_quant(student, "q4_0", simulate_activations=False):
        qat_float_act = gap(_embeddings(student, sequences))
    with attach_gguf_fake_quant(student, "q4_0"):
        qat = gap(_embeddings(student, sequences))
    print(f"\nGGUF q4_0 BERT embeddings vs llama.cpp, mean abs: float {ptq:.3g}, "
          f"fake-quant weights {qat_float_act:.3g}, + Q8_0 activations {qat:.3g}")  # fmt: skip
    # Measured here (AVX2, 8 sentences): float 5.3e-3, fake-quant weights 1.9e-4, with the
    # activations 5.5e-5 (llama.cpp's tanh GELU and its own summation order stay). The margins
    # leave room for other CPUs' kernels (an AMX host rounds its multi-token batches differently).
    assert qat < ptq / 20 and qat_float_act < ptq / 5, (ptq, qat_float_act, qat)


# --------------------------------------------------------------------------- distill, config, refusals


def _recipe(teacher: Path, data: dict[str, Path], task: str = "feature-extraction", **qat) -> DistillRecipe:
    return DistillRecipe.model_validate(
        {
            "task": task,
            "teacher": {"path": str(teacher)},
            "student": {"layers": 1},
            "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 32},
            "losses": [
                {"name": n} for n in (EMBEDDING_LOSSES if task == "feature-extraction" else ["soft_kl"])
            ],
            "training": {
                "max_steps": 6,
                "batch_size": 16,
                "lr": 1e-3,
                "save_steps": 100,
                "warmup_ratio": 0.0,
            },
            "qat": {"mode": "gguf_q4_0", "start_fraction": 0.5, **qat},
        }
    )


def test_distill_feature_extraction_with_gguf_q4_0_exports_the_trained_weights(
    tmp_path, tiny_bert_encoder, tiny_data
):
    pytest.importorskip("llama_cpp")

    from edgedistill.compress.distillation import distill

    report = distill(_recipe(tiny_bert_encoder, tiny_data), tmp_path / "run", progress=False)
    assert report["qat"]["scheme"] == "gguf" and report["qat"]["precision"] == "q4_0"
    assert report["qat"]["tensor_types"] == {"F32": 14, "Q4_0": 6, "Q8_0": 1}, report["qat"]
    assert report["student"]["evaluated_with"].startswith("GGUF q4_0 fake-quant")
    assert_q4_0_export_holds_trained_weights(
        tmp_path / "run" / "student", tmp_path / "export", "encoder.layer.0.output.dense.weight"
    )


def test_gguf_qat_modes_are_refused_for_classifiers_and_models_llama_cpp_cannot_run(
    tmp_path, tiny_tokenizer_dir, tiny_data
):
    from transformers import DistilBertConfig, DistilBertModel

    from edgedistill.compress.distillation import distill
    from edgedistill.compress.qat_phase import check_gguf_student

    for mode in ("gguf_q4_0", "gguf_q8_0"):  # accepted for embedders
        assert _recipe(tiny_tokenizer_dir, tiny_data, mode=mode).qat.mode == mode
    with pytest.raises(ValueError, match="qat.mode int8"):
        _recipe(tiny_tokenizer_dir, tiny_data, task="sequence-classification")

    recipe = _recipe(tiny_tokenizer_dir, tiny_data)
    distilbert = DistilBertModel(
        DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    )
    with pytest.raises(UnsupportedModelError, match="BERT sentence embedders only.*qat.mode int8"):
        check_gguf_student(recipe, distilbert)

    # a BERT teacher llama.cpp's graph cannot run (relative positions): refused before any training
    _bert(tmp_path / "relative", tiny_tokenizer_dir, position_embedding_type="relative_key")
    with pytest.raises(UnsupportedModelError, match="position_embedding_type='relative_key'"):
        distill(_recipe(tmp_path / "relative", tiny_data), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
