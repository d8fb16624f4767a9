"""What reading data found: the bad-row categories, `BadRow`, `DataReport`, and the `Example` rows kept."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)


MAX_REPORTED_BAD_ROWS = 20


# Bad-row categories (the keys of DataReport.bad_rows).
EMPTY_TEXT = "empty text"


LABEL_OUT_OF_RANGE = "label out of range"


LABEL_NOT_INTEGER = "label not an integer"


MISSING_LABEL = "missing label"


UNDECODABLE = "undecodable"


MALFORMED_ROW = "malformed row"


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
    # causal-lm: did the response end by a stop (True) or was it cut off (False); None = not said
    stopped: bool | None = None
