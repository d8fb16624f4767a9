"""GGUF export for llama.cpp: write, quantize, run and parity-check GGUF files.

Files are written with the `gguf` package itself (its tensor-name maps, writer, vocab helpers and
Python quantizers), not with llama.cpp's convert script. Two families are supported:

- BERT encoders (``model_type: bert``, task feature-extraction): llama.cpp runs them as sentence
  embedders with mean pooling over a WordPiece vocabulary.
- Llama / Qwen2 decoders (task causal-lm, a.k.a. text-generation): GPT-2 style byte-level BPE
  tokenizers, or SentencePiece when the folder ships ``tokenizer.model``.

Precisions: f32, f16, q8_0, q5_1, q5_0, q4_1 and q4_0 are produced by ``gguf.quants``; k-quants
(q4_k_m, q6_k, ...) by llama.cpp's own quantizer (``llama_cpp.llama_model_quantize``) from an f32
file, so they follow llama.cpp's per-tensor rules exactly. Tensors that cannot take the requested
type (a row length that is not a multiple of the block size) fall back to another type; every
fallback is listed in the result, never hidden.

Which GGML type each tensor gets is decided in one place, `plan_tensors`: the writer follows it,
and so does GGUF quantization-aware training (`edgedistill.compress.gguf_quant`), so a student
trained through fake quantization is exported to exactly the weights it was trained with.

Entry points: `write_gguf`, `plan_tensors`, `run_gguf`, `gguf_tokenize`, `gguf_parity`,
`GGUFRunner`, and `GGUFPlugin` (the ``gguf`` format of ``edgedistill export``).

``gguf`` and ``llama_cpp`` are imported only inside functions: ``pip install 'edgedistill[gguf]'``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill import numerics
from edgedistill.errors import MissingDependencyError, ModelLoadError
from edgedistill.export.core import (
    ArtifactResult,
    ExportError,
    FormatPlugin,
    RuntimeRun,
    StudentInfo,
    TensorSpec,
    UnsupportedModelError,
)
from edgedistill.io import atomic_path

log = logging.getLogger(__name__)

# Precisions written by gguf's Python quantizers, and k-quants delegated to llama.cpp
# (value: the LlamaFileType member name).
PYTHON_PRECISIONS = ("f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
LLAMA_CPP_PRECISIONS = {
    "q2_k": "MOSTLY_Q2_K",
    "q3_k_s": "MOSTLY_Q3_K_S",
    "q3_k_m": "MOSTLY_Q3_K_M",
    "q3_k_l": "MOSTLY_Q3_K_L",
    "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_k_m": "MOSTLY_Q4_K_M",
    "q5_k_s": "MOSTLY_Q5_K_S",
    "q5_k_m": "MOSTLY_Q5_K_M",
    "q6_k": "MOSTLY_Q6_K",
}
PRECISIONS = (*PYTHON_PRECISIONS, *LLAMA_CPP_PRECISIONS)
# The export config's generic names, mapped onto GGUF types.
PRECISION_ALIASES = {"fp32": "f32", "fp16": "f16", "int8": "q8_0", "int4": "q4_0"}

TASK_ALIASES = {"text-generation": "causal-lm"}
K_QUANT_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
QK_K = 256  # k-quant super-block length: rows must be a multiple of it


@dataclass(frozen=True)
class GGUFArch:
    """One supported HF ``model_type``: its llama.cpp architecture and the task llama.cpp runs it for."""

    model_type: str
    gguf_arch: str  # gguf.MODEL_ARCH member name
    task: str
    hf_class: str


ARCHITECTURES = {
    "bert": GGUFArch("bert", "BERT", "feature-extraction", "BertModel"),
    "llama": GGUFArch("llama", "LLAMA", "causal-lm", "LlamaForCausalLM"),
    "qwen2": GGUFArch("qwen2", "QWEN2", "causal-lm", "Qwen2ForCausalLM"),
}

# HF pre-tokenizer regexes (tokenizer.json "Split" patterns) llama.cpp re-implements, by
# `tokenizer.ggml.pre` name. A bare ByteLevel pre-tokenizer uses the GPT-2 regex ("gpt-2").
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BPE_PRE_TOKENIZERS = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}


def supported_architectures() -> str:
    return ", ".join(f"{a.model_type} ({a.hf_class}, {a.task})" for a in ARCHITECTURES.values())


# --------------------------------------------------------------------------- lazy imports


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("gguf", "gguf", "Writing GGUF files") from None
    return gguf


def _import_llama_cpp(purpose: str):
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependencyError("llama-cpp-python", "gguf", purpose) from None
    return llama_cpp


# --------------------------------------------------------------------------- argument checks


def normalize_precision(precision: str) -> str:
    name = PRECISION_ALIASES.get(precision.lower(), precision.lower())
    if name not in PRECISIONS:
        raise UnsupportedModelError(
            f"GGUF precision {precision!r} is not supported; choose one of {', '.join(PRECISIONS)} "
            f"(aliases: {', '.join(f'{k}={v}' for k, v in PRECISION_ALIASES.items())})"
        )
    return name


def normalize_task(task: str) -> str:
    return TASK_ALIASES.get(task, task)


def read_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{model_dir} is not a model folder: it has no config.json. Pass a folder written by save_pretrained."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def resolve_arch(config: dict[str, Any], task: str) -> GGUFArch:
    model_type = config.get("model_type")
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        classes = ", ".join(config.get("architectures") or []) or "unknown class"
        raise UnsupportedModelError(
            f"GGUF export does not support model_type {model_type!r} ({classes}). Supported: "
            f"{supported_architectures()}. Export this model to ONNX or OpenVINO instead."
        )
    task = normalize_task(task)
    if task != arch.task:
        raise UnsupportedModelError(
            f"GGUF export of a {arch.model_type} model supports task {arch.task!r}, not {task!r}: "
            f"llama.cpp runs {arch.hf_class} for {arch.task} only. Use --task {arch.task} or another format."
        )
    return arch


# --------------------------------------------------------------------------- weights


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ModelLoadError(f"cannot read the shard index {index}: {exc}") from exc
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{index} lists shard(s) that are missing: {', '.join(missing)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
    if pickles:
        raise ModelLoadError(
            f"{model_dir} holds only pickle weights ({', '.join(pickles)}); GGUF export reads safetensors only. "
            f"Re-save the model with save_pretrained(..., safe_serialization=True)."
        )
    raise ModelLoadError(f"{model_dir} has a config.json but no *.safetensors weights")


def read_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors model folder as float32 numpy arrays (bf16/f16 upcast)."""
    import torch
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    for path in _weight_files(Path(model_dir)):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    tensors[key] = fh.get_tensor(key).to(torch.float32).numpy()
        except Exception as exc:  # safetensors raises its own SafetensorError, OSError or ValueError
            raise ModelLoadError(
                f"cannot read weights from {path}: {exc}. The file is truncated or corrupted; copy it "
                f"again or re-save the model with save_pretrained(..., safe_serialization=True)."
            ) from exc
    return tensors


def rope_settings(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope theta, rope scaling or None) from a config.json of either transformers line.

    transformers 4.x writes ``rope_theta`` and ``rope_scaling`` at the top level; 5.x writes one
    ``rope_parameters`` dict holding ``rope_theta`` and ``rope_type`` (plus e.g. ``factor``) and
    leaves the old keys out, so reading only ``rope_theta`` would silently fall back to 10000.
    """
    params = config.get("rope_parameters")
    if isinstance(params, dict) and params:
        if "rope_theta" not in params and "rope_type" not in params:
            raise ExportError(
                f"rope_parameters per layer type ({', '.join(map(str, params))}) are not supported by the "
                f"GGUF exporter; export to ONNX or OpenVINO instead"
            )
        theta = float(params.get("rope_theta", config.get("rope_theta") or 10000.0))
        return theta, params
    return float(config.get("rope_theta") or 10000.0), config.get("rope_scaling") or None


def _permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved-pair layout."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _converted_name(arch: GGUFArch, config: dict[str, Any], name: str) -> tuple[str, bool]:
    """(name the tensor is converted under, whether it is converted): BERT drops its ``bert.`` prefix;
    buffers, BERT's pooler/heads and a tied ``lm_head`` are skipped on purpose."""
    if arch.model_type == "bert":
        name = name.removeprefix("bert.")
        # position_ids is a buffer; pooler/cls heads are not part of the embedding model.
        skip = name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.", "classifier."))
        return name, not skip
    if name.endswith("rotary_emb.inv_freq"):
        return name, False
    if name == "lm_head.weight" and config.get("tie_word_embeddings"):
        return name, False  # llama.cpp reuses token_embd when output.weight is absent
    return name, True


def _arch_array(arch: GGUFArch, config: dict[str, Any], name: str, array: np.ndarray) -> np.ndarray:
    """Arch-specific data fixes: Llama's q/k rows move to llama.cpp's RoPE layout.

    Only rows are reordered, so the quantization blocks (along each row) are the ones of the
    HF tensor: a fake-quantized HF weight and the GGUF weight hold the same blocks.
    """
    if arch.model_type != "llama":
        return array
    n_head = int(config["num_attention_heads"])
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return _permute_for_rope(array, n_head)
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return _permute_for_rope(array, int(config.get("num_key_value_heads") or n_head))
    return array


# --------------------------------------------------------------------------- hyper-parameters


def _write_hparams(writer, gguf, arch: GGUFArch, config: dict[str, Any], n_vocab: int) -> None:
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(heads)
    if arch.model_type == "bert":
        problems = []
        if config.get("position_embedding_type", "absolute") != "absolute":
            problems.append(
                f"position_embedding_type={config['position_embedding_type']!r} (needs 'absolute')"
            )
        if config.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            problems.append(f"hidden_act={config['hidden_act']!r} (llama.cpp's BERT uses GELU)")
        if config.get("pruned_heads"):
            problems.append(
                "attention heads pruned per layer (config.pruned_heads; llama.cpp's BERT needs all "
                f"{heads} heads in every layer): export it to ONNX or OpenVINO, or distill without "
                "student.num_attention_heads"
            )
        if problems:
            raise ExportError("this BERT cannot run in llama.cpp: " + "; ".join(problems))
        writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        # Without a pooling type llama.cpp's embed() returns one vector per token.
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        return
    if config.get("hidden_act", "silu") != "silu":
        raise ExportError(f"{arch.hf_class} with hidden_act={config['hidden_act']!r}: llama.cpp uses SiLU")
    if config.get("use_sliding_window"):
        raise ExportError(f"{arch.hf_class} with use_sliding_window=true is not supported by llama.cpp")
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_vocab_size(n_vocab)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(head_dim)
    theta, scaling = rope_settings(config)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
        elif kind != "default":
            raise ExportError(
                f"rope_scaling type {kind!r} is not supported by the GGUF exporter (only linear); "
                f"export to ONNX or OpenVINO instead"
            )


# --------------------------------------------------------------------------- tokenizer metadata


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer of {model_dir}: {exc}. GGUF files embed the vocabulary, so the "
            f"folder needs its tokenizer files (tokenizer.json / tokenizer_config.json)."
        ) from exc


def _token_table(gguf, tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types by id, padded to the model's embedding rows."""
    vocab = tokenizer.get_vocab()
    if vocab and max(vocab.values()) >= n_vocab:
        raise ExportError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model has only {n_vocab} embedding rows"
        )
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _tokenizer_json(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _special_vocab(gguf, model_dir: Path, n_vocab: int, merges: bool):
    """bos/eos/unk/sep/pad/mask ids, add_bos/add_eos flags (and BPE merges) from the HF files.

    "cls" is left out of the token kinds: GGUF has no cls key, and SpecialVocab already maps a
    BERT's [CLS]/[SEP] onto bos/eos, which is what llama.cpp's WordPiece adds around a text.
    """
    kinds = ("bos", "eos", "unk", "sep", "pad", "mask")
    return gguf.SpecialVocab(model_dir, load_merges=merges, special_token_types=kinds, n_vocab=n_vocab)


def _write_wordpiece(writer, gguf, model_dir: Path, config: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    tokenizer = _load_tokenizer(model_dir)
    spec = _tokenizer_json(model_dir) or {}
    kind = (spec.get("model") or {}).get("type")
    if kind not in (None, "WordPiece"):
        raise ExportError(
            f"{model_dir}: llama.cpp runs BERT with a WordPiece vocabulary, but this tokenizer is {kind}"
        )
    tokens, types = _token_table(gguf, tokenizer, n_vocab)
    # llama.cpp's WordPiece marks word starts with a phantom space ("▁word") and continuations
    # without the "##"; special/added tokens keep their text.
    phantom = [
        tok if typ != gguf.TokenType.NORMAL else (tok[2:] if tok.startswith("##") else "\u2581" + tok)
        for tok, typ in zip(tokens, types, strict=True)
    ]
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(phantom)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))  # loading fails without it
    _special_vocab(gguf, model_dir, n_vocab, merges=False).add_to_gguf(writer, quiet=True)
    warnings = []
    if not getattr(tokenizer, "do_lower_case", True):
        warnings.append(
            "cased WordPiece: llama.cpp always lower-cases BERT input, so its tokens differ from HF on "
            "capitals; feed HF token ids to llama.cpp"
        )
    return {"tokenizer_model": "bert", "tokenizer_pre": "default", "warnings": warnings}


def _bpe_pre_name(spec: dict[str, Any]) -> str:
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"]:
        if parts[0].get("add_prefix_space"):
            raise ExportError(
                "the ByteLevel pre-tokenizer adds a prefix space, which llama.cpp's BPE does not do; "
                "save the tokenizer with add_prefix_space=False"
            )
        if parts[0].get("use_regex", True):
            return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        regex = (parts[0].get("pattern") or {}).get("Regex")
        if regex in BPE_PRE_TOKENIZERS:
            return BPE_PRE_TOKENIZERS[regex]
    raise ExportError(
        f"unrecognised BPE pre-tokenizer {json.dumps(pre)[:300]}: llama.cpp would split text differently "
        f"from HF. Recognised: a ByteLevel pre-tokenizer (GPT-2 regex) and the Llama-3 / Qwen2 Split regexes."
    )


def _write_bpe(writer, gguf, model_dir: Path, spec: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    model = spec.get("model") or {}
    if model.get("byte_fallback") or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(
            f"{model_dir}: a BPE tokenizer without byte-level decoding (SentencePiece-style, byte_fallback) "
            f"needs its tokenizer.model file (with the sentencepiece package) to be exported to GGUF"
        )
    pre = _bpe_pre_name(spec)
    tokenizer = _load_tokenizer(model_dir)
    tokens, types = _token_table(gguf, tokenizer, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = _special_vocab(gguf, model_dir, n_vocab, merges=True)
    if not special.merges:
        raise ExportError(
            f"{model_dir}: the BPE tokenizer has no merges; llama.cpp cannot tokenize without them"
        )
    special.add_to_gguf(writer, quiet=True)
    return {"tokenizer_model": "gpt2", "tokenizer_pre": pre, "warnings": []}


def _write_sentencepiece(writer, gguf, model_dir: Path, n_vocab: int) -> dict[str, Any]:
    try:
        import sentencepiece  # noqa: F401  (gguf.vocab needs it for tokenizer.model)
    except ImportError:
        raise MissingDependencyError(
            "sentencepiece", "gguf", f"Exporting the SentencePiece tokenizer of {model_dir} to GGUF"
        ) from None
    from gguf.vocab import SentencePieceVocab

    vocab = SentencePieceVocab(model_dir)
    tokens, scores, types = [], [], []
    for text, score, typ in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(typ)
    if len(tokens) > n_vocab:
        raise ExportError(f"tokenizer.model has {len(tokens)} pieces but the model only {n_vocab} rows")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    _special_vocab(gguf, model_dir, n_vocab, merges=False).add_to_gguf(writer, quiet=True)
    return {"tokenizer_model": "llama", "tokenizer_pre": "default", "warnings": []}


def _write_tokenizer(writer, gguf, arch: GGUFArch, model_dir: Path, config: dict, n_vocab: int) -> dict:
    if arch.model_type == "bert":
        return _write_wordpiece(writer, gguf, model_dir, config, n_vocab)
    spec = _tokenizer_json(model_dir)
    if (model_dir / "tokenizer.model").is_file() and (
        spec is None or (spec.get("model") or {}).get("byte_fallback")
    ):
        return _write_sentencepiece(writer, gguf, model_dir, n_vocab)
    if spec is None or (spec.get("model") or {}).get("type") != "BPE":
        raise ExportError(
            f"{model_dir}: GGUF export of {arch.hf_class} needs a byte-level BPE tokenizer.json or a "
            f"SentencePiece tokenizer.model; found neither"
        )
    return _write_bpe(writer, gguf, model_dir, spec, n_vocab)


# --------------------------------------------------------------------------- tensor types
#
# One rule decides how every tensor is stored, and both the writer (`_write_file`) and GGUF
# quantization-aware training (`edgedistill.compress.gguf_quant`) read it from `plan_tensors`,
# so a fake-quantized student and its exported file cannot disagree on a tensor's type.

# Architectures whose tensor rule is known (llama.cpp's names, via gguf's tensor-name maps) but
# that `write_gguf` does not export yet: QAT can target them, export refuses them clearly.
RULE_ONLY_ARCHITECTURES = {
    "gemma": GGUFArch("gemma", "GEMMA", "causal-lm", "GemmaForCausalLM"),
    "gemma2": GGUFArch("gemma2", "GEMMA2", "causal-lm", "Gemma2ForCausalLM"),
    "gemma3_text": GGUFArch("gemma3_text", "GEMMA3", "causal-lm", "Gemma3ForCausalLM"),
}


@dataclass(frozen=True)
class TensorRule:
    """How one checkpoint tensor is stored in the GGUF file."""

    source: str  # key in the checkpoint (safetensors / named_parameters)
    name: str  # key after arch renames (BERT drops "bert."), the one mapped to a GGUF name
    gguf_name: str
    kind: str  # gguf.MODEL_TENSOR member name
    shape: tuple[int, ...]
    float_only: bool  # llama.cpp keeps it F32: 1-D, norms, biases, position/token-type tables
    wanted: str  # GGML type the rule asks for (F32, the precision's type, Q8_0 for a 4-bit output)
    ggml_type: str  # GGML type written: `wanted`, or F16 when rows do not fill its blocks
    override: str | None = None  # why `wanted` is not the precision's type (other than float_only)
    fallback: str | None = None  # why `ggml_type` is not `wanted`


@dataclass(frozen=True)
class TensorPlan:
    """Every converted tensor of one checkpoint at one precision, in file order."""

    precision: str
    architecture: str  # gguf.MODEL_ARCH member name
    tensors: tuple[TensorRule, ...]
    skipped: tuple[str, ...]  # checkpoint keys left out on purpose
    output_tensor: str  # GGUF name of the output projection (token_embd when there is no output.weight)

    def by_source(self) -> dict[str, TensorRule]:
        return {rule.source: rule for rule in self.tensors}

    def fallbacks(self) -> list[dict[str, str]]:
        return [
            {"tensor": r.gguf_name, "wanted": r.wanted, "got": r.ggml_type, "reason": r.fallback}
            for r in self.tensors
            if r.fallback
        ]

    def overrides(self) -> list[dict[str, str]]:
        return [
            {"tensor": r.gguf_name, "type": r.wanted, "reason": r.override}
            for r in self.tensors
            if r.override
        ]


def _rule_arch(config: dict[str, Any]) -> GGUFArch:
    model_type = str(config.get("model_type"))
    arch = ARCHITECTURES.get(model_type) or RULE_ONLY_ARCHITECTURES.get(model_type)
    if arch is None:
        known = ", ".join([*ARCHITECTURES, *RULE_ONLY_ARCHITECTURES])
        raise UnsupportedModelError(
            f"no GGUF tensor rule for model_type {model_type!r}; known: {known}. Export this model to "
            f"ONNX or OpenVINO instead."
        )
    return arch


def _float_only(gguf, kind, gguf_name: str, shape: Sequence[int]) -> bool:
    """llama.cpp's rule: 1-D tensors, norms, biases and a few tables are stored as F32."""
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return True
    return kind in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES, gguf.MODEL_TENSOR.FFN_GATE_INP)


def _wanted_type(precision: str, is_output: bool) -> str:
    if is_output and precision not in ("f32", "f16", "q8_0"):
        # llama.cpp keeps the output projection (token_embd when there is no output.weight) at a
        # higher precision (Q6_K there); gguf has no Python Q6_K quantizer, so Q8_0 here.
        return "Q8_0"
    return precision.upper()


def plan_tensors(
    config: dict[str, Any],
    shapes: Mapping[str, Sequence[int]],
    precision: str,
    *,
    source: str = "the checkpoint",
) -> TensorPlan:
    """The GGUF type of every tensor of a checkpoint at a Python-quantizable precision.

    ``config`` is the model's config.json as a dict, ``shapes`` maps checkpoint keys to shapes
    (HF layout: the last dimension is the row that blocks of 32 are cut from). Needs ``gguf``
    (numpy only), never torch. k-quants are chosen by llama.cpp's quantizer and are not planned here.
    """
    gguf = _import_gguf()
    precision = normalize_precision(precision)
    if precision not in PYTHON_PRECISIONS:
        raise UnsupportedModelError(
            f"GGUF {precision} is quantized by llama.cpp's own k-quant code, whose per-tensor choices "
            f"are not planned here; plan one of {', '.join(PYTHON_PRECISIONS)}"
        )
    arch = _rule_arch(config)
    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], n_layers)

    mapped: list[tuple[str, str, str, Any, tuple[int, ...]]] = []
    skipped: list[str] = []
    unmapped: list[str] = []
    for key, shape in shapes.items():
        name, converted = _converted_name(arch, config, key)
        if not converted:
            skipped.append(name)
            continue
        found = name_map.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if found is None:
            unmapped.append(name)
        else:
            kind, gguf_name = found
            mapped.append((key, name, gguf_name, kind, tuple(int(n) for n in shape)))
    if unmapped:
        raise ExportError(
            f"{len(unmapped)} tensor(s) of {source} have no llama.cpp {arch.gguf_arch} name: "
            f"{', '.join(unmapped[:8])}. The checkpoint does not match a plain {arch.hf_class}."
        )
    names = {m[2] for m in mapped}
    token_embd = next((m[2] for m in mapped if m[3] == gguf.MODEL_TENSOR.TOKEN_EMBD), None)
    if token_embd is None:
        raise ExportError(f"{source} has no token embedding table")
    output_name = "output.weight" if "output.weight" in names else token_embd

    rules = []
    for key, name, gguf_name, kind, shape in mapped:
        float_only = _float_only(gguf, kind, gguf_name, shape)
        wanted = "F32" if float_only else _wanted_type(precision, gguf_name == output_name)
        override = None
        if not float_only and wanted.lower() != precision:
            override = "output projection kept at 8 bits"
        ggml_type, fallback = wanted, None
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[wanted]][0]
        if shape[-1] % block:
            ggml_type = "F16"
            fallback = f"row length {shape[-1]} is not a multiple of the {wanted} block size {block}"
        rules.append(
            TensorRule(
                key, name, gguf_name, kind.name, shape, float_only, wanted, ggml_type, override, fallback
            )
        )
    return TensorPlan(precision, arch.gguf_arch, tuple(rules), tuple(skipped), output_name)


# --------------------------------------------------------------------------- writing


def _ftype_for(gguf, precision: str):
    L = gguf.LlamaFileType
    if precision in LLAMA_CPP_PRECISIONS:
        return L[LLAMA_CPP_PRECISIONS[precision]]
    return L.ALL_F32 if precision == "f32" else L[f"MOSTLY_{precision.upper()}"]


def _write_file(
    gguf, model_dir: Path, out_file: Path, precision: str, arch: GGUFArch, config: dict[str, Any]
) -> dict[str, Any]:
    """Write ``out_file`` at a Python-quantizable precision; return fallbacks/overrides/skips."""
    tensors = read_weights(model_dir)
    plan = plan_tensors(config, {k: a.shape for k, a in tensors.items()}, precision, source=str(model_dir))
    n_vocab = next(r.shape[0] for r in plan.tensors if r.kind == "TOKEN_EMBD")

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(model_dir).name)
    writer.add_file_type(_ftype_for(gguf, precision))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_hparams(writer, gguf, arch, config, n_vocab)
    tokenizer_info = _write_tokenizer(writer, gguf, arch, Path(model_dir), config, n_vocab)

    for rule in plan.tensors:
        array = _arch_array(arch, config, rule.name, tensors[rule.source])
        qtype = gguf.GGMLQuantizationType[rule.ggml_type]
        try:
            data = gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
        except gguf.QuantError as exc:  # the plan checked the block size: this is a bug, not a fallback
            raise ExportError(f"gguf refused to store {rule.gguf_name} as {rule.ggml_type}: {exc}") from exc
        writer.add_tensor(rule.gguf_name, data, raw_dtype=qtype)

    writer.write_header_to_file(path=out_file)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "fallbacks": plan.fallbacks(),
        "overrides": plan.overrides(),
        "skipped_tensors": list(plan.skipped),
        "tokenizer": tokenizer_info,
        "expected_tensors": sorted({r.gguf_name for r in plan.tensors}),
        "quantizable_tensors": [r.gguf_name for r in plan.tensors if not r.float_only],
        "output_tensor": plan.output_tensor,
    }


@contextmanager
def _captured_llama_log(llama_cpp) -> Iterator[list[str]]:
    """Route llama.cpp's log into a list for the duration (restoring llama-cpp-python's handler)."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def _collect(level, text, user_data):  # noqa: ARG001
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _llama_cpp_quantize(gguf, src: Path, dst: Path, precision: str) -> list[str]:
    llama_cpp = _import_llama_cpp(f"GGUF {precision} (llama.cpp's k-quant quantizer)")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(_ftype_for(gguf, precision))
    params.nthread = max(1, os.cpu_count() or 1)
    with _captured_llama_log(llama_cpp) as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        tail = "".join(lines)[-1500:]
        raise ExportError(f"llama.cpp failed to quantize {src.name} to {precision} (code {rc}):\n{tail}")
    return lines


_FALLBACK_LINE = re.compile(
    r"(?P<tensor>\S+)\s+- ncols\s+(?P<cols>\d+) not divisible by (?P<block>\d+) "
    r"\(required for type\s+(?P<wanted>\S+)\) -> falling back to\s+(?P<got>\S+)"
)


def _k_quant_report(
    tensor_types: dict[str, str],
    row_lengths: dict[str, int],
    log_lines: list[str],
    quantizable: list[str],
    output_name: str,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(fallbacks, overrides) of a llama.cpp k-quant file.

    Every quantizable tensor (2-D weights that are not norms or position/token-type tables) that
    did not get a k-quant is reported: with llama.cpp's own reason when its log gives one,
    otherwise with the row length. The output projection (token_embd when there is no
    output.weight) is llama.cpp's deliberate choice (Q6_K, or Q8_0 when rows are not a multiple
    of 256) and is listed as an override.
    """
    logged = {m["tensor"]: m for m in map(_FALLBACK_LINE.search, "".join(log_lines).splitlines()) if m}
    fallbacks, overrides = [], []
    for name in quantizable:
        got = tensor_types[name]
        if got in K_QUANT_TYPES:
            continue
        row = row_lengths[name]
        if name == output_name:
            overrides.append(
                {"tensor": name, "type": got, "reason": "llama.cpp keeps the output projection at 6-8 bits"}
            )
        elif name in logged:
            m = logged[name]
            fallbacks.append(
                {
                    "tensor": name,
                    "wanted": m["wanted"].upper(),
                    "got": got,
                    "reason": f"row length {m['cols']} is not a multiple of {m['block']} (k-quant super-block)",
                }
            )
        else:
            reason = (
                f"row length {row} is not a multiple of {QK_K}" if row % QK_K else "llama.cpp tensor rule"
            )
            fallbacks.append({"tensor": name, "wanted": "k-quant", "got": got, "reason": reason})
    return fallbacks, overrides


def read_gguf_summary(gguf_file: Path) -> dict[str, Any]:
    """Tensor names/types, row lengths and the metadata that matters, read with ``gguf.GGUFReader``."""
    gguf = _import_gguf()
    try:
        reader = gguf.GGUFReader(str(gguf_file))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{gguf_file} is not a readable GGUF file: {exc}") from exc

    def value(key: str, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = value("general.architecture")
    tensors = {t.name: t for t in reader.tensors}
    pooling = value(f"{arch}.pooling_type")
    merges = reader.fields.get("tokenizer.ggml.merges")
    token_list = reader.fields.get("tokenizer.ggml.tokens")
    meta = {
        "general.architecture": arch,
        "general.file_type": value("general.file_type"),
        f"{arch}.context_length": value(f"{arch}.context_length"),
        f"{arch}.embedding_length": value(f"{arch}.embedding_length"),
        f"{arch}.block_count": value(f"{arch}.block_count"),
        "tokenizer.ggml.model": value("tokenizer.ggml.model"),
        "tokenizer.ggml.pre": value("tokenizer.ggml.pre"),
        "n_tokens": len(token_list.data) if token_list is not None else 0,
        "n_merges": len(merges.data) if merges is not None else 0,
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "padding_token_id": value("tokenizer.ggml.padding_token_id"),
        "add_bos_token": value("tokenizer.ggml.add_bos_token"),
    }
    if arch == "bert":
        meta["bert.pooling_type"] = gguf.PoolingType(pooling).name if pooling is not None else None
        meta["bert.attention.causal"] = value("bert.attention.causal")
        meta["tokenizer.ggml.token_type_count"] = value("tokenizer.ggml.token_type_count")
    return {
        "tensors": {name: t.tensor_type.name for name, t in tensors.items()},
        # GGUFReader shapes are in ggml order: ne0, the row length, first.
        "row_lengths": {name: int(t.shape[0]) for name, t in tensors.items()},
        "tensor_types": dict(sorted(Counter(t.tensor_type.name for t in tensors.values()).items())),
        "metadata": meta,
    }


def _numeric_warnings(arch: GGUFArch, config: dict[str, Any]) -> list[str]:
    if arch.model_type == "bert" and config.get("hidden_act", "gelu") == "gelu":
        return [
            "llama.cpp's BERT computes GELU with the tanh approximation (HF 'gelu' is exact erf): even f32 "
            "embeddings differ from torch by ~1e-3 abs (all-MiniLM-L6-v2: 1.4e-3, cosine 0.999998)"
        ]
    return []


def write_gguf(model_dir: Path, out_file: Path, precision: str, *, task: str) -> dict[str, Any]:
    """Write ``model_dir`` (an HF safetensors folder) as one GGUF file at ``precision``.

    The file appears at ``out_file`` only when it was fully written and read back with
    ``gguf.GGUFReader``. Returns tensor-type counts, per-tensor fallbacks/overrides, the tensors
    skipped on purpose and a metadata summary.
    """
    model_dir, out_file = Path(model_dir), Path(out_file)
    precision = normalize_precision(precision)
    config = read_config(model_dir)
    arch = resolve_arch(config, task)
    gguf = _import_gguf()

    log_lines: list[str] = []
    with atomic_path(out_file) as tmp:
        if precision in PYTHON_PRECISIONS:
            info = _write_file(gguf, model_dir, tmp, precision, arch, config)
        else:
            # k-quants: an f32 file beside the output, then llama.cpp's quantizer on it.
            with tempfile.TemporaryDirectory(prefix=".gguf-f32-", dir=out_file.parent) as scratch:
                f32_file = Path(scratch) / "model-f32.gguf"
                info = _write_file(gguf, model_dir, f32_file, "f32", arch, config)
                log_lines = _llama_cpp_quantize(gguf, f32_file, tmp, precision)
        summary = read_gguf_summary(tmp)
        missing = sorted(set(info["expected_tensors"]) - set(summary["tensors"]))
        if missing:
            raise ExportError(f"the GGUF written for {model_dir} lacks tensors: {', '.join(missing)}")
        if precision in LLAMA_CPP_PRECISIONS:
            info["fallbacks"], info["overrides"] = _k_quant_report(
                summary["tensors"],
                summary["row_lengths"],
                log_lines,
                info["quantizable_tensors"],
                info["output_tensor"],
            )
        size_bytes = tmp.stat().st_size

    result = {
        "file": str(out_file),
        "format": "gguf",
        "architecture": arch.model_type,
        "gguf_architecture": summary["metadata"]["general.architecture"],
        "task": arch.task,
        "precision": precision,
        "quantizer": "llama.cpp llama_model_quantize" if precision in LLAMA_CPP_PRECISIONS else "gguf.quants",
        "size_bytes": size_bytes,
        "tensor_types": summary["tensor_types"],
        "tensors": summary["tensors"],
        "fallbacks": info["fallbacks"],
        "overrides": info["overrides"],
        "skipped_tensors": info["skipped_tensors"],
        "metadata": summary["metadata"],
        "warnings": info["tokenizer"]["warnings"] + _numeric_warnings(arch, config),
    }
    summary_line = next((ln.strip() for ln in log_lines if "required fallback quantization" in ln), None)
    if summary_line:
        result["llama_cpp_fallback_summary"] = summary_line.split(": ", 1)[-1]
    if result["fallbacks"]:
        log.warning(
            "GGUF %s: %d tensor(s) could not take the requested type and fell back: %s",
            precision,
            len(result["fallbacks"]),
            ", ".join(f"{fb['tensor']}->{fb['got']}" for fb in result["fallbacks"]),
        )
    return result


# --------------------------------------------------------------------------- running


class GGUFRunner:
    """One GGUF file loaded in llama-cpp-python: tokenize, embed (mean-pooled) or next-token logits.

    Token ids can be fed directly so parity checks use exactly the HF tokenization.
    """

    def __init__(
        self,
        gguf_file: Path,
        *,
        task: str,
        n_threads: int = 1,
        kv_cache: str = "f16",
        vocab_only: bool = False,
    ):
        llama_cpp = _import_llama_cpp("Running GGUF files")
        self._llama_cpp = llama_cpp
        self.task = normalize_task(task)
        if self.task not in ("feature-extraction", "causal-lm"):
            raise ExportError(f"GGUF runs feature-extraction or causal-lm, not {task!r}")
        summary = read_gguf_summary(Path(gguf_file))["metadata"]
        self.n_ctx = int(summary[f"{summary['general.architecture']}.context_length"])
        embedding = self.task == "feature-extraction"
        kwargs: dict[str, Any] = dict(
            model_path=str(gguf_file),
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,
            # BERT is non-causal: a whole sequence must fit one micro-batch.
            n_ubatch=self.n_ctx,
            logits_all=not embedding,
            vocab_only=vocab_only,
            verbose=False,
        )
        if embedding and not vocab_only:
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            kwargs["embedding"] = True
        else:
            kwargs["embedding"] = False
        # One thread by default, the same for single tokens and batches: llama.cpp's workers
        # spin-wait at every barrier, and with another process holding a core a tiny model ran
        # ~200x slower on 2 threads (and with llama-cpp-python's default of 1 vs 2 threads).
        kwargs["n_threads"] = kwargs["n_threads_batch"] = n_threads
        if kv_cache not in ("f16", "f32"):
            raise ExportError(f"kv_cache must be 'f16' (llama.cpp's default) or 'f32', not {kv_cache!r}")
        kv_type = llama_cpp.GGML_TYPE_F32 if kv_cache == "f32" else llama_cpp.GGML_TYPE_F16
        kwargs["type_k"] = kwargs["type_v"] = kv_type
        # llama.cpp logs warnings even with verbose=False (e.g. that it pads n_ctx); keep them
        # out of the console, and in the error when loading fails.
        with _captured_llama_log(llama_cpp) as lines:
            try:
                with numerics.llama_cpp_extra_buffers(numerics.llama_cpp_extra_buffers_default()):
                    self.llm = llama_cpp.Llama(**kwargs)
            except (ValueError, RuntimeError) as exc:
                tail = "".join(lines)[-1500:]
                raise ExportError(f"llama.cpp could not load {gguf_file}: {exc}\n{tail}") from exc

    def system_info(self) -> str | None:
        """llama.cpp's own list of the CPU features its kernels use here (AVX2, AVX512, AMX_INT8...)."""
        try:
            return self._llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        except (AttributeError, OSError):
            return None

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False))

    def _check_length(self, ids: Sequence[int]) -> None:
        if not ids:
            raise ExportError("cannot run an empty token sequence")
        if len(ids) > self.n_ctx:
            raise ExportError(f"{len(ids)} tokens exceed the model's context of {self.n_ctx}")

    def embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Mean-pooled, unnormalised embedding of one token sequence (same path as Llama.embed)."""
        self._check_length(ids)
        llm = self.llm
        # Llama.embed() only accepts text; these are the same internal calls with our ids.
        llm._ctx.kv_cache_clear()
        llm._batch.reset()
        llm._batch.add_sequence(list(ids), 0, True)
        llm._ctx.decode(llm._batch)
        llm._batch.reset()
        ptr = self._llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
        return np.array(ptr[: llm.n_embd()], dtype=np.float32)

    def logits_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of one token sequence: shape (len(ids), n_vocab)."""
        self._check_length(ids)
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def run(self, item: str | Sequence[int]) -> np.ndarray:
        ids = self.tokenize(item) if isinstance(item, str) else list(item)
        if self.task == "feature-extraction":
            return self.embed_ids(ids)
        return self.logits_ids(ids)[-1]

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> GGUFRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gguf_task(gguf_file: Path) -> str:
    """The task a GGUF file serves, from its architecture: BERT embeds, decoders predict tokens."""
    arch = read_gguf_summary(Path(gguf_file))["metadata"]["general.architecture"]
    return "feature-extraction" if arch == "bert" else "causal-lm"


def run_gguf(gguf_file: Path, texts_or_token_ids: Sequence[str | Sequence[int]], *, task: str) -> np.ndarray:
    """Embeddings (n, hidden) for feature-extraction, or last-position logits (n, vocab) for causal-lm.

    Each item is a text (tokenized by llama.cpp, special tokens added) or a list of token ids.
    """
    with GGUFRunner(gguf_file, task=task) as runner:
        return np.stack([runner.run(item) for item in texts_or_token_ids])


def gguf_tokenize(gguf_file: Path, text: str, *, add_special: bool = True) -> list[int]:
    """llama.cpp's tokenization of ``text`` with the vocabulary stored in ``gguf_file``."""
    with GGUFRunner(gguf_file, task=gguf_task(gguf_file), vocab_only=True) as runner:
        return runner.tokenize(text, add_special=add_special)


# --------------------------------------------------------------------------- parity


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def gguf_parity(
    model_dir: Path, gguf_file: Path, texts: Sequence[str], *, task: str, kv_cache: str = "f32"
) -> dict[str, Any]:
    """Compare a GGUF file run by llama.cpp with the torch model on ``texts``.

    The GGUF model is fed the HF token ids (so numeric parity is not mixed up with tokenizer
    differences); tokenizer agreement is measured and reported separately.
    Embeddings: cosine and max abs diff of mean-pooled vectors. LM: max abs diff of logits and
    top-1 agreement over every position. The KV cache is f32 by default so the figures measure
    the exported weights; llama.cpp's runtime default (``kv_cache="f16"``) adds its own rounding.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    task = normalize_task(task)
    resolve_arch(read_config(Path(model_dir)), task)
    tokenizer = _load_tokenizer(Path(model_dir))
    cls = AutoModel if task == "feature-extraction" else AutoModelForCausalLM
    model = cls.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    mismatches, cosines, max_abs, agree, positions = [], [], 0.0, 0, 0
    with GGUFRunner(gguf_file, task=task, kv_cache=kv_cache) as runner:
        for text in texts:
            hf_ids = tokenizer(text)["input_ids"][: runner.n_ctx]
            gguf_ids = runner.tokenize(text)
            if gguf_ids != hf_ids:
                mismatches.append({"text": text, "hf": hf_ids, "gguf": gguf_ids})
            with torch.no_grad():
                out = model(input_ids=torch.tensor([hf_ids]))
            if task == "feature-extraction":
                ref = out.last_hidden_state[0].mean(dim=0).numpy()
                got = runner.embed_ids(hf_ids)
                cosines.append(_cosine(ref, got))
                max_abs = max(max_abs, float(np.abs(ref - got).max()))
            else:
                ref = out.logits[0].numpy()
                got = runner.logits_ids(hf_ids)
                max_abs = max(max_abs, float(np.abs(ref - got).max()))
                agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
                positions += len(hf_ids)
    result: dict[str, Any] = {
        "n_texts": len(texts),
        "kv_cache": kv_cache,
        "tokenization_equal": len(texts) - len(mismatches),
        "tokenization_mismatches": mismatches,
        "max_abs_diff": max_abs,
    }
    if task == "feature-extraction":
        result["min_cosine"] = min(cosines)
        result["mean_cosine"] = float(np.mean(cosines))
    else:
        result["top1_agreement"] = agree / positions
        result["positions"] = positions
    return result


# --------------------------------------------------------------------------- plugin


def _plugin_precisions() -> tuple[str, ...]:
    from edgedistill.export.config import PRECISIONS as CONFIG_PRECISIONS

    return tuple(p for p in CONFIG_PRECISIONS if PRECISION_ALIASES.get(p, p) in PRECISIONS)


class GGUFPlugin(FormatPlugin):
    """``edgedistill export --format gguf``: one ``model.gguf`` for llama.cpp, parity-checked in it.

    Parity runs llama.cpp with an f32 KV cache, so the figures measure the exported weights;
    llama.cpp's default f16 cache adds up to ~1e-2 on tiny-model logits (noted in the manifest).
    """

    name = "gguf"
    precisions = _plugin_precisions()
    tasks = ("feature-extraction", "text-generation")
    requires = (("gguf", "gguf"), ("llama_cpp", "gguf"))
    precision_aliases = PRECISION_ALIASES
    tool_packages = ("gguf", "llama-cpp-python")
    batched_parity = False  # llama.cpp is fed one unpadded sequence at a time
    copy_app_files = True
    deployed_note = (
        "llama.cpp's defaults differ from these settings only in the KV cache (f16 instead of f32), which "
        "rounds decoder logits (up to ~1e-2 on tiny models); its kernels, not its precision, depend on the ISA"
    )
    model_file = "model.gguf"

    def unsupported_reason(self, student: StudentInfo, precision: str, cfg) -> str | None:
        reason = super().unsupported_reason(student, precision, cfg)
        if reason is not None:
            return reason
        try:
            resolve_arch(student.config, student.task)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    def export(self, student: StudentInfo, precision: str, tmp_dir: Path, cfg) -> ArtifactResult:
        result = write_gguf(student.path, Path(tmp_dir) / self.model_file, precision, task=student.task)
        tokenizer_check = self._tokenizer_agreement(student, Path(tmp_dir) / self.model_file, cfg)
        hidden = int(student.config["hidden_size"])
        if student.task == "feature-extraction":
            outputs = [TensorSpec("sentence_embedding", "float32", [1, hidden])]
        else:
            outputs = [TensorSpec("logits", "float32", [1, "sequence", int(result["metadata"]["n_tokens"])])]
        notes = [
            f"GGUF {result['precision']} written by {result['quantizer']}; llama.cpp tokenizes text itself "
            f"({result['metadata']['tokenizer.ggml.model']} vocabulary embedded in the file).",
            "parity ran llama.cpp with an f32 KV cache; its default f16 cache adds a little rounding.",
        ]
        notes += [
            f"fallback: {f['tensor']} stored as {f['got']} instead of {f['wanted']} ({f['reason']})"
            for f in result["fallbacks"]
        ]
        notes += result["warnings"]
        if tokenizer_check["mismatches"]:
            notes.append(
                f"llama.cpp tokenized {len(tokenizer_check['mismatches'])} of {tokenizer_check['sentences']} "
                f"parity sentences differently from the HF tokenizer: feed HF token ids to llama.cpp"
            )
        trained_for = student.gguf_qat_precision
        if trained_for is not None and trained_for.lower() == result["precision"]:
            notes.append(
                f"GGUF-aware QAT at {trained_for}: the quantized weights equal the trained fake-quant weights"
            )
        elif trained_for is not None:
            notes.append(
                f"the student was trained for GGUF {trained_for}, this artifact is {result['precision']}: "
                "its weights are a post-training quantization"
            )
        elif student.has_qat:
            notes.append(
                "GGUF re-quantizes the float student weights with llama.cpp's block scheme; the QAT "
                "ranges are not carried over."
            )
        quantization = {
            key: result[key]
            for key in (
                "precision",
                "quantizer",
                "tensor_types",
                "fallbacks",
                "overrides",
                "skipped_tensors",
                "metadata",
            )
        }
        quantization["tokenizer_parity"] = tokenizer_check
        return ArtifactResult(
            files=[self.model_file],
            inputs=[TensorSpec("input_ids", "int64", [1, "sequence"])],
            outputs=outputs,
            reference="float",
            quantization=quantization,
            notes=notes,
        )

    @staticmethod
    def _tokenizer_agreement(student: StudentInfo, gguf_file: Path, cfg) -> dict[str, Any]:
        """llama.cpp's tokenization of the parity sentences vs the HF tokenizer's."""
        from edgedistill.export.parity import parity_sentences

        sentences = parity_sentences(cfg)
        tokenizer = student.load_tokenizer()
        mismatches = []
        with GGUFRunner(gguf_file, task=student.task, vocab_only=True) as runner:
            for text in sentences:
                hf_ids = tokenizer(text)["input_ids"]
                gguf_ids = runner.tokenize(text)
                if hf_ids != gguf_ids:
                    mismatches.append({"text": text, "hf": hf_ids, "gguf": gguf_ids})
        for m in mismatches[:3]:
            log.warning("llama.cpp tokenizes %r as %s, HF as %s", m["text"], m["gguf"], m["hf"])
        return {
            "sentences": len(sentences),
            "equal": len(sentences) - len(mismatches),
            "mismatches": mismatches[:5],
        }

    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        # declared numerics: the file's tensor types with an f32 KV cache; deployed: llama.cpp's
        # default f16 cache, which adds its own rounding to decoders
        kv_cache = "f16" if deployed else "f32"
        outputs = []
        gguf_file = Path(artifact_dir) / self.model_file
        task = gguf_task(gguf_file)
        with GGUFRunner(gguf_file, task=task, kv_cache=kv_cache) as runner:
            for feed in inputs:
                ids = np.asarray(feed["input_ids"])
                mask = np.asarray(feed.get("attention_mask", np.ones_like(ids)))
                rows = [ids[b][mask[b].astype(bool)].tolist() for b in range(ids.shape[0])]
                if task == "feature-extraction":
                    outputs.append({"sentence_embedding": np.stack([runner.embed_ids(r) for r in rows])})
                else:
                    # padded positions stay zero; parity compares real tokens only
                    logits = np.zeros((*ids.shape, runner.llm.n_vocab()), dtype=np.float32)
                    for b, r in enumerate(rows):
                        logits[b, mask[b].astype(bool)] = runner.logits_ids(r)
                    outputs.append({"logits": logits})
            system = runner.system_info()
        types = read_gguf_summary(gguf_file).get("tensor_types") or {}
        return RuntimeRun(
            outputs=outputs,
            settings={"runtime": "llama.cpp", "kv_cache": kv_cache, "n_threads": 1},
            read_back={"llama_cpp_system_info": system},
            ran="+".join(sorted(t.lower() for t in types)) if isinstance(types, dict) and types else None,
        )

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        return {
            "runtime": "llama.cpp",
            "settings": "defaults; an f32 KV cache (type_k/type_v) reproduces the parity figures of decoders exactly",
            "python": f"llama_cpp.Llama({self.model_file!r}, embedding=..., n_ubatch=<n_ctx for BERT>)",
        }
