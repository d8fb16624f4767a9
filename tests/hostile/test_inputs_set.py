"""Hostile `--set KEY=VALUE` overrides: refused by argparse (exit 2, one usage line naming the
flag) or by the recipe validation (ConfigError naming the key); nothing is written."""

from __future__ import annotations

import pytest
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)

from edgedistill.cliargs import parse_set
from edgedistill.errors import ConfigError

SET_CASES = {
    "bomb": ("x=[&a [l, l, l, l, l, l, l, l], &b [*a, *a, *a, *a, *a, *a, *a, *a], "
             "&c [*b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c], "
             "&e [*d, *d, *d, *d, *d, *d, *d, *d], &f [*e, *e, *e, *e, *e, *e, *e, *e]]", "expands to more"),
    "huge_value": ("x=" + "a" * 50_000, "50000 characters"),
    "deep": ("x=" + "[" * 3000 + "]" * 3000, "nested too deeply"),
    "python_tag": ("x=!!python/object/apply:os.system ['true']", "not allowed"),
    "no_equals": ("training.lr", "use KEY=VALUE"),
    "empty_key_part": ("training..lr=1", "not a dotted recipe key"),
    "key_too_deep": ("a." * 40 + "b=1", "not a dotted recipe key"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SET_CASES))
def test_set_refused_api(case, bounded):
    flag, expected = SET_CASES[case]
    with bounded(), pytest.raises(ConfigError) as info:
        parse_set(flag)
    assert "--set" in str(info.value) and expected in str(info.value), str(info.value)


@pytest.mark.parametrize("case", ["bomb", "python_tag", "huge_value"])
def test_set_refused_cli_exit_2_nothing_written(case, cli, tmp_path):
    out = tmp_path / "out"
    rc, err = cli("distill", "--teacher", tmp_path, "--out", out, "--set", SET_CASES[case][0])
    assert rc == 2
    assert "argument --set" in err and SET_CASES[case][1] in err, err
    assert "Traceback" not in err and not out.exists()


def test_set_non_finite_value_refused_by_validation(cli, tmp_path):
    out = tmp_path / "out"
    rc, err = cli(
        "distill", "--teacher", tmp_path, "--student-layers", "1", "--out", out, "--set", "training.lr=.nan"
    )
    assert rc == 2 and "training.lr: Input should be a finite number" in err, err
    assert not out.exists()


@pytest.mark.parametrize("raw", ["3e-5", "3.0e-5", "none", "[{name: soft_kl}]", "8", "true", "{a: 1}", ""])
def test_set_valid_values_parse_as_before(raw):
    import yaml

    assert parse_set(f"training.x={raw}") == ("training.x", yaml.safe_load(raw))
