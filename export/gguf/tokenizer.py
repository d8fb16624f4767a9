"""Tokenizer metadata llama.cpp needs: WordPiece (BERT), byte-level BPE (Llama 3 / Qwen2) and SentencePiece vocabularies."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgedistill.errors import MissingDependencyError, ModelLoadError
from edgedistill.export.core import (
    ExportError,
)
from edgedistill.export.gguf.bpe_pre import choose_bpe_pre
from edgedistill.quant.gguf_arch import GGUFArch

log = logging.getLogger(__name__)

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
    tokenizer = _load_tokenizer(model_dir)
    pre, pre_source = choose_bpe_pre(model_dir, tokenizer, n_vocab, lambda: _bpe_pre_name(spec))
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
    return {"tokenizer_model": "gpt2", "tokenizer_pre": pre, "tokenizer_pre_from": pre_source, "warnings": []}


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
