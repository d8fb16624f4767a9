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


# import name -> pip distribution, where they differ (for install hints)
DISTRIBUTIONS = {"llama_cpp": "llama-cpp-python"}


def _pip_name(module: str) -> str:
    top = module.split(".")[0]
    return DISTRIBUTIONS.get(top, top)


def load_plugin(target: str, purpose: str, extra: str) -> Any:
    """Import ``"package.module:ClassName"``, instantiate it, and check its ``requires`` (module, extra) pairs.

    A dependency missing at import time (pip extra ``extra``) or listed in ``requires`` raises
    `MissingDependencyError` with the install command. A missing edgedistill module means a
    broken installation and is re-raised as it is.
    """
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing.split(".")[0] == "edgedistill":
            raise
        raise MissingDependencyError(_pip_name(missing), extra, purpose) from exc
    plugin = getattr(module, attr)()
    for dependency, dependency_extra in getattr(plugin, "requires", ()):
        if not is_installed(dependency):
            raise MissingDependencyError(_pip_name(dependency), dependency_extra, purpose)
    return plugin
