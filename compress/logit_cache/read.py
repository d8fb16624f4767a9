"""Reading a logit cache during distillation: memory-mapped shards, rows by sequence, and the trainer's teacher stand-in."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgedistill.compress.logit_cache.meta import (
    INDEX_FILE,
    META_FILE,
    SHARDS_DIR,
    LogitCacheError,
    _mismatch_error,
    _mismatches,
    _read_meta,
    cache_size,
)

logger = logging.getLogger(__name__)


class LogitCache:
    """Read side: ``cache[seq_id] -> (indices int64 [L, k], logprobs float32 [L, k])`` as torch tensors,
    and ``get_batch(seq_ids)`` padded to one length. Shards are memory-mapped on first use."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = _read_meta(self.root)
        if meta is None:
            raise LogitCacheError(f"{self.root} is not a logit cache (no {META_FILE}); build one first")
        if not meta.get("complete") or not (self.root / INDEX_FILE).is_file():
            raise LogitCacheError(
                f"the logit cache in {self.root} is incomplete (its build was interrupted); run the build "
                "again with the same settings to finish it"
            )
        self.meta = meta
        self.index = np.load(self.root / INDEX_FILE, allow_pickle=False)
        if self.index.shape != (meta["num_sequences"], 3):
            raise LogitCacheError(f"{self.root / INDEX_FILE} does not match {META_FILE}; rebuild the cache")
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        k: int | None = None,
        temperature: float | None = None,
        vocab_size: int | None = None,
        teacher_fingerprint: str | None = None,
        dataset_fingerprint: str | None = None,
    ) -> LogitCache:
        """Open a complete cache, checking that it was built for what the caller expects (None: any)."""
        cache = cls(root)
        problems = _mismatches(
            cache.meta,
            {
                "k": k,
                "temperature": temperature,
                "vocab_size": vocab_size,
                "teacher_fingerprint": teacher_fingerprint,
                "dataset_fingerprint": dataset_fingerprint,
            },
        )
        if problems:
            raise _mismatch_error(
                cache.root,
                problems,
                "Build a cache for these settings (in another folder) or change them back.",
            )
        return cache

    # A DataLoader worker gets a copy of the cache: send the paths, not the mapped arrays.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_shards": {}}

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def num_positions(self) -> int:
        return int(self.meta["num_positions"])

    def size(self) -> dict[str, Any]:
        return cache_size(self.root)

    def __len__(self) -> int:
        return int(self.meta["num_sequences"])

    def _shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._shards:
            folder = self.root / SHARDS_DIR / f"{shard:05d}"
            self._shards[shard] = (
                np.load(folder / "indices.npy", mmap_mode="r"),
                np.load(folder / "logprobs.npy", mmap_mode="r"),
            )
        return self._shards[shard]

    def arrays(self, seq_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored arrays of one sequence (memory-mapped views: int32 indices, stored-dtype log-probs)."""
        n = len(self)
        if not -n <= seq_id < n:
            raise IndexError(f"sequence {seq_id} out of range: the cache holds {n} sequences")
        shard, offset, length = (int(v) for v in self.index[seq_id])
        indices, logprobs = self._shard(shard)
        return indices[offset : offset + length], logprobs[offset : offset + length]

    def __getitem__(self, seq_id: int):
        import torch

        indices, logprobs = self.arrays(int(seq_id))
        return (
            torch.from_numpy(indices.astype(np.int64)),
            torch.from_numpy(logprobs.astype(np.float32)),
        )

    def get_batch(
        self,
        seq_ids: Sequence[int] | Any,
        length: int | None = None,
        padding_side: Literal["right", "left"] = "right",
        device: Any = None,
    ) -> dict[str, Any]:
        """Top-k of several sequences padded to ``length`` (default: the longest of them).

        Returns ``indices`` int64 [B, T, k] (padding 0), ``logprobs`` float32 [B, T, k] (padding 0)
        and ``mask`` bool [B, T] (True on real positions). Pad on the side the token batch was
        padded on (``padding_side``), so position t here is position t of ``input_ids``.
        """
        import torch

        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        ids = [int(i) for i in (seq_ids.tolist() if hasattr(seq_ids, "tolist") else seq_ids)]
        parts = [self.arrays(i) for i in ids]
        longest = max((len(p[0]) for p in parts), default=0)
        width = longest if length is None else int(length)
        if width < longest:
            raise ValueError(f"length={width} is shorter than the longest sequence in the batch ({longest})")
        indices = np.zeros((len(ids), width, self.k), dtype=np.int64)
        logprobs = np.zeros((len(ids), width, self.k), dtype=np.float32)
        mask = np.zeros((len(ids), width), dtype=bool)
        for row, (idx, lp) in enumerate(parts):
            n = len(idx)
            cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
            indices[row, cols] = idx
            logprobs[row, cols] = lp
            mask[row, cols] = True
        out = {
            "indices": torch.from_numpy(indices),
            "logprobs": torch.from_numpy(logprobs),
            "mask": torch.from_numpy(mask),
        }
        if device is not None:
            out = {name: tensor.to(device) for name, tensor in out.items()}
        return out


class TopKTeacherCache:
    """What `DistillTrainer` reads instead of running the teacher: the cached top-k of a batch's examples.

    Sequence ids are the positions of the training dataset (its ``example_index``); the batch is
    right-padded by the causal-LM collator, so the cached rows are padded the same way.
    """

    def __init__(self, cache: LogitCache):
        self.cache = cache
        self.temperature = cache.temperature

    @property
    def nbytes(self) -> int:
        return int(self.cache.size()["size_bytes"])

    def lookup(self, example_index: Any, device: Any, length: int | None = None):
        from edgedistill.compress.losses import TeacherOutputs

        batch = self.cache.get_batch(example_index.cpu(), length=length, padding_side="right", device=device)
        return TeacherOutputs(
            topk_indices=batch["indices"], topk_logprobs=batch["logprobs"], topk_temperature=self.temperature
        )
