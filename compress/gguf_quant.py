"""Quantization-aware training for GGUF: fake quantization that equals the exported llama.cpp weights.

The three QAT phases, for a causal LM (Llama / Qwen2 / Gemma as transformers implements them)::

    handle = attach_gguf_fake_quant(student, "q4_0")  # prepare: forward sees the GGUF weights
    ... train as usual: gradients reach the float weights through a straight-through estimator ...
    handle.remove()                                    # convert: the float (latent) weights are back
    student.save_pretrained(folder)                    # then export.gguf.write_gguf(folder, ..., "q4_0")

The exported file then holds exactly the weights the student was trained with, because

- `fake_quant_blocks` reproduces ``gguf.quants`` (the exporter's quantizer) bit for bit: blocks
  of 32 along each row, the float32 scale arithmetic, the rounding and the float16 scale;
- which tensor gets which type comes from the exporter's own rule (`edgedistill.quant.gguf_plan.plan_tensors`):
  norms, biases and 1-D tensors stay F32, the output projection (``token_embd`` when embeddings
  are tied) stays Q8_0 at 4 bits, and rows that are not a multiple of 32 fall back to F16.

What the rounding is, read from gguf 0.19's ``quants.py`` (the reference C code agrees):

- Q8_0: ``d = amax / 127``, ``q = round_half_away(x * (1 / d))``, stored ``fp16(d) * q``.
- Q4_0: the block's signed value of largest magnitude (the first one on ties) gives
  ``d = max / -8``; ``q = min(trunc(x * (1 / d) + 8.5), 15)`` (so ties round up, and the float32
  sum ``x / d + 8.5`` is rounded before the truncation); stored ``fp16(d) * (q - 8)``. The
  element holding ``max`` maps to -8; the opposite end is clipped at +7.
- The quantized values use the float32 scale; only the stored scale is float16 (overflow to
  inf and float16 subnormals included). A zero block stores 0.

llama.cpp's CPU matmul for Q4_0/Q8_0 weights also quantizes its *input activations* to Q8_0
blocks (the weight type's ``vec_dot_type``), and for F16 weights rounds them to float16. With
``simulate_activations=True`` the fake-quant model does the same, using the x86 (AVX/AVX2 and
repack) kernels' rounding by default: ``d = amax / 127`` stored as fp16,
``q = round_half_even(x * (127 / amax))``. ARM NEON multiplies by ``1 / d`` (ties to even) and
the portable C reference by ``1 / d`` with ties away from zero (``activation_rounding``); they
differ only on ties and in the last bit of the inverse scale. Measured on the tiny Llama of the
tests, this brings torch's logits much closer to llama.cpp's (see tests/test_gguf_qat.py).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

if TYPE_CHECKING:  # pragma: no cover
    from edgedistill.quant.gguf_plan import TensorPlan

log = logging.getLogger(__name__)

BLOCK_SIZE = 32  # Q8_0 and Q4_0 block length, cut along the last dimension (the GGUF row)
# Precisions fake quantization simulates exactly (the exporter's generic aliases are accepted too).
QAT_PRECISIONS = ("f16", "q8_0", "q4_0")
# ggml's vec_dot_type: what llama.cpp's CPU matmul converts the input activations to.
ACTIVATION_TYPES = {"Q4_0": "Q8_0", "Q8_0": "Q8_0", "F16": "F16", "F32": "F32"}
# CPU kernels' Q8_0 activation rounding (see `_q8_0_activations`).
ACTIVATION_ROUNDINGS = ("x86", "arm", "reference")


# --------------------------------------------------------------------------- exact block quantizers


def _check_rows(w: Tensor, qtype: str) -> Tensor:
    if w.ndim == 0 or w.shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"{qtype} quantizes rows in blocks of {BLOCK_SIZE}; a tensor of shape {tuple(w.shape)} has rows of "
            f"{w.shape[-1] if w.ndim else 0}. The GGUF exporter stores such tensors as F16 instead."
        )
    return w.to(torch.float32).reshape(-1, BLOCK_SIZE)


def _exact_inverse(d: Tensor, numerator: float = 1.0) -> Tensor:
    """``numerator / d`` rounded once (``1.0 / t`` in torch is ``reciprocal(t) * 1.0``), 0 where ``d == 0``."""
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where(d == 0, torch.zeros_like(d), torch.full_like(d, numerator) / safe)


def _fp16_scale(d: Tensor) -> Tensor:
    return d.to(torch.float16).to(torch.float32)


def _q8_0(w: Tensor) -> Tensor:
    blocks = _check_rows(w, "Q8_0")
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    q = _round_half_away(blocks * _exact_inverse(d)) + 0.0  # + 0.0: no -0.0, like gguf's int8
    return (q * _fp16_scale(d)).reshape(w.shape)


def _q4_0(w: Tensor) -> Tensor:
    blocks = _check_rows(w, "Q4_0")
    mag = blocks.abs()
    is_max = mag == mag.amax(dim=1, keepdim=True)
    # numpy's argmax takes the first of equal magnitudes (+m and -m): pick it without relying on
    # how a device breaks ties in argmax
    first = is_max & (is_max.cumsum(dim=1) == 1)
    signed_max = blocks.gather(1, first.to(torch.int32).argmax(dim=1, keepdim=True))
    d = signed_max / -8
    q = torch.trunc(blocks * _exact_inverse(d) + 8.5).clamp(0, 15)
    return (_fp16_scale(d) * (q - 8)).reshape(w.shape)


def _f16(w: Tensor) -> Tensor:
    return w.to(torch.float32).to(torch.float16).to(torch.float32)


def _round_half_away(v: Tensor) -> Tensor:
    """gguf's np_roundf / C roundf, exactly (floor(|v| + 0.5) is not: 0.49999997 + 0.5 == 1.0)."""
    mag = v.abs()
    whole = torch.floor(mag)
    return torch.sign(v) * (whole + torch.floor(2 * (mag - whole)))


def _q8_0_activations(x: Tensor, rounding: str = "x86") -> Tensor:
    """ggml's CPU ``quantize_row_q8_0`` for matmul inputs; the scale is ``fp16(amax / 127)`` in all.

    ``x86`` (AVX/AVX2 and the repack kernels' ``ggml_quantize_mat_q8_0_4x8``): ``x * (127 / amax)``
    rounded half to even; ``arm`` (NEON): ``x * (1 / d)`` half to even; ``reference`` (the portable C
    code, and what gguf writes for weights): ``x * (1 / d)`` half away from zero.
    """
    blocks = _check_rows(x, "Q8_0")
    amax = blocks.abs().amax(dim=1, keepdim=True)
    d = amax / 127
    if rounding == "x86":
        q = torch.round(blocks * _exact_inverse(amax, 127.0))
    elif rounding == "arm":
        q = torch.round(blocks * _exact_inverse(d))
    elif rounding == "reference":
        q = _round_half_away(blocks * _exact_inverse(d))
    else:
        raise ValueError(f"activation rounding {rounding!r}: choose one of {', '.join(ACTIVATION_ROUNDINGS)}")
    return (q.clamp(-128, 127) * _fp16_scale(d)).reshape(x.shape)


_WEIGHT_QUANTIZERS: dict[str, Callable[[Tensor], Tensor]] = {"Q8_0": _q8_0, "Q4_0": _q4_0, "F16": _f16}


class _StraightThrough(torch.autograd.Function):
    """Forward: an exact quantize-dequantize; backward: the identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: Tensor, quantizer: Callable[[Tensor], Tensor]) -> Tensor:  # noqa: ARG004
        return quantizer(x).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return grad, None


def _normalize_type(qtype: str, table: dict[str, Any]) -> str:
    name = qtype.upper()
    if name not in table:
        raise ValueError(
            f"cannot simulate GGML type {qtype!r}; choose one of {', '.join(t.lower() for t in table)}"
        )
    return name


def fake_quant_blocks(w: Tensor, qtype: str) -> Tensor:
    """GGUF ``dequantize(quantize(w))`` for ``qtype`` in q8_0, q4_0 (or f16), differentiable.

    Blocks of 32 run along the last dimension. The forward pass equals ``gguf.quants`` bit for bit
    for float32 input on CPU or CUDA (computed in float32; other dtypes are cast back at the end,
    which rounds); the backward pass is the straight-through estimator. Blocks whose largest
    magnitude is below ~1e-36 (a float32 scale whose inverse overflows) are outside the exact
    range: gguf itself casts inf/NaN to integers there.
    """
    return _StraightThrough.apply(w, _WEIGHT_QUANTIZERS[_normalize_type(qtype, _WEIGHT_QUANTIZERS)])


def fake_quant_activations(x: Tensor, vec_dot_type: str = "q8_0", *, rounding: str = "x86") -> Tensor:
    """What llama.cpp's CPU matmul makes of its input activations (differentiable, straight-through).

    ``vec_dot_type`` is the weight type's: Q8_0 blocks for Q4_0/Q8_0 weights (``rounding`` picks the
    CPU kernel: x86, arm or reference), float16 for F16 weights, unchanged for F32.
    """
    name = vec_dot_type.upper()
    if name == "F32":
        return x
    if name == "F16":
        return _StraightThrough.apply(x, _f16)
    if name != "Q8_0":
        raise ValueError(f"llama.cpp converts matmul inputs to q8_0, f16 or f32, not {vec_dot_type!r}")
    if rounding not in ACTIVATION_ROUNDINGS:
        raise ValueError(f"activation rounding {rounding!r}: choose one of {', '.join(ACTIVATION_ROUNDINGS)}")
    return _StraightThrough.apply(x, functools.partial(_q8_0_activations, rounding=rounding))


# --------------------------------------------------------------------------- which tensors, which type


def _qat_precision(precision: str) -> str:
    from edgedistill.quant.gguf_types import normalize_precision

    name = normalize_precision(precision)
    if name not in QAT_PRECISIONS:
        raise ValueError(
            f"GGUF fake quantization simulates {', '.join(QAT_PRECISIONS)} (aliases int8, int4, fp16) exactly; "
            f"{name} is not simulated (k-quants are chosen by llama.cpp's own search)"
        )
    return name


def gguf_tensor_plan(model: nn.Module, precision: str) -> TensorPlan:
    """The exporter's plan (`edgedistill.quant.gguf_plan.plan_tensors`) for ``model``'s parameters at ``precision``.

    Keys are ``named_parameters()`` names (a tied ``lm_head`` appears once, as the embedding), which
    are the keys ``save_pretrained`` writes. Raises what the exporter raises for a model it cannot map.
    """
    from edgedistill.quant.gguf_plan import plan_tensors

    config = model.config.to_dict()
    # a parametrized weight is listed as "<module>.parametrizations.<name>.original"
    shapes = {
        name.replace(".parametrizations.", ".").removesuffix(".original"): tuple(p.shape)
        for name, p in model.named_parameters()
    }
    return plan_tensors(config, shapes, precision, source=f"{type(model).__name__} parameters")


def gguf_parameter_types(model: nn.Module, precision: str) -> dict[str, str]:
    """Parameter name -> the GGML type the exporter stores it as (F32, F16, Q8_0, Q4_0)."""
    return {rule.source: rule.ggml_type for rule in gguf_tensor_plan(model, precision).tensors}


# --------------------------------------------------------------------------- attaching to a model


class _FakeQuantWeight(nn.Module):
    def __init__(self, ggml_type: str):
        super().__init__()
        self.ggml_type = ggml_type

    def forward(self, weight: Tensor) -> Tensor:
        return fake_quant_blocks(weight, self.ggml_type)

    def extra_repr(self) -> str:
        return self.ggml_type


@dataclass
class GGUFFakeQuant:
    """A model's forward running on GGUF-exact weights; `remove` or `bake` ends it."""

    model: nn.Module = field(repr=False)
    precision: str
    plan: TensorPlan = field(repr=False)
    simulate_activations: bool
    activation_rounding: str
    parameter_types: dict[str, str]  # parameter name -> GGML type, for every exported parameter
    _parametrized: list[tuple[nn.Module, str]] = field(default_factory=list, repr=False)
    _hooks: list[Any] = field(default_factory=list, repr=False)
    _sources: dict[str, tuple[nn.Parameter, str]] = field(default_factory=dict, repr=False)
    active: bool = True

    def report(self) -> dict[str, Any]:
        """Every exported parameter with its GGUF name and type; fallbacks and overrides with reasons."""
        rules = self.plan.tensors
        return {
            "precision": self.precision,
            "activations": (
                f"llama.cpp CPU: Q8_0 ({self.activation_rounding} rounding) for Q4_0/Q8_0 weights, "
                "F16 for F16 weights"
                if self.simulate_activations
                else "not simulated"
            ),
            "tensor_types": dict(sorted(Counter(r.ggml_type for r in rules).items())),
            "tensors": [
                {"parameter": r.source, "tensor": r.gguf_name, "type": r.ggml_type, "wanted": r.wanted}
                for r in rules
            ],
            "fake_quantized": sorted(r.source for r in rules if r.ggml_type != "F32"),
            "fallbacks": self.plan.fallbacks(),
            "overrides": self.plan.overrides(),
            "skipped": list(self.plan.skipped),
            "output_tensor": self.plan.output_tensor,
        }

    def quantized_weights(self) -> dict[str, Tensor]:
        """Parameter name -> the weight the GGUF file will hold (dequantized, HF layout)."""
        with torch.no_grad():
            return {name: fake_quant_blocks(p, t) for name, (p, t) in self._sources.items()}

    def remove(self) -> None:
        """Back to the float (latent) weights and plain activations: what ``save_pretrained`` should save."""
        if not self.active:
            return
        for hook in self._hooks:
            hook.remove()
        for module, name in self._parametrized:
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        self._hooks.clear()
        self._parametrized.clear()
        self.active = False

    def bake(self) -> None:
        """Write the fake-quantized values into the weights, then `remove`.

        Exporting a baked model gives the same GGUF as exporting the latent weights (quantizing a
        dequantized block again returns it unchanged); activation rounding cannot be baked.
        """
        values = {name: w.detach().clone() for name, w in self.quantized_weights().items()}
        params = {name: p for name, (p, _) in self._sources.items()}
        self.remove()
        with torch.no_grad():
            for name, value in values.items():
                params[name].copy_(value)

    def __enter__(self) -> GGUFFakeQuant:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _activation_hook(vec_dot_type: str, rounding: str):
    def hook(module: nn.Module, args: tuple) -> tuple:  # noqa: ARG001
        return (fake_quant_activations(args[0], vec_dot_type, rounding=rounding), *args[1:])

    return hook


def attach_gguf_fake_quant(
    model: nn.Module, precision: str, *, simulate_activations: bool = True, activation_rounding: str = "x86"
) -> GGUFFakeQuant:
    """Make ``model`` compute with the weights its GGUF export at ``precision`` will hold.

    Every parameter the exporter quantizes (the tensor rule of `export.gguf.plan_tensors`, F16
    fallbacks included) is parametrized with `fake_quant_blocks`; tied weights are parametrized in
    every module that uses them. With ``simulate_activations`` the inputs of those ``nn.Linear``
    layers are converted as llama.cpp's CPU matmul converts them (see the module docstring).
    ``activation_rounding`` names the CPU the artifact will run on (x86, arm; reference for the
    portable C kernels). The parameters stay the same objects, so an existing optimizer keeps working.
    """
    precision = _qat_precision(precision)
    if activation_rounding not in ACTIVATION_ROUNDINGS:
        raise ValueError(
            f"activation_rounding {activation_rounding!r}: choose one of {', '.join(ACTIVATION_ROUNDINGS)}"
        )
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError(
            "the model already has parametrized weights (GGUF fake quantization attached twice?); "
            "call remove() or bake() on the previous handle first"
        )
    plan = gguf_tensor_plan(model, precision)
    params = dict(model.named_parameters())
    types = {rule.source: rule.ggml_type for rule in plan.tensors}
    handle = GGUFFakeQuant(model, precision, plan, simulate_activations, activation_rounding, types)
    by_id = {id(params[name]): (name, t) for name, t in types.items() if t != "F32"}
    handle._sources = {name: (params[name], t) for name, t in types.items() if t != "F32"}

    # collect first: registering a parametrization changes the module's parameters
    targets = [
        (module, pname, by_id[id(p)][1])
        for module in model.modules()
        for pname, p in module._parameters.items()
        if p is not None and id(p) in by_id
    ]
    try:
        for module, pname, ggml_type in targets:
            parametrize.register_parametrization(module, pname, _FakeQuantWeight(ggml_type))
            handle._parametrized.append((module, pname))
            if simulate_activations and isinstance(module, nn.Linear) and pname == "weight":
                hook = module.register_forward_pre_hook(
                    _activation_hook(ACTIVATION_TYPES[ggml_type], activation_rounding)
                )
                handle._hooks.append(hook)
    except Exception:
        handle.remove()
        raise
    fallbacks = plan.fallbacks()
    if fallbacks:  # the exporter stores these as F16; fake quantization simulates exactly that
        log.warning(
            "GGUF %s QAT: %d tensor(s) have rows that are not a multiple of %d and are exported and "
            "fake-quantized as F16: %s",
            precision,
            len(fallbacks),
            BLOCK_SIZE,
            ", ".join(fb["tensor"] for fb in fallbacks),
        )
    return handle
