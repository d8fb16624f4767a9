"""What the runtimes compute on this CPU, and the settings that make them compute what a file declares.

Measured facts (``benchmarks/isa_numerics.py`` re-measures them; ``docs/numerics.md`` has the table):

- **OpenVINO CPU** picks its arithmetic by ISA. ``INFERENCE_PRECISION_HINT`` defaults to **bf16**
  where the CPU has AVX-512 BF16 or AMX, so an fp32 IR runs in bf16 there. And for layers whose
  weights are u8/i8/u4 constants (weight-only compression) it quantizes the *activations* to int8
  on the fly (``DYNAMIC_QUANTIZATION_GROUP_SIZE``, 32 by default) on VNNI/AMX CPUs, also in f32.
  `OPENVINO_FILE_PROPERTIES` turns both off. Of the two, only the dynamic quantization setting is
  honoured when stored in the IR's ``rt_info`` (``runtime_options``); a stored precision hint or
  execution mode is ignored (2026.4), so an app must pass ``INFERENCE_PRECISION_HINT`` itself.
- **ONNX Runtime** (CPU provider) never changes an op's precision: fp32 stays fp32. Its int8 kernels
  differ by ISA (AVX2 ``vpmaddubsw`` adds u8*s8 pairs into int16 and saturates; VNNI and AMX
  accumulate in int32), which moves int8 outputs by ~1e-3 but is not a setting.
- **llama.cpp** computes what the GGUF tensor types say (activations are quantized to q8 blocks for
  quantized dot products by design of the format); kernels differ by ISA, precision does not.
- ``ONEDNN_MAX_CPU_ISA`` does **not** emulate an older CPU for OpenVINO: the plugin reads CPUID
  itself for its precision and dynamic-quantization decisions, so under ``AVX2`` the default
  (bf16) compile fails and under ``AVX512_CORE`` activations are still quantized dynamically.

Nothing here imports a runtime at module level.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgedistill import host

# Compile properties under which OpenVINO's CPU plugin computes what an IR declares: float ops
# in f32, and no on-the-fly int8 quantization of activations next to compressed weights.
OPENVINO_FILE_PROPERTIES: dict[str, str] = {
    "INFERENCE_PRECISION_HINT": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
}
# What an IR can carry itself (rt_info "runtime_options", honoured by compile_model) ...
OPENVINO_IR_CARRIES = ("DYNAMIC_QUANTIZATION_GROUP_SIZE",)
# ... and what it cannot, with the reason an app must be told.
OPENVINO_IR_CANNOT_CARRY = {
    "INFERENCE_PRECISION_HINT": (
        "a precision hint stored in the IR's rt_info is ignored by OpenVINO's CPU plugin (2026.4): "
        "an app must pass it to compile_model"
    ),
}
# Properties read back from a compiled model: what actually ran.
OPENVINO_READ_BACK = (
    "EXECUTION_DEVICES",
    "PERFORMANCE_HINT",
    "EXECUTION_MODE_HINT",
    "NUM_STREAMS",
    "INFERENCE_NUM_THREADS",
    "INFERENCE_PRECISION_HINT",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE",
    "KV_CACHE_PRECISION",
    "ENABLE_CPU_PINNING",
    "ENABLE_HYPER_THREADING",
    "SCHEDULING_CORE_TYPE",
)
# ONNX operators that only a quantized graph holds: int8 arithmetic in ONNX Runtime
ONNX_INT8_OPS = frozenset(
    {
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "QLinearMatMul",
        "QLinearConv",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
        "QGemm",
    }
)
# Execution-graph layers whose precision says what arithmetic ran.
_COMPUTE_LAYERS = ("FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Gemm")
_LOW_BIT = ("u8", "i8", "u4", "i4", "nf4", "f4e2m1")
_PRECISION_NAMES = {
    "bfloat16": "bf16",
    "float32": "f32",
    "float16": "f16",
    "f32": "f32",
    "bf16": "bf16",
    "f16": "f16",
}


def openvino_precision_name(value: Any) -> str:
    """``<Type: 'bfloat16'>`` / ``bf16`` / ``dynamic`` -> ``bf16`` / ``f32`` / ``f16`` / ``dynamic``."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    text = text.replace("<type: '", "").replace("'>", "")
    return _PRECISION_NAMES.get(text, text)


def openvino_ir_rt_info(ov_model) -> None:
    """Store in ``ov_model`` the runtime options the IR can carry (see `OPENVINO_IR_CARRIES`)."""
    for key in OPENVINO_IR_CARRIES:
        ov_model.set_rt_info(OPENVINO_FILE_PROPERTIES[key], ["runtime_options", key])


def openvino_load_instructions(xml_name: str) -> dict[str, Any]:
    """How an app must compile an edgedistill IR to get the numerics its parity check verified."""
    props = dict(OPENVINO_FILE_PROPERTIES)
    return {
        "runtime": "openvino",
        "compile_properties": props,
        "stored_in_ir_rt_info": {k: props[k] for k in OPENVINO_IR_CARRIES},
        "not_stored_in_ir": dict(OPENVINO_IR_CANNOT_CARRY),
        "python": f"ov.Core().compile_model({xml_name!r}, 'CPU', {props!r})",
        "benchmark_app": f"benchmark_app -m {xml_name} -d CPU -infer_precision f32",
    }


def openvino_read_back(compiled) -> dict[str, Any]:
    """What a compiled OpenVINO model says it runs: its properties and its execution graph's layers.

    ``compute_precisions`` counts the arithmetic of every compute layer (FullyConnected, MatMul,
    convolutions): int8 kernels, else the float precision they run in; ``int8_layers`` counts the
    former, ``compressed_weight_layers`` float layers whose weights stay u8/i8/u4 (the layers that
    dynamic quantization of activations applies to).
    """
    properties: dict[str, str] = {}
    for key in OPENVINO_READ_BACK:
        try:
            value = compiled.get_property(key)
        except RuntimeError:
            continue
        properties[key] = openvino_precision_name(value) if key == "INFERENCE_PRECISION_HINT" else str(value)
    compute: dict[str, int] = {}
    kernels: dict[str, int] = {}
    int8_layers = compressed_weight_layers = 0
    try:
        layers = compiled.get_runtime_model().get_ops()
    except RuntimeError:
        layers = []
    for op in layers:
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) not in _COMPUTE_LAYERS:
            continue
        runtime = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        kernel = info["primitiveType"].astype(str) if "primitiveType" in info else "?"
        arithmetic = _arithmetic(runtime, kernel)
        compute[arithmetic] = compute.get(arithmetic, 0) + 1
        kernels[kernel] = kernels.get(kernel, 0) + 1
        if arithmetic == "int8":
            int8_layers += 1
        elif runtime in _LOW_BIT:
            compressed_weight_layers += 1
    return {
        "properties": properties,
        "compute_precisions": compute,
        "int8_layers": int8_layers,
        "compressed_weight_layers": compressed_weight_layers,
        "kernels": kernels,
    }


def _arithmetic(runtime_precision: str, kernel: str) -> str:
    """The arithmetic of one execution-graph layer: ``int8`` kernels, else the float precision.

    A layer with compressed (u8/u4) weights reports the weights' type as its runtime precision;
    its kernel name says the float arithmetic it decompresses into (``brgemm_avx512_amx_bf16``)."""
    if _int8_kernel(kernel):
        return "int8"
    if runtime_precision in _LOW_BIT:
        return next((p for p in ("bf16", "f16", "f32") if p in kernel.lower()), "?")
    return runtime_precision


def _int8_kernel(kernel: str) -> bool:
    """oneDNN kernel names carry the arithmetic: ``brgemm_avx512_amx_I8``, ``jit_gemm_I8``, ``*_u8s8*``."""
    name = kernel.lower()
    return name.endswith(("_i8", "_u8")) or "_i8_" in name or "u8s8" in name or "s8s8" in name


def openvino_ran(read_back: dict[str, Any]) -> str:
    """A short label of what ran: ``f32``, ``bf16``, ``bf16+int8``, ``f32 dynquant32`` ...

    The float part is the inference precision read back; ``+int8`` when int8 kernels ran (a
    quantized IR); ``dynquant<G>`` when dynamic int8 quantization of activations was in force on
    layers with compressed weights (OpenVINO applies it on VNNI/AMX CPUs; parity shows its effect).
    """
    props = read_back.get("properties", {})
    precision = props.get("INFERENCE_PRECISION_HINT", "?")
    if precision == "dynamic":  # EXECUTION_MODE_HINT=ACCURACY: every op in its own precision
        precision = "f32"
    label = f"{precision}+int8" if read_back.get("int8_layers") else precision
    group = props.get("DYNAMIC_QUANTIZATION_GROUP_SIZE", "0")
    if read_back.get("compressed_weight_layers") and group not in ("0", "None"):
        label += f" dynquant{group}"
    return label


def onnx_graph_ran(model_path) -> str:
    """``f32``, ``f16``, ``f32+int8``: the arithmetic an ONNX file's operators declare (`onnx_ran`)."""
    import onnx

    return onnx_ran(onnx.load(str(model_path), load_external_data=False).graph)


def onnx_ran(graph) -> str:
    """``f32``, ``f16``, ``f32+int8``: the arithmetic the operators of an ONNX ``GraphProto`` declare.

    ONNX Runtime's CPU provider runs exactly that (it lowers no op's precision), so for ONNX the
    declaration is what runs; only the int8 kernels differ by ISA (see the module docstring).
    """
    from onnx import TensorProto

    ops = {node.op_type for node in graph.node}
    base = "f16" if any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer) else "f32"
    return f"{base}+int8" if ops & ONNX_INT8_OPS else base


def llama_cpp_extra_buffers_default() -> bool:
    """Whether llama.cpp may use its extra weight buffers here: not on AMX CPUs.

    On AMX CPUs llama.cpp repacks Q4_0/Q8_0/k-quant weights into an "AMX" buffer whose matmul
    crashes (segfault / illegal instruction) on the project's models (llama.cpp issue #20824,
    open; measured on a Xeon with amx_int8). The switch is all-or-nothing, so there the CPU
    repack buffers go too, and llama.cpp's plain kernels run (their multi-token matmuls round
    differently: see docs/numerics.md). Elsewhere the repack buffers stay on, as by default.
    """
    return not host.isa()["amx_int8"]


@contextmanager
def llama_cpp_extra_buffers(enabled: bool) -> Iterator[None]:
    """Load llama.cpp models with (or without) its extra weight buffer types (AMX, CPU repack).

    llama-cpp-python's ``Llama`` takes no argument for ``llama_model_params.use_extra_bufts``; it
    builds its params from ``llama_model_default_params()``, so that is wrapped while a model loads.
    """
    import llama_cpp.llama_cpp as bindings

    original = bindings.llama_model_default_params

    def params():
        value = original()
        value.use_extra_bufts = enabled
        return value

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = original


# Host flag (/proc/cpuinfo) -> the name llama.cpp's `llama_print_system_info()` gives the same
# instructions ("AVX512_VNNI = 1" when its CPU backend was compiled to use them).
LLAMA_CPP_ISA_NAMES = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512_VNNI",
    "avx_vnni": "AVX_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "amx_int8": "AMX_INT8",
    "asimddp": "DOTPROD",
    "i8mm": "MATMUL_INT8",
}


def llama_cpp_unused_isa(system_info: str, flags: frozenset[str] | set[str] | None = None) -> list[str]:
    """The host's SIMD extensions that the loaded llama.cpp was not compiled to use.

    llama-cpp-python compiles llama.cpp for the CPU that builds the wheel (``GGML_NATIVE``), and
    pip caches that wheel by its source, not by CPU: a wheel built on an AVX2 machine runs AVX2
    kernels on an AVX-512 VNNI one (and one built there would not run on AVX2 at all). A non-empty
    answer means llama.cpp figures on this host understate what llama.cpp can do here.
    """
    present = host.cpu_flags() if flags is None else flags
    built = {part.split("=")[0].strip() for part in system_info.split("|") if part.strip().endswith("= 1")}
    return [name for flag, name in LLAMA_CPP_ISA_NAMES.items() if flag in present and name not in built]


def llama_cpp_rebuild_hint(unused: list[str]) -> str:
    return (
        f"this llama.cpp build does not use {', '.join(unused)}, which this CPU has (the wheel was compiled "
        "on another CPU and reused from pip's cache); llama.cpp figures here understate it. Rebuild for this "
        "CPU: pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python"
    )


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The sentence embedding of a runtime's token states [batch, tokens, dim]: their mean over the
    real (unmasked) tokens, summed in float64 and returned as float32.

    Export parity and the bench (on a device too: this module ships in its bundle) pool with this one
    function, so an embedding is the same figure in both. Training pools torch tensors with
    `edgedistill.compress.losses.mean_pool` (same formula, autograd on the training device).
    """
    import numpy as np

    weights = np.asarray(mask)[..., None].astype(np.float64)
    summed = (np.asarray(hidden, dtype=np.float64) * weights).sum(axis=1)
    return (summed / np.clip(weights.sum(axis=1), 1e-9, None)).astype(np.float32)
