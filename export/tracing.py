"""Tracing helpers shared by the formats: a traceable wrapper per task, input/output names, example batches, int8 method, narrow-range clipping."""

from __future__ import annotations

import logging
from typing import Any

from edgedistill.errors import (
    ExportError,
)
from edgedistill.export.config import ExportConfig
from edgedistill.export.student import StudentInfo
from edgedistill.outputs import SENTENCE_EMBEDDING

log = logging.getLogger(__name__)


def clip_narrow_range_on_export(qmodel) -> int:
    """Make NNCF's export of narrow-range quantizers keep the grid they were trained on.

    NNCF quantizes int8 weights symmetrically on a *narrow* grid: levels -127..127 (255 levels),
    and in training its fake-quant clips to ``[-scale, scale]``. On export it writes a 256-level
    grid instead: QuantizeLinear with an int8 zero point (saturates at -128), and for OpenVINO
    ``fake_quantize_per_channel_affine`` with ``quant_min`` widened to -128. Both let a weight
    below ``-scale`` become -128 where training used -127. After post-training calibration no
    weight lies there (the scale is the row's max |w|), but QAT moves weights past their learned
    scale: on a tiny test student 98 weights in 9 of its 11 weight tensors did, each exported one
    quantum off, which moved its logits by 2.2e-4 on average (max 1.1e-3, 37 of 64 sentences).

    This clamps the input of every narrow-range quantizer to its trained range inside the export
    path (the quantizer's ``_prepare_export_quantization``, which only tracing calls), as NNCF
    itself does for its half-range quantizers; the clamp of a weight constant-folds away (OpenVINO
    folds it; `edgedistill.export.onnx.fold_weight_quantizers` evaluates it for ONNX). The model's
    eager forward (the fake-quant reference) is untouched. Returns the number of quantizers changed.
    """
    import types

    import torch
    from nncf.torch.quantization.layers import BaseQuantizer

    count = 0
    for module in qmodel.modules():
        if not isinstance(module, BaseQuantizer) or not getattr(module, "narrow_range", False):
            continue
        if getattr(module, "_edgedistill_clips_on_export", False):
            continue
        original = module._prepare_export_quantization

        def prepare(self, x, _original=original):
            x, level_high, level_low, input_low, input_high = _original(x)
            if int(level_high) - int(level_low) + 1 == 255:  # still the narrow grid (not half-range)
                x = torch.min(torch.max(x, input_low), input_high)
            return x, level_high, level_low, input_low, input_high

        module._prepare_export_quantization = types.MethodType(prepare, module)
        module._edgedistill_clips_on_export = True
        count += 1
    return count


def int8_method(student: StudentInfo, cfg: ExportConfig, default_without_qat: str) -> str:
    """Settle ``cfg.int8_method`` for one student: ``qat`` | ``dynamic`` | ``static``."""
    method = cfg.int8_method
    if method == "auto":
        if student.has_qat:
            return "qat"
        return "static" if cfg.calib_data is not None else default_without_qat
    if method == "qat" and not student.has_qat:
        raise ExportError(
            f"int8_method 'qat' needs a student trained quantization-aware, but {student.path} has no QAT "
            f"state. Distill with `--qat int8`, or use --int8-method dynamic (or static with --calib-data)."
        )
    return method


def forward_parameters(model) -> list[str]:
    """Names the model's forward takes explicitly (``**kwargs`` excluded), in signature order."""
    import inspect

    params = inspect.signature(model.forward).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def model_input_names(model, tokenizer) -> list[str]:
    """Tokenizer outputs the model's forward takes, in forward-signature order."""
    provided = set(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    provided |= {"input_ids", "attention_mask"}
    return [p for p in forward_parameters(model) if p in provided]


def task_output_names(task: str) -> list[str]:
    return ["last_hidden_state"] if task == "feature-extraction" else ["logits"]


def output_names(student: StudentInfo) -> list[str]:
    """What the student's traced graph returns, in order: its task's output, then a generalist's others."""
    return task_output_names(student.task) + student.extra_outputs


# the dimensions of each output that vary with the input
OUTPUT_AXES = {
    "logits": {0: "batch_size"},
    "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
    SENTENCE_EMBEDDING: {0: "batch_size"},
}


def _mean_pool(hidden, attention_mask):
    """Mean of the token vectors over real tokens, in the graph (`edgedistill.numerics.mean_pool`'s formula)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)


def causal_additive_mask(input_ids, attention_mask=None):
    """The 4-D float mask (0 = attend, dtype minimum = masked) decoders build from a 2-D padding mask.

    transformers builds it with ``torch.vmap`` (torch >= 2.6), which ``torch.jit.trace`` cannot
    record (``unordered_map::at``), and its fallback bakes the traced sequence length into the
    graph. This one is plain tensor ops on the input's own shape, so the traced graph takes any
    length; a 4-D mask is used by the model as given. Same values as transformers' eager mask:
    key ``k`` is visible from query ``q`` when ``k <= q`` and ``k`` is not padding.
    """
    import torch

    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    visible = (positions[None, :] <= positions[:, None])[None, None]  # [1, 1, q, k]
    if attention_mask is not None:
        visible = visible & attention_mask[:, None, None, :].bool()
    dtype = torch.float32
    return torch.zeros(visible.shape, dtype=dtype, device=input_ids.device).masked_fill(
        ~visible, torch.finfo(dtype).min
    )


def traceable(
    model, task: str, input_names: list[str], *, additive_mask: bool = False, outputs: list[str] | None = None
):
    """Wrap an HF model so tracing sees positional tensor inputs and named tensor outputs.

    ``outputs`` (default: the task's one): a generalist classifier's ``["logits", "sentence_embedding"]``
    returns both, the embedding mean-pooled from the last hidden state with the attention mask inside
    the graph, so an app gets it from the artifact without pooling code of its own.
    ``additive_mask`` (encoders): the 2-D padding mask is made 4-D and additive here with plain
    tensor ops, instead of by transformers' mask builder (which pt2e's prepared graphs cannot run).
    """
    import torch

    names = outputs or task_output_names(task)
    output_name = names[0]
    pooled = SENTENCE_EMBEDDING in names[1:]

    class TaskOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            inputs = dict(zip(input_names, tensors, strict=True))
            extra = {}
            if additive_mask and task != "text-generation":
                mask = inputs["attention_mask"][:, None, None, :].to(torch.float32)
                inputs["attention_mask"] = (1.0 - mask) * torch.finfo(torch.float32).min
            if task == "text-generation":
                extra["use_cache"] = False  # full-sequence logits, no KV
                inputs["attention_mask"] = causal_additive_mask(
                    inputs["input_ids"], inputs.get("attention_mask")
                )
            if pooled:
                extra["output_hidden_states"] = True
                mask = dict(zip(input_names, tensors, strict=True))["attention_mask"]  # the 2-D padding mask
            out = self.inner(**inputs, return_dict=True, **extra)
            if pooled:
                return getattr(out, output_name), _mean_pool(out.hidden_states[-1], mask)
            return getattr(out, output_name)

    return TaskOutput(model).eval()


def example_batch(student: StudentInfo, tokenizer, input_names: list[str]) -> dict[str, Any]:
    """A real, padded two-sentence batch (torch tensors) for tracing (one sentence without a pad token)."""
    sentences = ["An example sentence to trace the model with.", "Short one."]
    if getattr(tokenizer, "pad_token_id", None) is None:
        sentences = sentences[:1]
    batch = tokenizer(
        sentences,
        padding=len(sentences) > 1,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
    return {name: batch[name] for name in input_names}
