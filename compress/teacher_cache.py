"""Teacher outputs for the whole train set, computed once and memory-mapped across epochs.

Logit KD and embedding KD only need the teacher's final outputs (a few floats per example),
so running the teacher every step is wasted work after the first epoch. The cache is keyed by
the teacher's weights, the tokenized data and the fields, and filled in shards of
`SHARD_BATCHES` batches, each written atomically under ``parts/`` as it finishes: an interrupted
fill resumes from its last finished shard (a 110M-parameter teacher over SST-2's 67,349 rows
takes hours of one core here, longer than a working session), and the cache reads as present
only once every shard is joined.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from edgedistill.compress.losses import TeacherOutputs, mean_pool
from edgedistill.errors import EdgeDistillError
from edgedistill.io import atomic_path, atomic_write_json

CACHEABLE = {"logits", "embedding"}


def _fingerprint(teacher: torch.nn.Module, dataset, fields: list[str]) -> str:
    from edgedistill.compress.logit_cache import teacher_fingerprint

    # the weights' identity is exact whatever the thread count (a float sum's last bits are not)
    digest = hashlib.sha256(teacher_fingerprint(teacher).encode())
    for i in range(len(dataset)):
        digest.update(json.dumps(dataset[i]["input_ids"]).encode())
    digest.update(json.dumps(fields).encode())
    return digest.hexdigest()[:20]


class TeacherOutputCache:
    """Per-example teacher outputs in ``folder/<field>.npy`` (float32, memory-mapped read-only)."""

    def __init__(self, arrays: dict[str, np.ndarray], folder: Path):
        self.arrays = arrays
        self.folder = folder

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def lookup(
        self, example_index: torch.Tensor, device: torch.device, length: int | None = None
    ) -> TeacherOutputs:
        """Cached outputs of these examples (``length``, the batch's padded length, is for per-token caches)."""
        idx = example_index.cpu().numpy()
        values = {
            name: torch.from_numpy(np.ascontiguousarray(arr[idx])).to(device)
            for name, arr in self.arrays.items()
        }
        return TeacherOutputs(**values)

    @classmethod
    def build(
        cls, teacher, dataset, collator, fields: set[str], root: Path, batch_size: int = 64, device=None
    ):
        unsupported = fields - CACHEABLE
        if unsupported:
            raise EdgeDistillError(
                f"training.cache_teacher_outputs caches only {sorted(CACHEABLE)}, but the chosen losses also need "
                f"teacher {sorted(unsupported)} (per-token states are too large to cache). Turn the cache off or use "
                f"only soft_kl / hard_ce / embedding_* losses."
            )
        names = sorted(fields)
        folder = Path(root) / _fingerprint(teacher, dataset, names)
        if (folder / "meta.json").is_file():
            return cls({n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}, folder)
        folder.mkdir(parents=True, exist_ok=True)
        device = device or next(teacher.parameters()).device
        parts = folder / "parts"
        shard = SHARD_BATCHES * batch_size
        starts = list(range(0, len(dataset), shard))
        todo = [s for s in starts if not all(_part(parts, n, s).is_file() for n in names)]
        total = sum(-(-min(shard, len(dataset) - s) // batch_size) for s in todo)
        from rich.progress import track

        teacher.eval()
        with torch.no_grad():
            batches = _batches(dataset, collator, todo, shard, batch_size)
            chunks: dict[str, list[np.ndarray]] = {}
            for start, last, batch in track(
                batches, total=total, description="caching teacher outputs", transient=True
            ):
                inputs = {
                    k: batch[k].to(device)
                    for k in ("input_ids", "attention_mask", "token_type_ids")
                    if k in batch
                }
                out = teacher(**inputs, return_dict=True)
                if not chunks:  # the first batch of a shard
                    chunks = {n: [] for n in names}
                if "logits" in chunks:
                    chunks["logits"].append(out.logits.float().cpu().numpy())
                if "embedding" in chunks:
                    chunks["embedding"].append(
                        mean_pool(out.last_hidden_state, inputs["attention_mask"]).float().cpu().numpy()
                    )
                if last:  # a finished shard is on disk: a kill from here on loses at most the next one
                    for name in names:
                        _save(_part(parts, name, start), np.concatenate(chunks[name]))
                    chunks = {}
        for name in names:
            _save(folder / f"{name}.npy", np.concatenate([np.load(_part(parts, name, s)) for s in starts]))
        atomic_write_json(folder / "meta.json", {"fields": names, "examples": len(dataset)})
        shutil.rmtree(parts, ignore_errors=True)
        return cls({n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}, folder)


SHARD_BATCHES = 32  # batches per shard kept on disk while the cache fills (2,048 examples at batch 64)


def _part(parts: Path, name: str, start: int) -> Path:
    return parts / f"{name}.{start:09d}.npy"


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array.astype(np.float32))


def _batches(dataset, collator, starts: list[int], shard: int, batch_size: int):
    """(shard start, last batch of the shard?, batch) over the shards still to fill, in order."""
    from torch.utils.data import Subset

    for start in starts:
        rows = Subset(dataset, range(start, min(start + shard, len(dataset))))
        loader = DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collator)
        n = len(loader)
        for i, batch in enumerate(loader):
            yield start, i == n - 1, batch
