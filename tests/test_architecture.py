"""The layout's rules (docs/architecture.md), read from the source: who may import whom, and room sizes.

The pipeline reads compress -> export -> bench, with targets as data and the ground
(`edgedistill/`: errors, io, config, plugins, host, numerics, data, quant) under all of them.
An import that points up the pipeline, or sideways between compress and bench, is how a
package grows into a god file again; these tests name the file, the line and the import.
Imports inside functions and under TYPE_CHECKING count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# top-level folder -> the import name setuptools' package-dir gives it
AREAS = {
    "compress": "edgedistill.compress",
    "export": "edgedistill.export",
    "bench": "edgedistill.bench",
    "targets": "edgedistill.targets",
}
# the application modules on top of everything: the CLI, the `run` pipeline and its report, `fit`
APP = {
    "edgedistill.cli",
    "edgedistill.pipeline",
    "edgedistill.report",
    "edgedistill.teacher_reference",  # the run's teacher reference point: exports and benches
    "edgedistill.__main__",
}

# layer -> the layers it may import (its own included)
ALLOWED = {
    "ground": {"ground"},
    "compress": {"ground", "compress"},
    "export": {"ground", "compress", "export"},
    "targets": {"ground", "targets"},
    "bench": {"ground", "export", "targets", "bench"},
    "app": {"ground", "compress", "export", "targets", "bench", "app"},
}
# targets are data about what export can make: the format and precision names, nothing more
EXCEPTIONS = {("targets", "edgedistill.export.config")}

MAX_LINES = 450  # docs/architecture.md: one job per file, about 400 lines at most


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    layer: str


# the student search orchestrates compress, export and bench like `run` does
APP_PACKAGES = ("edgedistill.fit",)


def _layer(name: str) -> str:
    if name in APP or name.startswith(tuple(p + "." for p in APP_PACKAGES)) or name in APP_PACKAGES:
        return "app"
    for area, package in AREAS.items():
        if name == package or name.startswith(package + "."):
            return area
    return "ground"


def _module_name(package: str, rel: Path) -> str:
    parts = rel.with_suffix("").parts
    return ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _modules() -> list[Module]:
    roots = {"edgedistill": "edgedistill", **AREAS}
    modules = []
    for folder, package in roots.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = _module_name(package, path.relative_to(ROOT / folder))
            modules.append(Module(name, path, _layer(name)))
    return modules


def _imports(module: Module) -> list[tuple[int, str]]:
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from edgedistill import compress` names a subpackage, not an attribute
            out += [
                (node.lineno, f"{target}.{alias.name}") for alias in node.names if target == "edgedistill"
            ]
    return sorted(
        (line, name) for line, name in out if name == "edgedistill" or name.startswith("edgedistill.")
    )


MODULES = _modules()


def test_the_module_map_sees_every_area():
    layers = {m.layer for m in MODULES}
    assert layers == set(ALLOWED), layers
    assert all(m.path.is_file() for m in MODULES)
    assert len(MODULES) > 50


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer):
    wrong = []
    for module in (m for m in MODULES if m.layer == layer):
        for line, name in _imports(module):
            if name == "edgedistill":
                continue  # the root package: __version__ only, imports nothing
            to = _layer(name)
            if to not in ALLOWED[layer] and (layer, name) not in EXCEPTIONS:
                wrong.append(f"{module.path.relative_to(ROOT)}:{line} imports {name} ({layer} -> {to})")
    assert not wrong, (
        f"{layer} may import only {sorted(ALLOWED[layer])} (docs/architecture.md). Move the shared code "
        "into the ground (edgedistill/quant for quantization math, edgedistill/data for reading data) or "
        "into the lower layer:\n" + "\n".join(wrong)
    )


def test_no_file_is_a_god_file():
    long = [
        f"{m.path.relative_to(ROOT)}: {n} lines"
        for m in MODULES
        if (n := len(m.path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, f"split these by job into a subpackage (at most ~400 lines a file): {long}"


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself: a compress module importing export, or bench importing compress, is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from edgedistill.export.gguf import write_gguf\nimport edgedistill.compress.qat\n"
    )
    found = _imports(Module("edgedistill.bench.bad", bad, "bench"))
    assert found == [(2, "edgedistill.export.gguf"), (3, "edgedistill.compress.qat")]
    assert _layer(found[0][1]) in ALLOWED["bench"] and _layer(found[1][1]) not in ALLOWED["bench"]
    rel = tmp_path / "rel.py"
    rel.write_text("from ..export import core\nfrom . import plugins\n")
    assert [n for _, n in _imports(Module("edgedistill.compress.x", rel, "compress"))] == [
        "edgedistill.export",
        "edgedistill.compress",
    ]


def _public_names(tree: ast.Module) -> set[str]:
    """Names an ``__init__`` exports: the keys of its ``_EXPORTS`` table and a literal ``__all__`` list."""
    names: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        ids = {getattr(t, "id", None) for t in targets}
        if ids & {"_EXPORTS", "__all__"} and isinstance(node.value, ast.Dict | ast.List | ast.Tuple):
            names |= set(ast.literal_eval(node.value))
    return names


def test_no_public_name_is_shadowed_by_a_submodule():
    """`from edgedistill.compress import distill` must give the function even after the module defining it
    was imported: Python sets a package attribute to each submodule it loads, so an exported name that is
    also a submodule's name flips meaning with import order. It did: bench/gate/, compress/distill.py and
    compress/finetune.py are now gating/, distillation.py and finetuning.py."""
    shadowed, packages = [], 0
    for module in MODULES:
        if module.path.name != "__init__.py":
            continue
        names = _public_names(ast.parse(module.path.read_text(encoding="utf-8")))
        packages += bool(names)
        folder = module.path.parent
        for name in sorted(names):
            if (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file():
                shadowed.append(
                    f"{module.path.relative_to(ROOT)}: {name!r} is both an export and a submodule"
                )
    assert packages >= 4, "no _EXPORTS/__all__ tables found: the check reads nothing"
    assert not shadowed, "rename the submodule (import order decides which one callers get):\n" + "\n".join(
        shadowed
    )
