"""Finished distillations kept across searches: a proxy rung or a finalist trained once is reused.

Two searches over one teacher and one training split (the same recipe at ``speedup_vs_teacher``
3, then 6) train the same shapes with the same settings; on one machine they produce
bit-identical students (fit_sst2's fit-3x and fit-6x: equal losses at every logged step and
equal weights after each rung). So a distillation is keyed by what determines its result:

- the distill recipe fit built for it, with every local file or folder it names (the teacher, the
  student it continues from, the training and validation rows) replaced by a digest of its
  content, and the folders that only say where caches live left out;
- the environment: the training libraries' versions, edgedistill's version and this cache's format,
  the CPU model and ISA, and torch's thread count (kernels and reduction order change the float
  result).

An entry holds the folder's report, config and student (hard links where the file system
allows, else copies) and the CPU record of the run that trained it; restoring one writes that
record with ``reused_from`` beside it, so the search's CPU account counts what this search
trained apart from what it reused. Only finished distillations are stored. A change to
edgedistill's training code that changes results must bump `FORMAT`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgedistill.io import atomic_dir, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

FORMAT = 1
ENTRY_FILES = ("distill_report.json", "distill_config.json", "curves.png")
REPORT = "distill_report.json"
CONFIG = "distill_config.json"
LOCATION_ONLY = {("training", "teacher_cache_dir"), ("data", "cache_dir")}
PATH_KEYS = {"path", "train", "eval"}

_digests: dict[tuple[str, int, int], str] = {}


def content_digest(path: Path) -> str:
    """sha256 of a file's or folder's content (folders: every file but hidden ones and checkpoints).

    JSON files are hashed as parsed, sorted JSON and safetensors as their tensors (name, dtype,
    shape, bytes) and sorted metadata, so a dict written in another key order reads as the same
    content (safetensors' header order follows the order its dict was filled in).
    """
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(_files(path))
    for file in files:
        h.update(str(file.relative_to(path)).encode() if file != path else b".")
        h.update(_file_digest(file).encode())
    return h.hexdigest()


def _files(folder: Path):
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.name == "checkpoints":
            continue
        if entry.is_dir():
            yield from _files(entry)
        elif entry.is_file():
            yield entry


def _file_digest(file: Path) -> str:
    stat = file.stat()
    memo = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _digests:
        if file.suffix == ".json":
            text = json.dumps(json.loads(file.read_text(encoding="utf-8")), sort_keys=True)
            _digests[memo] = hashlib.sha256(text.encode()).hexdigest()
        elif file.suffix == ".safetensors":
            h = hashlib.sha256()
            _hash_safetensors(file, h)
            _digests[memo] = h.hexdigest()
        else:
            _digests[memo] = sha256_file(file)
    return _digests[memo]


def _hash_safetensors(file: Path, h) -> None:
    with open(file, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        start = 8 + n
        h.update(json.dumps(header.pop("__metadata__", {}), sort_keys=True).encode())
        for name in sorted(header):
            info = header[name]
            h.update(json.dumps([name, info["dtype"], info["shape"]]).encode())
            begin, end = info["data_offsets"]
            fh.seek(start + begin)
            h.update(fh.read(end - begin))


def environment() -> dict[str, Any]:
    """What besides the recipe makes a distillation's numbers: libraries, CPU, threads."""
    import torch

    from edgedistill.bench.system import library_versions
    from edgedistill.host import cpu_summary

    libs = library_versions()
    cpu = cpu_summary()
    return {
        "format": FORMAT,
        "libraries": {
            k: libs.get(k) for k in ("edgedistill", "torch", "transformers", "nncf", "numpy", "tokenizers")
        },
        "cpu": {k: cpu.get(k) for k in ("model", "architecture", "isa_flags")},
        "torch_threads": torch.get_num_threads(),
    }


def key_material(raw: dict[str, Any]) -> dict[str, Any]:
    """A dumped distill recipe with its local files as content digests and cache locations left out."""

    def walk(value: Any, where: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {
                k: walk(v, (*where, k)) for k, v in value.items() if (*where[-1:], k) not in LOCATION_ONLY
            }
        if isinstance(value, list):
            return [walk(v, where) for v in value]
        if isinstance(value, str) and where and where[-1] in PATH_KEYS and Path(value).exists():
            return {"content": content_digest(Path(value))}
        return value

    return {"recipe": walk(raw, ()), "environment": environment()}


def distill_key(recipe) -> str:
    """The cache key of a distill recipe (a `DistillRecipe`, or its dump as in ``distill_config.json``)."""
    from edgedistill.config import dump_config

    material = key_material(recipe if isinstance(recipe, dict) else dump_config(recipe))
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]


class DistillCache:
    """A folder of finished distillations, one sub-folder per key."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()

    def restore(self, recipe, dest: Path, cpu_file: Path) -> bool:
        """Put the cached distillation of ``recipe`` into ``dest`` (and its CPU record into ``cpu_file``)."""
        key = distill_key(recipe)
        entry = self.folder / key
        if not (entry / REPORT).is_file() or not (entry / "student").is_dir():
            return False
        from edgedistill.config import dump_config

        origin = json.loads((entry / "origin.json").read_text(encoding="utf-8"))
        cpu = {**origin.get("cpu", {}), "reused_from": origin.get("folder"), "key": key}
        # the CPU record first: a kill before the folder lands leaves nothing that reads as done
        # (a record inside the folder is written with it)
        inside = cpu_file.parent.resolve() == dest.resolve()
        if not inside:
            atomic_write_json(cpu_file, cpu)
        with atomic_dir(dest) as tmp:
            for name in ENTRY_FILES:
                if (entry / name).is_file() and name != CONFIG:
                    _link(entry / name, tmp / name)
            _link_tree(entry / "student", tmp / "student")
            atomic_write_json(tmp / CONFIG, dump_config(recipe))  # this search's paths, the same content
            if inside:
                atomic_write_json(tmp / cpu_file.name, cpu)
        log.info("reused the distillation of %s (key %s) for %s", origin.get("folder"), key, dest)
        return True

    def store(self, recipe, folder: Path, cpu_file: Path) -> str | None:
        """Keep a finished distillation of ``recipe`` (its folder and CPU record); returns its key."""
        if not (folder / REPORT).is_file() or not cpu_file.is_file():
            return None
        cpu = json.loads(cpu_file.read_text(encoding="utf-8"))
        if cpu.get("reused_from") or cpu.get("resumed") or cpu.get("complete") is False:
            return None  # already an entry, or a CPU figure that does not stand for one whole run
        key = distill_key(recipe)
        entry = self.folder / key
        if (entry / REPORT).is_file():
            return key
        with atomic_dir(entry) as tmp:
            for name in ENTRY_FILES:
                if (folder / name).is_file():
                    _link(folder / name, tmp / name)
            _link_tree(folder / "student", tmp / "student")
            cpu_record = {k: cpu.get(k) for k in ("cpu_s", "sessions", "complete") if k in cpu}
            atomic_write_json(
                tmp / "origin.json",
                {
                    "folder": str(folder.resolve()),
                    "stored_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "cpu": cpu_record,
                },
            )
        return key


def index_fit_dir(cache: DistillCache, fit_dir: Path) -> list[str]:
    """Store every finished rung and finalist distillation of a fit folder (one trained before the
    cache existed, or by a search that had none); returns the keys stored or found."""
    from edgedistill.compress.config import DistillRecipe

    done = []
    folders = [(f, f / "cpu.json") for f in sorted(fit_dir.glob("trials/*/rung-*"))]
    folders += [(f / "distill", f / "distill_cpu.json") for f in sorted(fit_dir.glob("final/*"))]
    for folder, cpu_file in folders:
        if (folder / REPORT).is_file() and (folder / CONFIG).is_file():
            recipe = DistillRecipe.model_validate(json.loads((folder / CONFIG).read_text(encoding="utf-8")))
            if (key := cache.store(recipe, folder, cpu_file)) is not None:
                done.append(key)
    return done


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # every writer here replaces files atomically: a link never sees a later change
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    for file in sorted(_files(src)):
        _link(file, dst / file.relative_to(src))
