"""Property-based fuzz of the recipe and target readers (bounded run; `make fuzz` runs 10,000 a reader).

Random YAML texts, random structures and mutated valid files: each read ends in a value or an
EdgeDistillError, within a deadline, without growing memory.
"""

from __future__ import annotations

import string

import pytest
import yaml
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)
from fuzz_readers import READERS, _mutate, check_one
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=300,
    deadline=2000,  # ms per input on a shared, busy 2-core machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)


def structures(keys: list[str]):
    key = st.sampled_from(keys) | st.text(string.ascii_lowercase, min_size=1, max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(key, inner, max_size=6),
        max_leaves=40,
    )


def _yaml_texts(reader):
    as_yaml = structures(reader.keys).map(
        lambda v: yaml.safe_dump(v, allow_unicode=True).encode("utf-8", "surrogatepass")
    )
    mutated = st.randoms(use_true_random=False).map(lambda rng: _mutate(rng, rng.choice(reader.seeds)))
    raw = st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
    return as_yaml | mutated | raw


@pytest.mark.parametrize("name", ["recipe", "target"])
def test_reader_never_crashes(name, tmp_path, bounded):
    reader = READERS[name]
    path = tmp_path / f"input{reader.suffix}"
    outcomes = {"ok": 0, "refused": 0}

    @SETTINGS
    @given(data=_yaml_texts(reader))
    def one(data: bytes) -> None:
        outcomes[check_one(reader, data, path)] += 1  # anything but EdgeDistillError fails here

    with bounded():
        one()
    assert outcomes["refused"] > 0 and sum(outcomes.values()) >= 300, outcomes


def test_fuzz_entry_point_counts(tmp_path, capsys):
    from fuzz_readers import main

    assert main(["--examples", "150", "--json", str(tmp_path / "f.json")]) == 0
    import json

    results = json.loads((tmp_path / "f.json").read_text())
    assert {r["reader"] for r in results} >= {"recipe", "target"}
    assert all(r["inputs"] == 150 and r["crashed"] == 0 and r["slow"] == 0 for r in results), results
