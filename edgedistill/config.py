"""Typed, versioned configuration: the base every recipe and target model derives from.

Recipes and targets are YAML files validated with pydantic v2. Unknown keys are errors, and
every problem is reported at once with its key path (``training.lr: Input should be ...``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgedistill.errors import ConfigError
from edgedistill.safe_yaml import read_yaml_file

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all config sections: unknown keys are refused, values are validated on assignment."""

    # allow_inf_nan=False: `.inf`/`.nan` are refused for every float field (a NaN learning rate, an
    # infinite min_seconds would otherwise pass `gt=0`-style bounds or hang a measurement).
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _strip_union_tags(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """Drop the tag that discriminated unions add to error locations (``temperature.linear.end``).

    Walks the raw input along the location: a step that is not a key of the mapping but equals
    its ``kind`` value is the union tag, which means nothing to a reader of the YAML file.
    """
    kept, node = [], raw
    for item in loc:
        if isinstance(node, dict) and item not in node and node.get("kind") == item:
            continue
        kept.append(item)
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(kept)


def problems_from_validation(err: ValidationError, raw: Any = None) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc = _strip_union_tags(tuple(e["loc"]), raw)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `edgedistill schema` lists the valid keys)"
        elif loc == ("version",) and e["type"] == "literal_error":
            msg = (
                f"version {e.get('input')!r} is not one this edgedistill reads ({msg}); "
                "write the file for that version, or upgrade edgedistill"
            )
        problems.append((_loc_to_path(loc), msg))
    return problems


def set_dotted(raw: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``a.b.c = value`` inside nested dicts, creating intermediate dicts."""
    node = raw
    keys = dotted_key.split(".")
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, read within `edgedistill.safe_yaml`'s bounds (size, aliases,
    depth, duplicate keys, plain tags only)."""
    path = Path(path)
    raw = read_yaml_file(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [("", f"expected a mapping at the top level, got {type(raw).__name__}")])
    return raw


def validate(model_cls: type[M], raw: Mapping[str, Any], source: str) -> M:
    try:
        return model_cls.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(source, problems_from_validation(err, dict(raw))) from None


def load_config(
    model_cls: type[M],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> M:
    """Load ``path`` (optional), apply dotted-key ``overrides`` (CLI flags), validate everything at once.

    An override of None is applied like any other: ``--set budgets.p95_latency_ms=null`` or a recipe's
    ``set: {budgets: {p95_latency_ms: null}}`` removes that budget. Callers drop the flags a user did
    not give before calling (an absent flag is not an explicit null)."""
    raw: dict[str, Any] = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    source = str(path) if path is not None else "command-line options"
    return validate(model_cls, raw, source)


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    """JSON-compatible dict of a config, with every default resolved."""
    return json.loads(cfg.model_dump_json())


def json_schema(model_cls: type[BaseModel]) -> dict[str, Any]:
    return model_cls.model_json_schema()
