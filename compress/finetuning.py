"""`finetune`: plain supervised training (no teacher).

Two uses: turning a pretrained encoder into a task *teacher* (e.g. all-MiniLM-L6-v2 on
SST-2), and training the *no-KD baseline* of a student (``layers=K`` keeps K of the model's
layers first), so distillation can be compared with what the same student learns alone.

Feature-extraction fine-tuning needs sentence pairs (anchor, positive) and uses in-batch
negatives (the MultipleNegativesRanking objective of sentence-transformers). Causal-lm
fine-tuning is next-token cross-entropy on plain text or on the responses of prompt/response
pairs, and reports perplexity on the eval split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PrinterCallback, Trainer

from edgedistill import __version__
from edgedistill.compress import models
from edgedistill.compress.config import FinetuneRecipe
from edgedistill.compress.data import collator_for, load_train_eval, read_examples
from edgedistill.compress.evaluate import causal_lm_metrics, classification_metrics, collect_outputs
from edgedistill.compress.losses import mean_pool, next_token_cross_entropy
from edgedistill.compress.trainer import RichProgressCallback, model_inputs
from edgedistill.compress.training import (
    FiniteGuardMixin,
    check_finite_weights,
    last_checkpoint,
    prepare_run_dir,
    resolved_config,
    total_optimizer_steps,
    training_arguments,
    world_size,
)
from edgedistill.errors import DataError
from edgedistill.io import atomic_dir, atomic_write_json, disk_full_as_error
from edgedistill.signals import interruptible


class SupervisedTrainer(FiniteGuardMixin, Trainer):
    """Cross-entropy through the model's own head (class labels, or next tokens), or
    in-batch-negatives for embedding pairs."""

    def __init__(self, *args, task: str, scale: float = 20.0, vocab_size: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task
        self.scale = scale
        self.vocab_size = vocab_size
        # compute_loss returns a per-batch mean, so Trainer must divide by the accumulation steps
        # itself; it skips that for models whose forward takes loss kwargs (decoders do).
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.task == "causal-lm":
            out = model(**model_inputs(inputs), use_cache=False, return_dict=True)
            loss = next_token_cross_entropy(out.logits, inputs["labels"], self.vocab_size)
            return (loss, out) if return_outputs else loss
        if self.task == "sequence-classification":
            out = model(**model_inputs(inputs), return_dict=True)
            loss = F.cross_entropy(out.logits.float(), inputs["labels"])
            return (loss, out) if return_outputs else loss
        anchor = model(**model_inputs(inputs), return_dict=True)
        pair = {k[len("pair_") :]: v for k, v in inputs.items() if k.startswith("pair_")}
        positive = model(**model_inputs(pair), return_dict=True)
        a = F.normalize(mean_pool(anchor.last_hidden_state, inputs["attention_mask"]), dim=-1)
        p = F.normalize(mean_pool(positive.last_hidden_state, pair["attention_mask"]), dim=-1)
        scores = self.scale * a @ p.T
        loss = F.cross_entropy(scores, torch.arange(len(scores), device=scores.device))
        return (loss, anchor) if return_outputs else loss


MAX_INFERRED_LABELS = 1000  # classes inferred from the data; set `num_labels` in the recipe for more


def _num_labels(recipe: FinetuneRecipe, config) -> tuple[int, bool]:
    """Classes to train and whether an existing head of another size is replaced.

    The label range, as `distill` takes it from its teacher: `num_labels` of the recipe when set;
    else the model's own classification head; else the labels seen in the train file (at least 2,
    at most MAX_INFERRED_LABELS). Labels outside it are bad rows: refused under --strict, counted
    and skipped otherwise (the data report lists them).
    """
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if recipe.num_labels is not None:
        return recipe.num_labels, has_head and config.num_labels != recipe.num_labels
    if has_head:
        return config.num_labels, False
    examples, _ = read_examples(
        recipe.data.train,
        recipe.data,
        needs_labels=True,
        num_labels=MAX_INFERRED_LABELS,
        max_samples=recipe.data.max_train_samples,
    )
    return max(2, max(e.label for e in examples) + 1), False


@interruptible
def finetune(
    recipe: FinetuneRecipe,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    callbacks: Sequence = (),
    progress: bool = True,
) -> dict:
    out = Path(out_dir)
    resolved = resolved_config(recipe)
    # A hostile or broken model folder is refused before the run folder is made.
    models.check_model_folder(
        recipe.model.path, "model", recipe.model.allow_pickle, recipe.model.trust_remote_code
    )
    resumed = prepare_run_dir(out, resolved, overwrite, "finetune")
    from transformers import AutoConfig, set_seed

    set_seed(recipe.training.seed)
    task = recipe.task
    tokenizer = models.load_tokenizer(recipe.model.path, recipe.model.trust_remote_code)
    extra = {}
    if task == "sequence-classification":
        config = AutoConfig.from_pretrained(
            recipe.model.path, trust_remote_code=recipe.model.trust_remote_code
        )
        extra["num_labels"], extra["ignore_mismatched_sizes"] = _num_labels(recipe, config)
    model = models.load_model(recipe.model, task, "model", **extra)
    selected = None
    if recipe.layers is not None:
        model, selected = models.derive_from_layers(model, recipe.layers)
    causal_lm = task == "causal-lm"
    vocab_size = len(tokenizer) if causal_lm else None
    if causal_lm:
        models.check_vocab_rows(model, vocab_size, "model", recipe.model.path)

    needs_labels = task == "sequence-classification"
    if task == "feature-extraction" and not recipe.data.text_pair_column:
        raise DataError(
            "finetune --task feature-extraction trains on sentence pairs (anchor, positive) with in-batch negatives; "
            "set data.text_pair_column (CLI: --text-pair-column) to the column of positives"
        )
    num_labels = extra.get("num_labels")
    train_ds, eval_ds = load_train_eval(
        recipe.data,
        tokenizer,
        needs_labels=needs_labels,
        num_labels=num_labels,
        pair_mode="separate",
        causal_lm=causal_lm,
    )
    collator = collator_for(tokenizer, task)

    total_steps = total_optimizer_steps(len(train_ds), recipe.training)
    args = training_arguments(
        recipe.training,
        out / "checkpoints",
        total_steps,
        seed=recipe.training.seed,
        learning_rate=recipe.training.lr,
    )
    args.lr_scheduler_type = "linear"
    trainer = SupervisedTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=collator,
        task=task,
        vocab_size=vocab_size,
        callbacks=([RichProgressCallback("finetune")] if progress else []) + list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    with disk_full_as_error(out / "checkpoints"):  # a checkpoint torn by a full disk is skipped on resume
        trainer.train(resume_from_checkpoint=last_checkpoint(out / "checkpoints"))
    seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return {}

    metrics: dict = {}
    if task == "sequence-classification":
        metrics = classification_metrics(collect_outputs(model, eval_ds, collator, task))
    elif causal_lm:
        metrics = causal_lm_metrics(collect_outputs(model, eval_ds, collator, task, vocab_size=vocab_size))
    check_finite_weights(model, f"after training ({total_steps} steps)")
    with atomic_dir(out / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    samples = total_steps * recipe.training.batch_size * recipe.training.grad_accum * world_size()
    report = {
        "edgedistill_version": __version__,
        "task": task,
        "model": {
            "path": str(out / "model"),
            "source": recipe.model.path,
            "parameters": models.count_parameters(model),
            "layers": model.config.num_hidden_layers,
            "selected_layers": selected,
            "metrics": metrics,
        },
        "data": {"train": train_ds.report.to_dict(), "eval": eval_ds.report.to_dict()},
        "training": {
            "steps": total_steps,
            "train_wall_time_s": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 3) if seconds and not resumed else None,
            "resumed": resumed,
        },
        "config": resolved,
        "history": trainer.state.log_history,
    }
    atomic_write_json(out / "finetune_report.json", report)
    return report
