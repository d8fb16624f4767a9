"""Reading prompts: .txt lines, JSONL/JSON/TSV/CSV/Parquet columns (through edgedistill.data), and their fingerprint."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from edgedistill.compress.generate.config import GenerateError
from edgedistill.errors import DataError

logger = logging.getLogger(__name__)


PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".tsv", ".csv", ".parquet")


def read_prompts(path: str | Path, column: str = "prompt") -> list[str]:
    """Prompts from a file, in file order. Refuses the file, naming every bad line, rather than
    skipping: a skipped prompt would silently shift the prompt ids of a resumed run."""
    name = str(path)
    file = Path(path).expanduser()
    if not file.exists():
        raise GenerateError(f"prompts file not found: {name}. Pass --prompts with an existing file.")
    suffix = file.suffix.lower()
    if file.is_dir() or suffix not in PROMPT_SUFFIXES:
        raise GenerateError(
            f"{name}: unsupported prompts file type '{suffix or '(folder)'}'. Use a .txt file (one prompt a "
            f"line), a .jsonl file (one JSON object a line with a '{column}' field), or {', '.join(PROMPT_SUFFIXES[2:])}."
        )
    if suffix == ".txt":
        prompts = _read_txt(file, name)
    elif suffix == ".jsonl" or (suffix == ".json" and not _starts_with_array(file)):
        prompts = _read_jsonl(file, name, column)
    else:
        prompts = _read_with_data_readers(name, column)
    if not prompts:
        raise GenerateError(f"{name}: no prompts in the file. Add at least one prompt (.txt: one a line).")
    return prompts


def _read_txt(file: Path, name: str) -> list[str]:
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise GenerateError(
            f"{name}, line {line}: not UTF-8 (byte {exc.start}). Save the file as UTF-8."
        ) from None
    # Blank lines separate nothing and are skipped; a prompt spanning lines needs .jsonl.
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _starts_with_array(file: Path) -> bool:
    with open(file, "rb") as fh:
        return fh.read(4096).lstrip().startswith(b"[")


def _read_jsonl(file: Path, name: str, column: str) -> list[str]:
    from edgedistill.data import iter_jsonl

    prompts: list[str] = []
    problems: list[str] = []
    for line_number, record, problem in iter_jsonl(file):
        if problem is not None:
            problems.append(f"line {line_number}: {problem[1]}")
        elif column not in record:
            keys = ", ".join(map(str, record)) or "(none)"
            problems.append(f"line {line_number}: no '{column}' field (fields: {keys})")
        elif not isinstance(record[column], str) or not record[column].strip():
            problems.append(f"line {line_number}: '{column}' is {record[column]!r}, expected non-empty text")
        else:
            prompts.append(record[column])
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise GenerateError(
            f"{name}: {len(problems)} bad line(s):\n{shown}{more}\nEach line must be a JSON object with a "
            f"non-empty '{column}' text field (choose another field with --prompt-column)."
        )
    return prompts


def _read_with_data_readers(name: str, column: str) -> list[str]:
    from edgedistill.compress.config import DataConfig
    from edgedistill.data import read_examples

    cfg = DataConfig(train=name, text_column=column, label_column=None, strict=True)
    try:
        examples, _report = read_examples(name, cfg, needs_labels=False, num_labels=None)
    except DataError as exc:
        raise GenerateError(
            f"{exc}\n(for `edgedistill generate` the prompt column is set with --prompt-column, "
            "and every row needs a non-empty prompt)"
        ) from None
    return [ex.text for ex in examples]


def prompts_fingerprint(prompts: list[str]) -> str:
    return hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()[:20]
