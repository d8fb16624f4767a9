"""Where data comes from: a local file or folder, or a hub dataset id ``ID[:CONFIG][@SPLIT]``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgedistill.errors import DataError

logger = logging.getLogger(__name__)


FILE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".parquet")


# Suffixes that mark a string as a local file name rather than a hub id, even when the file is missing.
_LOCAL_LOOKING_SUFFIXES = {*FILE_SUFFIXES, ".txt", ".gz", ".arrow", ".ndjson"}


@dataclass(frozen=True)
class _Source:
    """A resolved `data.train`/`data.eval` value."""

    name: str  # as the user wrote it; used in every message
    kind: Literal["tsv", "csv", "jsonl", "json", "parquet", "saved", "hub"]
    path: Path | None = None
    split: str | None = None  # for `save_to_disk` DatasetDict folders and hub ids
    hub_id: str | None = None
    hub_config: str | None = None


def _resolve_source(source: str) -> _Source:
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in FILE_SUFFIXES:
            raise DataError(
                f"{source}: unsupported file type '{suffix or '(none)'}'. "
                f"Use one of {', '.join(FILE_SUFFIXES)}, or a folder written by datasets' save_to_disk."
            )
        return _Source(name=source, kind=suffix.lstrip("."), path=path)  # type: ignore[arg-type]
    if path.is_dir():
        return _Source(name=source, kind="saved", path=path)
    base, at, split = source.rpartition("@")
    if at and base and Path(base).expanduser().is_dir():
        return _Source(name=source, kind="saved", path=Path(base).expanduser(), split=split or None)
    if _looks_local(source):
        raise DataError(f"file not found: {source}. Check the path in data.train / data.eval.")
    return _parse_hub_id(source)


def _looks_local(source: str) -> bool:
    """True for strings meant as paths: a hub id never starts with . / ~ nor ends in a file suffix."""
    base = source.rpartition("@")[0] or source
    path = Path(base).expanduser()
    if base.startswith((".", "/", "~")) or path.suffix.lower() in _LOCAL_LOOKING_SUFFIXES:
        return True
    has_separator = os.sep in base or (os.altsep is not None and os.altsep in base)
    return has_separator and str(path.parent) not in ("", ".") and path.parent.is_dir()


def _parse_hub_id(source: str) -> _Source:
    rest, at, split = source.rpartition("@")
    if not at:
        rest, split = source, ""
    dataset_id, colon, config = rest.partition(":")
    if not dataset_id or (at and not split) or (colon and not config):
        raise DataError(
            f"'{source}' is neither an existing file nor a hub dataset id of the form ID[:CONFIG][@SPLIT] "
            "(e.g. nyu-mll/glue:sst2@validation)."
        )
    return _Source(name=source, kind="hub", hub_id=dataset_id, hub_config=config or None, split=split or None)
