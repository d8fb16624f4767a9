"""The validation split fit ranks on, carved from the training data before anything is trained.

Choosing a student on the split a report quotes overfits that split (the hand-made SST-2
headline keeps 99.0 % of its teacher on the dev split its recipe was chosen on, ~98.2 % on
sentences it never saw). So `carve` splits the *training* rows with a seeded shuffle into
``fit/data/train.jsonl`` and ``fit/data/val.jsonl`` (the recipe's own column names, JSON lines:
no quoting trouble with tabs or newlines in text), once: a resumed or second worker reads the
same files, checked against the recorded source hash.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from edgedistill.errors import ConfigError
from edgedistill.fit.config import ProxyConfig
from edgedistill.io import atomic_write_json, atomic_write_text, sha256_file

SPLIT_META = "split.json"


def _columns(data, task: str) -> tuple[str, str | None, str | None]:
    if task == "causal-lm" and data.prompt_column:
        return data.prompt_column, data.response_column, None
    label = data.label_column if task == "sequence-classification" else None
    return data.text_column, data.text_pair_column, label


def carve(recipe, folder: Path, cfg: ProxyConfig, seed: int) -> dict[str, Any]:
    """Write (or reuse) the train/val split of ``recipe.data.train``; returns paths and counts."""
    from edgedistill.data import read_examples

    data, task = recipe.data, recipe.task
    if not data.train:
        raise ConfigError(
            "fit", [("distill.data.train", "fit carves its validation split from the training data")]
        )
    source = Path(data.train)
    source_hash = sha256_file(source) if source.is_file() else f"not-a-local-file:{data.train}"
    wanted = {
        "source": str(data.train),
        "source_sha256": source_hash,
        "validation_fraction": cfg.validation_fraction,
        "validation_max_rows": cfg.validation_max_rows,
        "train_rows": cfg.train_rows,
        "seed": seed,
    }
    meta_path = folder / SPLIT_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in wanted} == wanted:
            return meta
    examples, _ = read_examples(
        data.train,
        data,
        needs_labels=task == "sequence-classification",
        num_labels=None,
        max_samples=data.max_train_samples,
        causal_lm=task == "causal-lm",
    )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(cfg.validation_max_rows, max(1, round(len(order) * cfg.validation_fraction)))
    if len(order) - n_val < 8:
        raise ConfigError(
            "fit", [("distill.data.train", f"{len(order)} rows cannot be split into training and validation")]
        )
    val_idx, train_idx = order[:n_val], order[n_val:]
    if cfg.train_rows is not None:
        train_idx = train_idx[: cfg.train_rows]
    text_col, pair_col, label_col = _columns(data, task)

    def lines(indices: list[int]) -> str:
        rows = []
        for i in sorted(indices):  # file order kept: the split is a choice of rows, not a reshuffle
            ex = examples[i]
            row: dict[str, Any] = {text_col: ex.text}
            if pair_col:
                row[pair_col] = ex.text_pair
            if label_col:
                row[label_col] = ex.label
            rows.append(json.dumps(row, ensure_ascii=False))
        return "\n".join(rows) + "\n"

    atomic_write_text(folder / "train.jsonl", lines(train_idx))
    atomic_write_text(folder / "val.jsonl", lines(val_idx))
    meta = {
        **wanted,
        "train": str((folder / "train.jsonl").resolve()),
        "val": str((folder / "val.jsonl").resolve()),
        "train_count": len(train_idx),
        "val_count": len(val_idx),
    }
    atomic_write_json(meta_path, meta)
    return meta
