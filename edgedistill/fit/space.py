"""The search space as concrete student shapes, checked against the teacher, transformers and the target.

A `Shape` is one student the search may build: which teacher layers, and optionally fewer
feed-forward neurons, fewer heads or a narrower width. `plan_shapes` turns the `fit.space` lists
into shapes and refuses, before any work, every choice that cannot be built — layers the
teacher lacks, head pruning the installed transformers cannot save, a (format, precision) the
target or the exporter refuses — all at once, each with its key path.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgedistill.errors import ConfigError
from edgedistill.fit.config import ExportChoice, FitConfig

# what each task exports as (the exporter's task names)
EXPORT_TASK = {
    "sequence-classification": "sequence-classification",
    "feature-extraction": "feature-extraction",
    "causal-lm": "text-generation",
}


@dataclass(frozen=True)
class Shape:
    """One student shape: teacher layers kept, and what is pruned or narrowed (None: the teacher's)."""

    layers: tuple[int, ...]
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    hidden_size: int | None = None

    @property
    def key(self) -> str:
        """A short, stable, file-name-safe id: ``L0-2-5_f384`` (f: FFN, h: heads, w: width)."""
        parts = ["L" + "-".join(str(i) for i in self.layers)]
        for tag, value in (
            ("f", self.intermediate_size),
            ("h", self.num_attention_heads),
            ("w", self.hidden_size),
        ):
            if value is not None:
                parts.append(f"{tag}{value}")
        return "_".join(parts)

    def student_config(self) -> dict[str, Any]:
        """The `distill.student` section that builds this shape."""
        cfg: dict[str, Any] = {"layers": list(self.layers)}
        for name in ("intermediate_size", "num_attention_heads", "hidden_size"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers), "key": self.key}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Shape:
        return cls(
            layers=tuple(int(i) for i in raw["layers"]),
            intermediate_size=raw.get("intermediate_size"),
            num_attention_heads=raw.get("num_attention_heads"),
            hidden_size=raw.get("hidden_size"),
        )


def teacher_digest(config: dict[str, Any]) -> str:
    """What a shape's cost depends on in the teacher: its architecture, not its weights' values."""
    keep = {
        k: v
        for k, v in config.items()
        if not k.startswith(("_", "transformers_version", "id2label", "label2id"))
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _uniform_layers(n_teacher: int, count: int) -> tuple[int, ...]:
    from edgedistill.compress.models import select_layers

    return tuple(select_layers(n_teacher, count))


def _head_pruning_saved() -> bool:
    """transformers 4.x keeps `prune_heads` for encoders; 5.x removed it (decoders are sliced directly)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) < 5


def plan_shapes(
    fit: FitConfig, teacher_config: dict[str, Any], task: str, target, source: str = "fit"
) -> list[Shape]:
    """Every shape of the space, or a `ConfigError` listing every choice that cannot be built."""
    problems: list[tuple[str, str]] = []
    space = fit.space
    n_layers = int(teacher_config.get("num_hidden_layers") or teacher_config.get("n_layer") or 0)
    hidden = int(teacher_config.get("hidden_size") or 0)
    heads = int(teacher_config.get("num_attention_heads") or 0)
    kv_heads = int(teacher_config.get("num_key_value_heads") or heads or 1)
    ffn = int(teacher_config.get("intermediate_size") or 0)
    decoder = task == "causal-lm"

    layer_sets: list[tuple[int, ...]] = []
    for i, choice in enumerate(space.layers):
        where = f"fit.space.layers[{i}]"
        if isinstance(choice, int):
            if not 1 <= choice <= n_layers:
                problems.append(
                    (where, f"{choice} layers: the teacher has {n_layers} (choose 1..{n_layers})")
                )
                continue
            layer_sets.append(_uniform_layers(n_layers, choice))
        else:
            bad = [j for j in choice if not 0 <= j < n_layers]
            if bad or not choice or len(set(choice)) != len(choice):
                problems.append((where, f"{choice}: distinct teacher layer indices 0..{n_layers - 1}"))
                continue
            layer_sets.append(tuple(sorted(choice)))
    for i, value in enumerate(space.intermediate_size):
        if value is not None and not 1 <= value <= ffn:
            problems.append(
                (
                    f"fit.space.intermediate_size[{i}]",
                    f"{value}: pruning keeps 1..{ffn} neurons (the teacher's)",
                )
            )
    for i, value in enumerate(space.num_attention_heads):
        where = f"fit.space.num_attention_heads[{i}]"
        if value is None or value == heads:
            continue
        group = max(1, heads // kv_heads)
        if not 1 <= value <= heads or value % group:
            problems.append((where, f"{value}: choose one of {[g * group for g in range(1, kv_heads + 1)]}"))
        elif not decoder and not _head_pruning_saved():
            import transformers

            problems.append(
                (
                    where,
                    f"transformers {transformers.__version__} cannot prune encoder heads (removed in 5.0): "
                    "use null (keep the teacher's heads) and search intermediate_size, or install "
                    "transformers 4.57",
                )
            )
    for i, value in enumerate(space.hidden_size):
        if value is not None and value != hidden and (value > hidden or value % max(1, hidden // heads)):
            problems.append(
                (
                    f"fit.space.hidden_size[{i}]",
                    f"{value}: a multiple of the head size {hidden // heads}, <= {hidden}",
                )
            )
    problems += export_problems(space.exports, task, target)
    if problems:
        raise ConfigError(source, problems)

    shapes: list[Shape] = []
    for layers, f, h, w in itertools.product(
        dict.fromkeys(layer_sets), space.intermediate_size, space.num_attention_heads, space.hidden_size
    ):
        fresh = w is not None and w != hidden
        shape = Shape(
            layers=layers,
            intermediate_size=None if f == ffn else f,
            num_attention_heads=None if h == heads else h,
            hidden_size=w if fresh else None,
        )
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def export_problems(exports: list[ExportChoice], task: str, target) -> list[tuple[str, str]]:
    """(format, precision) pairs the target refuses or no exporter offers for this task."""
    from edgedistill.export.config import FORMATS, PRECISIONS

    problems = []
    seen = set()
    for i, choice in enumerate(exports):
        where = f"fit.space.exports[{i}]"
        pair = (choice.format, choice.precision)
        if pair in seen:
            problems.append((where, f"{choice.format} {choice.precision} is listed twice"))
        seen.add(pair)
        if choice.format not in FORMATS:
            problems.append((where, f"format {choice.format!r}: choose from {list(FORMATS)}"))
            continue
        if choice.precision not in PRECISIONS:
            problems.append((where, f"precision {choice.precision!r}: choose from {list(PRECISIONS)}"))
            continue
        refused = target.accepts(choice.format, choice.precision)
        if refused:
            problems.append((where, refused))
        if task == "causal-lm" and choice.format in ("onnx", "ort"):
            problems.append((where, f"{choice.format} does not export decoders yet: use gguf or openvino"))
        if task == "sequence-classification" and choice.format == "gguf":
            problems.append((where, "llama.cpp runs no classification head: use onnx or openvino"))
    return problems


def read_teacher_config(path: str) -> dict[str, Any]:
    """The teacher's config.json through the same checks every verb runs on a model folder; for a GGUF
    teacher (one .gguf file) the config transformers derives from its checked metadata."""
    from edgedistill.compress.model_source import gguf_path
    from edgedistill.model_checks import read_config_json

    if gguf_path(path) is not None:
        from edgedistill.compress.models import load_gguf_config

        return load_gguf_config(path, "teacher")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            "fit", [("distill.teacher.path", f"{path} has no config.json: fit needs a local teacher folder")]
        )
    return read_config_json(folder, "teacher")
