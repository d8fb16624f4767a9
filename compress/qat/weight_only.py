"""Weight-only QAT (int8/int4, NNCF's LoRA-style adapters): insert, train, report, merge, and the compressed-weight model."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch

from edgedistill.compress.qat.nncf_runtime import (
    _EXAMPLE_ATTR,
    QATError,
    _hooks,
    _import_nncf,
    _is_hook_key,
    fake_quant_backend,
)
from edgedistill.compress.qat.state import float_state_dict

log = logging.getLogger(__name__)


# 5. weight-only int8/int4 fake-quant with absorbable LoRA adapters (NNCF FQ_LORA), for OpenVINO

WEIGHT_ONLY_SCHEME = "nncf_weight_only"


# Asymmetric for both widths: NNCF's default for int8 weight compression and the mode of its own
# FQ_LORA example for int4. A zero point per group follows groups whose weights are not centred
# on zero (one more level in use than symmetric int4's -8..7 around 0); OpenVINO's CPU kernels
# take u4/u8 weights with zero points as they take symmetric ones.
WEIGHT_ONLY_MODES = {"int8": "INT8_ASYM", "int4": "INT4_ASYM"}


def _compressed_linear_shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def insert_weight_only_fake_quant(
    model: torch.nn.Module,
    example_batch: dict[str, torch.Tensor],
    *,
    bits: str,
    group_size: int = 128,
    lora_rank: int = 256,
) -> torch.nn.Module:
    """``model`` with NNCF weight-only fake-quant and absorbable LoRA adapters on its weights (in place).

    ``nncf.compress_weights(..., compression_format=FQ_LORA)``: every Linear/Embedding weight
    ``W`` is used as ``dequantize(quantize(W + B @ A))`` with the ranges of a post-training
    round-to-nearest compression as the start. ``bits`` "int4": INT4_ASYM in groups of
    ``group_size`` input channels (NNCF's ADJUST fallback for rows it does not divide), with the
    embedding table and the output head in per-channel int8, as NNCF does; "int8": INT8_ASYM per
    output channel everywhere. ``lora_rank`` is lowered to the smallest dimension of any Linear
    weight (NNCF refuses a larger rank). Then `train_weight_only` sets what trains.
    """
    nncf = _import_nncf("Weight-only quantization-aware training")
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    if bits not in WEIGHT_ONLY_MODES:
        raise QATError(
            f"insert_weight_only_fake_quant: bits must be one of {list(WEIGHT_ONLY_MODES)}, got {bits!r}"
        )
    if _hooks(model):
        raise QATError(
            "insert_weight_only_fake_quant: the model already has NNCF hooks; pass the float model"
        )
    shapes = _compressed_linear_shapes(model)
    rank = min([lora_rank, *(min(s) for s in shapes)])
    if rank < lora_rank:
        log.info(
            "LoRA rank %d lowered to %d, the smallest dimension of the model's Linear weights",
            lora_rank,
            rank,
        )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        qmodel = nncf.compress_weights(
            model,
            mode=getattr(nncf.CompressWeightsMode, WEIGHT_ONLY_MODES[bits]),
            group_size=group_size if bits == "int4" else -1,
            ratio=1.0,
            dataset=nncf.Dataset([example_batch]),  # traced once; int8 and RTN int4 are data-free
            compression_format=nncf.CompressionFormat.FQ_LORA,
            advanced_parameters=AdvancedCompressionParameters(
                lora_adapter_rank=rank, group_size_fallback_mode=GroupSizeFallbackMode.ADJUST
            ),
        )
    setattr(qmodel, _EXAMPLE_ATTR, {k: v[:1].detach().clone() for k, v in example_batch.items()})
    _lora_to_float32(qmodel)
    train_weight_only(qmodel)
    qmodel.train(was_training)
    return qmodel


def _lora_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    from nncf.torch.quantization.layers import LoraMixin

    return [(name, module) for name, module in _hooks(model) if isinstance(module, LoraMixin)]


def _lora_to_float32(qmodel: torch.nn.Module) -> None:
    """NNCF creates the adapters in bfloat16; in a float32 student their small updates would round away."""
    for _, module in _lora_modules(qmodel):
        for attr in ("lora_A", "lora_B"):
            param = getattr(module, attr)
            if param.dtype != torch.float32:
                setattr(
                    module,
                    attr,
                    torch.nn.Parameter(param.detach().float(), requires_grad=param.requires_grad),
                )


def train_weight_only(qmodel: torch.nn.Module) -> int:
    """Freeze the model's own weights; train the LoRA adapters and every weight quantizer's range.

    What NNCF's FQ_LORA recipe trains (the base weights stay as they are and the adapters absorb
    the change). Returns the number of trainable elements.
    """
    from nncf.torch.quantization.layers import BaseQuantizer

    for name, param in qmodel.named_parameters():
        if not _is_hook_key(name):
            param.requires_grad_(False)
    for _, module in _hooks(qmodel):
        if isinstance(module, BaseQuantizer):
            module.enable_gradients()
    return sum(p.numel() for p in qmodel.parameters() if p.requires_grad)


def weight_only_summary(qmodel: torch.nn.Module) -> dict[str, Any]:
    """The weight quantizers of an FQ_LORA model: bits, group sizes, LoRA rank, counts (JSON-serialisable)."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.quantization.layers import BaseQuantizer

    nncf = _import_nncf("Describing a weight-only quantization-aware model")
    weights = []
    for hook_name, module in _hooks(qmodel):
        if not isinstance(module, BaseQuantizer):
            continue
        _, op_name, _ = decode_hook_name(hook_name)
        spec = getattr(module, "_lspec", None)
        shape = list(spec.weight_shape) if spec is not None else None
        weights.append(
            {
                "parameter": op_name.replace(":", "."),
                "bits": int(module.num_bits),
                "mode": "symmetric" if "Symmetric" in type(module).__name__ else "asymmetric",
                # [rows, groups, group size] for grouped int4; per output channel otherwise
                "group_size": shape[-1] if shape is not None and len(shape) == 3 else -1,
                "lora_rank": int(spec.lora_rank) if spec is not None else None,
            }
        )
    lora_ranks = {w["lora_rank"] for w in weights if w["lora_rank"] is not None}
    return {
        "nncf_version": str(nncf.__version__),
        "fake_quant_kernels": fake_quant_backend("cpu"),
        "compression_format": "fake_quantize_with_lora",
        "weights": weights,
        "weight_quantizers": len(weights),
        "bits": dict(Counter(f"int{w['bits']}" for w in weights)),
        "group_sizes": dict(Counter(str(w["group_size"]) for w in weights)),
        "lora_rank": max(lora_ranks) if lora_ranks else None,
        "with_lora": sum(w["lora_rank"] is not None for w in weights),
        "trainable_parameters": sum(p.numel() for p in qmodel.parameters() if p.requires_grad),
    }


@torch.no_grad()
def merged_float_state_dict(qmodel: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as its quantizers see them (``W + B @ A`` where LoRA sits), transformers keys.

    This is the latent float model of FQ_LORA training: a float export of the student, or a
    post-training quantization at another precision, starts from what was trained, not from the
    weights the adapters were added to.
    """
    from nncf.torch.function_hook.hook_storage import decode_hook_name

    state = {k: v.detach().clone() for k, v in float_state_dict(qmodel).items()}
    names_of: dict[int, list[str]] = {}  # tied weights: one parameter under several names
    for name, param in qmodel.named_parameters(remove_duplicate=False):
        if not _is_hook_key(name):
            names_of.setdefault(id(param), []).append(name)
    parameters = dict(qmodel.named_parameters(remove_duplicate=False))
    for hook_name, module in _lora_modules(qmodel):
        _, op_name, _ = decode_hook_name(hook_name)
        key = op_name.replace(":", ".")
        if key not in state or key not in parameters:
            raise QATError(f"merged_float_state_dict: LoRA adapter on {key}, which the model does not hold")
        weight = state[key]
        merged = (weight + (module.lora_B.float() @ module.lora_A.float()).to(weight.dtype)).contiguous()
        for name in names_of[id(parameters[key])]:
            state[name] = merged
    return state


class _Decompress(torch.nn.Module):
    """A parametrization that turns a stored low-bit weight into the float weight the layer multiplies by."""

    def __init__(self, decompressor: torch.nn.Module):
        super().__init__()
        self.decompressor = decompressor

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.decompressor(packed)


@torch.no_grad()
def compressed_weight_model(
    qmodel: torch.nn.Module, float_model: torch.nn.Module
) -> tuple[torch.nn.Module, dict]:
    """``float_model`` holding the trained FQ_LORA weights as int4/int8 codes + scale + zero point.

    The convert step of weight-only QAT, for export: each quantizer's fake-quant output (LoRA
    absorbed) becomes integer codes, packed, with NNCF's own decompressor modules (``(q - zp) *
    scale``) attached as parametrizations, so ``openvino.convert_model`` stores u4/u8 constants
    and a decompression subgraph. Two deliberate differences from ``nncf.strip(StripFormat.DQ)``:
    scales stay float32 (NNCF casts them to float16, which moves every weight by up to 2^-11 of
    its value away from what was trained), and no NNCF hook remains in the model (its strip
    module also imports ``torchao``, which nncf does not declare). Returns the model and what was
    converted.
    """
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.model_graph_manager import get_module_by_name, split_const_name
    from nncf.torch.quantization.layers import (
        AsymmetricQuantizer,
        INT4AsymmetricWeightsDecompressor,
        INT4SymmetricWeightsDecompressor,
        INT8AsymmetricWeightsDecompressor,
        INT8SymmetricWeightsDecompressor,
        SymmetricQuantizer,
    )
    from nncf.torch.quantization.quantize_functions import TuneRange
    from torch.nn.utils import parametrize

    tiny = torch.finfo(torch.float32).eps
    converted: Counter[str] = Counter()
    for hook_name, quantizer in _hooks(qmodel):
        if not isinstance(quantizer, (AsymmetricQuantizer, SymmetricQuantizer)):
            raise QATError(
                f"compressed_weight_model: {hook_name} is a {type(quantizer).__name__}, not a weight quantizer"
            )
        hook_type, op_name, _ = decode_hook_name(hook_name)
        module_name, attr = split_const_name(op_name)
        weight = getattr(get_module_by_name(module_name, qmodel), attr)
        if hook_type != "post_hooks" or quantizer.num_bits not in (4, 8) or quantizer.narrow_range:
            raise QATError(f"compressed_weight_model: {hook_name} is not a weight-only int4/int8 quantizer")
        fake_quant = quantizer.quantize(weight)
        spec = getattr(quantizer, "_lspec", None)
        if spec is not None:
            fake_quant = fake_quant.reshape(spec.weight_shape)  # [rows, groups, group size] for grouped int4
        fake_quant = fake_quant.float()
        if isinstance(quantizer, AsymmetricQuantizer):
            # the range exactly as the fake-quant forward tunes it, so zero is a level and codes round-trip
            low, width = TuneRange.apply(
                quantizer.input_low, abs(quantizer.input_range) + quantizer.eps, quantizer.levels
            )
            scale = (width.float() / quantizer.level_high).clamp_min(tiny)
            zero_point = torch.clip(
                quantizer.level_low - torch.round(low.float() / scale),
                quantizer.level_low,
                quantizer.level_high,
            )
            codes = torch.clip(
                torch.round(fake_quant / scale + zero_point), quantizer.level_low, quantizer.level_high
            )
            codes, zero_point = codes.to(torch.uint8), zero_point.to(torch.uint8)
            if quantizer.num_bits == 8:
                decompressor = INT8AsymmetricWeightsDecompressor(scale, zero_point, result_dtype=weight.dtype)
            else:
                decompressor = INT4AsymmetricWeightsDecompressor(
                    scale, zero_point, codes.shape, weight.shape, weight.dtype
                )
        else:
            scale = (quantizer.scale.float() / abs(quantizer.level_low)).clamp_min(tiny)
            codes = torch.clip(torch.round(fake_quant / scale), quantizer.level_low, quantizer.level_high).to(
                torch.int8
            )
            if quantizer.num_bits == 8:
                decompressor = INT8SymmetricWeightsDecompressor(scale, result_dtype=weight.dtype)
            else:
                decompressor = INT4SymmetricWeightsDecompressor(
                    scale, codes.shape, weight.shape, weight.dtype
                )
        decompressor._scale = scale.contiguous()  # float32, as trained (NNCF stores float16)
        original = getattr(get_module_by_name(module_name, float_model), attr)
        # tied weights (an embedding table that is also the output head): every user takes the codes
        users = [
            (module, name)
            for module in float_model.modules()
            for name, param in module.named_parameters(recurse=False)
            if param is original
        ]
        packed = torch.nn.Parameter(decompressor.pack_weight(codes), requires_grad=False)
        parametrization = _Decompress(decompressor)
        for module, name in users:
            if parametrize.is_parametrized(module, name):
                raise QATError(f"compressed_weight_model: {op_name} is quantized twice")
            setattr(module, name, packed)
            parametrize.register_parametrization(module, name, parametrization, unsafe=True)
        converted[f"int{quantizer.num_bits}"] += 1
    return float_model.eval(), {"weights": dict(converted), "scale_dtype": "float32"}
