"""What parity runs on: built-in or user sentences, encoded to the student's length, and calibration feeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgedistill.errors import DataError
from edgedistill.export.config import ExportConfig

if TYPE_CHECKING:
    from edgedistill.export.core import StudentInfo

# Varied English: short and long, questions, numbers, punctuation, names, a little noise.


BUILTIN_SENTENCES = (
    "Great.",
    "I did not like it at all.",
    "What time does the last train to Boston leave tonight?",
    "The film is a wonderful, moving story about two brothers who grow apart and find their way back.",
    "Terrible service; we waited 45 minutes and the soup was cold.",
    "Please remind me to call Dr. Okafor at 3:30 pm tomorrow.",
    "It's not bad, but it's not good either.",
    "The committee approved the budget after a long debate, although several members voted against it "
    "because they believed the spending on infrastructure was too low.",
    "wow!!! best purchase ever :)",
    "Honestly, the plot made no sense and the acting was wooden.",
    "Can you recommend a quiet restaurant near the river?",
    "The battery lasts about two days with normal use.",
    "She said the results were promising, yet more tests are needed before anyone can be sure.",
    "Absolutely loved the soundtrack.",
    "The package arrived damaged and customer support never answered my emails.",
    "In 1969, two astronauts walked on the Moon while millions watched on television.",
    "meh",
    "The new update fixed the crash, but now the app drains the battery much faster than before, "
    "which is frustrating for anyone who relies on it during a long working day away from a charger.",
    "A clever, funny and surprisingly tender comedy.",
    "Where can I find the user manual for this printer?",
    "The weather was grey and the museum was closed, so we spent the afternoon in a small cafe.",
    "I would not recommend this hotel to anyone.",
    "Tiny changes in the input should not flip the prediction of a robust model.",
    "The quick brown fox jumps over the lazy dog.",
)


# Inputs


def load_sentences(path: str | Path, column: str | None = None, limit: int | None = None) -> list[str]:
    """Sentences from a text file (one a line), JSONL ({"text": ...}) or TSV/CSV with a header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a text file with one sentence a line, or a TSV/CSV")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8") from None
    suffix = path.suffix.lower()
    sentences: list[str] = []
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        fields = reader.fieldnames or []
        name = column or next((c for c in ("sentence", "text", "content") if c in fields), None)
        name = name or (fields[0] if fields else None)
        if name not in fields:
            raise DataError(f"{path} has no column {name!r}; columns are {fields}. Pass --calib-text-column")
        sentences = [row[name] for row in reader if row.get(name)]
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    sentences.append(str(json.loads(line)[column or "text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(
                        f"{path}:{number}: expected a JSON object with a {column or 'text'!r} key"
                    ) from None
    else:
        sentences = [line.strip() for line in text.splitlines()]
    sentences = [s.strip() for s in sentences if s and s.strip()]
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return sentences[:limit] if limit else sentences


def max_sequence_length(student: StudentInfo, tokenizer, cfg: ExportConfig) -> int:
    limits = [cfg.max_length, student.config.get("max_position_embeddings") or cfg.max_length]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 1_000_000:
        limits.append(model_max)
    return int(min(limits))


def encode(tokenizer, sentences: list[str], max_length: int) -> dict[str, np.ndarray]:
    # a single sentence needs no padding (and decoder tokenizers often have no pad token)
    padding = len(sentences) > 1
    enc = tokenizer(sentences, truncation=True, max_length=max_length, padding=padding, return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    feed.setdefault("attention_mask", np.ones_like(feed["input_ids"]))
    return feed


def parity_sentences(cfg: ExportConfig) -> list[str]:
    source = cfg.parity_data or cfg.calib_data
    if source is not None:
        pool = load_sentences(source, cfg.calib_text_column)
        # spread the picks over the file and keep lengths varied: sort by length, take evenly
        pool = sorted(set(pool), key=len)
    else:
        pool = list(BUILTIN_SENTENCES)
    n = min(cfg.parity_samples, len(pool))
    if n == len(pool):
        return pool
    step = (len(pool) - 1) / max(n - 1, 1)
    return [pool[round(i * step)] for i in range(n)]


def parity_feeds(
    tokenizer, sentences: list[str], max_length: int, batched: bool
) -> list[dict[str, np.ndarray]]:
    """One unpadded feed per sentence, plus (``batched``) one padded batch mixing short and long."""
    feeds = [encode(tokenizer, [s], max_length) for s in sentences]
    if batched and len(sentences) >= 2 and getattr(tokenizer, "pad_token_id", None) is not None:
        by_length = sorted(sentences, key=len)
        mixed = list(
            dict.fromkeys([by_length[0], by_length[-1], by_length[len(by_length) // 2], by_length[1]])
        )
        feeds.append(encode(tokenizer, mixed, max_length))
    return feeds


def calibration_feeds(student: StudentInfo, cfg: ExportConfig) -> tuple[list[dict[str, np.ndarray]], str]:
    """Batch-1 feeds for static int8 calibration, and where the sentences came from."""
    tokenizer = student.load_tokenizer()
    max_length = max_sequence_length(student, tokenizer, cfg)
    if cfg.calib_data is not None:
        sentences = load_sentences(cfg.calib_data, cfg.calib_text_column, cfg.calib_samples)
        source = str(cfg.calib_data)
    else:
        sentences = list(BUILTIN_SENTENCES)[: cfg.calib_samples]
        source = f"built-in sentences ({len(sentences)}); pass --calib-data for in-domain calibration"
    return [encode(tokenizer, [s], max_length) for s in sentences], source
