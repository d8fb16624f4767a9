"""The two mechanisms behind every registry and public package of edgedistill.

- `lazy_exports`: a package's public names, each imported from its module on first access, so
  ``import edgedistill.export`` (or ``.bench``) imports no runtime, converter or torch.
- `load_plugin`: a registry entry ``"package.module:ClassName"`` imported and instantiated only
  when used, with its optional dependencies checked so a missing one names the pip extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from edgedistill.errors import MissingDependencyError


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps public name -> defining module."""

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def load_plugin(target: str, purpose: str, extra: str, distributions: Mapping[str, str] | None = None) -> Any:
    """Import ``"package.module:ClassName"``, instantiate it, and check its ``requires`` (module, extra) pairs.

    A dependency missing at import time (pip extra ``extra``) or listed in ``requires`` raises
    `MissingDependencyError` with the install command; ``distributions`` maps import names to pip
    names where they differ. A missing edgedistill module is a broken installation and re-raised.
    """
    names = distributions or {}
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or module_name).split(".")[0]
        if missing == "edgedistill":
            raise
        raise MissingDependencyError(names.get(missing, missing), extra, purpose) from exc
    plugin = getattr(module, attr)()
    for dependency, dependency_extra in getattr(plugin, "requires", ()):
        if not is_installed(dependency):
            raise MissingDependencyError(names.get(dependency, dependency), dependency_extra, purpose)
    return plugin
