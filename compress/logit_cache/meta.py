"""What a logit cache is of: its format, the teacher and sequence fingerprints, its size, and the identity checks that refuse a mismatched cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgedistill.errors import EdgeDistillError

logger = logging.getLogger(__name__)


FORMAT = "edgedistill.logit_cache"


FORMAT_VERSION = 1


META_FILE = "meta.json"


INDEX_FILE = "index.npy"


SHARDS_DIR = "shards"


INDEX_DTYPE = np.int32  # token ids on disk; vocabularies stay far below 2**31


LOGPROB_DTYPES = {"float16": np.float16, "float32": np.float32}


# Fields that must match for a cache to be reused (anything else is bookkeeping).
IDENTITY_KEYS = (
    "k",
    "temperature",
    "vocab_size",
    "teacher_fingerprint",
    "dataset_fingerprint",
    "logprob_dtype",
    "shard_size",
)


LogprobDtype = Literal["float16", "float32"]


class LogitCacheError(EdgeDistillError):
    """A logit cache cannot be built or read (incomplete, damaged, or a bad request)."""


class LogitCacheMismatchError(LogitCacheError):
    """The cache on disk was built for another k / temperature / teacher / data."""


def teacher_fingerprint(model: Any) -> str:
    """Cheap identity of a model's weights (shared by both teacher caches and `generate`): every
    tensor's name, shape and dtype, its first values and the integer sum of its raw bits.
    Reading the first 1024 values (not a full float copy) keeps it fast on multi-GB teachers."""
    import torch

    digest = hashlib.sha256(type(model).__name__.encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(flat[:1024].float().cpu().numpy().tobytes())
            # Sum the raw bits as small integers: exact, so the same whatever the thread count or
            # device (a float sum's last bits follow the reduction order, which follows the threads).
            bits = flat.contiguous().view(torch.int8 if flat.element_size() == 1 else torch.int16)
            digest.update(str(int(bits.sum(dtype=torch.int64))).encode())
    return digest.hexdigest()[:20]


_teacher_fingerprint = teacher_fingerprint  # the builder's parameter of the same name shadows it


def sequences_fingerprint(sequences: Sequence[Sequence[int]] | Any) -> str:
    """sha256 over every sequence's token ids (and their count and lengths)."""
    rows = _as_id_lists(sequences)
    digest = hashlib.sha256(f"{len(rows)}\n".encode())
    for row in rows:
        ids = np.asarray(row, dtype=np.int64)
        digest.update(len(ids).to_bytes(8, "little"))
        digest.update(ids.tobytes())
    return digest.hexdigest()[:20]


def _as_id_lists(sequences: Any) -> list[list[int]]:
    """Token id lists from lists of ids, arrays, or dataset items with an ``input_ids`` field."""
    rows = []
    for i in range(len(sequences)):
        item = sequences[i]
        if isinstance(item, Mapping):
            item = item["input_ids"]
        rows.append([int(t) for t in (item.tolist() if hasattr(item, "tolist") else item)])
    return rows


def _data_files(root: Path) -> list[Path]:
    files = [root / INDEX_FILE] if (root / INDEX_FILE).is_file() else []
    shards = root / SHARDS_DIR
    if shards.is_dir():
        files += sorted(p for p in shards.rglob("*") if p.is_file() and not p.parent.name.startswith("."))
    return files


def cache_size(root: str | Path) -> dict[str, Any]:
    """Bytes the cache takes: ``size_bytes`` (index and shards), ``total_bytes`` (with meta.json),
    ``num_positions`` and ``bytes_per_position`` (size_bytes / num_positions)."""
    root = Path(root)
    meta = _read_meta(root)
    if meta is None:
        raise LogitCacheError(f"{root} is not a logit cache (no {META_FILE}); build one first")
    size = sum(p.stat().st_size for p in _data_files(root))
    positions = int(meta.get("num_positions") or 0)
    return {
        "size_bytes": size,
        "total_bytes": size + (root / META_FILE).stat().st_size,
        "num_positions": positions,
        "bytes_per_position": round(size / positions, 3) if positions else None,
    }


def _read_meta(root: Path) -> dict[str, Any] | None:
    path = root / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LogitCacheError(
            f"{path} is unreadable ({exc}); delete the folder {root} and build the cache again"
        ) from exc
    if meta.get("format") != FORMAT:
        raise LogitCacheError(f"{root} holds something else than a logit cache ({path} has another format)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise LogitCacheMismatchError(
            f"{root} was written in logit-cache format {meta.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}; build it again into a fresh folder"
        )
    return meta


def _mismatches(meta: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, want in expected.items():
        if want is None:
            continue
        have = meta.get(key)
        same = (
            abs(float(have) - float(want)) < 1e-12
            if key == "temperature" and have is not None
            else have == want
        )
        if not same:
            problems.append(f"{key}: cached {have!r}, requested {want!r}")
    return problems


def _mismatch_error(root: Path, problems: list[str], fix: str) -> LogitCacheMismatchError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return LogitCacheMismatchError(
        f"the logit cache in {root} was built for other settings:\n{listed}\n{fix}"
    )
