"""The last phases of `distill`: the trained student saved as a folder, and the run's report."""

from __future__ import annotations

from pathlib import Path

from edgedistill import __version__
from edgedistill.compress import models
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distill_phases import Sources, StudentOrigin, Training
from edgedistill.compress.qat_phase import evaluated_with
from edgedistill.compress.report import plot_curves
from edgedistill.compress.teachers import embedding_teacher, teacher_names, teacher_output
from edgedistill.compress.trainer import DistillationModule
from edgedistill.compress.training import check_finite_weights, world_size
from edgedistill.io import atomic_dir, atomic_write_json
from edgedistill.outputs import SENTENCE_EMBEDDING, sentence_embedding_entry

STUDENT_META = "edgedistill.json"


def save_student(
    out: Path,
    recipe: DistillRecipe,
    module: DistillationModule,
    tokenizer,
    origin: StudentOrigin,
    qat_info: dict | None,
    metrics: dict,
) -> Path:
    """``out/student``, written atomically: weights, tokenizer, QAT state and ``edgedistill.json``."""
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
                **({"teachers": [t.path for t in recipe.teachers]} if recipe.teachers else {}),
                "selected_teacher_layers": origin.selected_teacher_layers,
                "pruning": origin.pruning,
                "qat": qat_info,
                "eval_metrics": metrics,
                **_outputs_entry(recipe, student),
            },
        )
    return target


def _outputs_entry(recipe: DistillRecipe, student) -> dict:
    """A generalist's ``outputs`` (`edgedistill.outputs`): the head's logits and the mean-pooled sentence
    embedding, with the teachers of each; nothing for a student of its task's output only."""
    index = embedding_teacher(recipe.teachers)
    if index is None:
        return {}
    names = teacher_names(recipe.teachers)
    logit_teachers = [
        n for n, e in zip(names, recipe.teachers, strict=True) if teacher_output(e, recipe.task) == "logits"
    ]
    return {
        "outputs": {
            "logits": {"teachers": logit_teachers},
            SENTENCE_EMBEDDING: sentence_embedding_entry(student.config.hidden_size, [names[index]]),
        }
    }


def write_report(
    out: Path,
    recipe: DistillRecipe,
    *,
    resolved: dict,
    resumed: bool,
    sources: Sources,
    origin: StudentOrigin,
    training: Training,
    qat_info: dict | None,
    student_dir: Path,
    teacher_metrics: dict,
    student_metrics: dict,
    student_before: dict,
    ensemble=None,
    cpu: dict | None = None,
) -> dict:
    """``out/distill_report.json`` (returned) and ``out/curves.png`` from the logged history.

    With several teachers (an `ensemble.Ensemble`): ``teacher`` is the first (the student's origin),
    ``teachers`` one entry per teacher (path, provenance, parameters, eval metrics, the student's top-1
    agreement) and ``ensemble`` the combination's own eval accuracy and the student's agreement with it.
    """
    teacher, student = sources.teacher, training.module.student
    steps_done = training.total_steps
    samples = steps_done * recipe.training.batch_size * recipe.training.grad_accum * world_size()
    seconds = training.train_seconds
    report = {
        "edgedistill_version": __version__,
        "task": recipe.task,
        "teacher": {
            "path": recipe.teacher.path,
            "gguf": models.teacher_provenance(
                recipe.teacher
            ),  # a GGUF teacher: file, sha256, file_type, tensor types
            "parameters": models.count_parameters(teacher),
            "layers": teacher.config.num_hidden_layers,
            "hidden_size": teacher.config.hidden_size,
            "metrics": teacher_metrics,
        },
        "student": {
            "path": str(student_dir),
            "parameters": models.count_parameters(student),
            "layers": student.config.num_hidden_layers,
            "hidden_size": student.config.hidden_size,
            "selected_teacher_layers": origin.selected_teacher_layers,
            "pruning": origin.pruning,
            "metrics": student_metrics,
            "metrics_before_training": student_before,
            "evaluated_with": evaluated_with(qat_info),
        },
        "qat": qat_info,
        "data": {"train": sources.train_ds.report.to_dict(), "eval": sources.eval_ds.report.to_dict()},
        "training": {
            "steps": steps_done,
            "qat_start_step": training.qat_start,
            "world_size": world_size(),
            "train_wall_time_s": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 3) if seconds and not resumed else None,
            "resumed": resumed,
            # `edgedistill.cpu_ledger`: what one uninterrupted run costs, counted across kills
            "cpu_s": (cpu or {}).get("cpu_s"),
            "cpu_sessions": (cpu or {}).get("sessions"),
            "cpu_complete": (cpu or {}).get("complete"),  # False: resumed from a run before the ledger
            "teacher_cache_bytes": training.teacher_cache.nbytes if training.teacher_cache else None,
        },
        "config": resolved,
        "history": training.history,
    }
    if ensemble is not None:
        report.update(ensemble.report(student_metrics))
    atomic_write_json(out / "distill_report.json", report)
    if training.history:
        plot_curves(
            training.history,
            out / "curves.png",
            training.qat_start,
            title=f"{recipe.task}: {report['teacher']['layers']}-layer teacher -> {report['student']['layers']}-layer student",
        )
    return report
