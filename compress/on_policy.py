"""On-policy distillation for decoder students (GKD: Agarwal et al. 2024, "On-Policy Distillation
of Language Models: Learning from Self-Generated Mistakes").

Off-policy KD trains the student on the data's responses (or the teacher's samples), so it never
sees the states its own mistakes lead to at inference time. With ``on_policy.fraction`` = lambda,
that share of training batches has every response replaced by one the *student* samples from the
prompt; the teacher then scores the student's tokens live and ``token_kd`` pulls the student's
next-token distributions towards the teacher's on them. Supervised terms (``next_token_ce``) are
skipped on such batches: the student's own samples are not targets.

Which batches go on-policy, and what is sampled, follow from the run's seed, the global step and
the batch's token ids, so a resumed run draws exactly what an uninterrupted one would, and the
draws do not disturb the Trainer's own random stream (dropout, shuffling).
"""

from __future__ import annotations

import hashlib
import random

import torch


def batch_seed(seed: int, step: int, input_ids: torch.Tensor) -> int:
    """A seed from the run seed, the global step and the batch's ids (stable across processes)."""
    digest = hashlib.sha256(input_ids.detach().cpu().numpy().tobytes()).digest()
    return (seed * 1_000_003 + step * 7_919 + int.from_bytes(digest[:6], "little")) % (2**63)


def goes_on_policy(fraction: float, seed: int) -> bool:
    """Whether the batch with this seed is sampled from the student (probability ``fraction``)."""
    if fraction <= 0:
        return False
    return fraction >= 1 or random.Random(seed).random() < fraction


def prompt_lengths(labels: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """Per row: the leading tokens without a target (the prompt); the whole row when it has none."""
    lengths = []
    for row_labels, row_mask in zip(labels, attention_mask, strict=True):
        valid = int(row_mask.sum())
        targets = (row_labels[:valid] != -100).nonzero()
        lengths.append(int(targets[0]) if len(targets) else valid)
    return lengths


@torch.no_grad()
def sample_responses(
    student,
    batch: dict[str, torch.Tensor],
    *,
    seed: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    pad_token_id: int,
    eos_token_id: int | None,
    max_length: int,
) -> dict[str, torch.Tensor]:
    """The batch with each response replaced by the student's sample after the same prompt.

    Rows come back right-padded like the data collator's: prompt + sampled tokens (up to and
    including the first EOS), labels -100 on the prompt and on padding, at most ``max_length``.
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    device = input_ids.device
    lengths = [max(1, n) for n in prompt_lengths(labels, attention_mask)]
    width = max(lengths)
    prompts = torch.full((len(lengths), width), pad_token_id, dtype=input_ids.dtype, device=device)
    prompt_mask = torch.zeros_like(prompts)
    for i, n in enumerate(lengths):  # left-padded: generation continues every row at its end
        prompts[i, width - n :] = input_ids[i, :n]
        prompt_mask[i, width - n :] = 1
    budget = max(1, min(max_new_tokens, max_length - min(lengths)))
    was_training = student.training
    student.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            generated = student.generate(
                input_ids=prompts,
                attention_mask=prompt_mask,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=budget,
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
                use_cache=True,
            )[:, width:]
    finally:
        student.train(was_training)
    rows, targets = [], []
    for i, n in enumerate(lengths):
        response = generated[i].tolist()
        if eos_token_id is not None and eos_token_id in response:
            response = response[: response.index(eos_token_id) + 1]
        row = (input_ids[i, :n].tolist() + response)[:max_length]
        rows.append(row)
        targets.append(([-100] * n + response)[:max_length])
    longest = max(len(r) for r in rows)
    out_ids = torch.full((len(rows), longest), pad_token_id, dtype=input_ids.dtype, device=device)
    out_mask = torch.zeros((len(rows), longest), dtype=attention_mask.dtype, device=device)
    out_labels = torch.full((len(rows), longest), -100, dtype=labels.dtype, device=device)
    for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
        out_ids[i, : len(row)] = torch.tensor(row, dtype=input_ids.dtype)
        out_mask[i, : len(row)] = 1
        out_labels[i, : len(target)] = torch.tensor(target, dtype=labels.dtype)
    return {"input_ids": out_ids, "attention_mask": out_mask, "labels": out_labels}
