"""Raw records per format: TSV, CSV, JSONL, JSON, Parquet, a ``save_to_disk`` folder, a hub dataset."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.data.report import MALFORMED_ROW, UNDECODABLE
from edgedistill.data.sources import FILE_SUFFIXES, _Source
from edgedistill.errors import DataError

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 << 20  # one TSV/JSONL line (a record); longer lines are bad rows, never read whole
MAX_JSON_ARRAY_BYTES = 256 << 20  # a `.json` array is parsed whole; larger files go as JSON lines
TOO_LONG = "line longer than the limit"


def _bounded_lines(fh: Any, start: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; (line number, None) for a line over MAX_LINE_BYTES, whose
    rest is skipped in bounded chunks so memory stays bounded whatever the file holds."""
    number = start
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:
                chunk = fh.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield number, None
        else:
            yield number, raw
        number += 1


def _too_long(line_number: int) -> _Raw:
    return _Raw(line_number, None, (MALFORMED_ROW, f"{TOO_LONG} ({MAX_LINE_BYTES} bytes): split or drop it"))


@dataclass
class _Raw:
    """One record as read: its fields, or the reason it could not even be split into fields."""

    row: int
    fields: dict[str, Any] | None
    problem: tuple[str, str] | None = None


@dataclass
class _Records:
    """Column names (None when each record carries its own keys, as in JSONL), and a function
    giving the records; columnar sources read only the wanted columns it is passed."""

    columns: list[str] | None
    iter_records: Callable[[list[str]], Iterator[_Raw]]


def _open_records(src: _Source) -> _Records:
    readers = {
        "tsv": _read_tsv,
        "csv": _read_csv,
        "jsonl": _read_jsonl,
        "json": _read_json,
        "parquet": _read_parquet,
        "saved": _read_saved_dataset,
        "hub": _read_hub_dataset,
    }
    return readers[src.kind](src)


def _read_tsv(src: _Source) -> _Records:
    # SST-2/GLUE TSVs are unquoted: a '"' is text, so csv.QUOTE_NONE semantics (split on tabs only).
    # Lines are decoded one by one so a bad byte costs one row, reported with its line number.
    with open(src.path, "rb") as fh:
        header_line = fh.readline(MAX_LINE_BYTES + 1)
    if len(header_line) > MAX_LINE_BYTES:
        raise DataError(
            f"{src.name}, line 1: the header is longer than {MAX_LINE_BYTES} bytes; is this a TSV?"
        )
    if not header_line.strip():
        raise DataError(f"{src.name}: the file is empty; a TSV needs a header line naming its columns.")
    try:
        header = [name.strip() for name in header_line.decode("utf-8-sig").rstrip("\r\n").split("\t")]
    except UnicodeDecodeError as exc:
        raise DataError(f"{src.name}: the header line is not UTF-8 ({exc}); save the file as UTF-8.") from exc

    def records(_wanted: list[str]) -> Iterator[_Raw]:
        with open(src.path, "rb") as fh:
            fh.readline(MAX_LINE_BYTES + 1)  # the header, read above
            for line_number, raw in _bounded_lines(fh, start=2):
                if raw is None:
                    yield _too_long(line_number)
                    continue
                raw = raw.rstrip(b"\r\n")
                if not raw:
                    continue  # a blank line holds no record
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield _Raw(line_number, None, (UNDECODABLE, f"not UTF-8 at byte {exc.start}"))
                    continue
                values = line.split("\t")
                if len(values) != len(header):
                    detail = f"{len(values)} tab-separated fields, the header has {len(header)}"
                    yield _Raw(line_number, None, (MALFORMED_ROW, detail))
                    continue
                yield _Raw(line_number, dict(zip(header, values, strict=True)))

    return _Records(header, records)


def _open_csv(path: Path) -> Any:
    # Quoted fields may span lines, so the file cannot be decoded line by line; surrogateescape
    # keeps bad bytes as lone surrogates that mark just the affected record as undecodable.
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _read_csv(src: _Source) -> _Records:
    with _open_csv(src.path) as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise DataError(f"{src.name}: the file is empty; a CSV needs a header line naming its columns.")
    header = [name.strip() for name in header]

    def records(_wanted: list[str]) -> Iterator[_Raw]:
        with _open_csv(src.path) as fh:
            reader = csv.reader(fh)
            next(reader)  # the header, read above
            start_line = reader.line_num + 1
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise DataError(f"{src.name}, line {start_line}: cannot parse CSV ({exc}).") from exc
                row, start_line = start_line, reader.line_num + 1
                if not values:
                    continue  # a blank line holds no record
                if any(_has_surrogates(value) for value in values):
                    yield _Raw(row, None, (UNDECODABLE, "not UTF-8"))
                elif len(values) != len(header):
                    yield _Raw(
                        row, None, (MALFORMED_ROW, f"{len(values)} fields, the header has {len(header)}")
                    )
                else:
                    yield _Raw(row, dict(zip(header, values, strict=True)))

    return _Records(header, records)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, tuple[str, str] | None]]:
    """(line number, object, None) per JSON-lines record, or (line number, None, (reason, message))
    for a line that is not UTF-8, not JSON, or not a JSON object. Blank lines are skipped."""
    with open(path, "rb") as fh:
        for line_number, raw in _bounded_lines(fh, start=1):
            if raw is None:
                yield line_number, None, _too_long(line_number).problem
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield line_number, None, (UNDECODABLE, f"not UTF-8 at byte {exc.start}")
                continue
            except json.JSONDecodeError as exc:
                yield line_number, None, (MALFORMED_ROW, f"invalid JSON: {exc.msg}")
                continue
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting past the stack
                yield line_number, None, (MALFORMED_ROW, f"unreadable JSON value: {str(exc)[:120]}")
                continue
            if not isinstance(record, dict):
                yield line_number, None, (MALFORMED_ROW, f"a JSON {type(record).__name__}, not an object")
                continue
            yield line_number, record, None


def _read_jsonl(src: _Source) -> _Records:
    def records(_wanted: list[str]) -> Iterator[_Raw]:
        for line_number, record, problem in iter_jsonl(src.path):
            yield _Raw(line_number, record, problem)

    return _Records(None, records)


def _read_json(src: _Source) -> _Records:
    """A `.json` file is either one array of objects or JSON lines (what `datasets` writes)."""
    with open(src.path, "rb") as fh:
        first = fh.read(4096).lstrip()
    if not first.startswith(b"["):
        return _read_jsonl(src)
    size = src.path.stat().st_size
    if size > MAX_JSON_ARRAY_BYTES:
        raise DataError(
            f"{src.name}: a JSON array of {size} bytes is parsed whole (limit {MAX_JSON_ARRAY_BYTES}); "
            "write it as JSON lines (one object a line, .jsonl), which is read row by row."
        )
    try:
        rows = json.loads(src.path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(
            f"{src.name}: not a valid UTF-8 JSON array ({exc}); fix the file or write it as JSON lines."
        ) from exc

    def records(_wanted: list[str]) -> Iterator[_Raw]:
        for number, record in enumerate(rows, start=1):
            if isinstance(record, dict):
                yield _Raw(number, record)
            else:
                yield _Raw(number, None, (MALFORMED_ROW, "not a JSON object"))

    return _Records(None, records)


def _read_parquet(src: _Source) -> _Records:
    import pyarrow.parquet as pq  # lazy: only Parquet sources need it

    try:
        names = pq.read_schema(src.path).names
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{src.name}: cannot read Parquet ({exc}).") from exc
    return _columnar_records(names, lambda wanted: pq.read_table(src.path, columns=wanted).to_pydict())


def _read_saved_dataset(src: _Source) -> _Records:
    import datasets  # lazy: heavy import, only for folder and hub sources

    try:
        loaded = datasets.load_from_disk(str(src.path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError/... for foreign folders
        raise DataError(
            f"{src.name}: not a folder written by datasets' save_to_disk ({exc}). "
            f"Pass a {'/'.join(FILE_SUFFIXES)} file or such a folder."
        ) from exc
    dataset = _pick_split(src, loaded, hint=f"{src.path}@SPLIT")
    return _columnar_records(dataset.column_names, lambda wanted: dataset.select_columns(wanted).to_dict())


def _read_hub_dataset(src: _Source) -> _Records:
    # Real network code, kept simple; offline tests exercise it through a stubbed load_dataset.
    import datasets

    try:
        loaded = datasets.load_dataset(src.hub_id, src.hub_config, split=src.split)
    except Exception as exc:  # network, auth, missing config/split: all mean "cannot use this id"
        raise DataError(
            f"could not load hub dataset '{src.name}' ({type(exc).__name__}: {exc}). "
            "Check the id (ID[:CONFIG][@SPLIT]) and your network, or pass a local "
            f"{'/'.join(FILE_SUFFIXES)} file or a save_to_disk folder instead."
        ) from exc
    dataset = _pick_split(
        src, loaded, hint=f"{src.hub_id}{':' + src.hub_config if src.hub_config else ''}@SPLIT"
    )
    return _columnar_records(dataset.column_names, lambda wanted: dataset.select_columns(wanted).to_dict())


def _pick_split(src: _Source, loaded: Any, hint: str) -> Any:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded
    splits = list(loaded.keys())
    if src.split is None:
        raise DataError(f"{src.name} holds several splits ({', '.join(splits)}); name one as {hint}.")
    if src.split not in loaded:
        raise DataError(f"{src.name}: no split '{src.split}'; available splits: {', '.join(splits)}.")
    return loaded[src.split]


def _columnar_records(columns: list[str], read_columns: Callable[[list[str]], dict[str, list]]) -> _Records:
    """Records of an Arrow-backed source; `read_columns(wanted)` (column -> values) runs only when
    iterated, after the column check, and reads just the wanted columns."""

    def records(wanted: list[str]) -> Iterator[_Raw]:
        data = read_columns(wanted)
        for index, values in enumerate(zip(*(data[name] for name in wanted), strict=True)):
            yield _Raw(index + 1, dict(zip(wanted, values, strict=True)))

    return _Records(list(columns), records)
