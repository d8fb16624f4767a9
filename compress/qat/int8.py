"""Int8 quantization-aware training: insert NNCF fake quantizers whose ranges are learned during distillation."""

from __future__ import annotations

import logging

import torch

from edgedistill.compress.qat.nncf_runtime import _EXAMPLE_ATTR, QATError, _hooks, _import_nncf, _is_hook_key

log = logging.getLogger(__name__)


PRESETS = ("mixed", "performance")


# 2. insert fake-quant


def insert_fake_quant(
    model: torch.nn.Module,
    calibration_batches: list[dict[str, torch.Tensor]],
    *,
    preset: str = "mixed",
) -> torch.nn.Module:
    """Return ``model`` with NNCF int8 fake-quant inserted and calibrated, ready to train.

    Weights: symmetric, per output channel (embedding tables per row). Activations: per tensor,
    asymmetric under ``preset="mixed"`` (symmetric under "performance"). ``model_type`` is
    TRANSFORMER; SmoothQuant and bias correction are off, so no float weight changes and no op
    is added: ``float_state_dict(result)`` equals ``model.state_dict()`` right after this call.
    Quantizer scales/ranges are trainable parameters; gradients flow through fake-quant (STE).

    NOT in place: ``nncf.quantize`` deep-copies, so this returns a NEW module (same class) and
    leaves ``model`` untouched. Rebuild optimisers on the returned object. Its train/eval mode
    is set to that of ``model``.
    """
    nncf = _import_nncf("Quantization-aware training")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        QuantizationParameters,
    )

    if preset not in PRESETS:
        raise QATError(f"insert_fake_quant: preset must be one of {list(PRESETS)}, got {preset!r}")
    batches = list(calibration_batches)
    if not batches:
        raise QATError("insert_fake_quant needs at least one calibration batch (got none)")
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict) or not batch or not all(torch.is_tensor(v) for v in batch.values()):
            raise QATError(
                f"calibration batch {i} must be a non-empty dict of tensors (input_ids, attention_mask, "
                f"...) passed as model(**batch); got {type(batch).__name__}"
            )
    if _hooks(model):
        raise QATError("insert_fake_quant: the model already has NNCF fake-quant; pass the float model")
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if attn not in (None, "eager"):
        log.warning(
            "The model uses attn_implementation=%r: NNCF cannot see the attention matmuls inside it, so "
            "they stay float. Load the model with attn_implementation='eager' for full int8 attention.",
            attn,
        )

    was_training = model.training
    advanced = AdvancedQuantizationParameters(
        # SmoothQuant rescales weights and inserts Mul ops: the saved float weights would no longer
        # be a plain transformers model. Bias correction edits float biases. QAT learns both anyway.
        smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=-1),
        disable_bias_correction=True,
        weights_quantization_params=QuantizationParameters(num_bits=8, per_channel=True),
        activations_quantization_params=QuantizationParameters(num_bits=8, per_channel=False),
    )
    with torch.no_grad():
        qmodel = nncf.quantize(
            model,
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset.MIXED
            if preset == "mixed"
            else nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(batches),  # every batch given, each batch one calibration step
            advanced_parameters=advanced,
        )
    qmodel.train(was_training)  # NNCF's engine leaves the copy in eval mode
    # One row of real input, so qat_summary can trace the same graph NNCF quantized.
    setattr(qmodel, _EXAMPLE_ATTR, {k: v[:1].detach().clone() for k, v in batches[0].items()})
    for name, param in qmodel.named_parameters():
        if _is_hook_key(name) and param.is_floating_point() and not param.requires_grad:
            param.requires_grad_(True)  # scales/ranges are learned in QAT (NNCF already sets this)
    return qmodel
