"""Records to examples: the configured columns, text and label checks, bad rows counted or refused (`read_examples`)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedistill.data.config import DataConfig
from edgedistill.data.readers import _open_records, _Records
from edgedistill.data.report import (
    EMPTY_TEXT,
    LABEL_NOT_INTEGER,
    LABEL_OUT_OF_RANGE,
    MALFORMED_ROW,
    MISSING_LABEL,
    BadRow,
    DataReport,
    Example,
)
from edgedistill.data.sources import _resolve_source
from edgedistill.errors import DataError

logger = logging.getLogger(__name__)


_INT_PATTERN = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class _Columns:
    text: str
    text_pair: str | None
    label: str | None  # None when labels are not needed
    # Recipe keys naming the two text columns: prompt/response data reuses the text/pair slots.
    text_key: str = "data.text_column"
    text_pair_key: str = "data.text_pair_column"
    # causal-lm: how each response ended, read where the data has it (never required)
    finish_reason: str | None = None

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
                finish_reason=cfg.finish_reason_column,
            )
        return _Columns(cfg.text_column, None, None, finish_reason=cfg.finish_reason_column)
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


# Finish reasons that mean the response ended by a stop (an end-of-sequence token or a stop string):
# `edgedistill generate` and OpenAI/vLLM write "stop", TGI "eos_token" / "stop_sequence". Anything
# else ("length": max_new_tokens hit, "content_filter", "abort", ...) is a response cut off.
STOP_FINISH_REASONS = frozenset({"stop", "eos", "eos_token", "stop_sequence"})


def _parse_stopped(value: Any) -> bool | None | tuple[str, str]:
    """True: the response stopped; False: it was cut off; None: not said (empty or absent)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        return MALFORMED_ROW, f"finish reason is {type(value).__name__}, expected a string"
    return value.strip().lower() in STOP_FINISH_REASONS


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
    stopped = _parse_stopped(fields.get(columns.finish_reason)) if columns.finish_reason else None
    if isinstance(stopped, tuple):
        return stopped
    return Example(fields[columns.text], text_pair, label, stopped)


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
    if columns.finish_reason and (opened.columns is None or columns.finish_reason in opened.columns):
        wanted.append(columns.finish_reason)  # optional: columnar sources read it only where it exists
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
