"""Argument pieces every `edgedistill` verb shares, so each parser spells them the same way."""

from __future__ import annotations

import argparse
from typing import Any

from edgedistill.errors import ConfigError
from edgedistill.safe_yaml import load_yaml_text

MAX_SET_CHARS = 10_000  # one --set value; a recipe key's value is short
MAX_KEY_DEPTH = 16  # dots in one --set key


def parse_set(value: str) -> tuple[str, Any]:
    """``training.lr=3e-5`` -> ``("training.lr", 3e-05)``; the value is parsed as bounded YAML
    (`edgedistill.safe_yaml`: no tags, few aliases, shallow). ConfigError names the flag."""
    key, sep, raw = value.partition("=")
    source = f"--set {key or value[:40]!r}"
    if not sep or not key:
        raise ConfigError(source, [("", "use KEY=VALUE, e.g. training.lr=3e-5")])
    if len(raw) > MAX_SET_CHARS:
        raise ConfigError(
            source,
            [(key, f"a value of {len(raw)} characters (at most {MAX_SET_CHARS}); put it in the recipe file")],
        )
    if key.count(".") >= MAX_KEY_DEPTH or any(not part for part in key.split(".")):
        raise ConfigError(source, [(key, f"not a dotted recipe key (a.b.c, at most {MAX_KEY_DEPTH} parts)")])
    return key, load_yaml_text(raw, source)


def key_value(value: str) -> tuple[str, Any]:
    """argparse type for --set: `parse_set`, its ConfigError turned into argparse's usage error (exit 2)."""
    try:
        return parse_set(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from None


def add_set_flag(parser: argparse.ArgumentParser, what: str, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.sets`` as (dotted key, value) pairs."""
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set {example} (repeatable)",
    )
