"""Task metrics for teachers and students on the eval split.

Classification: accuracy (and, for a student, KL to the teacher and top-1 agreement).
Embeddings: cosine to the teacher's embedding and recall@10 of the teacher's neighbours
(how many of each sentence's 10 nearest eval sentences under the teacher are also among its
10 nearest under the student): retrieval agreement, the property an embedding user relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from edgedistill.compress.losses import mean_pool

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@torch.no_grad()
def collect_outputs(
    model, dataset, collator, task: str, batch_size: int = 64, device=None
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``dataset``; returns logits (classification) or mean-pooled embeddings, plus labels."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, embeddings, labels = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator):
        inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
        out = model(**inputs, return_dict=True)
        if task == "feature-extraction":
            embeddings.append(mean_pool(out.last_hidden_state, inputs["attention_mask"]).float().cpu())
        else:
            logits.append(out.logits.float().cpu())
        if "labels" in batch:
            labels.append(batch["labels"])
    model.train(was_training)
    result = {}
    if logits:
        result["logits"] = torch.cat(logits)
    if embeddings:
        result["embedding"] = torch.cat(embeddings)
    if labels:
        result["labels"] = torch.cat(labels)
    return result


def classification_metrics(
    outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None = None
) -> dict:
    preds = outputs["logits"].argmax(-1)
    metrics: dict[str, float] = {}
    if "labels" in outputs:
        metrics["accuracy"] = float((preds == outputs["labels"]).float().mean())
    if reference is not None:
        ref_logits = reference["logits"]
        metrics["agreement_with_teacher"] = float((preds == ref_logits.argmax(-1)).float().mean())
        metrics["kl_to_teacher"] = float(
            F.kl_div(
                F.log_softmax(outputs["logits"], -1),
                F.log_softmax(ref_logits, -1),
                log_target=True,
                reduction="batchmean",
            )
        )
    metrics["examples"] = int(preds.numel())
    return metrics


def neighbour_recall(student: torch.Tensor, teacher: torch.Tensor, k: int = 10) -> float:
    """Mean overlap of the k nearest neighbours (cosine, self excluded) under student vs teacher."""
    n = student.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return float("nan")

    def knn(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=-1)
        sims = x @ x.T
        sims.fill_diagonal_(-float("inf"))
        return sims.topk(k, dim=-1).indices

    s, t = knn(student), knn(teacher)
    overlap = [(len(set(s[i].tolist()) & set(t[i].tolist())) / k) for i in range(n)]
    return float(sum(overlap) / n)


@torch.no_grad()
def embedding_metrics(
    outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], projection=None
) -> dict:
    student = outputs["embedding"]
    teacher = reference["embedding"]
    metrics = {"recall_at_10": neighbour_recall(student, teacher, 10), "examples": int(student.shape[0])}
    if student.shape[-1] == teacher.shape[-1] or projection is not None:
        projected = (
            student
            if projection is None
            else projection(student.to(next(projection.parameters()).device)).detach().cpu()
        )
        metrics["cosine_to_teacher"] = float(F.cosine_similarity(projected, teacher, dim=-1).mean())
    return metrics
