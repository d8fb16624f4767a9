"""Accuracy in the bench harness: the eval split, and task metrics / agreement computed from predictions.

Predictions (logits or sentence embeddings) come from the measuring processes; here they are
turned into the task metric (accuracy for classification) and agreement with the reference
(top-1 agreement and accuracy drop, or cosine of embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.io import sha256_file


@dataclass
class EvalData:
    path: str
    texts: list[str | tuple[str, str]]
    labels: list[int] | None
    report: dict[str, Any]


def read_eval_data(
    source: str | Path,
    *,
    text_column: str = "sentence",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    needs_labels: bool,
    max_samples: int | None = None,
) -> EvalData:
    """Read the eval split with edgedistill's data readers (TSV/CSV/JSONL/Parquet/datasets folder)."""
    from edgedistill.data import DataConfig, read_examples

    cfg = DataConfig(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    examples, report = read_examples(
        str(source),
        cfg,
        needs_labels=needs_labels and bool(label_column),
        num_labels=None,
        max_samples=max_samples,
    )
    texts: list[str | tuple[str, str]] = [
        (e.text, e.text_pair) if e.text_pair is not None else e.text for e in examples
    ]
    labels = (
        [int(e.label) for e in examples]
        if needs_labels and label_column and examples[0].label is not None
        else None
    )
    info = report.to_dict()
    path = Path(str(source))
    if path.is_file():
        info["sha256"] = sha256_file(path)
    return EvalData(path=str(source), texts=texts, labels=labels, report=info)


def _cosine_rows(a, b):
    import numpy as np

    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def accuracy_block(
    task: str,
    predictions,
    labels: list[int] | None,
    reference_predictions=None,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Task metric and agreement with the reference, from predictions (logits or embeddings)."""
    import numpy as np

    block: dict[str, Any] = {"n": int(predictions.shape[0]), "reference": reference}
    if task == "sequence-classification":
        pred = predictions.argmax(axis=1)
        block["metric"] = "accuracy"
        block["accuracy"] = float((pred == np.asarray(labels)).mean()) if labels is not None else None
        if reference_predictions is not None:
            ref = reference_predictions.argmax(axis=1)
            block["agreement"] = float((pred == ref).mean())
            block["reference_accuracy"] = (
                float((ref == np.asarray(labels)).mean()) if labels is not None else None
            )
            if block["accuracy"] is not None and block["reference_accuracy"] is not None:
                block["accuracy_drop"] = block["reference_accuracy"] - block["accuracy"]
            block["max_abs_logit_diff"] = float(np.abs(predictions - reference_predictions).max())
    else:
        block["metric"] = "cosine to reference"
        if reference_predictions is not None:
            cos = _cosine_rows(predictions, reference_predictions)
            block["cosine_mean"] = float(cos.mean())
            block["cosine_min"] = float(cos.min())
            block["cosine_p5"] = float(np.percentile(cos, 5))
    return block
