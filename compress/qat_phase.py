"""The quantization-aware phase of distillation: calibration batches, which fake quantization a `qat.mode` inserts, and what the run records about it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.trainer import (
    model_inputs,
)
from edgedistill.compress.training import (
    world_size,
)
from edgedistill.errors import EdgeDistillError

log = logging.getLogger(__name__)


def _calibration_batches(train_ds, collator, recipe: DistillRecipe, device) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(recipe.training.seed + 7)
    loader = DataLoader(
        train_ds,
        batch_size=recipe.training.batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=generator,
    )
    batches = []
    for batch in loader:
        batches.append({k: v.to(device) for k, v in model_inputs(batch).items()})
        if len(batches) >= recipe.qat.calibration_batches:
            break
    return batches


def check_gguf_student(recipe: DistillRecipe, student) -> None:
    """Before any training: a ``qat.mode gguf_*`` student must be one the GGUF exporter writes.

    feature-extraction: a BERT that llama.cpp's BERT graph runs (absolute positions, GELU, all
    heads); causal-lm: any architecture with a GGUF tensor rule (`attach_gguf_fake_quant` raises
    for the others). The plan itself is checked by building it once.
    """
    if not recipe.qat.mode.startswith("gguf_"):
        return
    from edgedistill.errors import UnsupportedModelError
    from edgedistill.quant.gguf_arch import bert_problems

    config = student.config.to_dict()
    model_type = config.get("model_type")
    where = f"qat.mode {recipe.qat.mode} (student from teacher {recipe.teacher.path})"
    if recipe.task == "feature-extraction":
        if model_type != "bert":
            raise UnsupportedModelError(
                f"{where}: llama.cpp runs BERT sentence embedders only, this student is model_type "
                f"{model_type!r}. Use qat.mode int8 and export it to ONNX/OpenVINO, or distill a BERT teacher."
            )
        problems = bert_problems(config)
        if problems:
            raise UnsupportedModelError(
                f"{where}: this BERT cannot run in llama.cpp: {'; '.join(problems)}. Use qat.mode int8 "
                "(ONNX/OpenVINO) instead."
            )
    from edgedistill.compress.gguf_quant import gguf_tensor_plan

    try:
        gguf_tensor_plan(student, recipe.qat.mode.removeprefix("gguf_"))
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{where}: {exc} (qat.mode int8 / ov_* are the other modes)") from None


def insert_mode_fake_quant(recipe: DistillRecipe, student, train_ds, collator, init_dir: Path):
    """The student with the fake-quant of ``recipe.qat.mode`` inserted: one branch per mode.

    The inserted quantizers are saved in ``init_dir`` once and rebuilt from there on resume, so
    an interrupted phase continues with exactly the quantizers it started with. GGUF-aware
    modes (``compress.gguf_quant.attach_gguf_fake_quant(model, precision)``) and the OpenVINO
    weight-only modes (``qat.insert_weight_only_fake_quant``: NNCF FQ_LORA) are further
    branches, with their own entries in ``describe_qat`` and ``distill_output.save_student``.
    """
    if recipe.qat.mode == "int8":
        from edgedistill.compress import qat as qat_lib

        qat_lib.ensure_nncf_extensions()
        if (init_dir / "nncf_config.json").is_file():
            return qat_lib.load_qat_model(student, init_dir)
        device = next(student.parameters()).device
        calibration = _calibration_batches(train_ds, collator, recipe, device)
        student = qat_lib.insert_fake_quant(student, calibration)
        if world_size() == 1 or torch.distributed.get_rank() == 0:
            qat_lib.save_qat_state(student, init_dir)
        return student
    if recipe.qat.mode.startswith("ov_"):
        from edgedistill.compress import qat as qat_lib

        # NNCF weight-only fake-quant with absorbable LoRA (FQ_LORA): RTN ranges to start from,
        # adapters initialised at random (NNCF), so the start is saved and reused on resume
        qat_lib.ensure_nncf_extensions()
        if (init_dir / "nncf_config.json").is_file():
            student = qat_lib.load_qat_model(student, init_dir)
            qat_lib.train_weight_only(student)
            return student.train()
        device = next(student.parameters()).device
        example = _calibration_batches(train_ds, collator, recipe, device)[0]  # traced once, data-free ranges
        student = qat_lib.insert_weight_only_fake_quant(
            student,
            example,
            bits=_weight_only_bits(recipe),
            group_size=recipe.qat.group_size,
            lora_rank=recipe.qat.lora_rank,
        )
        if world_size() == 1 or torch.distributed.get_rank() == 0:
            qat_lib.save_qat_state(student, init_dir)
        return student
    if recipe.qat.mode.startswith("gguf_"):
        from edgedistill.compress.gguf_quant import attach_gguf_fake_quant

        # nothing learned to initialise: the block scales follow the weights, so resume needs no state
        student._edgedistill_gguf = attach_gguf_fake_quant(student, recipe.qat.mode.removeprefix("gguf_"))
        return student
    raise EdgeDistillError(f"qat.mode {recipe.qat.mode!r} has no fake-quant implementation in distill")


def _weight_only_bits(recipe: DistillRecipe) -> str:
    """ov_int4_wo -> int4, ov_int8_wo -> int8: the OpenVINO export precision the student trains for."""
    return recipe.qat.mode.removeprefix("ov_").removesuffix("_wo")


def describe_qat(recipe: DistillRecipe, student, qat_start: int) -> dict:
    """What the quantization-aware phase did, for the report and the student's edgedistill.json."""
    if recipe.qat.mode.startswith("ov_"):
        from edgedistill.compress import qat as qat_lib

        return {
            "mode": recipe.qat.mode,
            "scheme": qat_lib.WEIGHT_ONLY_SCHEME,
            "precision": _weight_only_bits(recipe),
            "weights": f"{_weight_only_bits(recipe)} asymmetric, weight-only (activations float)",
            "start_step": qat_start,
            "nncf_config": "qat/nncf_config.json",
            "state": "qat/qat_state.safetensors",
            "summary": qat_lib.weight_only_summary(student),
        }
    if recipe.qat.mode.startswith("gguf_"):
        report = student._edgedistill_gguf.report()
        return {
            "mode": recipe.qat.mode,
            "scheme": "gguf",
            "precision": report["precision"],
            "start_step": qat_start,
            "activations": report["activations"],
            "tensor_types": report["tensor_types"],
            "fallbacks": report["fallbacks"],
            "overrides": report["overrides"],
        }
    from edgedistill.compress import qat as qat_lib

    return {
        "mode": recipe.qat.mode,
        "start_step": qat_start,
        "nncf_config": "qat/nncf_config.json",
        "state": "qat/qat_state.safetensors",
        "summary": qat_lib.qat_summary(student),
    }


def evaluated_with(qat_info: dict | None) -> str:
    """How the report's student metrics were computed (the report's ``student.evaluated_with``)."""
    if qat_info is None:
        return "float32 in torch"
    if qat_info.get("scheme") == "gguf":
        return (
            f"GGUF {qat_info['precision']} fake-quant (weights and llama.cpp's activation rounding) in torch"
        )
    if qat_info.get("scheme") == "nncf_weight_only":
        return f"{qat_info['precision']} weight-only fake-quant with LoRA adapters (NNCF FQ_LORA) in torch"
    return "int8 fake-quant (NNCF) in torch"
