"""The phases of `distill` (`distillation.distill` calls them in this order).

    load_sources     the frozen teacher, its tokenizer, the tokenized data; pruning targets and the
                     student's vocabulary are checked before any data work
    make_student     teacher layers, a narrower fresh model or a given folder; pruned; refused
                     before any training when its GGUF export could not be written
    build_module     the student inside its losses
    plan_training    step counts, the QAT start step, the teacher output cache
    train_float      phase "float", up to the QAT start step
    train_qat        phase "qat": fake-quant inserted (`qat_phase`), distillation continues
    evaluate         teacher and student metrics on the eval split
then `distill_output`: save_student (``student/`` with ``edgedistill.json``) and write_report.

Three small records carry what the phases share: `Sources` (teacher and data), `StudentOrigin`
(how the student was made) and `Training` (module, losses' teacher needs, cache, steps, history).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import PrinterCallback

from edgedistill.compress import models, pruning
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.data import collator_for, load_train_eval
from edgedistill.compress.evaluate import (
    causal_lm_metrics,
    classification_metrics,
    collect_outputs,
    embedding_metrics,
)
from edgedistill.compress.losses import LossContext, build_loss
from edgedistill.compress.qat_phase import (
    check_gguf_student,
    describe_qat,
    insert_mode_fake_quant,
)
from edgedistill.compress.teachers import OUTPUT_LOSSES, embedding_teacher
from edgedistill.compress.trainer import (
    DistillationModule,
    DistillTrainer,
    RichProgressCallback,
    model_inputs,
)
from edgedistill.compress.training import last_checkpoint, total_optimizer_steps, training_arguments
from edgedistill.io import atomic_path, atomic_write_json, disk_full_as_error
from edgedistill.outputs import SENTENCE_EMBEDDING

log = logging.getLogger(__name__)


@dataclass
class Sources:
    """The frozen teacher, its tokenizer and the tokenized data: what every later phase reads."""

    teacher: torch.nn.Module
    tokenizer: Any
    # causal-lm only: logits are compared token id by token id, so only the tokenizer's ids count
    # and rows beyond them (padded embedding tables) are dropped before every softmax
    vocab_size: int | None
    train_ds: Any
    eval_ds: Any
    collator: Callable


@dataclass(frozen=True)
class StudentOrigin:
    """How the student was made, recorded in its ``edgedistill.json`` and in the report."""

    selected_teacher_layers: list[int] | None
    pruning: dict | None


@dataclass
class Training:
    """What the float and QAT phases share, and what they leave for the report."""

    module: DistillationModule
    teacher_needs: set[str]
    teacher_cache: Any  # TeacherOutputCache, TopKTeacherCache, ensemble.Ensemble or None
    token_ids: dict[str, int | None]
    total_steps: int
    qat_start: int | None  # the step phase "qat" starts at; None when qat.mode is none
    callbacks: list = field(default_factory=list)
    progress: bool = True
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def float_steps(self) -> int:
        return self.total_steps if self.qat_start is None else self.qat_start


def _attn_implementation(recipe: DistillRecipe) -> str:
    # Attention probabilities are only returned by eager attention, and NNCF must see the
    # attention matmuls as separate ops to place activation quantizers on them.
    needs_eager = recipe.qat.mode != "none" or any(s.name == "attention_kl" for s in recipe.losses)
    return "eager" if needs_eager else "sdpa"


def load_sources(recipe: DistillRecipe) -> Sources:
    """The teacher (frozen) and its tokenizer, then the data read and tokenized."""
    task = recipe.task
    teacher = models.load_model(
        recipe.teacher, task, "teacher", attn_implementation=_attn_implementation(recipe)
    )
    teacher = models.freeze(teacher)
    if recipe.student.prunes(teacher.config.hidden_size):  # before any data work: fail fast
        pruning.check_targets(
            teacher.config, recipe.student.num_attention_heads, recipe.student.intermediate_size
        )
    tokenizer = models.load_tokenizer(recipe.teacher.path, recipe.teacher.trust_remote_code)
    if recipe.student.path:  # before any data work: a student reading other token ids cannot be distilled
        student_tokenizer = models.load_tokenizer(recipe.student.path, recipe.student.trust_remote_code)
        models.check_same_vocab(tokenizer, student_tokenizer, recipe.student.path, recipe.teacher.path)
    causal_lm = task == "causal-lm"
    vocab_size = len(tokenizer) if causal_lm else None
    if causal_lm:
        models.check_vocab_rows(teacher, vocab_size, "teacher", recipe.teacher.path)
        teacher.config.use_cache = False
    num_labels = teacher.config.num_labels if task == "sequence-classification" else None
    needs_labels = task == "sequence-classification"
    train_ds, eval_ds = load_train_eval(
        recipe.data, tokenizer, needs_labels=needs_labels, num_labels=num_labels, causal_lm=causal_lm
    )
    collator = collator_for(tokenizer, task)
    log.info("%s; %s", train_ds.report.summary(), eval_ds.report.summary())
    return Sources(teacher, tokenizer, vocab_size, train_ds, eval_ds, collator)


def _pruning_batches(train_ds, collator, recipe: DistillRecipe) -> list[dict[str, torch.Tensor]]:
    """The first ``student.prune.calibration_samples`` of a seeded shuffle of the training data."""
    count = min(len(train_ds), recipe.student.prune.calibration_samples)
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(recipe.training.seed + 11))
    subset = torch.utils.data.Subset(train_ds, order[:count].tolist())
    loader = DataLoader(subset, batch_size=recipe.training.batch_size, collate_fn=collator)
    return [model_inputs(batch) for batch in loader]


def make_student(recipe: DistillRecipe, sources: Sources) -> tuple[torch.nn.Module, StudentOrigin]:
    """The student (teacher layers, a narrower fresh model or a given folder), pruned when asked."""
    teacher = sources.teacher
    student, selected = models.build_student(
        teacher, recipe.student, recipe.task, attn_implementation=_attn_implementation(recipe)
    )
    pruning_info = None
    if recipe.student.prunes(teacher.config.hidden_size):
        # Same data and seed on every run, so a resumed run rebuilds the same student shape (its
        # weights then come from the checkpoint).
        method = recipe.student.prune.importance
        batches = (
            _pruning_batches(sources.train_ds, sources.collator, recipe) if method == "activation" else None
        )
        pruning_info = pruning.prune_student(
            student, recipe.student.num_attention_heads, recipe.student.intermediate_size, method, batches
        )
    check_gguf_student(recipe, student)  # before any training: the exporter must write this student
    if recipe.task == "causal-lm":
        models.check_vocab_rows(student, sources.vocab_size, "student", recipe.student.path or "(derived)")
        student.config.use_cache = False  # NNCF calibration and tracing call model(**batch)
    return student, StudentOrigin(selected, pruning_info)


def build_module(
    recipe: DistillRecipe, sources: Sources, student: torch.nn.Module, origin: StudentOrigin
) -> DistillationModule:
    """The student inside its losses, one per ``recipe.losses`` entry, sized from both models."""
    t, s = sources.teacher.config, student.config
    ctx = LossContext(
        student_layers=s.num_hidden_layers,
        teacher_layers=t.num_hidden_layers,
        student_hidden=s.hidden_size,
        teacher_hidden=t.hidden_size,
        student_heads=s.num_attention_heads,
        teacher_heads=t.num_attention_heads,
        selected_layers=origin.selected_teacher_layers,
        vocab_size=sources.vocab_size,
    )
    # a generalist's embedding teacher has the student's width (ensemble.check_teacher_configs): no projection
    embedding_ctx = (
        replace(ctx, teacher_hidden=s.hidden_size) if embedding_teacher(recipe.teachers) is not None else ctx
    )
    losses = [
        build_loss(spec, embedding_ctx if spec.name in OUTPUT_LOSSES["embedding"] else ctx)
        for spec in recipe.losses
    ]
    return DistillationModule(student, recipe.losses, losses, recipe.task)


def teacher_outputs(recipe: DistillRecipe, sources: Sources) -> dict[str, torch.Tensor]:
    """The teacher's outputs on the eval split: computed once, it is frozen."""
    return collect_outputs(
        sources.teacher, sources.eval_ds, sources.collator, recipe.task, vocab_size=sources.vocab_size
    )


def evaluate(
    recipe: DistillRecipe, sources: Sources, module: DistillationModule, teacher_eval: dict, ensemble=None
) -> tuple[dict, dict]:
    """(teacher metrics, student metrics) on the eval split; with several teachers (an
    `ensemble.Ensemble`) the student's also hold its top-1 agreement with each and with their ensemble."""
    task, eval_ds = recipe.task, sources.eval_ds
    generalist = ensemble is not None and ensemble.embedding_member is not None
    student_eval = collect_outputs(
        module.student, eval_ds, sources.collator, task, vocab_size=sources.vocab_size, embedding=generalist
    )
    if task == "causal-lm":
        return causal_lm_metrics(teacher_eval), causal_lm_metrics(student_eval, teacher_eval)
    if task == "feature-extraction":
        projection = next(
            (loss.projection for loss in module.losses if getattr(loss, "projection", None) is not None), None
        )
        teacher_metrics = {
            "recall_at_10": 1.0,
            "cosine_to_teacher": 1.0,
            "examples": len(eval_ds),
            "note": "reference",
        }
        return teacher_metrics, embedding_metrics(student_eval, teacher_eval, projection)
    student_metrics = classification_metrics(student_eval, teacher_eval)
    if ensemble is not None:
        student_metrics.update(ensemble.student_agreement(student_eval["logits"]))
    if generalist:  # the second output, against its own teacher
        student_metrics[SENTENCE_EMBEDDING] = ensemble.student_embedding_metrics(student_eval["embedding"])
    return classification_metrics(teacher_eval), student_metrics


def build_teacher_cache(
    recipe: DistillRecipe, out: Path, sources: Sources, teacher_needs: set[str], *, progress: bool
):
    """The teacher's outputs on the training data, stored once and read every epoch (when asked)."""
    if not recipe.training.cache_teacher_outputs:
        return None
    cache_root = Path(recipe.training.teacher_cache_dir or out / "teacher_cache")
    if recipe.task == "causal-lm":
        from edgedistill.compress.logit_cache import TopKTeacherCache, build_logit_cache

        # top-k log-probs per position at the (constant) temperature
        return TopKTeacherCache(
            build_logit_cache(
                sources.teacher,
                sources.train_ds,
                cache_root,
                k=max(spec.top_k for spec in recipe.losses if spec.name == "token_kd"),
                temperature=recipe.temperature.value,
                vocab_size=sources.vocab_size,
                progress=progress,
            )
        )
    from edgedistill.compress.teacher_cache import TeacherOutputCache

    return TeacherOutputCache.build(
        sources.teacher, sources.train_ds, sources.collator, teacher_needs, cache_root
    )


def plan_training(
    recipe: DistillRecipe,
    out: Path,
    sources: Sources,
    module: DistillationModule,
    *,
    callbacks: Sequence = (),
    progress: bool = True,
    ensemble=None,
) -> Training:
    """Step counts, where the QAT phase starts, and the teacher output cache (with several teachers:
    the `ensemble.Ensemble`, which reads every teacher's cache)."""
    total_steps = total_optimizer_steps(len(sources.train_ds), recipe.training)
    qat_on = recipe.qat.mode != "none"
    teacher_needs = set().union(*(loss.needs for loss in module.losses))
    teacher_cache = (
        ensemble
        if ensemble is not None
        else build_teacher_cache(recipe, out, sources, teacher_needs, progress=progress)
    )
    # on-policy sampling pads like the collator and stops at the tokenizer's end of sequence
    tokenizer = sources.tokenizer
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    return Training(
        module=module,
        teacher_needs=teacher_needs,
        teacher_cache=teacher_cache,
        token_ids={"pad": pad_id, "eos": tokenizer.eos_token_id},
        total_steps=total_steps,
        qat_start=round(recipe.qat.start_fraction * total_steps) if qat_on else None,
        callbacks=list(callbacks),
        progress=progress,
    )


def _run_trainer(
    recipe: DistillRecipe,
    out: Path,
    sources: Sources,
    training: Training,
    name: str,
    *,
    steps: int,
    offset: int,
    lr: float,
    seed: int,
) -> DistillTrainer:
    """Train ``steps`` steps of phase ``name`` in ``checkpoints/<name>``, resuming its last checkpoint."""
    phase_dir = out / "checkpoints" / name
    args = training_arguments(recipe.training, phase_dir, steps, seed=seed, learning_rate=lr)
    progress_bar = [RichProgressCallback(f"distill [{name}]")] if training.progress else []
    trainer = DistillTrainer(
        model=training.module,
        args=args,
        train_dataset=sources.train_ds,
        data_collator=sources.collator,
        teacher=sources.teacher,
        recipe=recipe,
        teacher_needs=training.teacher_needs,
        total_steps=training.total_steps,
        step_offset=offset,
        teacher_cache=training.teacher_cache,
        token_ids=training.token_ids,
        callbacks=progress_bar + training.callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the rich bar shows progress; logs go to the report
    started = time.perf_counter()
    with disk_full_as_error(phase_dir):  # a checkpoint torn by a full disk is skipped on resume
        trainer.train(resume_from_checkpoint=last_checkpoint(phase_dir))
    training.train_seconds += time.perf_counter() - started
    training.history.extend(h for h in trainer.state.log_history if "global_step" in h)
    return trainer


def train_float(recipe: DistillRecipe, out: Path, sources: Sources, training: Training) -> None:
    """Phase "float": distill up to the QAT start step; ``checkpoints/float/final.safetensors``
    marks it complete, and a rerun loads it (with its history) instead of training again."""
    from safetensors.torch import load_model, save_model

    if training.float_steps <= 0:
        return
    float_done = out / "checkpoints" / "float" / "final.safetensors"
    if float_done.is_file():
        load_model(training.module, float_done)
        training.history.extend(json.loads((float_done.parent / "history.json").read_text(encoding="utf-8")))
        return
    trainer = _run_trainer(
        recipe,
        out,
        sources,
        training,
        "float",
        steps=training.float_steps,
        offset=0,
        lr=recipe.training.lr,
        seed=recipe.training.seed,
    )
    if trainer.is_world_process_zero():
        # history first: final.safetensors is the marker that the float phase is complete
        atomic_write_json(float_done.parent / "history.json", training.history)
        with atomic_path(float_done) as tmp:
            save_model(training.module, str(tmp))
    trainer.accelerator.wait_for_everyone()


def train_qat(recipe: DistillRecipe, out: Path, sources: Sources, training: Training) -> dict | None:
    """Phase "qat": insert the fake-quant of ``qat.mode`` and keep distilling to the last step.

    Returns what it did (`qat_phase.describe_qat`), or None when there is no QAT phase.
    """
    if training.qat_start is None or training.total_steps - training.qat_start <= 0:
        return None
    init_dir = out / "checkpoints" / "qat" / "nncf_init"
    module = training.module
    module.student = insert_mode_fake_quant(
        recipe, module.student, sources.train_ds, sources.collator, init_dir
    )
    _run_trainer(
        recipe,
        out,
        sources,
        training,
        "qat",
        steps=training.total_steps - training.qat_start,
        offset=training.qat_start,
        lr=recipe.training.lr * recipe.qat.lr_scale,
        seed=recipe.training.seed + 1,
    )
    return describe_qat(recipe, module.student, training.qat_start)
