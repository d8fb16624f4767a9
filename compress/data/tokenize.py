"""Tokenized datasets: examples to ragged token arrays (classification, embedding pairs, causal-LM targets)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from edgedistill.compress.losses.base import IGNORE_INDEX
from edgedistill.data.report import DataReport, Example

logger = logging.getLogger(__name__)


PairMode = Literal["joint", "separate"]


_TOKENIZE_CHUNK_ROWS = 2048


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
    already there, and only when the whole row fits in ``max_length``; never a response whose
    finish reason says it was cut off (``Example.stopped`` False: the teacher did not stop there,
    and an EOS target would teach the student to stop mid-sentence).
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
            ends = eos is not None and chunk[i].stopped is not False
            if ends and (not target or target[-1] != eos):
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
