"""The CLI's last line of defence: one line and exit 2 for any error, a traceback only with --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)

import edgedistill.compress.finetuning as finetuning
from edgedistill.errors import ConfigError


def _bug(*_args, **_kwargs):
    raise ZeroDivisionError("division by zero in a place nobody expected")


def test_unexpected_exception_one_line_exit_2_mock_bug(cli, write, tmp_path, monkeypatch):
    monkeypatch.setattr(finetuning, "finetune", _bug)  # a stand-in for a bug: no real input raises it
    rc, err = cli("finetune", "--model", tmp_path, "--train", "t.tsv", "--out", tmp_path / "o")
    assert rc == 2
    assert err.strip().count("\n") == 0, err
    assert err.startswith("edgedistill finetune: unexpected error ZeroDivisionError: division by zero"), err
    assert err.rstrip().endswith("(a bug; rerun with --debug for the traceback)"), err


def test_debug_shows_the_traceback_mock_bug(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(finetuning, "finetune", _bug)
    with pytest.raises(ZeroDivisionError):
        cli("--debug", "finetune", "--model", tmp_path, "--train", "t.tsv", "--out", tmp_path / "o")


def test_debug_reraises_edgedistill_errors(cli, write, tmp_path):
    recipe = write("r.yaml", "teacher: {path: x}\nteacher: {path: y}\n")
    with pytest.raises(ConfigError, match="duplicate key 'teacher'"):
        cli("--debug", "distill", recipe, "--out", tmp_path / "o")


def test_verbose_is_logging_only(cli, write, tmp_path):
    recipe = write("r.yaml", "teacher: {path: x}\nteacher: {path: y}\n")
    rc, err = cli("-v", "distill", recipe, "--out", tmp_path / "o")
    assert rc == 2 and "duplicate key 'teacher'" in err and "Traceback" not in err


def test_real_process_exit_code_and_one_error(write, tmp_path):
    recipe = write(
        "r.yaml", "teacher: !!python/object/apply:os.system ['touch {}']\n".format(tmp_path / "RAN")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgedistill", "distill", str(recipe), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "not allowed" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "RAN").exists() and not (tmp_path / "o").exists()
