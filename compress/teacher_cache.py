"""Teacher outputs for the whole train set, computed once and memory-mapped across epochs.

Logit KD and embedding KD only need the teacher's final outputs (a few floats per example),
so running the teacher every step is wasted work after the first epoch. The cache is keyed by
the teacher's weights, the tokenized data and the fields, and written atomically: an
interrupted fill leaves no cache behind and is simply redone.
"""

from __future__ import annotations

import hashlib
import json
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
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
        chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
        from rich.progress import track

        teacher.eval()
        with torch.no_grad():
            for batch in track(loader, description="caching teacher outputs", transient=True):
                inputs = {
                    k: batch[k].to(device)
                    for k in ("input_ids", "attention_mask", "token_type_ids")
                    if k in batch
                }
                out = teacher(**inputs, return_dict=True)
                if "logits" in chunks:
                    chunks["logits"].append(out.logits.float().cpu().numpy())
                if "embedding" in chunks:
                    chunks["embedding"].append(
                        mean_pool(out.last_hidden_state, inputs["attention_mask"]).float().cpu().numpy()
                    )
        for name in names:
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.concatenate(chunks[name]).astype(np.float32))
        atomic_write_json(folder / "meta.json", {"fields": names, "examples": len(dataset)})
        return cls({n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}, folder)
