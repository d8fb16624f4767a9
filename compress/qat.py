"""NNCF int8 quantization-aware training (QAT) helpers: insert fake-quant, describe it, save and restore it.

The distillation trainer uses these in its quantization-aware phase::

    ensure_nncf_extensions()                       # never hang on NNCF's C++ kernel build
    student = insert_fake_quant(student, batches)  # a NEW model object (NNCF deep-copies)
    ... train student ...
    save_qat_state(student, out / "qat")           # nncf_config.json + qat_state.safetensors
    plain = float_state_dict(student)              # same keys as the transformers model

Weight-only QAT for OpenVINO (``qat.mode ov_int8_wo`` / ``ov_int4_wo``, section 5) uses NNCF's
FQ_LORA format instead: ``insert_weight_only_fake_quant`` (prepare), the same save/load, and
``compressed_weight_model`` (convert: integer codes + decompression, for the OpenVINO export).

``nncf`` is imported inside the functions only: importing this module never imports it.

What the NNCF 3.4 source says about its C++ extension (read from ``nncf/torch/extensions``,
``nncf/torch/quantization/{extensions,quantize_functions,reference}.py``):

- The torch backend *does* use the C++ extension for QAT fake-quant on CPU: the autograd
  functions behind every ``SymmetricQuantizer``/``AsymmetricQuantizer`` forward and backward
  call ``QuantizedFunctionsCPU.get("Quantize_forward"/"Quantize_backward")``. The extension is
  JIT-compiled with ``torch.utils.cpp_extension.load`` into
  ``$TORCH_EXTENSIONS_DIR/nncf/quantized_functions_cpu/<torch version>/`` (default root
  ``~/.cache/torch_extensions/py<ver>_<cpu|cuXXX>``) on the first *training/inference forward through a
  quantizer*, not at ``import nncf`` and not during ``nncf.quantize`` calibration.
- ``cpp_extension.load`` serialises builds with a ``lock`` file (``FileBaton``): the builder
  creates it with ``O_EXCL`` and keeps its descriptor open until the build ends; everyone else
  polls until the file disappears -- forever. A build killed hard (SIGKILL, OOM, a CI timeout)
  leaves the file behind.
- NNCF loads the extension in a worker thread and waits ``NNCF_EXTENSION_LOAD_TIMEOUT`` seconds
  (read from the environment on every first load, integer, default 60, ``0`` = wait forever).
  On timeout it raises ``ExtensionLoaderTimeoutException``: it does NOT fall back. The worker
  thread is a daemon, so when the process then exits the build dies mid-way *and its lock
  stays*: NNCF's own timeout is what creates stale locks, and every later run then times out on
  the stale lock. Measured here: the first compile took 94 s on this 2-core machine while
  another job was training (the FIELD-NOTES ~30 s is on an idle machine), i.e. longer than
  NNCF's default 60 s.
- NNCF falls back to ``ReferenceQuantizedFunctions`` (pure torch, wrapped in ``torch.compile``
  on first use, eager if that fails) only when the compile itself raises (no compiler, no
  ninja). The fallback is numerically the same fake-quant, slower, and ``torch.compile`` may
  recompile for new input shapes.

``ensure_nncf_extensions`` therefore (1) sets ``NNCF_EXTENSION_LOAD_TIMEOUT`` when unset,
(2) removes ``lock`` files that no live process holds, (3) loads the extension now, and on a
timeout switches NNCF to its reference functions with a warning instead of failing -- the build
keeps going in the background and is reused by the next run if it finishes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from edgedistill.errors import EdgeDistillError, MissingDependencyError, ModelLoadError
from edgedistill.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

CONFIG_FILE = "nncf_config.json"
STATE_FILE = "qat_state.safetensors"
STATE_FORMAT = "edgedistill-qat-state/1"
# NNCF adds one submodule, named like this, that holds every quantizer (nncf.torch.function_hook.wrapper).
HOOK_STORAGE_NAME = "__nncf_hooks"
PRESETS = ("mixed", "performance")
# A lock younger than this may be in the middle of being released (close, then unlink).
_LOCK_RELEASE_GRACE_S = 2.0
_EXAMPLE_ATTR = "_edgedistill_qat_example_input"
_MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class QATError(EdgeDistillError):
    """Quantization-aware training cannot proceed as asked (bad input, a model in the wrong state)."""


# ----------------------------------------------------------------------------------------------
# lazy import
# ----------------------------------------------------------------------------------------------


def _import_nncf(purpose: str):
    try:
        import nncf
        import nncf.torch  # noqa: F401  (registers the torch backend and its extensions)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "nncf":
            raise  # nncf is installed but one of its own imports is broken: show the real error
        raise MissingDependencyError("nncf", "all", purpose) from exc
    return nncf


# ----------------------------------------------------------------------------------------------
# 1. the C++ extension: no hang, ever
# ----------------------------------------------------------------------------------------------


def ensure_nncf_extensions(timeout_s: float = 120.0) -> None:
    """Make NNCF's fake-quant kernels usable now, never blocking longer than the load timeout.

    The timeout is ``NNCF_EXTENSION_LOAD_TIMEOUT`` when the user set it (``0`` = wait forever, their
    choice), else ``timeout_s`` rounded up to whole seconds and written to that variable, because
    NNCF reads it on every first load in this process. Then: removes stale build locks (no live
    process holds them), builds/loads the extension, and on a timeout switches NNCF to its
    reference functions with a warning instead of raising. Safe to call many times; cheap once
    the extension is loaded (a lock check and nothing else).
    """
    _import_nncf("Quantization-aware training")
    from nncf.torch import extensions as nncf_ext
    from nncf.torch.quantization import extensions as q_ext  # registers the CPU/CUDA loaders
    from nncf.torch.quantization import quantize_functions as qf

    env_name = getattr(nncf_ext, "EXTENSION_LOAD_TIMEOUT_ENV_VAR", "NNCF_EXTENSION_LOAD_TIMEOUT")
    if env_name not in os.environ:
        os.environ[env_name] = str(max(1, math.ceil(timeout_s)))
    try:
        nncf_timeout_s = nncf_ext._get_extension_load_timeout()  # None: the user disabled the timeout
    except ValueError as exc:
        raise QATError(
            f"{env_name}={os.environ[env_name]!r}: NNCF needs whole seconds (e.g. {env_name}=180; 0 waits forever)"
        ) from exc

    targets = [("cpu", q_ext.QuantizedFunctionsCPULoader, qf.QuantizedFunctionsCPU)]
    if torch.cuda.is_available():
        targets.append(("cuda", q_ext.QuantizedFunctionsCUDALoader, qf.QuantizedFunctionsCUDA))

    for _, loader, _ in targets:
        _remove_stale_lock(
            Path(loader.get_build_dir()) / "lock", stale_after_s=float(nncf_timeout_s or timeout_s)
        )

    for device, loader, namespace in targets:
        if getattr(namespace, "_loaded_namespace", None) is None:
            started = time.monotonic()
            try:
                namespace.get("Quantize_forward")
            except nncf_ext.ExtensionLoaderTimeoutException:
                _use_reference_functions(namespace)
                log.warning(
                    "NNCF's %s fake-quant extension did not build/load within %s s (build folder %s). "
                    "Quantization-aware training continues with NNCF's reference (pure torch) fake-quant: "
                    "same numbers, slower. The build goes on in the background and the next run reuses it "
                    "if it finishes; to wait longer set %s=600 (0 waits forever).",
                    device,
                    nncf_timeout_s,
                    loader.get_build_dir(),
                    env_name,
                )
                continue
            log.info(
                "NNCF %s fake-quant kernels ready in %.1f s (%s)",
                device,
                time.monotonic() - started,
                fake_quant_backend(device),
            )
        if fake_quant_backend(device) == "reference":
            log.warning(
                "NNCF uses its reference (pure torch) %s fake-quant functions, not its C++ extension: "
                "QAT works but is slower. NNCF falls back like this when the extension cannot be compiled "
                "(see its warning above for the reason; it needs a C++ compiler and ninja) or after a "
                "load timeout. Build folder: %s",
                device,
                loader.get_build_dir(),
            )


def fake_quant_backend(device: str = "cpu") -> str:
    """Which fake-quant kernels NNCF uses: 'cpp_extension', 'reference', 'not_loaded' (or 'unavailable')."""
    try:
        from nncf.torch.quantization import quantize_functions as qf
        from nncf.torch.quantization.reference import ReferenceQuantizedFunctions
    except ImportError:
        return "unavailable"
    namespace = qf.QuantizedFunctionsCPU if device == "cpu" else qf.QuantizedFunctionsCUDA
    try:
        loaded = namespace._loaded_namespace
    except Exception:  # the CUDA stub on a machine without CUDA raises on any attribute
        return "unavailable"
    if loaded is None:
        return "not_loaded"
    return "reference" if loaded is ReferenceQuantizedFunctions else "cpp_extension"


def _use_reference_functions(namespace: Any) -> None:
    """Point an NNCF ``ExtensionNamespace`` at the reference functions (what NNCF does on a compile error)."""
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    if not hasattr(namespace, "_loaded_namespace"):
        raise QATError(
            "This NNCF version has no ExtensionNamespace._loaded_namespace; edgedistill cannot switch it to "
            "its reference fake-quant after a load timeout. Set NNCF_EXTENSION_LOAD_TIMEOUT=0 and build "
            "once with: python -c 'import nncf.torch; nncf.torch.force_build_cpu_extensions()'"
        )
    namespace._loaded_namespace = ReferenceQuantizedFunctions


def _remove_stale_lock(lock: Path, stale_after_s: float) -> bool:
    """Remove ``lock`` if no live build owns it; return True when it was removed."""
    try:
        seen = lock.stat()
    except FileNotFoundError:
        return False
    age_s = time.time() - seen.st_mtime
    holders, scan_complete = _processes_using(lock)
    if holders:
        log.info(
            "A torch-extension build is in progress (pid %s holds %s); NNCF waits for it.",
            ", ".join(map(str, holders)),
            lock,
        )
        return False
    if scan_complete:
        # Nobody holds it open and nobody builds in its folder: it was left by a killed build.
        stale = age_s >= _LOCK_RELEASE_GRACE_S
    else:
        # Without a full view of the processes (no /proc, or processes we may not inspect), only age tells.
        stale = age_s >= stale_after_s
    if not stale:
        return False
    try:
        now = lock.stat()
        if (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
            return False  # another process removed it and a new build took a fresh lock meanwhile
        lock.unlink()
    except FileNotFoundError:
        return False  # released meanwhile
    log.warning(
        "Removed a stale torch-extension build lock %s (age %.0f s, no process holds it): a previous NNCF "
        "extension build was killed before it finished, and every later load would have waited on it "
        "forever. The extension is rebuilt now.",
        lock,
        age_s,
    )
    return True


def _processes_using(lock: Path) -> tuple[list[int], bool]:
    """PIDs that hold ``lock`` open or run in its folder (ninja, the compilers), and whether the scan was complete.

    torch's FileBaton keeps the lock's descriptor open for the whole build, and ninja and the
    compilers run with the build folder as their working directory.
    """
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return [], False
    target = os.path.realpath(lock)
    build_dir = os.path.realpath(lock.parent)
    holders: list[int] = []
    complete = True
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid_dir = entry.path
        try:
            if os.readlink(f"{pid_dir}/cwd") == build_dir:
                holders.append(int(entry.name))
                continue
        except OSError:
            pass  # exited, a kernel thread, or not ours to inspect: the fd scan below decides
        try:
            fds = os.listdir(f"{pid_dir}/fd")
        except FileNotFoundError:
            continue
        except PermissionError:
            complete = False
            continue
        for fd in fds:
            try:
                if os.readlink(f"{pid_dir}/fd/{fd}") == target:
                    holders.append(int(entry.name))
                    break
            except OSError:
                continue
    return holders, complete


# ----------------------------------------------------------------------------------------------
# 2. insert fake-quant
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# 3. summary
# ----------------------------------------------------------------------------------------------

_REASONS = {
    "no_int8_kernel": "no int8 kernel in the target runtimes; NNCF keeps it float by design",
    "transformer_ignored_type": "NNCF's TRANSFORMER model type never quantizes the inputs of this op type",
    "transformer_ignored_pattern": "excluded by NNCF's TRANSFORMER ignored pattern '{pattern}'",
    "constant_subgraph": "computed from constants only (no activation flows through it)",
    "no_float_activation": "no float activation input (integer inputs, e.g. token ids or the attention mask)",
    "not_selected": "a quantizable op type, but NNCF's quantizer propagation placed no fake-quant on its inputs",
}


def qat_summary(qmodel: torch.nn.Module, *, example_input: dict[str, torch.Tensor] | None = None) -> dict:
    """Describe the fake-quant in ``qmodel`` (JSON-serialisable), derived from the live NNCF model.

    Counts come from NNCF's hook storage (the quantizer modules themselves); op names, what each
    quantizer feeds and why other ops stayed float come from tracing the model with NNCF's graph
    builder (quantizers switched off for the trace) and NNCF's own quantization rules
    (quantization traits, TRANSFORMER ignored metatypes and ignored patterns). ``example_input``
    is only needed for models not made by ``insert_fake_quant`` and not a transformers model.
    """
    nncf = _import_nncf("Describing a quantization-aware model")
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.quantization.layers import BaseQuantizer

    hooks = _hooks(qmodel)
    if not hooks:
        raise QATError("qat_summary: the model has no NNCF fake-quant (call insert_fake_quant first)")

    graph = _trace_float_graph(qmodel, _example_input(qmodel, example_input))
    node_names = {n.node_name for n in graph.get_all_nodes()}

    # hook name -> (module, pre/post, op, port); a module may sit at several hooks (unified scales)
    pre: dict[tuple[str, int], list[str]] = {}
    post: dict[tuple[str, int], list[str]] = {}
    module_hooks: dict[int, list[str]] = {}
    modules: dict[int, torch.nn.Module] = {}
    unmatched: list[str] = []
    for hook_name, module in hooks:
        hook_type, op_name, port = decode_hook_name(hook_name)
        (pre if hook_type == "pre_hooks" else post).setdefault((op_name, port), []).append(hook_name)
        module_hooks.setdefault(id(module), []).append(hook_name)
        modules[id(module)] = module
        if op_name not in node_names:
            unmatched.append(hook_name)

    def is_const(node) -> bool:
        return node.node_type == "nncf_model_const"

    # weight quantizers: on an op input fed by a parameter, or on the parameter itself
    weight_hooks: dict[str, str] = {}  # hook name -> parameter name
    for (op_name, port), names in pre.items():
        if op_name not in node_names:
            continue
        for edge in graph.get_input_edges(graph.get_node_by_name(op_name)):
            if edge.input_port_id == port and is_const(edge.from_node):
                weight_hooks.update({n: edge.from_node.node_name for n in names})
    for (op_name, _), names in post.items():
        if op_name in node_names and is_const(graph.get_node_by_name(op_name)):
            weight_hooks.update({n: op_name for n in names})

    quantizers = []
    for key, module in modules.items():
        names = module_hooks[key]
        kinds = {"weight" if n in weight_hooks else "activation" for n in names}
        entry: dict[str, Any] = {
            "hooks": names,
            "kind": kinds.pop() if len(kinds) == 1 else "mixed",
            "class": type(module).__name__,
        }
        if isinstance(module, BaseQuantizer):
            entry.update(
                num_bits=int(module.num_bits),
                mode="symmetric" if "Symmetric" in type(module).__name__ else "asymmetric",
                per_channel=bool(module.per_channel),
                enabled=bool(module.is_enabled_quantization()),
            )
        if entry["kind"] == "weight":
            entry["parameters"] = sorted({weight_hooks[n] for n in names})
        quantizers.append(entry)

    agnostic, quantizable, ignored_types = _nncf_op_rules()

    def quantized_input(node, edge, depth: int = 0) -> bool:
        if (node.node_name, edge.input_port_id) in pre:
            return True
        src = edge.from_node
        if (src.node_name, edge.output_port_id) in post:
            return True
        if src.metatype in agnostic and depth < 32:
            data_edges = [e for e in graph.get_input_edges(src) if not is_const(e.from_node)]
            return any(quantized_input(src, e, depth + 1) for e in data_edges)
        return False

    quantized_ops, float_ops, weighted_without_wq = [], [], []
    passthrough: Counter[str] = Counter()
    pattern_of, constant_nodes, weighted_nodes, notes = _ignored_by_nncf_rules(nncf, graph)
    for node in graph.get_all_nodes():
        if is_const(node) or node.node_type in ("nncf_model_input", "nncf_model_output"):
            continue
        in_edges = graph.get_input_edges(node)
        weight_edges = [e for e in in_edges if is_const(e.from_node)]
        weights_q = [
            e.from_node.node_name
            for e in weight_edges
            if any(n in weight_hooks for n in pre.get((node.node_name, e.input_port_id), []))
            or (e.from_node.node_name, e.output_port_id) in post
        ]
        act_edges = [e for e in in_edges if not is_const(e.from_node) and e.dtype.value == "float"]
        acts_q = [e.input_port_id for e in act_edges if quantized_input(node, e)]
        weight_params = [
            e.from_node.node_name
            for e in weight_edges
            if node.node_name in weighted_nodes
            and e.input_port_id in getattr(node.metatype, "weight_port_ids", [])
        ]
        if node.metatype in agnostic and not weights_q:
            passthrough[node.node_type] += 1  # moves data (view, transpose, dropout...): int8 passes through
            continue
        if weights_q or acts_q:
            quantized_ops.append(
                {
                    "op": node.node_name,
                    "type": node.node_type,
                    "module": _module_of(weights_q or weight_params),
                    "weight_quantized": bool(weights_q),
                    "quantized_activation_ports": sorted(acts_q),
                    "float_activation_ports": sorted(
                        e.input_port_id for e in act_edges if e.input_port_id not in acts_q
                    ),
                }
            )
            if weight_params and not weights_q:
                weighted_without_wq.append(
                    {"op": node.node_name, "parameters": weight_params, "reason": "activation quantized only"}
                )
            continue
        if node.metatype not in quantizable:
            code = "no_int8_kernel"
        elif node.metatype in ignored_types:
            code = "transformer_ignored_type"
        elif node.node_name in pattern_of:
            code = "transformer_ignored_pattern"
        elif node.node_name in constant_nodes:
            code = "constant_subgraph"
        elif not act_edges:
            code = "no_float_activation"
        else:
            code = "not_selected"
        reason = _REASONS[code].format(pattern=pattern_of.get(node.node_name, ""))
        entry = {"op": node.node_name, "type": node.node_type, "reason_code": code, "reason": reason}
        float_ops.append(entry)
        if weight_params:
            weighted_without_wq.append({"op": node.node_name, "parameters": weight_params, "reason": reason})

    if unmatched:
        notes.append(
            f"{len(unmatched)} quantizer hook(s) name ops the trace did not produce (the example input "
            "took another path); pass qat_summary(..., example_input=<a real batch>)"
        )
    return {
        "nncf_version": str(nncf.__version__),
        "fake_quant_kernels": fake_quant_backend("cpu"),
        "weight_quantizers": sum(q["kind"] == "weight" for q in quantizers),
        "activation_quantizers": sum(q["kind"] == "activation" for q in quantizers),
        "quantizer_insertion_points": len(hooks),
        "ops_with_fake_quant": len(quantized_ops),
        "quantized_ops": [q["op"] for q in quantized_ops],
        "quantized_op_details": quantized_ops,
        "float_ops": float_ops,
        "float_ops_by_reason": dict(Counter(op["reason_code"] for op in float_ops)),
        "weighted_ops_without_weight_quantizer": weighted_without_wq,
        "passthrough_ops": dict(sorted(passthrough.items())),
        "quantizers": quantizers,
        "unmatched_hooks": unmatched,
        "notes": notes,
    }


def _module_of(param_names: list[str]) -> str | None:
    if not param_names:
        return None
    return param_names[0].rsplit(".", 1)[0] if "." in param_names[0] else param_names[0]


def _nncf_op_rules():
    """NNCF's own per-op-type rules for the torch backend: (agnostic, inputs-quantizable, TRANSFORMER-ignored)."""
    from nncf.common.quantization.quantizer_propagation.structs import QuantizationTrait
    from nncf.parameters import ModelType, TargetDevice
    from nncf.quantization.algorithms.min_max.torch_backend import PTMinMaxAlgoBackend
    from nncf.torch.quantization.default_quantization import DEFAULT_PT_QUANT_TRAIT_TO_OP_DICT as traits

    agnostic = set(traits[QuantizationTrait.QUANTIZATION_AGNOSTIC])
    quantizable = set(traits[QuantizationTrait.INPUTS_QUANTIZABLE]) | set(
        traits.get(QuantizationTrait.OUTPUT_QUANTIZATION_AS_WEIGHTS, [])
    )
    ignored = set(PTMinMaxAlgoBackend.get_ignored_metatypes(ModelType.TRANSFORMER, TargetDevice.ANY))
    return agnostic, quantizable, ignored


def _ignored_by_nncf_rules(nncf, graph) -> tuple[dict[str, str], set[str], set[str], list[str]]:
    """NNCF's view of the float graph: nodes its TRANSFORMER ignored patterns match (node -> pattern
    name), nodes in constant-only subgraphs, and nodes whose weights it would quantize."""
    from copy import deepcopy

    notes: list[str] = []
    try:
        from nncf.common.graph.graph import get_node_names_matching_graph_pattern
        from nncf.common.graph.patterns.manager import PatternsManager
        from nncf.common.utils.backend import BackendType
        from nncf.quantization.algorithms.min_max.torch_backend import PTMinMaxAlgoBackend
        from nncf.quantization.passes import transform_to_inference_graph

        backend = PTMinMaxAlgoBackend()
        inference_graph = transform_to_inference_graph(
            deepcopy(graph),
            backend.get_start_nodes_for_activation_path_tracing(graph),
            backend.shapeof_metatypes,
            backend.noop_metatypes,
            backend.preserved_metatypes,
            getattr(backend, "inference_graph_transformations", None),
        )
        kept = {n.node_name for n in inference_graph.get_all_nodes()}
        removed_noops = {n.node_name for n in graph.get_nodes_by_metatypes(backend.noop_metatypes)}
        constant_nodes = {n.node_name for n in graph.get_all_nodes()} - kept - removed_noops
        patterns = PatternsManager._filter_patterns(
            PatternsManager._get_backend_ignored_patterns_map(BackendType.TORCH),
            nncf.TargetDevice.ANY,
            nncf.ModelType.TRANSFORMER,
        )
        pattern_of: dict[str, str] = {}
        for desc, create in patterns.items():
            for name in get_node_names_matching_graph_pattern(inference_graph, create()):
                pattern_of.setdefault(name, desc.value.name)
        weighted = {n.node_name for n in backend.get_weight_nodes(graph, inference_graph)}
        return pattern_of, constant_nodes, weighted, notes
    except (ImportError, AttributeError, TypeError) as exc:  # NNCF internals moved: say so, do not guess
        notes.append(f"ignored-pattern reasons unavailable with this NNCF version: {exc}")
        return {}, set(), set(), notes


def _example_input(qmodel: torch.nn.Module, given: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    example = given if given is not None else getattr(qmodel, _EXAMPLE_ATTR, None)
    if example is None:
        dummy = getattr(qmodel, "dummy_inputs", None)  # transformers models have one
        if not isinstance(dummy, dict) or "input_ids" not in dummy:
            raise QATError(
                "qat_summary cannot trace this model: pass example_input={...} (one batch of model inputs)"
            )
        import inspect

        input_ids = dummy["input_ids"][:1]
        accepted = inspect.signature(type(qmodel).forward).parameters
        # the same inputs calibration batches carry, so the traced op sequence matches NNCF's
        example = {"input_ids": input_ids}
        if "attention_mask" in accepted:
            example["attention_mask"] = torch.ones_like(input_ids)
        if "token_type_ids" in accepted:
            example["token_type_ids"] = torch.zeros_like(input_ids)
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    return {k: v.to(device) for k, v in example.items()}


def _trace_float_graph(qmodel: torch.nn.Module, example: dict[str, torch.Tensor]):
    """Trace ``qmodel`` with NNCF's graph builder and its quantizers detached: the graph NNCF quantized."""
    from nncf.torch.function_hook.hook_storage import HookStorage
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    storage = qmodel._modules[HOOK_STORAGE_NAME]
    was_training = qmodel.training
    qmodel._modules[HOOK_STORAGE_NAME] = HookStorage()  # an empty storage makes the wrapper run plain forward
    try:
        qmodel.eval()
        with torch.no_grad():
            return build_nncf_graph(qmodel, example)
    finally:
        qmodel._modules[HOOK_STORAGE_NAME] = storage
        qmodel.train(was_training)


def _hooks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(hook name, module) for every NNCF hook in ``model``; empty for a plain model."""
    storage = model._modules.get(HOOK_STORAGE_NAME) if isinstance(model, torch.nn.Module) else None
    if storage is None:
        return []
    return list(storage.named_hooks(remove_duplicate=False))


def _is_hook_key(key: str) -> bool:
    return HOOK_STORAGE_NAME in key.split(".")


# ----------------------------------------------------------------------------------------------
# 4. save / load / float weights
# ----------------------------------------------------------------------------------------------


def save_qat_state(qmodel: torch.nn.Module, folder: str | Path) -> None:
    """Write ``folder/nncf_config.json`` (``nncf.torch.get_config``) and ``folder/qat_state.safetensors``.

    The state is the full ``state_dict`` (float weights and quantizer parameters, keys
    ``__nncf_hooks.{pre,post}_hooks.<op>__<port>.<id>.<scale|input_low|input_range|...>``),
    each tensor cloned to CPU so tied/shared tensors save. Each file is written atomically.
    """
    nncf = _import_nncf("Saving a quantization-aware model")
    from safetensors.torch import save_file

    if not _hooks(qmodel):
        raise QATError("save_qat_state: the model has no NNCF fake-quant (call insert_fake_quant first)")
    config = nncf.torch.get_config(qmodel)
    json.dumps(config)  # fail before writing anything if NNCF ever returns something non-JSON
    # clone: tied weights share storage, which safetensors refuses; also detaches and makes contiguous
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in qmodel.state_dict().items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file(
            state, str(tmp), metadata={"format": "pt", "edgedistill": STATE_FORMAT, "nncf": nncf.__version__}
        )
    atomic_write_json(folder / CONFIG_FILE, config)


def load_qat_model(float_model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Rebuild the quantized model saved by ``save_qat_state`` on top of ``float_model``, exactly.

    In place: ``nncf.torch.load_from_config`` wraps ``float_model`` itself, and the returned
    object IS ``float_model`` (now with quantizers). On a load failure its quantizers are removed
    again and a ``ModelLoadError`` naming the folder is raised.
    """
    nncf = _import_nncf("Loading a quantization-aware model")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, state_path = folder / CONFIG_FILE, folder / STATE_FILE
    missing = [p.name for p in (config_path, state_path) if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder}: not a complete QAT state folder, missing {', '.join(missing)} "
            f"(save_qat_state writes {CONFIG_FILE} and {STATE_FILE}). Point at the 'qat' folder of a run, "
            "or re-run the quantization-aware phase."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{config_path}: cannot read the NNCF config ({exc}); the file is corrupted."
        ) from exc
    if not isinstance(config, dict) or not isinstance(config.get("compression_state"), list):
        raise ModelLoadError(
            f"{config_path}: not an NNCF config (no 'compression_state' list); the file is corrupted."
        )
    device = next((p.device for p in float_model.parameters()), torch.device("cpu"))
    try:
        state = load_file(str(state_path), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{state_path}: cannot read the QAT state ({exc}); the file is corrupted."
        ) from exc
    if _hooks(float_model):
        raise QATError("load_qat_model: the model already has NNCF fake-quant; pass a fresh float model")

    try:
        qmodel = nncf.torch.load_from_config(float_model, config)
    except Exception as exc:  # NNCF raises InternalError/KeyError/TypeError for configs it cannot apply
        _clear_hooks(float_model)
        raise ModelLoadError(f"{config_path}: NNCF cannot rebuild the quantizers from it: {exc}") from exc
    _match_saved_dtypes(qmodel, state)
    try:
        qmodel.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        _clear_hooks(qmodel)
        raise ModelLoadError(
            f"{folder}: the saved QAT state does not fit this model (saved from another architecture or "
            f"size?): {str(exc)[:2000]}"
        ) from exc
    return qmodel


def _match_saved_dtypes(qmodel: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give NNCF's own parameters the dtype they were saved with before loading them.

    ``load_state_dict`` copies into the existing tensors and casts silently: LoRA adapters that
    NNCF rebuilds in bfloat16 would lose the float32 values training left in them.
    """
    for name, module in _hooks(qmodel):
        for attr, param in list(module.named_parameters(recurse=False)):
            saved = state.get(f"{HOOK_STORAGE_NAME}.{name}.{attr}")
            if saved is not None and saved.dtype != param.dtype and saved.is_floating_point():
                setattr(
                    module,
                    attr,
                    torch.nn.Parameter(param.detach().to(saved.dtype), requires_grad=param.requires_grad),
                )


def _clear_hooks(model: torch.nn.Module) -> None:
    from nncf.torch.function_hook.hook_storage import HookStorage

    if HOOK_STORAGE_NAME in model._modules:
        model._modules[HOOK_STORAGE_NAME] = HookStorage()  # the wrapper runs the plain forward again


def float_state_dict(qmodel: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's own (learned float) weights, keyed exactly as the original transformers model.

    Drops NNCF's quantizer entries; tensors share storage with ``qmodel`` like ``state_dict()``.
    Refuses models whose NNCF hooks are not plain quantizers (e.g. SmoothQuant's multipliers),
    because then the float weights alone do not reproduce the float model.
    """
    foreign = [name for name, module in _hooks(qmodel) if "Quantizer" not in type(module).__name__]
    if foreign:
        raise QATError(
            "float_state_dict: the model holds NNCF hooks that change the float computation "
            f"({', '.join(foreign[:3])}...); its weights alone are not a plain transformers model."
        )
    return {k: v for k, v in qmodel.state_dict().items() if not _is_hook_key(k)}


# ----------------------------------------------------------------------------------------------
# 5. weight-only int8/int4 fake-quant with absorbable LoRA adapters (NNCF FQ_LORA), for OpenVINO
# ----------------------------------------------------------------------------------------------

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
