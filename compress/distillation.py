"""`distill`: teacher -> student with (quantization-aware) knowledge distillation.

Reads top to bottom like the job it does (each phase is a function of `distill_phases`, the last
two of `distill_output`):

1. load the teacher (frozen) and its tokenizer, read and tokenize the data;
2. build the student (teacher layers, narrower fresh model, or a given folder), the losses around
   it and the teacher output cache (with `teachers:`, every teacher's: `ensemble.load_ensemble`);
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

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from edgedistill.compress import models
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distill_output import save_student, write_report
from edgedistill.compress.distill_phases import (
    build_module,
    evaluate,
    load_sources,
    make_student,
    plan_training,
    teacher_outputs,
    train_float,
    train_qat,
)
from edgedistill.compress.ensemble import check_teacher_configs, load_ensemble
from edgedistill.compress.training import CpuLedgerCallback, prepare_run_dir, resolved_config, world_size
from edgedistill.cpu_ledger import CpuLedger
from edgedistill.signals import interruptible


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
    # A hostile or broken teacher folder (any of several teachers, or one whose labels differ from
    # the first's) is refused before the run folder is made.
    if recipe.teachers is not None:
        check_teacher_configs(recipe)
    else:
        models.check_model_folder(
            recipe.teacher.path, "teacher", recipe.teacher.allow_pickle, recipe.teacher.trust_remote_code
        )
    resumed = prepare_run_dir(out, resolved, overwrite, "distill")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    ledger = CpuLedger(out, fresh=not resumed, world_size=world_size(), write=rank0)  # CPU across kills
    from transformers import set_seed

    set_seed(recipe.training.seed)

    # 1. teacher, tokenizer, data (pruning targets and the student's vocabulary checked first)
    sources = load_sources(recipe)
    # 2. student, losses, teacher cache (several teachers: one pass of each into its own cache)
    student, origin = make_student(recipe, sources)
    module = build_module(recipe, sources, student, origin)
    teacher_eval = teacher_outputs(recipe, sources)
    ensemble = load_ensemble(recipe, out, sources, teacher_eval) if recipe.teachers is not None else None
    _, student_before = evaluate(recipe, sources, module, teacher_eval, ensemble)
    training = plan_training(
        recipe,
        out,
        sources,
        module,
        callbacks=[*callbacks, CpuLedgerCallback(ledger)],
        progress=progress,
        ensemble=ensemble,
    )
    # 3. float phase, 4. quantization-aware phase
    ledger.training_starts()
    train_float(recipe, out, sources, training)
    ledger.saved()  # checkpoints/float/final.safetensors: a resume starts after the float phase
    qat_info = train_qat(recipe, out, sources, training)

    # 5. evaluate, save, report (rank 0 only)
    if world_size() > 1 and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        torch.distributed.barrier()
        return {}
    teacher_metrics, student_metrics = evaluate(recipe, sources, training.module, teacher_eval, ensemble)
    student_dir = save_student(
        out, recipe, training.module, sources.tokenizer, origin, qat_info, student_metrics
    )
    report = write_report(
        out,
        recipe,
        resolved=resolved,
        resumed=resumed,
        sources=sources,
        origin=origin,
        training=training,
        qat_info=qat_info,
        student_dir=student_dir,
        teacher_metrics=teacher_metrics,
        student_metrics=student_metrics,
        student_before=student_before,
        ensemble=ensemble,
        cpu=ledger.finished(),
    )
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return report
