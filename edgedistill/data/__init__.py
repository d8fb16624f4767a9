"""Reading labelled data files, for training (compress) and for accuracy measurements (bench) alike.

A recipe's `data:` section (`DataConfig`) names a source: a TSV/CSV/JSONL/JSON/Parquet file, a
``save_to_disk`` folder, or a hub id ``ID[:CONFIG][@SPLIT]``. `read_examples` resolves it, checks
that the configured columns exist and turns rows into `Example`s. Bad rows are counted per reason
with their row numbers and skipped, or refused at the first one under ``strict``; a `DataReport`
says what happened.

- `config`: `DataConfig`.
- `sources`: local file/folder or hub id.
- `readers`: raw records per format (`iter_jsonl` for JSONL stores).
- `report`: bad-row categories, `BadRow`, `DataReport`, `Example`.
- `examples`: columns, text and label checks, `read_examples`.

Tokenizing, caching and batching for training live in `edgedistill.compress.data`.
"""

from __future__ import annotations

from edgedistill.data.config import DataConfig
from edgedistill.data.examples import read_examples
from edgedistill.data.readers import iter_jsonl
from edgedistill.data.report import (
    EMPTY_TEXT,
    LABEL_NOT_INTEGER,
    LABEL_OUT_OF_RANGE,
    MALFORMED_ROW,
    MAX_REPORTED_BAD_ROWS,
    MISSING_LABEL,
    UNDECODABLE,
    BadRow,
    DataReport,
    Example,
)
from edgedistill.data.sources import FILE_SUFFIXES

__all__ = [
    "EMPTY_TEXT",
    "FILE_SUFFIXES",
    "LABEL_NOT_INTEGER",
    "LABEL_OUT_OF_RANGE",
    "MALFORMED_ROW",
    "MAX_REPORTED_BAD_ROWS",
    "MISSING_LABEL",
    "UNDECODABLE",
    "BadRow",
    "DataConfig",
    "DataReport",
    "Example",
    "iter_jsonl",
    "read_examples",
]
