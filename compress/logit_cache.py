"""Offline teacher logits for language models: top-k log-probs per position, computed once, memory-mapped.

Token-level KD on a causal LM needs the teacher's next-token distribution at every position of
every training sequence. Running the teacher each epoch costs as much as training the student,
and the full distributions (vocab-sized float rows) are far too large to keep. This cache keeps
the top ``k`` log-probs per position, once, and every epoch reads them back through np.memmap.

The contract (what the losses consume): for a sequence ``input_ids`` of length L::

    logprobs, indices = torch.log_softmax(teacher_logits[..., :vocab_size].float() / T, -1).topk(k, -1)

``indices`` int64 [L, k] and ``logprobs`` float32 [L, k]; row t is the teacher's distribution
over the token *after* ``input_ids[t]`` (the logits at position t, not shifted). ``vocab_size``
is the tokenizer's vocabulary: rows a model pads its embedding matrix with are never returned.

On disk (``root/``)::

    meta.json                       what was cached (k, T, vocab_size, fingerprints, dtypes, counts, size)
    index.npy                       int64 [num_sequences, 3]: shard, first position in the shard, length
    shards/00000/indices.npy        int32 [positions, k]
    shards/00000/logprobs.npy       float16 (default) or float32 [positions, k]
    shards/00000/offsets.npy        int64 [sequences_in_shard + 1]
    shards/00000/shard.json         first sequence, counts, measured float16 rounding error

Shard s holds sequences [s * shard_size, (s + 1) * shard_size). Each shard folder is written
under a temporary name and renamed when complete, so a killed build leaves only complete shards
and the next build continues after them. ``index.npy`` and ``meta.json`` (with
``"complete": true``) are written last.

float16 log-probs keep 11 significant bits: the rounding error is at most 2**-11 of the value
(about 0.005 at a log-prob of -10, i.e. a 0.5 % relative error on a probability of 4.5e-5); the
build measures the largest error and stores it as ``max_abs_logprob_error``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgedistill.errors import EdgeDistillError
from edgedistill.io import atomic_dir, atomic_path, atomic_write_json

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


# --------------------------------------------------------------------------- fingerprints


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


# --------------------------------------------------------------------------- size


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


# --------------------------------------------------------------------------- build


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


# --------------------------------------------------------------------------- read


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
