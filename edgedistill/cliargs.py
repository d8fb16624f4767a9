"""Argument pieces every `edgedistill` verb shares, so each parser spells them the same way."""

from __future__ import annotations

import argparse
from typing import Any

import yaml


def key_value(value: str) -> tuple[str, Any]:
    """``training.lr=3e-5`` -> ``("training.lr", 3e-05)``; the value is parsed as YAML."""
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: use KEY=VALUE, e.g. training.lr=3e-5")
    return key, yaml.safe_load(raw)


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
