"""Structured pruning of a teacher-initialised student: attention heads and feed-forward neurons.

Copying K of the teacher's layers keeps the teacher's width, so every kept layer costs what it
cost in the teacher. A student of the teacher's hidden size but fewer heads and feed-forward
neurons per layer keeps the residual stream (embeddings, layer norms, hidden-state matching with
the teacher) and its weights still start from the teacher's, which distillation then repairs in
far fewer steps than a freshly initialised narrow model needs (Michel et al. 2019, "Are sixteen
heads really better than one?"; NVIDIA Minitron 2024 for activation-based importance).

Importance per layer, on the student as copied from the teacher:

- ``activation`` (default): calibration batches from the training data run through the model;
  a head's score is the mean L2 norm, over real tokens, of its contribution to the attention
  output projection (its context slice times its columns of the output weight); a feed-forward
  neuron's score is the mean absolute activation entering the down projection times the L2 norm
  of its column there -- what the layer would lose if that unit were removed.
- ``magnitude``: data-free, the L2 norms of each unit's weights (head: its query/key/value rows
  and output columns; neuron: its up/gate rows times its down column).

The top units of each layer are kept (the same count in every layer, so one config describes
the model). Models with grouped key/value heads (GQA) are pruned by whole groups: a group's score
is the sum of its query heads', and the query heads per key/value head stay as in the teacher.

Supported layer layouts: BERT-style encoders (``attention.self.query/key/value``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense``: BERT, RoBERTa, ELECTRA...)
and llama-style decoders (``self_attn.q/k/v/o_proj``, ``mlp.gate/up/down_proj``: llama, qwen2,
qwen3, mistral, gemma...). BERT heads are removed with transformers' own ``prune_heads`` (the
kept heads are recorded in ``config.pruned_heads`` and re-applied on load); decoders get their
projections sliced and ``num_attention_heads``/``num_key_value_heads``/``head_dim`` set.
transformers 5 removed ``prune_heads`` and ``config.pruned_heads``, and its BERT derives the head
size from ``hidden_size / num_attention_heads``, so a BERT with fewer heads of the teacher's size
cannot be saved as a plain transformers model there: BERT head pruning is refused on 5.x (with
the way out); feed-forward pruning and decoder head pruning work on both lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgedistill.compress.models import find_layer_list
from edgedistill.errors import ModelLoadError

log = logging.getLogger(__name__)


# Where a block keeps the projections pruning touches (paths relative to the block).
LAYOUTS: dict[str, dict[str, Any]] = {
    "encoder": {  # BERT-style
        "attention": "attention",
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "o": "attention.output.dense",
        "up": ("intermediate.dense",),
        "down": "output.dense",
    },
    "decoder": {  # llama-style
        "attention": "self_attn",
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "up": ("mlp.gate_proj", "mlp.up_proj"),
        "down": "mlp.down_proj",
    },
}
LINEAR_ROLES = ("q", "k", "v", "o", "down")


@dataclass
class LayerParts:
    """One transformer block and the layout of its projections; the modules are looked up on use,
    so they are the current ones after slicing."""

    kind: str  # "encoder" or "decoder", a key of LAYOUTS
    layer: nn.Module

    @property
    def paths(self) -> dict[str, Any]:
        return LAYOUTS[self.kind]

    @property
    def attention(self) -> nn.Module:
        return self.layer.get_submodule(self.paths["attention"])

    def linear(self, role: str) -> nn.Linear:
        return self.layer.get_submodule(self.paths[role])

    @property
    def up(self) -> list[nn.Linear]:
        """Linears whose output rows are the feed-forward neurons (decoders: gate and up)."""
        return [self.layer.get_submodule(path) for path in self.paths["up"]]

    def slice(self, path: str, index: torch.Tensor, dim: int) -> None:
        """Replace the Linear at ``path`` by one keeping ``index`` of its outputs (0) or inputs (1)."""
        parent, _, name = path.rpartition(".")
        owner = self.layer.get_submodule(parent)
        setattr(owner, name, _slice_linear(getattr(owner, name), index, dim))


def _has_linear(layer: nn.Module, path: str) -> bool:
    try:
        return isinstance(layer.get_submodule(path), nn.Linear)
    except AttributeError:
        return False


def layer_parts(model: nn.Module) -> list[LayerParts]:
    """Every block's layout, or a ModelLoadError naming what this module supports."""
    layers = model.get_submodule(find_layer_list(model, model.config.num_hidden_layers))
    parts = []
    for index, layer in enumerate(layers):
        kind = next(
            (
                kind
                for kind, paths in LAYOUTS.items()
                if all(_has_linear(layer, paths[role]) for role in LINEAR_ROLES)
                and all(_has_linear(layer, path) for path in paths["up"])
            ),
            None,
        )
        if kind is None:
            raise ModelLoadError(
                f"structured pruning does not know the layout of {type(model).__name__} (layer {index}: "
                "expected BERT-style attention.self.query/... or llama-style self_attn.q_proj/mlp.down_proj). "
                "Keep the teacher's heads and feed-forward size (drop student.num_attention_heads / "
                "student.intermediate_size), or set student.hidden_size for a freshly initialised narrower model."
            )
        parts.append(LayerParts(kind, layer))
    return parts


def encoder_head_pruning_supported(model: nn.Module) -> bool:
    """transformers 4.x keeps ``prune_heads`` / ``config.pruned_heads``; 5.x removed both."""
    return callable(getattr(model, "prune_heads", None))


def check_head_pruning(model: nn.Module, heads: int | None) -> None:
    """Refuse BERT head pruning where transformers cannot save the result (5.x), before any work."""
    if heads is None or heads >= head_geometry(model.config)[0] or encoder_head_pruning_supported(model):
        return
    if layer_parts(model)[0].kind != "encoder":
        return
    import transformers

    raise ModelLoadError(
        f"pruning attention heads of {type(model).__name__} needs transformers' prune_heads / "
        f"config.pruned_heads, which transformers {transformers.__version__} no longer has (removed in 5.0). "
        "Keep the teacher's heads (drop student.num_attention_heads / --student-heads) and prune only the "
        "feed-forward size (student.intermediate_size), or install transformers 4.57 "
        "(pip install 'transformers>=4.57,<4.58')."
    )


def head_geometry(config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size) of a config."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv_heads, head_dim


def check_targets(config, heads: int | None, ffn: int | None) -> None:
    """Refuse targets that cannot be reached by removing units, naming the valid choices."""
    t_heads, t_kv, _ = head_geometry(config)
    if heads is not None:
        group = t_heads // t_kv
        if heads > t_heads:
            raise ModelLoadError(
                f"student.num_attention_heads={heads} but the teacher has {t_heads} heads per layer; "
                "pruning only removes heads"
            )
        if heads % group:
            valid = [g * group for g in range(1, t_kv + 1)]
            raise ModelLoadError(
                f"student.num_attention_heads={heads}: the teacher groups {group} query heads per key/value "
                f"head and heads are pruned by whole groups; choose one of {valid}"
            )
    if ffn is not None and ffn > int(config.intermediate_size):
        raise ModelLoadError(
            f"student.intermediate_size={ffn} but the teacher's feed-forward size is {config.intermediate_size}; "
            "pruning only removes neurons"
        )


# --------------------------------------------------------------------------- importance


def _head_scores_from_weights(p: LayerParts, heads: int, kv_heads: int, head_dim: int) -> torch.Tensor:
    q = p.linear("q").weight.detach().float().view(heads, head_dim, -1).pow(2).sum((1, 2))
    o = p.linear("o").weight.detach().float().view(-1, heads, head_dim).pow(2).sum((0, 2))
    group = heads // kv_heads
    kv = sum(
        p.linear(role).weight.detach().float().view(kv_heads, head_dim, -1).pow(2).sum((1, 2))
        for role in ("k", "v")
    )
    return (q + o + kv.repeat_interleave(group) / group).sqrt()


def _neuron_scores_from_weights(p: LayerParts) -> torch.Tensor:
    up = torch.stack([m.weight.detach().float().norm(dim=1) for m in p.up]).prod(0)
    return up * p.linear("down").weight.detach().float().norm(dim=0)


@torch.no_grad()
def importance(
    model: nn.Module, batches: list[dict[str, torch.Tensor]] | None, method: str = "activation"
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: a score per query head and a score per feed-forward neuron (higher = keep)."""
    parts = layer_parts(model)
    heads, kv_heads, head_dim = head_geometry(model.config)
    if method == "magnitude":
        return (
            [_head_scores_from_weights(p, heads, kv_heads, head_dim) for p in parts],
            [_neuron_scores_from_weights(p) for p in parts],
        )
    if not batches:
        raise ValueError("activation importance needs calibration batches (training data)")
    head_sum = [torch.zeros(heads, dtype=torch.float64) for _ in parts]
    neuron_sum = [torch.zeros(p.linear("down").in_features, dtype=torch.float64) for p in parts]
    state: dict[str, Any] = {"mask": None, "tokens": 0}

    def hook_o(index: int, p: LayerParts):
        o = p.linear("o")
        w = o.weight.detach().float().view(o.out_features, heads, head_dim)

        def hook(_module, args):
            x = args[0].float()  # [B, T, heads * head_dim]
            x = x.view(*x.shape[:-1], heads, head_dim)
            contribution = torch.einsum("bthd,ohd->btho", x, w).norm(dim=-1)  # [B, T, heads]
            head_sum[index] += (contribution * state["mask"][..., None]).sum((0, 1)).double()

        return hook

    def hook_down(index: int, p: LayerParts):
        column_norm = p.linear("down").weight.detach().float().norm(dim=0)

        def hook(_module, args):
            x = args[0].float().abs()  # [B, T, neurons]
            neuron_sum[index] += ((x * state["mask"][..., None]).sum((0, 1)) * column_norm).double()

        return hook

    handles = []
    for index, p in enumerate(parts):
        handles.append(p.linear("o").register_forward_pre_hook(hook_o(index, p)))
        handles.append(p.linear("down").register_forward_pre_hook(hook_down(index, p)))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            if mask is None:
                mask = torch.ones(batch["input_ids"].shape, dtype=torch.long)
            state["mask"] = mask.float()
            state["tokens"] += int(mask.sum())
            model(**batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    tokens = max(1, state["tokens"])
    return [(s / tokens).float() for s in head_sum], [(s / tokens).float() for s in neuron_sum]


# --------------------------------------------------------------------------- slicing


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``index`` of its outputs (dim 0) or inputs (dim 1)."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = None
    if linear.bias is not None:
        bias = linear.bias.detach()[index].clone() if dim == 0 else linear.bias.detach().clone()
    out_features, in_features = weight.shape
    new = nn.Linear(
        in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new


def _keep_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores, in their original order (stable on ties)."""
    order = torch.argsort(scores, descending=True, stable=True)[:count]
    return torch.sort(order).values


def _prune(
    model: nn.Module,
    heads: int | None,
    ffn: int | None,
    head_scores: list[torch.Tensor],
    neuron_scores: list[torch.Tensor],
) -> dict[str, Any]:
    """Keep the ``heads`` / ``ffn`` best units of every layer, in place (targets already checked by
    ``prune_student``); return what was kept."""
    config = model.config
    parts = layer_parts(model)
    t_heads, t_kv, head_dim = head_geometry(config)
    group = t_heads // t_kv
    kept_heads: list[list[int]] = []
    encoder_prune: dict[int, list[int]] = {}
    for index, p in enumerate(parts):
        if heads is not None and heads < t_heads:
            if p.kind == "encoder":
                keep = _keep_top(head_scores[index], heads)
                encoder_prune[index] = sorted(set(range(t_heads)) - set(keep.tolist()))
                kept_heads.append(keep.tolist())
            else:
                group_scores = head_scores[index].view(t_kv, group).sum(1)
                keep_groups = _keep_top(group_scores, heads // group)
                keep_q = (keep_groups[:, None] * group + torch.arange(group)).flatten()
                device = p.linear("q").weight.device
                q_rows = (keep_q[:, None] * head_dim + torch.arange(head_dim)).flatten().to(device)
                kv_rows = (keep_groups[:, None] * head_dim + torch.arange(head_dim)).flatten().to(device)
                for role, rows, dim in (
                    ("q", q_rows, 0),
                    ("k", kv_rows, 0),
                    ("v", kv_rows, 0),
                    ("o", q_rows, 1),
                ):
                    p.slice(p.paths[role], rows, dim)
                kept_heads.append(keep_q.tolist())
        down = p.linear("down")
        if ffn is not None and ffn < down.in_features:
            keep = _keep_top(neuron_scores[index], ffn).to(down.weight.device)
            for path in p.paths["up"]:
                p.slice(path, keep, 0)
            p.slice(p.paths["down"], keep, 1)
    if encoder_prune:
        model.prune_heads(encoder_prune)  # transformers records them in config.pruned_heads
    if heads is not None and heads < t_heads and parts[0].kind == "decoder":
        config.num_attention_heads = heads
        config.num_key_value_heads = heads // group
        config.head_dim = head_dim
        for p in parts:
            for attr, value in (("num_heads", heads), ("num_key_value_heads", heads // group)):
                if hasattr(p.attention, attr):
                    setattr(p.attention, attr, value)
    teacher_ffn = int(config.intermediate_size)
    if ffn is not None and ffn < teacher_ffn:
        config.intermediate_size = ffn
    return {
        "heads_per_layer": heads if heads is not None else t_heads,
        "teacher_heads_per_layer": t_heads,
        "kept_heads": kept_heads or None,
        "intermediate_size": int(config.intermediate_size),
        "teacher_intermediate_size": teacher_ffn,
    }


def prune_student(
    model: nn.Module,
    heads: int | None,
    ffn: int | None,
    method: str = "activation",
    batches: list[dict[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Score and prune ``model`` in place; the returned record goes into the distill report."""
    from edgedistill.compress.models import count_parameters

    check_targets(model.config, heads, ffn)
    check_head_pruning(model, heads)
    before = count_parameters(model)
    head_scores, neuron_scores = importance(model, batches, method)
    record = _prune(model, heads, ffn, head_scores, neuron_scores)
    record.update(
        {
            "importance": method,
            "calibration_batches": len(batches or []) if method == "activation" else 0,
            "parameters_before": before,
            "parameters_after": count_parameters(model),
        }
    )
    log.info(
        "pruned the student to %s heads and %s feed-forward neurons per layer (%s importance): %d -> %d parameters",
        record["heads_per_layer"],
        record["intermediate_size"],
        method,
        before,
        record["parameters_after"],
    )
    return record
