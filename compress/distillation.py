"""`distill`: teacher -> student with (quantization-aware) knowledge distillation.

Reads top to bottom like the job it does:

1. load the teacher (frozen) and its tokenizer, read and tokenize the data;
2. build the student (teacher layers, narrower fresh model, or a given folder) and the losses;
3. phase "float": distill for ``(1 - qat.start_fraction)`` ... i.e. until the QAT start step;
4. phase "qat": insert fake-quant (NNCF int8 calibrated on training batches, GGUF blocks, or NNCF
   weight-only int8/int4 with LoRA adapters), keep distilling;
5. evaluate teacher and student, save ``student/`` atomically, write the report and curves.

Every phase checkpoints through Trainer; running the same command again resumes where it stopped.

Tasks: sequence-classification, feature-extraction (sentence embeddings) and causal-lm
(decoder language models: token-level KD on next-token distributions, perplexity and top-1
agreement with the teacher in the report).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import PrinterCallback

from edgedistill import __version__
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
from edgedistill.compress.qat_phase import _evaluated_with, _insert_fake_quant, _qat_info, check_gguf_student
from edgedistill.compress.report import plot_curves
from edgedistill.compress.trainer import (
    DistillationModule,
    DistillTrainer,
    RichProgressCallback,
    model_inputs,
)
from edgedistill.compress.training import (
    check_finite_weights,
    last_checkpoint,
    prepare_run_dir,
    resolved_config,
    total_optimizer_steps,
    training_arguments,
    world_size,
)
from edgedistill.io import atomic_dir, atomic_path, atomic_write_json, disk_full_as_error
from edgedistill.signals import interruptible

log = logging.getLogger(__name__)


STUDENT_META = "edgedistill.json"


def _loss_context(teacher, student, selected: list[int] | None, vocab_size: int | None) -> LossContext:
    t, s = teacher.config, student.config
    return LossContext(
        student_layers=s.num_hidden_layers,
        teacher_layers=t.num_hidden_layers,
        student_hidden=s.hidden_size,
        teacher_hidden=t.hidden_size,
        student_heads=s.num_attention_heads,
        teacher_heads=t.num_attention_heads,
        selected_layers=selected,
        vocab_size=vocab_size,
    )


def _attn_implementation(recipe: DistillRecipe) -> str:
    # Attention probabilities are only returned by eager attention, and NNCF must see the
    # attention matmuls as separate ops to place activation quantizers on them.
    needs_eager = recipe.qat.mode != "none" or any(s.name == "attention_kl" for s in recipe.losses)
    return "eager" if needs_eager else "sdpa"


def _evaluate(
    recipe, teacher, module, eval_ds, collator, teacher_eval=None, vocab_size: int | None = None
) -> tuple[dict, dict]:
    task = recipe.task
    teacher_eval = teacher_eval or collect_outputs(teacher, eval_ds, collator, task, vocab_size=vocab_size)
    student_eval = collect_outputs(module.student, eval_ds, collator, task, vocab_size=vocab_size)
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
    return classification_metrics(teacher_eval), classification_metrics(student_eval, teacher_eval)


def _pruning_batches(train_ds, collator, recipe: DistillRecipe) -> list[dict[str, torch.Tensor]]:
    """The first ``student.prune.calibration_samples`` of a seeded shuffle of the training data."""
    count = min(len(train_ds), recipe.student.prune.calibration_samples)
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(recipe.training.seed + 11))
    subset = torch.utils.data.Subset(train_ds, order[:count].tolist())
    loader = DataLoader(subset, batch_size=recipe.training.batch_size, collate_fn=collator)
    return [model_inputs(batch) for batch in loader]


def _save_student(
    out: Path,
    module,
    tokenizer,
    recipe,
    selected,
    qat_info: dict | None,
    metrics: dict,
    pruning_info: dict | None = None,
) -> Path:
    target = out / "student"
    check_finite_weights(module.student, "after training")
    with atomic_dir(target) as tmp:
        student = module.student
        if recipe.task == "causal-lm":
            student.config.use_cache = True  # off while training; generation wants its key/value cache
        if qat_info is not None and qat_info.get("scheme") == "gguf":
            # the latent float weights: the GGUF exporter quantizes them to exactly what was trained
            student._edgedistill_gguf.remove()
            student.save_pretrained(tmp)
        elif qat_info is not None and qat_info.get("scheme") == "nncf_weight_only":
            from edgedistill.compress import qat as qat_lib

            # The latent float weights (W + B @ A, what the quantizers see) as a plain transformers
            # model, for float exports; qat/ holds W, adapters and ranges for the OpenVINO export.
            float_model = type(student)(student.config)
            float_model.load_state_dict(qat_lib.merged_float_state_dict(student))
            float_model.save_pretrained(tmp)
            qat_lib.save_qat_state(student, tmp / "qat")
        elif qat_info is not None:
            from edgedistill.compress import qat as qat_lib

            # The float weights learned through fake-quant, saved as a plain transformers model;
            # the NNCF config and quantizer state sit beside them for the int8 export.
            float_model = type(student)(student.config)
            float_model.load_state_dict(qat_lib.float_state_dict(student))
            float_model.save_pretrained(tmp)
            qat_lib.save_qat_state(student, tmp / "qat")
        else:
            student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(
            tmp / STUDENT_META,
            {
                "format_version": 1,
                "edgedistill_version": __version__,
                "task": recipe.task,
                "teacher": recipe.teacher.path,
                "selected_teacher_layers": selected,
                "pruning": pruning_info,
                "qat": qat_info,
                "eval_metrics": metrics,
            },
        )
    return target


@interruptible
def distill(
    recipe: DistillRecipe,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    callbacks: Sequence = (),
    progress: bool = True,
) -> dict:
    """Run distillation; returns the report (also written to ``out_dir/distill_report.json``)."""
    out = Path(out_dir)
    resolved = resolved_config(recipe)
    # A hostile or broken teacher folder is refused before the run folder is made.
    models.check_model_folder(
        recipe.teacher.path, "teacher", recipe.teacher.allow_pickle, recipe.teacher.trust_remote_code
    )
    resumed = prepare_run_dir(out, resolved, overwrite, "distill")
    from transformers import set_seed

    set_seed(recipe.training.seed)
    task = recipe.task
    attn = _attn_implementation(recipe)

    # 1. teacher, tokenizer, data ------------------------------------------------------------
    teacher = models.freeze(models.load_model(recipe.teacher, task, "teacher", attn_implementation=attn))
    prunes = recipe.student.prunes(teacher.config.hidden_size)
    if prunes:  # before any data work: fail fast
        pruning.check_targets(
            teacher.config, recipe.student.num_attention_heads, recipe.student.intermediate_size
        )
    tokenizer = models.load_tokenizer(recipe.teacher.path, recipe.teacher.trust_remote_code)
    if recipe.student.path:  # before any data work: a student reading other token ids cannot be distilled
        student_tokenizer = models.load_tokenizer(recipe.student.path, recipe.student.trust_remote_code)
        models.check_same_vocab(tokenizer, student_tokenizer, recipe.student.path, recipe.teacher.path)
    causal_lm = task == "causal-lm"
    # Language models compare logits token id by token id: only the tokenizer's ids count, and
    # rows beyond them (padded embedding tables) are dropped before every softmax.
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

    # 2. student and losses -------------------------------------------------------------------
    student, selected = models.build_student(teacher, recipe.student, task, attn_implementation=attn)
    pruning_info = None
    if prunes:
        # Same data and seed on every run, so a resumed run rebuilds the same student shape (its
        # weights then come from the checkpoint).
        method = recipe.student.prune.importance
        batches = _pruning_batches(train_ds, collator, recipe) if method == "activation" else None
        pruning_info = pruning.prune_student(
            student, recipe.student.num_attention_heads, recipe.student.intermediate_size, method, batches
        )
    check_gguf_student(recipe, student)  # before any training: the exporter must write this student
    if causal_lm:
        models.check_vocab_rows(student, vocab_size, "student", recipe.student.path or "(derived)")
        student.config.use_cache = False  # NNCF calibration and tracing call model(**batch)
    ctx = _loss_context(teacher, student, selected, vocab_size)
    losses = [build_loss(spec, ctx) for spec in recipe.losses]
    module = DistillationModule(student, recipe.losses, losses, task)
    teacher_needs = set().union(*(loss.needs for loss in losses))

    teacher_eval = collect_outputs(teacher, eval_ds, collator, task, vocab_size=vocab_size)
    _, student_before = _evaluate(recipe, teacher, module, eval_ds, collator, teacher_eval, vocab_size)

    total_steps = total_optimizer_steps(len(train_ds), recipe.training)
    qat_on = recipe.qat.mode != "none"
    qat_start = round(recipe.qat.start_fraction * total_steps) if qat_on else total_steps
    teacher_cache = None
    if recipe.training.cache_teacher_outputs and task == "causal-lm":
        from edgedistill.compress.logit_cache import TopKTeacherCache, build_logit_cache

        # top-k log-probs per position at the (constant) temperature, built once, reused every epoch
        teacher_cache = TopKTeacherCache(
            build_logit_cache(
                teacher,
                train_ds,
                Path(recipe.training.teacher_cache_dir or out / "teacher_cache"),
                k=max(spec.top_k for spec in recipe.losses if spec.name == "token_kd"),
                temperature=recipe.temperature.value,
                vocab_size=vocab_size,
                progress=progress,
            )
        )
    elif recipe.training.cache_teacher_outputs:
        from edgedistill.compress.teacher_cache import TeacherOutputCache

        cache_root = Path(recipe.training.teacher_cache_dir or out / "teacher_cache")
        teacher_cache = TeacherOutputCache.build(teacher, train_ds, collator, teacher_needs, cache_root)

    # on-policy sampling pads like the collator and stops at the tokenizer's end of sequence
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    token_ids = {"pad": pad_id, "eos": tokenizer.eos_token_id}
    history: list[dict] = []
    train_seconds = 0.0

    def run_phase(name: str, steps: int, offset: int, lr: float, seed: int) -> DistillTrainer:
        nonlocal train_seconds
        phase_dir = out / "checkpoints" / name
        args = training_arguments(recipe.training, phase_dir, steps, seed=seed, learning_rate=lr)
        trainer = DistillTrainer(
            model=module,
            args=args,
            train_dataset=train_ds,
            data_collator=collator,
            teacher=teacher,
            recipe=recipe,
            teacher_needs=teacher_needs,
            total_steps=total_steps,
            step_offset=offset,
            teacher_cache=teacher_cache,
            token_ids=token_ids,
            callbacks=([RichProgressCallback(f"distill [{name}]")] if progress else []) + list(callbacks),
        )
        trainer.remove_callback(PrinterCallback)  # the rich bar shows progress; logs go to the report
        started = time.perf_counter()
        with disk_full_as_error(phase_dir):  # a checkpoint torn by a full disk is skipped on resume
            trainer.train(resume_from_checkpoint=last_checkpoint(phase_dir))
        train_seconds += time.perf_counter() - started
        history.extend(h for h in trainer.state.log_history if "global_step" in h)
        return trainer

    # 3. float phase --------------------------------------------------------------------------
    from safetensors.torch import load_model, save_model

    float_done = out / "checkpoints" / "float" / "final.safetensors"
    if qat_start > 0:
        if float_done.is_file():
            load_model(module, float_done)
            history.extend(json.loads((float_done.parent / "history.json").read_text(encoding="utf-8")))
        else:
            trainer = run_phase("float", qat_start, 0, recipe.training.lr, recipe.training.seed)
            if trainer.is_world_process_zero():
                # history first: final.safetensors is the marker that the float phase is complete
                atomic_write_json(float_done.parent / "history.json", history)
                with atomic_path(float_done) as tmp:
                    save_model(module, str(tmp))
            trainer.accelerator.wait_for_everyone()

    # 4. quantization-aware phase ----------------------------------------------------------------
    qat_info = None
    if qat_on and total_steps - qat_start > 0:
        init_dir = out / "checkpoints" / "qat" / "nncf_init"
        module.student = _insert_fake_quant(recipe, module.student, train_ds, collator, init_dir)
        run_phase(
            "qat",
            total_steps - qat_start,
            qat_start,
            recipe.training.lr * recipe.qat.lr_scale,
            recipe.training.seed + 1,
        )
        qat_info = _qat_info(recipe, module.student, qat_start)

    # 5. evaluate, save, report ---------------------------------------------------------------
    if world_size() > 1 and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        torch.distributed.barrier()
        return {}
    teacher_metrics, student_metrics = _evaluate(
        recipe, teacher, module, eval_ds, collator, teacher_eval, vocab_size
    )
    student_dir = _save_student(
        out, module, tokenizer, recipe, selected, qat_info, student_metrics, pruning_info
    )
    steps_done = total_steps
    samples = steps_done * recipe.training.batch_size * recipe.training.grad_accum * world_size()
    report = {
        "edgedistill_version": __version__,
        "task": task,
        "teacher": {
            "path": recipe.teacher.path,
            "parameters": models.count_parameters(teacher),
            "layers": teacher.config.num_hidden_layers,
            "hidden_size": teacher.config.hidden_size,
            "metrics": teacher_metrics,
        },
        "student": {
            "path": str(student_dir),
            "parameters": models.count_parameters(module.student),
            "layers": module.student.config.num_hidden_layers,
            "hidden_size": module.student.config.hidden_size,
            "selected_teacher_layers": selected,
            "pruning": pruning_info,
            "metrics": student_metrics,
            "metrics_before_training": student_before,
            "evaluated_with": _evaluated_with(qat_info),
        },
        "qat": qat_info,
        "data": {"train": train_ds.report.to_dict(), "eval": eval_ds.report.to_dict()},
        "training": {
            "steps": steps_done,
            "qat_start_step": qat_start if qat_on else None,
            "world_size": world_size(),
            "train_wall_time_s": round(train_seconds, 3),
            "samples_per_s": round(samples / train_seconds, 3) if train_seconds and not resumed else None,
            "resumed": resumed,
            "teacher_cache_bytes": teacher_cache.nbytes if teacher_cache else None,
        },
        "config": resolved,
        "history": history,
    }
    atomic_write_json(out / "distill_report.json", report)
    if history:
        plot_curves(
            history,
            out / "curves.png",
            qat_start if qat_on else None,
            title=f"{task}: {report['teacher']['layers']}-layer teacher -> {report['student']['layers']}-layer student",
        )
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return report
