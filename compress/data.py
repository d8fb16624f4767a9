"""Train/eval data: read labelled text from files or the hub, count bad rows, tokenize once, pad per batch.

The path from a recipe's `data:` section to training batches:

1. `read_examples` resolves the source (TSV/CSV/JSONL/JSON/Parquet file, a `save_to_disk`
   folder, or a hub id `ID[:CONFIG][@SPLIT]`), checks that the configured columns exist, and
   turns rows into `Example`s. Bad rows are counted per reason with their row numbers and
   skipped, or refused at the first one under `--strict`; a `DataReport` says what happened.
2. `load_split` tokenizes the kept examples (truncated to `max_length`, not padded) into a
   `TokenizedDataset`, caching the result under a key built from the file's content, the
   tokenizer and every option that changes the output, so a second run skips the work.
3. `PadCollator` pads each batch to its longest row and returns int64 tensors.

Causal language models (`causal_lm=True`) read plain text (`data.text_column`: every token is a
target) or prompt/response pairs (`data.prompt_column` + `data.response_column`, e.g. the JSONL
store of `edgedistill generate`: prompt tokens are context only). Their rows carry `labels`: the
input ids with -100 wherever there is no target (transformers' convention; the losses shift them
for next-token prediction), and the collator pads labels with -100.

The cache holds JSON and `.npy` arrays only (no pickle), written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from edgedistill.compress.config import DataConfig
from edgedistill.compress.losses.base import IGNORE_INDEX
from edgedistill.errors import DataError
from edgedistill.io import atomic_dir, sha256_file

logger = logging.getLogger(__name__)

PairMode = Literal["joint", "separate"]

FILE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".parquet")
# Suffixes that mark a string as a local file name rather than a hub id, even when the file is missing.
_LOCAL_LOOKING_SUFFIXES = {*FILE_SUFFIXES, ".txt", ".gz", ".arrow", ".ndjson"}
MAX_REPORTED_BAD_ROWS = 20
# Bump when the cache layout or tokenization changes, so old entries are never read back.
CACHE_FORMAT_VERSION = 1
_TOKENIZE_CHUNK_ROWS = 2048
_INT_PATTERN = re.compile(r"[+-]?\d+")

# Bad-row categories (the keys of DataReport.bad_rows).
EMPTY_TEXT = "empty text"
LABEL_OUT_OF_RANGE = "label out of range"
LABEL_NOT_INTEGER = "label not an integer"
MISSING_LABEL = "missing label"
UNDECODABLE = "undecodable"
MALFORMED_ROW = "malformed row"


# --------------------------------------------------------------------------- reports and examples


@dataclass
class BadRow:
    """One refused row. `row` is 1-based: the line number for TSV/CSV/JSONL (a header is line 1),
    the record number for Parquet, JSON arrays and datasets."""

    file: str
    row: int
    reason: str  # one of the categories above; DataReport.bad_rows counts these
    detail: str = ""  # what exactly was wrong, for the human reading the report

    def describe(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.file}, row {self.row}: {self.reason}{detail}"


@dataclass
class DataReport:
    """What reading one source did: rows read, kept, and skipped per reason with the first examples."""

    source: str
    rows_read: int
    rows_kept: int
    bad_rows: dict[str, int] = field(default_factory=dict)
    examples: list[BadRow] = field(default_factory=list)
    stopped_at_max_samples: bool = False  # reading stopped early because max_samples rows were kept

    def add_bad(self, bad: BadRow) -> None:
        self.bad_rows[bad.reason] = self.bad_rows.get(bad.reason, 0) + 1
        if len(self.examples) < MAX_REPORTED_BAD_ROWS:
            self.examples.append(bad)

    @property
    def rows_skipped(self) -> int:
        return sum(self.bad_rows.values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataReport:
        values = dict(data)
        values["examples"] = [BadRow(**bad) for bad in values.get("examples", [])]
        return cls(**values)

    def summary(self) -> str:
        line = f"{self.source}: {self.rows_read} rows, {self.rows_kept} kept"
        if self.rows_skipped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.bad_rows.items()))
            line += f", {self.rows_skipped} skipped ({reasons})"
        if self.stopped_at_max_samples:
            line += f"; stopped reading after {self.rows_kept} kept rows (max_samples)"
        return line


@dataclass
class Example:
    text: str
    text_pair: str | None
    label: int | None


# --------------------------------------------------------------------------- where the data comes from


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


# --------------------------------------------------------------------------- raw records per format


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
        header_line = fh.readline()
    if not header_line.strip():
        raise DataError(f"{src.name}: the file is empty; a TSV needs a header line naming its columns.")
    try:
        header = [name.strip() for name in header_line.decode("utf-8-sig").rstrip("\r\n").split("\t")]
    except UnicodeDecodeError as exc:
        raise DataError(f"{src.name}: the header line is not UTF-8 ({exc}); save the file as UTF-8.") from exc

    def records(_wanted: list[str]) -> Iterator[_Raw]:
        with open(src.path, "rb") as fh:
            fh.readline()  # the header, read above
            for line_number, raw in enumerate(fh, start=2):
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
        for line_number, raw in enumerate(fh, start=1):
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
    try:
        rows = json.loads(src.path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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


# --------------------------------------------------------------------------- records to examples


@dataclass(frozen=True)
class _Columns:
    text: str
    text_pair: str | None
    label: str | None  # None when labels are not needed
    # Recipe keys naming the two text columns: prompt/response data reuses the text/pair slots.
    text_key: str = "data.text_column"
    text_pair_key: str = "data.text_pair_column"

    def wanted(self) -> list[tuple[str, str]]:
        """(column, recipe key) pairs to check."""
        pairs = [(self.text, self.text_key)]
        if self.text_pair:
            pairs.append((self.text_pair, self.text_pair_key))
        if self.label:
            pairs.append((self.label, "data.label_column"))
        return pairs

    def what(self, key: str) -> str:
        """How a bad-row detail names a column: text, text pair, prompt, response."""
        names = {"data.text_column": "text", "data.text_pair_column": "text pair"}
        return names.get(key, key.removeprefix("data.").removesuffix("_column"))


def _columns_for(cfg: DataConfig, needs_labels: bool, causal_lm: bool = False) -> _Columns:
    if causal_lm:
        if cfg.prompt_column and cfg.response_column:
            return _Columns(
                cfg.prompt_column,
                cfg.response_column,
                None,
                text_key="data.prompt_column",
                text_pair_key="data.response_column",
            )
        return _Columns(cfg.text_column, None, None)
    if needs_labels and not cfg.label_column:
        raise DataError(
            "this task needs labels, but data.label_column is not set; set it to the label column's name."
        )
    return _Columns(cfg.text_column, cfg.text_pair_column, cfg.label_column if needs_labels else None)


def _check_columns(name: str, available: Sequence[str], columns: _Columns) -> None:
    missing = [(column, key) for column, key in columns.wanted() if column not in available]
    if not missing:
        return
    problems = "; ".join(f"column '{column}' not found (set {key})" for column, key in missing)
    raise DataError(
        f"{name}: {problems}. The data has columns: {', '.join(map(str, available)) or '(none)'}. "
        "Set the recipe key(s) to one of these names."
    )


def _text_problem(value: Any, what: str) -> tuple[str, str] | None:
    if value is None:
        return EMPTY_TEXT, f"no {what}"
    if not isinstance(value, str):
        return MALFORMED_ROW, f"{what} is {type(value).__name__}, expected a string"
    if not value.strip():
        return EMPTY_TEXT, f"{what} is blank"
    return None


def _parse_label(value: Any, num_labels: int | None) -> int | tuple[str, str]:
    """The label as an int, or the (category, detail) of why it is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING_LABEL, "empty label"
    if isinstance(value, bool):
        return LABEL_NOT_INTEGER, f"{value!r}"
    if isinstance(value, (int, np.integer)):
        label = int(value)
    elif isinstance(value, float) and value.is_integer():
        label = int(value)  # Parquet/pandas often store int labels as floats
    elif isinstance(value, str) and _INT_PATTERN.fullmatch(value.strip()):
        label = int(value.strip())
    else:
        return LABEL_NOT_INTEGER, f"{value!r}"
    if label < 0:
        # Hub test splits mark "no label" with -1.
        return LABEL_OUT_OF_RANGE, f"{label} is negative (unlabelled row?)"
    if num_labels is not None and label >= num_labels:
        return LABEL_OUT_OF_RANGE, f"{label} not in 0..{num_labels - 1}"
    return label


def _to_example(
    fields: dict[str, Any], columns: _Columns, num_labels: int | None
) -> Example | tuple[str, str]:
    problem = _text_problem(fields.get(columns.text), columns.what(columns.text_key))
    if problem:
        return problem
    text_pair = None
    if columns.text_pair:
        text_pair = fields.get(columns.text_pair)
        problem = _text_problem(text_pair, columns.what(columns.text_pair_key))
        if problem:
            return problem
    label = None
    if columns.label:
        parsed = _parse_label(fields.get(columns.label), num_labels)
        if isinstance(parsed, tuple):
            return parsed
        label = parsed
    return Example(fields[columns.text], text_pair, label)


def read_examples(
    source: str,
    cfg: DataConfig,
    *,
    needs_labels: bool,
    num_labels: int | None,
    max_samples: int | None = None,
    causal_lm: bool = False,
) -> tuple[list[Example], DataReport]:
    """Read `source` into examples, skipping (or, under cfg.strict, refusing) bad rows.

    `max_samples` keeps the first N good rows and stops reading there; callers pass
    cfg.max_train_samples or cfg.max_eval_samples as fits the split. With `causal_lm`,
    prompt/response data becomes examples with text = prompt and text_pair = response.
    """
    src = _resolve_source(source)
    columns = _columns_for(cfg, needs_labels, causal_lm)
    opened = _open_records(src)
    if opened.columns is not None:
        _check_columns(src.name, opened.columns, columns)
    examples, report = _collect_examples(
        src.name, opened, columns, strict=cfg.strict, num_labels=num_labels, max_samples=max_samples
    )
    if not examples:
        raise DataError(_no_rows_message(report))
    if report.rows_skipped:
        logger.warning("%s", report.summary())
    return examples, report


def _collect_examples(
    name: str,
    opened: _Records,
    columns: _Columns,
    *,
    strict: bool,
    num_labels: int | None,
    max_samples: int | None,
) -> tuple[list[Example], DataReport]:
    """Turn records into examples, counting (or under strict, refusing) the bad ones."""
    report = DataReport(source=name, rows_read=0, rows_kept=0)
    examples: list[Example] = []
    checked = opened.columns is not None
    wanted = [column for column, _key in columns.wanted()]
    with contextlib.closing(opened.iter_records(wanted)) as records:
        for raw in records:
            if not checked and raw.fields is not None:
                # JSON records carry their own keys: the first good one stands for the file.
                _check_columns(name, list(raw.fields), columns)
                checked = True
            report.rows_read += 1
            result = _to_example(raw.fields, columns, num_labels) if raw.problem is None else raw.problem
            if isinstance(result, Example):
                examples.append(result)
                if max_samples is not None and len(examples) >= max_samples:
                    report.stopped_at_max_samples = True
                    break
                continue
            bad = BadRow(name, raw.row, *result)
            if strict:
                raise DataError(
                    f"{bad.describe()}. Fix the row, or drop --strict (data.strict) to count and skip bad rows."
                )
            report.add_bad(bad)
    report.rows_kept = len(examples)
    return examples, report


def _no_rows_message(report: DataReport) -> str:
    if report.rows_read == 0:
        return f"{report.source}: no data rows. Point data.train / data.eval at a file with rows below its header."
    first = "; ".join(bad.describe() for bad in report.examples[:3])
    return (
        f"no usable rows in {report.summary()}. First problems: {first}. "
        "Check data.text_column / data.label_column and the file's contents."
    )


# --------------------------------------------------------------------------- tokenized dataset


class _Ragged:
    """Variable-length int sequences stored flat (values + offsets): compact, and saves as two .npy arrays."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values = values
        self.offsets = offsets

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> _Ragged:
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter((v for row in rows for v in row), dtype=np.int32, count=int(offsets[-1]))
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[int]:
        return self.values[self.offsets[i] : self.offsets[i + 1]].tolist()


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenized examples (not padded). Items are dicts of python lists/ints:
    input_ids, attention_mask, token_type_ids (if the tokenizer makes them), labels (if labelled),
    example_index; with pair_mode="separate" also pair_input_ids, pair_attention_mask, pair_token_type_ids.
    """

    def __init__(
        self,
        examples: list[Example],
        report: DataReport,
        features: dict[str, _Ragged],
        *,
        from_cache: bool = False,
        cache_path: Path | None = None,
    ):
        self.examples = examples
        self.report = report
        self.from_cache = from_cache  # True when the tokens were read back from the cache
        self.cache_path = cache_path  # None when nothing could be cached
        self._features = features
        self._has_labels = bool(examples) and examples[0].label is not None

    @property
    def feature_names(self) -> list[str]:
        return list(self._features)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} rows")
        item: dict[str, Any] = {name: ragged[i] for name, ragged in self._features.items()}
        if self._has_labels:
            item["labels"] = self.examples[i].label
        item["example_index"] = i
        return item


def _tokenize(examples: list[Example], tokenizer: Any, max_length: int, pair_mode: str) -> dict[str, _Ragged]:
    texts = [ex.text for ex in examples]
    pairs = [ex.text_pair for ex in examples] if examples[0].text_pair is not None else None
    if pairs is not None and pair_mode == "separate":
        first = _tokenize_texts(tokenizer, texts, None, max_length)
        second = _tokenize_texts(tokenizer, pairs, None, max_length)
        return {**first, **{f"pair_{name}": ragged for name, ragged in second.items()}}
    return _tokenize_texts(tokenizer, texts, pairs, max_length)


def _tokenize_texts(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int
) -> dict[str, _Ragged]:
    columns: dict[str, list[list[int]]] = {}
    # Chunks keep the tokenizer's intermediate objects small on big train sets.
    for start in range(0, len(texts), _TOKENIZE_CHUNK_ROWS):
        chunk_pairs = pairs[start : start + _TOKENIZE_CHUNK_ROWS] if pairs is not None else None
        encoded = tokenizer(
            texts[start : start + _TOKENIZE_CHUNK_ROWS],
            chunk_pairs,
            truncation=True,
            max_length=max_length,
            padding=False,
        )
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name in encoded:
                columns.setdefault(name, []).extend(encoded[name])
    return {name: _Ragged.from_lists(rows) for name, rows in columns.items()}


def _tokenize_causal(
    examples: list[Example], tokenizer: Any, max_length: int, append_eos: bool
) -> dict[str, _Ragged]:
    """input_ids, attention_mask and labels (-100 on prompt tokens) for next-token training.

    Prompt and response are tokenized apart and joined as ids, so the prompt's tokens are
    exactly its own (no merge across the boundary) and the targets start at the response.
    A text that already starts with the BOS token (a chat template was applied, as in the
    `edgedistill generate` store) gets no second one. EOS ends a text/response unless it is
    already there, and only when the whole row fits in ``max_length``.
    """
    eos = tokenizer.eos_token_id if append_eos else None
    paired = examples[0].text_pair is not None
    ids_rows: list[list[int]] = []
    label_rows: list[list[int]] = []
    no_target = 0
    for start in range(0, len(examples), _TOKENIZE_CHUNK_ROWS):
        chunk = examples[start : start + _TOKENIZE_CHUNK_ROWS]
        first = _token_ids(tokenizer, [ex.text for ex in chunk], special_tokens=True)
        second = (
            _token_ids(tokenizer, [ex.text_pair for ex in chunk], special_tokens=False) if paired else None
        )
        for i, ids in enumerate(first):
            prompt, target = (ids, list(second[i])) if paired else ([], list(ids))
            if eos is not None and (not target or target[-1] != eos):
                target.append(eos)
            row = (prompt + target)[:max_length]
            labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
            # Position 0 is never predicted (nothing precedes it), so a row needs a target after it.
            if all(label == IGNORE_INDEX for label in labels[1:]):
                no_target += 1
            ids_rows.append(row)
            label_rows.append(labels)
    if no_target:
        logger.warning(
            "%d of %d rows have no target token left within data.max_length=%d (a prompt that long, or an empty "
            "text): they add nothing to the loss. Raise data.max_length or shorten the prompts.",
            no_target,
            len(examples),
            max_length,
        )
    return {
        "input_ids": _Ragged.from_lists(ids_rows),
        "attention_mask": _Ragged.from_lists([[1] * len(row) for row in ids_rows]),
        "labels": _Ragged.from_lists(label_rows),
    }


def _token_ids(tokenizer: Any, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
    """Untruncated token ids; with ``special_tokens``, the tokenizer's own (BOS...) except for texts
    that already begin with the BOS token."""
    options = dict(truncation=False, padding=False, return_attention_mask=False, return_token_type_ids=False)
    bos = getattr(tokenizer, "bos_token", None)
    templated = [bool(special_tokens and bos and text.startswith(bos)) for text in texts]
    rows: list[list[int] | None] = [None] * len(texts)
    for has_bos in (False, True):
        picked = [i for i, flag in enumerate(templated) if flag == has_bos]
        if picked:
            encoded = tokenizer(
                [texts[i] for i in picked], add_special_tokens=special_tokens and not has_bos, **options
            )["input_ids"]
            for i, ids in zip(picked, encoded, strict=True):
                rows[i] = list(ids)
    return rows  # type: ignore[return-value]


# --------------------------------------------------------------------------- cache


def _cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("EDGEDISTILL_CACHE") or "~/.cache/edgedistill"
    return Path(root).expanduser() / "tokenized"


def _source_fingerprint(src: _Source) -> dict[str, Any]:
    if src.kind == "hub":
        return {"hub": src.name}
    if src.path.is_file():
        return {"sha256": sha256_file(src.path)}
    digest = hashlib.sha256()
    for file in sorted(p for p in src.path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(src.path).as_posix()}\0{sha256_file(file)}\n".encode())
    return {"folder_sha256": digest.hexdigest(), "split": src.split}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides the token ids: the class, and the full tokenizer JSON (fast) or vocabulary (slow)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # transformers rewrites these on every call; they are passed explicitly here anyway.
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = {
            "vocab": sorted(tokenizer.get_vocab().items()),
            "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        }
    material = {
        "class": type(tokenizer).__name__,
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
        "spec": spec,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _cache_key(
    src: _Source,
    tokenizer: Any,
    cfg: DataConfig,
    columns: _Columns,
    *,
    pair_mode: str,
    max_samples: int | None,
    num_labels: int | None,
    causal_lm: bool = False,
) -> str:
    material: dict[str, Any] = {
        "format": CACHE_FORMAT_VERSION,
        "source": _source_fingerprint(src),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": cfg.max_length,
        "columns": [columns.text, columns.text_pair, columns.label],
        "pair_mode": pair_mode,
        "max_samples": max_samples,
        "strict": cfg.strict,
        "num_labels": num_labels,
    }
    if causal_lm:  # only here, so existing cache entries of the other tasks keep their keys
        eos = tokenizer.eos_token_id if cfg.append_eos else None
        material["causal_lm"] = {"eos": eos, "columns": [columns.text_key, columns.text_pair_key]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _save_cache(path: Path, dataset: TokenizedDataset) -> None:
    with atomic_dir(path) as tmp:
        arrays = {}
        for name, ragged in dataset._features.items():
            arrays[f"{name}.values"] = ragged.values
            arrays[f"{name}.offsets"] = ragged.offsets
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        examples = {
            "text": [ex.text for ex in dataset.examples],
            "text_pair": [ex.text_pair for ex in dataset.examples],
            "label": [ex.label for ex in dataset.examples],
        }
        (tmp / "examples.json").write_text(json.dumps(examples, ensure_ascii=False), encoding="utf-8")
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "features": list(dataset._features),
            "report": dataset.report.to_dict(),
        }
        # meta.json last: its presence marks a complete entry.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _load_cache(path: Path, src: _Source) -> TokenizedDataset | None:
    if not (path / "meta.json").is_file():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT_VERSION:
            return None
        raw = json.loads((path / "examples.json").read_text(encoding="utf-8"))
        examples = [Example(*row) for row in zip(raw["text"], raw["text_pair"], raw["label"], strict=True)]
        features = {
            name: _Ragged(
                np.load(path / f"{name}.values.npy", allow_pickle=False),
                np.load(path / f"{name}.offsets.npy", allow_pickle=False),
            )
            for name in meta["features"]
        }
        report = DataReport.from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable tokenization cache %s (%s); tokenizing again", path, exc)
        return None
    # The key is content-based: the same file under another name hits, so report the current name.
    report.source = src.name
    for bad in report.examples:
        bad.file = src.name
    return TokenizedDataset(examples, report, features, from_cache=True, cache_path=path)


def load_split(
    source: str,
    cfg: DataConfig,
    tokenizer: Any,
    *,
    needs_labels: bool,
    num_labels: int | None,
    max_samples: int | None = None,
    pair_mode: PairMode = "joint",
    causal_lm: bool = False,
) -> TokenizedDataset:
    """Read and tokenize one split, reusing the tokenization cache when nothing that matters changed.

    pair_mode "joint" encodes text and text pair as one sequence (cross-encoder); "separate"
    encodes them independently into input_ids and pair_input_ids (bi-encoder). It is ignored
    when data.text_pair_column is not set.

    ``causal_lm`` makes next-token training rows instead (see the module docstring): items carry
    input_ids, attention_mask and per-token labels; labels of the task are not read.
    """
    if pair_mode not in ("joint", "separate"):
        raise ValueError(f"pair_mode must be 'joint' or 'separate', not {pair_mode!r}")
    src = _resolve_source(source)
    columns = _columns_for(cfg, needs_labels, causal_lm)
    effective_mode = "causal-lm" if causal_lm else pair_mode if columns.text_pair else "none"
    key = _cache_key(
        src,
        tokenizer,
        cfg,
        columns,
        pair_mode=effective_mode,
        max_samples=max_samples,
        num_labels=num_labels,
        causal_lm=causal_lm,
    )
    path = _cache_root(cfg) / key
    cached = _load_cache(path, src)
    if cached is not None:
        logger.info("%s: tokenized data read from cache %s", src.name, path)
        return cached

    examples, report = read_examples(
        source,
        cfg,
        needs_labels=needs_labels,
        num_labels=num_labels,
        max_samples=max_samples,
        causal_lm=causal_lm,
    )
    if causal_lm:
        features = _tokenize_causal(examples, tokenizer, cfg.max_length, cfg.append_eos)
    else:
        features = _tokenize(examples, tokenizer, cfg.max_length, effective_mode)
    dataset = TokenizedDataset(examples, report, features, cache_path=path)
    try:
        _save_cache(path, dataset)
    except OSError as exc:
        # A read-only or full cache disk slows the next run down; it must not stop this one.
        logger.warning(
            "could not write tokenization cache %s (%s); set data.cache_dir to a writable folder", path, exc
        )
        dataset.cache_path = None
    return dataset


# --------------------------------------------------------------------------- batching


_SEQUENCE_GROUPS = (
    ("input_ids", "attention_mask", "token_type_ids"),
    ("pair_input_ids", "pair_attention_mask", "pair_token_type_ids"),
)


class PadCollator:
    """Pads each batch to its longest sequence (per group: text, and pair in separate mode); int64 tensors out.

    Per-token ``labels`` (causal-lm rows) are padded with -100 to the width of ``input_ids``.
    ``pad_token_id`` and ``padding_side`` override the tokenizer's: causal-lm training pads on the
    right (positions then count from each row's first token) and may pad with any id, since
    padded positions are masked everywhere.
    """

    def __init__(self, tokenizer: Any, *, pad_token_id: int | None = None, padding_side: str | None = None):
        pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        if pad_token_id is None:
            raise DataError(
                f"the tokenizer ({type(tokenizer).__name__}) has no pad token, so batches cannot be padded. "
                "Set one before training, e.g. tokenizer.pad_token = tokenizer.eos_token."
            )
        self.pad_token_id = int(pad_token_id)
        self.pad_left = (padding_side or getattr(tokenizer, "padding_side", "right")) == "left"

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        batch: dict[str, torch.Tensor] = {}
        for ids_key, *other_keys in _SEQUENCE_GROUPS:
            if ids_key not in items[0]:
                continue
            width = max(len(item[ids_key]) for item in items)
            keys = [ids_key, *other_keys]
            if ids_key == "input_ids" and isinstance(items[0].get("labels"), list):
                keys.append("labels")
            for key in keys:
                if key in items[0]:
                    pad_value = {ids_key: self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
                    batch[key] = self._pad([item[key] for item in items], width, pad_value)
        for key in items[0]:
            if key not in batch:
                batch[key] = torch.tensor([item[key] for item in items], dtype=torch.int64)
        return batch

    def _pad(self, rows: list[list[int]], width: int, pad_value: int) -> torch.Tensor:
        out = torch.full((len(rows), width), pad_value, dtype=torch.int64)
        for i, row in enumerate(rows):
            if row:
                values = torch.as_tensor(row, dtype=torch.int64)
                if self.pad_left:
                    out[i, width - len(row) :] = values
                else:
                    out[i, : len(row)] = values
        return out


def collator_for(tokenizer: Any, task: str) -> PadCollator:
    """The batch collator of a task. Causal LMs pad on the right, with the EOS id when the
    tokenizer has no pad token (common for decoders): padded positions are masked anyway."""
    if task != "causal-lm":
        return PadCollator(tokenizer)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    return PadCollator(tokenizer, pad_token_id=pad_id, padding_side="right")
