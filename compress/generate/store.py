"""The sample store: an append-only JSONL file per run with its metadata, a lock, resume checks and a Parquet copy."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.compress.generate.config import GenerateError
from edgedistill.errors import EdgeDistillError
from edgedistill.io import atomic_path, read_json_object

logger = logging.getLogger(__name__)


STORE_FORMAT = "edgedistill.generate"


STORE_FORMAT_VERSION = 1


SAMPLES_FILE = "samples.jsonl"


DUPLICATES_FILE = "duplicates.jsonl"


META_FILE = "generate.json"


PARQUET_FILE = "samples.parquet"


LOCK_FILE = ".generate.lock"


def record_id(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\0{response}".encode()).hexdigest()[:16]


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


@dataclass
class _Store:
    """What the store on disk already holds, and appends to it (each line flushed and fsynced)."""

    out: Path
    # (prompt_id, sample_index) -> digest of the prompt it was generated for
    done: dict[tuple[int, int], str] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)  # record ids: sha256 of (prompt, response)
    stored: int = 0
    duplicates: int = 0
    finish_reasons: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    response_tokens: int = 0
    torn_bytes: int = 0

    @classmethod
    def open(cls, out: Path) -> _Store:
        store = cls(out)
        for record in _read_jsonl_store(out / SAMPLES_FILE, store):
            store._count(record)
        for record in _read_jsonl_store(out / DUPLICATES_FILE, store):
            key = (int(record["prompt_id"]), int(record["sample_index"]))
            store.done[key] = record.get("prompt_digest", "")
            store.duplicates += 1
        return store

    def _count(self, record: dict[str, Any]) -> None:
        digest = prompt_digest(record["prompt"])
        self.done[(int(record["prompt_id"]), int(record["sample_index"]))] = digest
        self.ids.add(record["id"])
        self.stored += 1
        self.finish_reasons[record.get("finish_reason")] += 1
        self.prompt_tokens += int(record.get("prompt_tokens") or 0)
        self.response_tokens += int(record.get("response_tokens") or 0)

    @contextlib.contextmanager
    def appending(self) -> Iterator[Callable[[dict[str, Any]], bool]]:
        """Yield ``add(record) -> stored``: a record is stored unless its (prompt, response) pair is."""
        with open(self.out / SAMPLES_FILE, "ab") as samples, open(self.out / DUPLICATES_FILE, "ab") as dups:

            def add(record: dict[str, Any]) -> bool:
                if record["id"] in self.ids:
                    entry = {
                        "prompt_id": record["prompt_id"],
                        "sample_index": record["sample_index"],
                        "seed": record["seed"],
                        "duplicate_of": record["id"],
                        "prompt_digest": prompt_digest(record["prompt"]),
                    }
                    _append_line(dups, entry)
                    self.done[(record["prompt_id"], record["sample_index"])] = entry["prompt_digest"]
                    self.duplicates += 1
                    return False
                _append_line(samples, record)
                self._count(record)
                return True

            yield add

    def counts(self) -> dict[str, Any]:
        return {
            "records_stored": self.stored,
            "duplicates_skipped": self.duplicates,
            "samples_done": self.stored + self.duplicates,
            "finish_reasons": dict(self.finish_reasons),
            "prompt_tokens": self.prompt_tokens,
            "response_tokens": self.response_tokens,
        }


def _append_line(fh: Any, record: dict[str, Any]) -> None:
    # One write per record; a kill can only tear the last line, which the next open cuts off.
    fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    fh.flush()
    os.fsync(fh.fileno())


def _read_jsonl_store(path: Path, store: _Store | None) -> list[dict[str, Any]]:
    """Records of a store file. A torn last line (a kill mid-write: no final newline, or a final
    line that is not JSON) is ignored, and cut off the file when a ``store`` is being opened for
    writing; damage anywhere else is an error."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # bytes up to the last complete line
    lines = data[:keep].split(b"\n")[:-1]
    records = []
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if number == len(lines):  # e.g. zero bytes after a power loss: as good as torn
                keep -= len(raw) + 1
                break
            raise GenerateError(
                f"{path}, line {number}: damaged record ({exc}). Fix or delete that line, or start the "
                "store again with --restart."
            ) from None
        records.append(record)
    if keep < len(data) and store is not None:
        logger.warning(
            "%s: cutting off %d bytes of a line torn by an interrupted run", path, len(data) - keep
        )
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        store.torn_bytes += len(data) - keep
    return records


@contextlib.contextmanager
def _locked(out: Path, verb: str = "generate") -> Iterator[None]:
    """One writer per store: a second run into the same folder would interleave records."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(out / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GenerateError(
                f"another `edgedistill {verb}` is writing to {out}; wait for it to finish or use another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clear_store(out: Path) -> None:
    for name in (SAMPLES_FILE, DUPLICATES_FILE, META_FILE, PARQUET_FILE):
        (out / name).unlink(missing_ok=True)


def _check_resume(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the stored run and this one (empty: the store can be continued)."""
    problems = []
    # A store from before engines existed was generated by torch.
    old_cfg, new_cfg = {"engine": "torch", **previous.get("identity", {})}, current["identity"]
    same_engine = old_cfg["engine"] == new_cfg.get("engine")
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if key in ("dtype", "llama_cpp") and not same_engine:
            continue  # each engine's own settings: the engine line says it all
        if key == "engine" and not same_engine:
            problems.append(
                f"engine: stored {old_cfg['engine']!r}, now {new_cfg.get('engine')!r} (the engines sample "
                f"differently; pass --engine {old_cfg['engine']} to resume)"
            )
        elif key == "sampling":
            old_s, new_s = old_cfg.get(key) or {}, new_cfg.get(key) or {}
            problems += [
                f"sampling.{k}: stored {old_s.get(k)!r}, now {new_s.get(k)!r}"
                for k in sorted(set(old_s) | set(new_s))
                if old_s.get(k) != new_s.get(k)
            ]
        elif old_cfg.get(key) != new_cfg.get(key):
            problems.append(f"{key}: stored {old_cfg.get(key)!r}, now {new_cfg.get(key)!r}")
    old_p, new_p = previous.get("prompts", {}), current["prompts"]
    if old_p.get("fingerprint") != new_p["fingerprint"]:
        problems.append(
            f"prompts: the prompts differ ({old_p.get('path')}: {old_p.get('count')} prompts, "
            f"now {new_p['path']}: {new_p['count']} prompts)"
        )
    if "teacher" in current and same_engine:
        old_t, new_t = previous.get("teacher", {}), current["teacher"]
        if old_t.get("dtype") != new_t["dtype"]:
            problems.append(
                f"teacher dtype: stored {old_t.get('dtype')}, now {new_t['dtype']} (with dtype: auto this follows "
                "the device; pass --dtype to match the stored one)"
            )
        elif old_t.get("fingerprint") != new_t["fingerprint"]:
            problems.append(
                f"teacher: other weights or tokenizer (stored {old_t.get('path')} fingerprint "
                f"{old_t.get('fingerprint')}, now {new_t['path']} fingerprint {new_t['fingerprint']})"
            )
    return problems


def _refuse_mix(out: Path, problems: list[str]) -> GenerateError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return GenerateError(
        f"{out} holds samples generated with other settings:\n{listed}\nRerun with the original settings to "
        "resume, --restart to delete the store and start again, --force to add to it anyway (records keep "
        "their own seed), or choose another --out."
    )


def read_meta(out: Path, meta_file: str, error: type[EdgeDistillError]) -> dict[str, Any] | None:
    """The metadata a store keeps beside its samples (``generate.json``, synthesize's ``texts.json``):
    None for a new store. A damaged one, or samples without one (their settings unknown), is refused
    with ``error`` and the way out."""
    meta_path = out / meta_file
    if meta_path.is_file():
        return read_json_object(meta_path, "Start again with --restart, or choose another --out.", error)
    if (out / SAMPLES_FILE).exists():
        raise error(
            f"{out} has {SAMPLES_FILE} but no {meta_file}, so its settings are unknown. Use --restart to "
            "delete it and start again, or choose another --out."
        )
    return None


def read_store(out: str | Path) -> list[dict[str, Any]]:
    """The records of a store (samples.jsonl), in the order they were written."""
    return _read_jsonl_store(Path(out) / SAMPLES_FILE, None)


def write_parquet(out: str | Path) -> Path:
    """samples.jsonl -> samples.parquet (atomically)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise GenerateError(
            "output_format: parquet needs the Python package 'pyarrow', which is not installed. Install it "
            "with: pip install pyarrow (or use the default jsonl store)"
        ) from None
    out = Path(out)
    records = read_store(out)
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    table = pa.table({name: [r.get(name) for r in records] for name in columns})
    with atomic_path(out / PARQUET_FILE) as tmp:
        pq.write_table(table, tmp)
    return out / PARQUET_FILE


# The same machinery for other stores of generated text (compress/synthesize keeps its texts in one):
# records keyed by (prompt_id, sample_index), appended and fsynced one line at a time, a torn last
# line cut off on open, one writer per folder.
SampleStore = _Store
append_record = _append_line
store_lock = _locked
