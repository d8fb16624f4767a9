"""Atomic file and folder writes, and hashing: nothing already written is lost when a write fails.

A write goes to a temporary sibling named ``.<name>.<pid>.<random>.tmp`` and replaces the target
only when it is complete. A process killed with ``kill -9`` cannot clean up after itself, so the
next atomic write to the same target removes the temporaries of processes that no longer run, and
puts back a previous folder left aside as ``.<name>.old`` by a kill between the two renames of
`atomic_dir`. A full disk (or a file-size limit) raises `DiskFullError` naming the path and the
free space, after the temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgedistill.errors import DiskFullError, EdgeDistillError

_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file-size limit was reached"}
if hasattr(errno, "EDQUOT"):
    _FULL[errno.EDQUOT] = "the disk quota is exhausted"


_NEARLY_FULL = 1 << 20  # a failed write with less than this free is taken as a full disk


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_object(
    path: str | os.PathLike,
    fix: str,
    error: type[EdgeDistillError] = EdgeDistillError,
    max_bytes: int = 4 << 20,
) -> dict[str, Any]:
    """A small JSON file that must hold an object (configs, metadata), refused with ``error`` naming
    the file, what is wrong and ``fix``: bigger than ``max_bytes`` (checked before reading), not
    UTF-8, not JSON (line and column), nested too deeply, or not an object."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size} bytes; a {path.name} is at most {max_bytes} bytes. {fix}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 at byte {exc.start}. {fix}") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). {fix}"
        ) from None
    except RecursionError:
        raise error(f"{path}: nested too deeply. {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a JSON {type(data).__name__}, expected an object. {fix}")
    return data


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT/EFBIG raised inside the block into `DiskFullError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(path, free_bytes(path), _FULL[exc.errno]) from exc
    except DiskFullError:
        raise
    except Exception as exc:  # noqa: BLE001 (re-raised unless it is a full disk)
        # torch.save and safetensors wrap the OSError in their own exception types and messages
        # ("PytorchStreamWriter failed writing file", "basic_ios::clear: iostream error",
        # "SafetensorError: ... No space left on device (os error 28)")
        text = " | ".join(str(e).lower() for e in _chain(exc))
        free = free_bytes(path)
        if "no space left" in text or "os error 28" in text:
            raise DiskFullError(path, free, _FULL[errno.ENOSPC]) from exc
        if "file too large" in text or "os error 27" in text:
            raise DiskFullError(path, free, _FULL[errno.EFBIG]) from exc
        failed_io = any(word in text for word in ("write", "iostream", "i/o error"))
        if failed_io and free is not None and free < _NEARLY_FULL:
            raise DiskFullError(path, free, f"a write failed with the disk nearly full ({exc})") from exc
        raise


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (torch.save's ENOSPC
    surfaces as "unexpected pos" raised while its writer closes, over "iostream error")."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 8:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.*.tmp`` siblings of ``target`` whose process is gone; returns them."""
    removed = []
    prefix = f".{target.name}."
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def recover_dir(path: str | os.PathLike) -> bool:
    """Put back ``.<name>.old`` when a kill between `atomic_dir`'s renames left no ``path``."""
    target = Path(path)
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.is_dir():
        os.replace(old, target)
        return True
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    with disk_full_as_error(target):
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole.

    A failure (or an interrupt) leaves the previous ``path`` untouched and removes the
    temporary folder, so readers never see a half-written folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    remove_stale_temporaries(target)
    with disk_full_as_error(target):
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        )
        try:
            yield tmp
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
