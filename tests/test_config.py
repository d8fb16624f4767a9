"""Recipes: strict validation, every problem listed at once with its key path; schema; CLI flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgedistill.compress.config import DistillRecipe
from edgedistill.config import load_config
from edgedistill.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_recipe_lists_every_bad_field(tmp_path):
    path = write(
        tmp_path,
        """
version: 1
task: translation
teacher: {path: t, trust_remote_cod: true}
student: {layers: 0}
training: {lr: -1, batch_size: many}
temperature: {kind: linear, start: 4}
qat: {mode: int4}
losses: [{name: soft_kl, weight: -2}, {name: nope}]
colour: blue
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(DistillRecipe, path)
    paths = {p for p, _ in info.value.problems}
    expected = {
        "task",
        "teacher.trust_remote_cod",
        "student.layers",
        "training.lr",
        "training.batch_size",
        "temperature.end",
        "qat.mode",
        "losses[0].weight",
        "losses[1].name",
        "colour",
    }
    assert expected <= paths, paths
    message = str(info.value)
    assert str(path) in message and "unknown key" in message


def test_version_is_checked(tmp_path):
    path = write(tmp_path, "version: 2\nteacher: {path: t}\nstudent: {layers: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(DistillRecipe, path)
    assert any(k == "version" and "Input should be 1" in m for k, m in info.value.problems)


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "teacher: {path: t\nstudent: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(DistillRecipe, path)


def test_overrides_beat_file_and_defaults_resolve(tmp_path):
    path = write(tmp_path, "teacher: {path: t}\nstudent: {layers: 2}\ntraining: {lr: 1.0e-4}\n")
    recipe = load_config(
        DistillRecipe, path, {"training.lr": 3e-5, "student.layers": [0, 2], "qat.mode": "int8"}
    )
    assert recipe.training.lr == 3e-5 and recipe.student.layers == [0, 2] and recipe.qat.mode == "int8"
    assert [s.name for s in recipe.losses] == ["soft_kl", "hard_ce"]


def test_feature_extraction_refuses_logit_losses():
    with pytest.raises(ConfigError, match="need class logits"):
        load_config(
            DistillRecipe,
            None,
            {
                "task": "feature-extraction",
                "teacher.path": "t",
                "student.layers": 1,
                "losses": [{"name": "soft_kl"}],
            },
        )


def test_schema_command_writes_valid_json_schema(tmp_path):
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, "-m", "edgedistill", "schema", "--out", str(out)], check=True)
    schema = json.loads(out.read_text())
    assert schema["additionalProperties"] is False
    assert {"teacher", "student", "losses", "qat", "temperature", "alpha"} <= set(schema["properties"])


def test_cli_reports_config_errors_without_traceback(tmp_path):
    path = write(tmp_path, "teacher: {path: t}\nstudent: {layers: 2}\ntraining: {lr: fast}\nbogus: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgedistill", "distill", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "training.lr" in proc.stderr and "bogus" in proc.stderr and "Traceback" not in proc.stderr
