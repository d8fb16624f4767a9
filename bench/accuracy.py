"""Accuracy in the bench harness: the eval split, and task metrics / agreement computed from predictions.

Predictions (logits or sentence embeddings) come from the measuring processes; here they are
turned into the task metric (accuracy for classification) and agreement with the reference
(top-1 agreement and accuracy drop, or cosine of embeddings). A generalist's second output (its
``sentence_embedding`` beside the logits) gets its own block (`embedding_block`): cosine to the
reference's embeddings and recall@10, the retrieval agreement an embedding user relies on.
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


def neighbour_recall(embeddings, reference, k: int = 10) -> float | None:
    """Mean overlap of each text's k nearest texts (cosine, itself excluded) under ``embeddings`` and
    under ``reference`` (the torch twin is `compress.evaluate.neighbour_recall`)."""
    import numpy as np

    n = embeddings.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return None

    def knn(x):
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    a, b = knn(np.asarray(embeddings, np.float64)), knn(np.asarray(reference, np.float64))
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(n)]))


def embedding_block(embeddings, reference_embeddings=None) -> dict[str, Any]:
    """A sentence-embedding output against the reference's: cosine (mean, min, 5th percentile) and recall@10."""
    import numpy as np

    block: dict[str, Any] = {"n": int(embeddings.shape[0]), "metric": "cosine and recall@10 to reference"}
    if reference_embeddings is None or reference_embeddings.shape != embeddings.shape:
        block["status"] = "no reference embeddings of the same shape"
        return block
    cos = _cosine_rows(embeddings, reference_embeddings)
    block.update(
        cosine_mean=float(cos.mean()),
        cosine_min=float(cos.min()),
        cosine_p5=float(np.percentile(cos, 5)),
        recall_at_10=neighbour_recall(embeddings, reference_embeddings, 10),
        status="measured",
    )
    return block
