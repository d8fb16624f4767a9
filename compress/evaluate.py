"""Task metrics for teachers and students on the eval split.

Classification: accuracy (and, for a student, KL to the teacher and top-1 agreement).
Embeddings: cosine to the teacher's embedding and recall@10 of the teacher's neighbours
(how many of each sentence's 10 nearest eval sentences under the teacher are also among its
10 nearest under the student): retrieval agreement, the property an embedding user relies on.
Causal LMs: perplexity on the held-out text (token-weighted over target positions only) and,
for a student, how often its next-token top-1 equals the teacher's. Per-token logits are
reduced batch by batch (a [tokens, vocab] matrix of a real LM does not fit in memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from edgedistill.compress.losses import mean_pool
from edgedistill.compress.losses.token import next_token_positions

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Per-token logits are [batch, length, vocab]: small eval batches for language models.
CAUSAL_LM_EVAL_BATCH = 8


@torch.no_grad()
def collect_outputs(
    model,
    dataset,
    collator,
    task: str,
    batch_size: int = 64,
    device=None,
    vocab_size: int | None = None,
    embedding: bool = False,
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``dataset``; returns logits (classification) or mean-pooled embeddings, plus labels.

    ``embedding`` (a classifier with a sentence-embedding output, `edgedistill.outputs`): its
    mean-pooled last hidden state too.

    For causal-lm: the summed next-token negative log-likelihood, the number of target tokens
    and the top-1 prediction at every target position (logit rows beyond ``vocab_size`` dropped).
    """
    if task == "causal-lm":
        return _collect_causal_lm(
            model, dataset, collator, min(batch_size, CAUSAL_LM_EVAL_BATCH), device, vocab_size
        )
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, embeddings, labels = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator):
        inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
        out = model(**inputs, return_dict=True, **({"output_hidden_states": True} if embedding else {}))
        if task == "feature-extraction":
            embeddings.append(mean_pool(out.last_hidden_state, inputs["attention_mask"]).float().cpu())
        else:
            logits.append(out.logits.float().cpu())
            if embedding:
                embeddings.append(mean_pool(out.hidden_states[-1], inputs["attention_mask"]).float().cpu())
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


def _collect_causal_lm(model, dataset, collator, batch_size: int, device, vocab_size: int | None) -> dict:
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum = torch.zeros((), dtype=torch.float64)
    tokens = 0
    predictions = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator):
        inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
        out = model(**inputs, use_cache=False, return_dict=True)
        logits, targets, _ = next_token_positions(out.logits, batch["labels"].to(device), vocab_size)
        nll_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double().cpu()
        tokens += int(targets.numel())
        predictions.append(logits.argmax(-1).cpu())
    model.train(was_training)
    return {
        "nll_sum": nll_sum,
        "tokens": torch.tensor(tokens),
        "predictions": torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long),
    }


def causal_lm_metrics(
    outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None = None
) -> dict:
    """Perplexity exp(mean NLL per target token) and, against a reference (the teacher), top-1 agreement."""
    tokens = int(outputs["tokens"])
    nll = float(outputs["nll_sum"]) / max(1, tokens)
    metrics: dict[str, float | int] = {
        "perplexity": float(torch.exp(torch.tensor(nll, dtype=torch.float64))),
        "nll_per_token": nll,
    }
    if reference is not None:
        preds, ref = outputs["predictions"], reference["predictions"]
        if preds.shape != ref.shape:
            raise ValueError(f"top-1 agreement needs the same eval positions ({preds.shape} vs {ref.shape})")
        metrics["top1_agreement_with_teacher"] = (
            float((preds == ref).float().mean()) if tokens else float("nan")
        )
    metrics["eval_tokens"] = tokens
    return metrics


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
