"""What was quantized: per-operation report of an int8 QAT model, with the reason each skipped op was left in float."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch

from edgedistill.compress.qat.nncf_runtime import (
    _EXAMPLE_ATTR,
    HOOK_STORAGE_NAME,
    QATError,
    _hooks,
    _import_nncf,
    fake_quant_backend,
)

log = logging.getLogger(__name__)


_MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


# 3. summary

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
