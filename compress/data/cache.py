"""The token cache: a key from the data's content, the tokenizer and every option; JSON + .npy only, written atomically (`load_split`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.compress.config import DataConfig
from edgedistill.compress.data.tokenize import (
    PairMode,
    TokenizedDataset,
    _Ragged,
    _tokenize,
    _tokenize_causal,
)
from edgedistill.data.examples import _Columns, _columns_for, read_examples
from edgedistill.data.report import DataReport, Example
from edgedistill.data.sources import _resolve_source, _Source
from edgedistill.io import atomic_dir, sha256_file

logger = logging.getLogger(__name__)


# Bump when the cache layout or tokenization changes, so old entries are never read back.
CACHE_FORMAT_VERSION = 1


def _cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("EDGEDISTILL_CACHE") or "~/.cache/edgedistill"
    return Path(root).expanduser() / "tokenized"


def _source_fingerprint(src: _Source) -> dict[str, Any]:
    if src.kind == "hub":
        return {"hub": src.name}
    if src.path.is_file():
        return {"sha256": sha256_file(src.path)}
    digest = hashlib.sha256()
    for file in sorted(p for p in src.path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(src.path).as_posix()}\0{sha256_file(file)}\n".encode())
    return {"folder_sha256": digest.hexdigest(), "split": src.split}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides the token ids: the class, and the full tokenizer JSON (fast) or vocabulary (slow)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # transformers rewrites these on every call; they are passed explicitly here anyway.
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = {
            "vocab": sorted(tokenizer.get_vocab().items()),
            "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        }
    material = {
        "class": type(tokenizer).__name__,
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
        "spec": spec,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _cache_key(
    src: _Source,
    tokenizer: Any,
    cfg: DataConfig,
    columns: _Columns,
    *,
    pair_mode: str,
    max_samples: int | None,
    num_labels: int | None,
    causal_lm: bool = False,
) -> str:
    material: dict[str, Any] = {
        "format": CACHE_FORMAT_VERSION,
        "source": _source_fingerprint(src),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": cfg.max_length,
        "columns": [columns.text, columns.text_pair, columns.label],
        "pair_mode": pair_mode,
        "max_samples": max_samples,
        "strict": cfg.strict,
        "num_labels": num_labels,
    }
    if causal_lm:  # only here, so existing cache entries of the other tasks keep their keys
        eos = tokenizer.eos_token_id if cfg.append_eos else None
        material["causal_lm"] = {
            "eos": eos,
            "columns": [columns.text_key, columns.text_pair_key],
            "finish_reason_column": columns.finish_reason,
        }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _save_cache(path: Path, dataset: TokenizedDataset) -> None:
    with atomic_dir(path) as tmp:
        arrays = {}
        for name, ragged in dataset._features.items():
            arrays[f"{name}.values"] = ragged.values
            arrays[f"{name}.offsets"] = ragged.offsets
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        examples = {
            "text": [ex.text for ex in dataset.examples],
            "text_pair": [ex.text_pair for ex in dataset.examples],
            "label": [ex.label for ex in dataset.examples],
            "stopped": [ex.stopped for ex in dataset.examples],
        }
        (tmp / "examples.json").write_text(json.dumps(examples, ensure_ascii=False), encoding="utf-8")
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "features": list(dataset._features),
            "report": dataset.report.to_dict(),
        }
        # meta.json last: its presence marks a complete entry.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _load_cache(path: Path, src: _Source) -> TokenizedDataset | None:
    if not (path / "meta.json").is_file():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT_VERSION:
            return None
        raw = json.loads((path / "examples.json").read_text(encoding="utf-8"))
        stopped = raw.get("stopped") or [None] * len(raw["text"])
        columns = zip(raw["text"], raw["text_pair"], raw["label"], stopped, strict=True)
        examples = [Example(*row) for row in columns]
        features = {
            name: _Ragged(
                np.load(path / f"{name}.values.npy", allow_pickle=False),
                np.load(path / f"{name}.offsets.npy", allow_pickle=False),
            )
            for name in meta["features"]
        }
        report = DataReport.from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable tokenization cache %s (%s); tokenizing again", path, exc)
        return None
    # The key is content-based: the same file under another name hits, so report the current name.
    report.source = src.name
    for bad in report.examples:
        bad.file = src.name
    return TokenizedDataset(examples, report, features, from_cache=True, cache_path=path)


def load_split(
    source: str,
    cfg: DataConfig,
    tokenizer: Any,
    *,
    needs_labels: bool,
    num_labels: int | None,
    max_samples: int | None = None,
    pair_mode: PairMode = "joint",
    causal_lm: bool = False,
) -> TokenizedDataset:
    """Read and tokenize one split, reusing the tokenization cache when nothing that matters changed.

    pair_mode "joint" encodes text and text pair as one sequence (cross-encoder); "separate"
    encodes them independently into input_ids and pair_input_ids (bi-encoder). It is ignored
    when data.text_pair_column is not set.

    ``causal_lm`` makes next-token training rows instead (see the module docstring): items carry
    input_ids, attention_mask and per-token labels; labels of the task are not read.
    """
    if pair_mode not in ("joint", "separate"):
        raise ValueError(f"pair_mode must be 'joint' or 'separate', not {pair_mode!r}")
    src = _resolve_source(source)
    columns = _columns_for(cfg, needs_labels, causal_lm)
    effective_mode = "causal-lm" if causal_lm else pair_mode if columns.text_pair else "none"
    key = _cache_key(
        src,
        tokenizer,
        cfg,
        columns,
        pair_mode=effective_mode,
        max_samples=max_samples,
        num_labels=num_labels,
        causal_lm=causal_lm,
    )
    path = _cache_root(cfg) / key
    cached = _load_cache(path, src)
    if cached is not None:
        logger.info("%s: tokenized data read from cache %s", src.name, path)
        return cached

    examples, report = read_examples(
        source,
        cfg,
        needs_labels=needs_labels,
        num_labels=num_labels,
        max_samples=max_samples,
        causal_lm=causal_lm,
    )
    if causal_lm:
        features = _tokenize_causal(examples, tokenizer, cfg.max_length, cfg.append_eos)
    else:
        features = _tokenize(examples, tokenizer, cfg.max_length, effective_mode)
    dataset = TokenizedDataset(examples, report, features, cache_path=path)
    try:
        _save_cache(path, dataset)
    except OSError as exc:
        # A read-only or full cache disk slows the next run down; it must not stop this one.
        logger.warning(
            "could not write tokenization cache %s (%s); set data.cache_dir to a writable folder", path, exc
        )
        dataset.cache_path = None
    return dataset


def load_train_eval(
    cfg: DataConfig,
    tokenizer: Any,
    *,
    needs_labels: bool,
    num_labels: int | None,
    pair_mode: PairMode = "joint",
    causal_lm: bool = False,
) -> tuple[TokenizedDataset, TokenizedDataset]:
    """The recipe's train and eval splits (``cfg.train``/``cfg.eval``), each capped by its ``max_*_samples``."""
    common = dict(needs_labels=needs_labels, num_labels=num_labels, pair_mode=pair_mode, causal_lm=causal_lm)
    train = load_split(cfg.train, cfg, tokenizer, max_samples=cfg.max_train_samples, **common)
    evaluation = load_split(cfg.eval, cfg, tokenizer, max_samples=cfg.max_eval_samples, **common)
    return train, evaluation
