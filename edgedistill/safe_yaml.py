"""Reading untrusted YAML within bounds: size, aliases, expansion, depth, duplicate keys, tags.

`yaml.safe_load` already refuses ``!!python/*`` tags, but it expands alias bombs, lets a later
duplicate key silently win, recurses until Python's stack gives out on deep nesting and raises
plain ``ValueError`` on a 5,000-digit integer. `load_yaml_text` composes the node graph first
(aliases stay shared references there, so composing costs memory linear in the text), checks it
against the bounds below, and only then constructs Python objects. Every refusal is one
`ConfigError` naming the source, the line and what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgedistill.errors import ConfigError

MAX_FILE_BYTES = 1 << 20  # a recipe or target is a few KB; 1 MiB is far beyond any real one
MAX_ALIASES = 100  # `*name` references in one document
MAX_NODES = 100_000  # scalars + collections once aliases are expanded
MAX_DEPTH = 50  # nesting of mappings/sequences
MAX_SCALAR_CHARS = 100_000  # one value

# Tags a recipe or target can legitimately hold (what safe_load constructs, minus nothing).
_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary", "merge", "set")
}


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _check_graph(root: yaml.Node, source: str) -> None:
    """Depth, tags, scalar sizes, duplicate keys, and the expanded size (aliases counted each time)."""
    sizes: dict[int, int] = {}  # id(node) -> expanded node count (a shared node is counted per use)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    open_ids: set[int] = set()  # the nodes on the current path: meeting one again is a cycle
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            open_ids.discard(key)
            children = _children(node)
            sizes[key] = min(MAX_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            if sizes[key] > MAX_NODES:
                raise ConfigError(
                    source,
                    [
                        (
                            _where(node),
                            f"expands to more than {MAX_NODES} values (aliases repeat what they point at): "
                            "write the values out, or use fewer `*alias` references",
                        )
                    ],
                )
            continue
        if key in sizes:
            continue
        if key in open_ids:
            raise ConfigError(source, [(_where(node), "an alias that refers to itself (a cycle): remove it")])
        if depth > MAX_DEPTH:
            raise ConfigError(
                source, [(_where(node), f"nested more than {MAX_DEPTH} levels deep; flatten the structure")]
            )
        if node.tag not in _STANDARD_TAGS:
            raise ConfigError(
                source,
                [
                    (
                        _where(node),
                        f"tag {node.tag!r} is not allowed (only plain YAML values; python/custom tags are "
                        "never constructed): remove the tag",
                    )
                ],
            )
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_SCALAR_CHARS:
                raise ConfigError(
                    source,
                    [(_where(node), f"a value of {len(node.value)} characters (at most {MAX_SCALAR_CHARS})")],
                )
            sizes[key] = 1
            continue
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(node, source)
        open_ids.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicate_keys(node: yaml.MappingNode, source: str) -> None:
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key_node.tag, key_node.value)
        if ident in seen:
            first = seen[ident].start_mark.line + 1
            raise ConfigError(
                source,
                [
                    (
                        _where(key_node),
                        f"duplicate key {key_node.value!r} (first on line {first}, again on line "
                        f"{key_node.start_mark.line + 1}): keep one of them",
                    )
                ],
            )
        seen[ident] = key_node


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader that refuses more than MAX_ALIASES alias events while composing."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.YAMLError(
                    f"more than {MAX_ALIASES} `*alias` references at line {event.start_mark.line + 1}"
                )
        return super().compose_node(parent, index)


def _problem(exc: yaml.YAMLError, text: str, what: str) -> tuple[str, str]:
    """(where, message) of a PyYAML error: its mark, or the position of a refused character."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"line {line}, character {exc.position}", f"character #x{char:04x} is not allowed in YAML text"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return where, f"{what}: {getattr(exc, 'problem', None) or exc}"


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document from ``text`` within the bounds above; ConfigError otherwise."""
    try:
        loader = _CountingLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise ConfigError(source, [_problem(exc, text, "not valid YAML")]) from None
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(
                source, [("", f"nested too deeply to parse (at most {MAX_DEPTH} levels); flatten it")]
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(source, [_problem(exc, text, "not valid YAML")]) from None
        if node is None:
            return None
        _check_graph(node, source)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise ConfigError(source, [_problem(exc, text, "cannot read this value")]) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a 5,000-digit integer
            raise ConfigError(source, [("", f"cannot read a value: {exc}")]) from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read and parse a YAML file: size checked before reading, UTF-8 checked with its byte offset."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, [("", "file not found; pass the path of an existing YAML file")])
    size = path.stat().st_size
    if size > max_bytes:
        raise ConfigError(
            source,
            [
                (
                    "",
                    f"{size} bytes; a recipe/target file is at most {max_bytes} bytes (is this the right file?)",
                )
            ],
        )
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while we looked
        raise ConfigError(source, [("", f"more than {max_bytes} bytes; a recipe/target file is small")])
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ConfigError(source, [(f"byte {nul}", "a NUL byte: this is a binary file, not YAML text")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            source, [(f"line {line}, byte {exc.start}", "not UTF-8 text; save the file as UTF-8")]
        ) from None
    return load_yaml_text(text, source)
