"""Hostile recipe and target YAML: every case is one ConfigError naming the file, where and the fix.

Measured on the landed code first (docs/reliability.md, part A, has the before column): a
billion-laughs file, bad UTF-8, deep nesting and a 5,000-digit integer crashed with raw Python
errors or expanded unboundedly; duplicate keys were silently merged; `.inf` and 10**12 iteration
counts and a target named `../x` were accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)

from edgedistill.compress.config import DistillRecipe
from edgedistill.config import load_config
from edgedistill.errors import ConfigError
from edgedistill.targets import load_target

TEACHER = "teacher: {path: ./teacher}\nstudent: {layers: 1}\n"
MARKER = Path("/tmp/edgedistill-hostile-yaml-marker")


def _refused(path: Path, *expected: str, reader=None) -> str:
    reader = reader or (lambda p: load_config(DistillRecipe, p))
    with pytest.raises(ConfigError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message, message
    for part in expected:
        assert part in message, message
    return message


RECIPE_CASES = {
    "alias_many": (TEACHER + "x: &x 1\ny: [" + ", ".join(["*x"] * 150) + "]\n", ["more than 100 `*alias`"]),
    "alias_cycle": (TEACHER + "x: &x [*x]\n", ["refers to itself"]),
    "python_object": (
        TEACHER + f"x: !!python/object/apply:os.system ['touch {MARKER}']\n",
        ["line 3", "python/object/apply:os.system", "not allowed"],
    ),
    "python_name": (TEACHER + "x: !!python/name:os.system\n", ["python/name:os.system", "not allowed"]),
    "custom_tag": (TEACHER + "x: !include other.yaml\n", ["'!include'", "remove the tag"]),
    "duplicate_top": (
        TEACHER + "training: {lr: 1.0e-4}\ntraining: {lr: 2.0e-4}\n",
        ["duplicate key 'training' (first on line 3, again on line 4)"],
    ),
    "duplicate_nested": (
        TEACHER + "training:\n  lr: 1.0e-4\n  batch_size: 8\n  lr: 2.0e-4\n",
        ["duplicate key 'lr' (first on line 4, again on line 6)"],
    ),
    "wrong_type": (TEACHER + "training: {lr: fast}\n", ["training.lr", "valid number"]),
    "empty": ("", ["give `teacher:` (one teacher) or `teachers:` (a list)"]),
    "top_level_list": ("- a\n- b\n", ["expected a mapping"]),
    "binary": (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), ["NUL byte", "binary"]),
    "bad_utf8": (
        TEACHER.encode() + b"description: caf\xe9\n",
        ["line 3", "not UTF-8", "save the file as UTF-8"],
    ),
    "deep_unparseable": (TEACHER + "x: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    "deep_60": (TEACHER + "x: " + "[" * 60 + "]" * 60 + "\n", ["nested more than 50 levels"]),
    "huge_int": (TEACHER + "x: " + "9" * 5000 + "\n", ["cannot read a value", "digits"]),
    "huge_scalar": (TEACHER + "x: '" + "a" * 200_000 + "'\n", ["200000 characters"]),
    "version_other": (
        TEACHER + "version: 2\n",
        ["version: version 2 is not one this edgedistill reads", "upgrade"],
    ),
    "lr_nan": (TEACHER + "training: {lr: .nan}\n", ["training.lr", "finite number"]),
    "lr_inf": (TEACHER + "training: {lr: .inf}\n", ["training.lr", "finite number"]),
    "temperature_negative": (TEACHER + "temperature: {kind: constant, value: -1}\n", ["temperature", "> 0"]),
    "temperature_zero_end": (
        TEACHER + "temperature: {kind: linear, start: 4, end: 0}\n",
        ["temperature", "> 0"],
    ),
    "temperature_inf": (
        TEACHER + "temperature: {kind: constant, value: .inf}\n",
        ["temperature.value", "finite"],
    ),
    "steps_negative": (TEACHER + "training: {max_steps: -5}\n", ["training.max_steps", "greater than 0"]),
    "epochs_nan": (TEACHER + "training: {epochs: .nan}\n", ["training.epochs", "finite"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_hostile_recipe_refused(case, write, bounded):
    text, expected = RECIPE_CASES[case]
    path = write(f"{case}.yaml", text)
    with bounded():
        _refused(path, *expected)
    assert not MARKER.exists()


def test_billion_laughs_refused_bounded(write, bounded, billion_laughs):
    path = write("bomb.yaml", TEACHER + billion_laughs + "\n")
    with bounded():
        _refused(path, "expands to more than 100000 values", "fewer `*alias`")


def test_huge_recipe_file_refused_before_reading(write, bounded):
    path = write("huge.yaml", TEACHER + "# " + "x" * (2 << 20) + "\n")
    with bounded():
        _refused(path, "bytes; a recipe/target file is at most 1048576 bytes")


def test_valid_recipe_unchanged(write):
    recipe = load_config(DistillRecipe, write("ok.yaml", TEACHER + "training: {lr: 3.0e-5}\n"))
    assert recipe.training.lr == 3e-5


def test_merge_keys_and_few_aliases_still_read(write):
    text = TEACHER + "training: &t {lr: 3.0e-5, batch_size: 4}\nqat: {mode: none}\n"
    assert load_config(DistillRecipe, write("ok2.yaml", text)).training.batch_size == 4


NAME = "name: ci-phone\n"
TARGET_CASES = {
    "min_seconds_inf": (NAME + "measurement: {min_seconds: .inf}\n", ["measurement.min_seconds", "finite"]),
    "min_seconds_nan": (NAME + "measurement: {min_seconds: .nan}\n", ["measurement.min_seconds", "finite"]),
    "min_seconds_negative": (NAME + "measurement: {min_seconds: -1}\n", ["measurement.min_seconds"]),
    "min_iterations_absurd": (
        NAME + "measurement: {min_iterations: 1000000000000}\n",
        ["measurement.min_iterations", "1000000"],
    ),
    "warmup_absurd": (
        NAME + "measurement: {warmup_iterations: 1000000000}\n",
        ["measurement.warmup_iterations"],
    ),
    "rounds_absurd": (NAME + "measurement: {rounds: 1000000}\n", ["measurement.rounds", "1000"]),
    "timeout_inf": (NAME + "measurement: {timeout_s: .inf}\n", ["measurement.timeout_s", "finite"]),
    "sequence_length_absurd": (
        NAME + "workload: {sequence_lengths: [1000000000]}\n",
        ["workload.sequence_lengths"],
    ),
    "name_dotdot": ("name: ../../etc/cron.d/x\n", ["name", "match pattern"]),
    "name_slash": ("name: a/b\n", ["name", "match pattern"]),
    "name_nul": ('name: "a\\0b"\n', ["name", "match pattern"]),
    "name_inner_dotdot": ("name: a..b\n", ["name", "no '..'"]),
    "version_other": (NAME + "version: 3\n", ["version: version 3 is not one"]),
    "duplicate": (NAME + "name: other\n", ["duplicate key 'name' (first on line 1, again on line 2)"]),
    "python_tag": (NAME + "description: !!python/object/new:os.system [true]\n", ["not allowed"]),
}


@pytest.mark.parametrize("case", sorted(TARGET_CASES))
def test_hostile_target_refused(case, write, bounded):
    text, expected = TARGET_CASES[case]
    path = write(f"t_{case}.yaml", text)
    with bounded():
        _refused(path, *expected, reader=load_target)


def test_target_bomb_refused(write, bounded, billion_laughs):
    with bounded():
        _refused(write("t_bomb.yaml", NAME + billion_laughs + "\n"), "expands to more", reader=load_target)


def test_target_without_version_still_reads_as_version_1(write):
    assert load_target(write("t_ok.yaml", NAME)).version == 1


@pytest.mark.parametrize("verb", ["distill", "finetune", "run"])
def test_cli_hostile_recipe_exit_2_one_line_nothing_written(verb, write, cli, tmp_path, billion_laughs):
    recipe = write(f"{verb}.yaml", TEACHER + billion_laughs + "\n")
    out = tmp_path / "out"
    rc, err = cli(verb, recipe, "--out", out)
    assert rc == 2, err
    assert err.startswith(f"edgedistill {verb}: error: {recipe}"), err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("verb", ["bench", "gate"])
def test_cli_hostile_target_exit_2(verb, write, cli, tmp_path):
    target = write("t.yaml", "name: ../x\nmeasurement: {min_seconds: .inf}\n")
    out = tmp_path / "report.json"
    args = (
        [tmp_path, "--target", target, "--out", out]
        if verb == "bench"
        else [tmp_path / "r.json", "--target", target]
    )
    if verb == "gate":
        (tmp_path / "r.json").write_text("{}")
    rc, err = cli(verb, *args)
    assert rc == 2, err
    assert str(target) in err and "name" in err and "measurement.min_seconds" in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_export_hostile_config_exit_2(write, cli, tmp_path):
    config = write("export.yaml", "formats: [onnx]\nformats: [gguf]\n")
    rc, err = cli("export", tmp_path, "--config", config, "--out", tmp_path / "exp")
    assert rc == 2 and "duplicate key 'formats'" in err, err
    assert not (tmp_path / "exp").exists()


def test_cli_generate_hostile_config_exit_2(write, cli, tmp_path):
    config = write("gen.yaml", "teacher: !!python/object/apply:os.system ['true']\n")
    rc, err = cli("generate", config, "--out", tmp_path / "gen")
    assert rc == 2 and "not allowed" in err, err
    assert not (tmp_path / "gen").exists()
