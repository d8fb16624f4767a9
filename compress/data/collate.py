"""Batching: pad each batch to its longest row, int64 tensors, labels padded with -100."""

from __future__ import annotations

import logging
from typing import Any

import torch

from edgedistill.compress.losses.base import IGNORE_INDEX
from edgedistill.errors import DataError

logger = logging.getLogger(__name__)


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
