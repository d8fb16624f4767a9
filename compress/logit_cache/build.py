"""Building a logit cache: the teacher's top-k log-probabilities per token, in shards written atomically, resumable."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.compress.logit_cache.meta import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_DTYPE,
    INDEX_FILE,
    LOGPROB_DTYPES,
    META_FILE,
    SHARDS_DIR,
    LogitCacheError,
    LogprobDtype,
    _as_id_lists,
    _data_files,
    _mismatch_error,
    _mismatches,
    _read_meta,
    _teacher_fingerprint,
    sequences_fingerprint,
)
from edgedistill.compress.logit_cache.read import LogitCache
from edgedistill.io import atomic_dir, atomic_path, atomic_write_json

logger = logging.getLogger(__name__)


def build_logit_cache(
    teacher: Any,
    sequences: Sequence[Sequence[int]] | Any,
    root: str | Path,
    *,
    k: int,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    logprob_dtype: LogprobDtype = "float16",
    shard_size: int = 256,
    batch_size: int = 8,
    teacher_fingerprint: str | None = None,
    dataset_fingerprint: str | None = None,
    device: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> LogitCache:
    """Run ``teacher`` (a causal LM) over ``sequences`` once and cache the top-k log-probs per position.

    ``sequences``: token id lists, or a dataset whose items have ``input_ids`` (e.g. a
    TokenizedDataset); the cache's sequence ids are their positions. ``vocab_size``: the
    tokenizer's vocabulary (``len(tokenizer)``); default the model's ``config.vocab_size``.
    ``teacher_fingerprint`` / ``dataset_fingerprint`` default to `teacher_fingerprint(teacher)` and
    `sequences_fingerprint(sequences)`. A cache already in ``root`` is reused when complete, continued when interrupted, and refused
    (LogitCacheMismatchError) when built for other settings, unless ``overwrite``.
    ``on_shard(shard_number)`` runs after each shard lands (progress reporting; tests interrupt there).
    """
    root = Path(root)
    if logprob_dtype not in LOGPROB_DTYPES:
        raise LogitCacheError(f"logprob_dtype must be one of {sorted(LOGPROB_DTYPES)}, not {logprob_dtype!r}")
    if temperature <= 0:
        raise LogitCacheError(f"temperature must be > 0, not {temperature}")
    if shard_size <= 0 or batch_size <= 0:
        raise LogitCacheError("shard_size and batch_size must be positive")
    rows = _as_id_lists(sequences)
    if not rows:
        raise LogitCacheError("no sequences to cache: pass at least one token id sequence")
    empty = [i for i, row in enumerate(rows) if not row]
    if empty:
        raise LogitCacheError(f"sequences {empty[:10]} are empty; drop them before caching")
    model_vocab = int(getattr(teacher.config, "vocab_size", 0) or 0)
    vocab_size = int(vocab_size or model_vocab)
    if model_vocab and vocab_size > model_vocab:
        raise LogitCacheError(
            f"vocab_size={vocab_size} is larger than the teacher's {model_vocab} output rows; "
            "pass len(tokenizer) of the teacher's own tokenizer"
        )
    if not 0 < k <= vocab_size:
        raise LogitCacheError(f"k={k} must be between 1 and vocab_size={vocab_size}")
    too_big = [i for i, row in enumerate(rows) if max(row) >= (model_vocab or vocab_size) or min(row) < 0]
    if too_big:
        raise LogitCacheError(
            f"sequences {too_big[:10]} hold token ids outside the teacher's vocabulary; "
            "tokenize with the teacher's tokenizer"
        )

    identity = {
        "k": int(k),
        "temperature": float(temperature),
        "vocab_size": vocab_size,
        "teacher_fingerprint": teacher_fingerprint or _teacher_fingerprint(teacher),
        "dataset_fingerprint": dataset_fingerprint or sequences_fingerprint(rows),
        "logprob_dtype": logprob_dtype,
        "shard_size": int(shard_size),
    }
    meta = _read_meta(root)
    if meta is not None:
        problems = _mismatches(meta, identity)
        if problems and not overwrite:
            raise _mismatch_error(
                root, problems, "Use another cache folder, or rebuild it here with overwrite=True."
            )
        if problems:
            shutil.rmtree(root)
            meta = None
        elif meta.get("complete"):
            return LogitCache(root)

    num_shards = (len(rows) + shard_size - 1) // shard_size
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **identity,
        "index_dtype": np.dtype(INDEX_DTYPE).name,
        "num_sequences": len(rows),
        "num_positions": int(sum(len(r) for r in rows)),
        "num_shards": num_shards,
        "position_semantics": "row t = teacher log-probs (logits at t / T) of the token after input_ids[t]",
        "complete": False,
    }
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / META_FILE, meta)
    shards_dir = root / SHARDS_DIR
    shards_dir.mkdir(exist_ok=True)
    for stale in shards_dir.glob(".*"):  # temp folders of a killed build
        shutil.rmtree(stale, ignore_errors=True)

    if device is None:
        device = next(teacher.parameters()).device
    teacher.eval()
    todo = [s for s in range(num_shards) if not _shard_complete(shards_dir / f"{s:05d}")]
    if len(todo) < num_shards:
        logger.info("logit cache %s: %d of %d shards already built", root, num_shards - len(todo), num_shards)

    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("caching teacher top-k log-probs", total=len(rows))
        bar.advance(task, len(rows) - sum(len(rows[s * shard_size : (s + 1) * shard_size]) for s in todo))
        for shard in todo:
            first = shard * shard_size
            shard_rows = rows[first : first + shard_size]
            with atomic_dir(shards_dir / f"{shard:05d}") as tmp:
                error = _write_shard(
                    tmp, teacher, shard_rows, identity, device, batch_size, lambda n: bar.advance(task, n)
                )
                atomic_write_json(
                    tmp / "shard.json",
                    {
                        "shard": shard,
                        "first_sequence": first,
                        "num_sequences": len(shard_rows),
                        "num_positions": int(sum(len(r) for r in shard_rows)),
                        "max_abs_logprob_error": error,
                    },
                )
            if on_shard is not None:
                on_shard(shard)

    index = np.zeros((len(rows), 3), dtype=np.int64)
    max_error = 0.0
    for shard in range(num_shards):
        folder = shards_dir / f"{shard:05d}"
        offsets = np.load(folder / "offsets.npy")
        first = shard * shard_size
        n = len(offsets) - 1
        index[first : first + n, 0] = shard
        index[first : first + n, 1] = offsets[:-1]
        index[first : first + n, 2] = np.diff(offsets)
        info = json.loads((folder / "shard.json").read_text(encoding="utf-8"))
        max_error = max(max_error, float(info.get("max_abs_logprob_error") or 0.0))
    with atomic_path(root / INDEX_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, index, allow_pickle=False)
    size = sum(p.stat().st_size for p in _data_files(root))
    meta.update(
        complete=True,
        max_abs_logprob_error=max_error,
        size_bytes=size,
        bytes_per_position=round(size / meta["num_positions"], 3),
    )
    atomic_write_json(root / META_FILE, meta)
    return LogitCache(root)


def _shard_complete(folder: Path) -> bool:
    return all(
        (folder / name).is_file() for name in ("indices.npy", "logprobs.npy", "offsets.npy", "shard.json")
    )


def _write_shard(
    folder: Path,
    teacher: Any,
    rows: list[list[int]],
    identity: Mapping[str, Any],
    device: Any,
    batch_size: int,
    advance: Callable[[int], None],
) -> float:
    """Fill one shard's arrays (written straight into memory-mapped .npy files); returns the largest
    absolute rounding error of the stored log-probs."""
    import torch

    k, vocab_size, temperature = identity["k"], identity["vocab_size"], identity["temperature"]
    store_dtype = LOGPROB_DTYPES[identity["logprob_dtype"]]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    indices_mm = np.lib.format.open_memmap(folder / "indices.npy", "w+", INDEX_DTYPE, (total, k))
    logprobs_mm = np.lib.format.open_memmap(folder / "logprobs.npy", "w+", store_dtype, (total, k))
    max_error = 0.0
    # Longest first: similar lengths share a batch, so little padding is computed.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(rows[i]) for i in batch)
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : len(rows[i])] = torch.tensor(rows[i])
                attention_mask[row, : len(rows[i])] = 1
            # Right padding: a causal model's logits at real positions never see the padding.
            logits = teacher(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False
            ).logits
            for row, i in enumerate(batch):
                length = len(rows[i])
                scaled = logits[row, :length, :vocab_size].float() / temperature
                top = torch.log_softmax(scaled, dim=-1).topk(k, dim=-1)
                values = top.values.cpu().numpy()
                stored = values.astype(store_dtype)
                finite = np.isfinite(values)
                if finite.any():
                    err = np.abs(stored.astype(np.float32)[finite] - values[finite])
                    max_error = max(max_error, float(err.max()))
                lo, hi = offsets[i], offsets[i + 1]
                indices_mm[lo:hi] = top.indices.cpu().numpy().astype(INDEX_DTYPE)
                logprobs_mm[lo:hi] = stored
            advance(len(batch))
    indices_mm.flush()
    logprobs_mm.flush()
    del indices_mm, logprobs_mm
    np.save(folder / "offsets.npy", offsets, allow_pickle=False)
    return max_error
