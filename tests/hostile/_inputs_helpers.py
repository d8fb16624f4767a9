"""Shared pieces of the hostile-input tests (tests/hostile/test_inputs_*.py): files written as a
hostile user would, the CLI run in-process with its exit code and stderr, the bound checks."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Every hostile case must be refused quickly and without growing the process: these bounds hold
# on a shared 2-core machine with room to spare.
MAX_SECONDS = 20.0
MAX_RSS_GROWTH_MB = 300.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def write(tmp_path) -> Callable[[str, str | bytes], Path]:
    """write(name, text_or_bytes) -> the path under tmp_path."""

    def _write(name: str, data: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    return _write


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str]]:
    """cli(*argv) -> (exit code, stderr) of `edgedistill ARGV`, in-process; argparse's exit too."""
    from edgedistill.cli import main

    def _run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
        return rc, capsys.readouterr().err

    return _run


@pytest.fixture
def bounded():
    """Context: the block runs within MAX_SECONDS and grows peak RSS by at most MAX_RSS_GROWTH_MB."""
    import contextlib

    @contextlib.contextmanager
    def _bounded():
        rss0, t0 = peak_rss_mb(), time.perf_counter()
        yield
        seconds, grown = time.perf_counter() - t0, peak_rss_mb() - rss0
        assert seconds < MAX_SECONDS, f"took {seconds:.1f} s"
        assert grown < MAX_RSS_GROWTH_MB, f"peak RSS grew {grown:.0f} MB"

    return _bounded


@pytest.fixture
def billion_laughs() -> str:
    """Nine levels of nine aliases: 9**9 (387 million) strings once expanded."""
    return BILLION_LAUGHS


BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [
        f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ", ".join([f"*{chr(ord('a') + i - 1)}"] * 9) + "]"
        for i in range(1, 9)
    ]
)

# Not a conftest.py on purpose: tests/ has no __init__.py, so a second module named `conftest`
# would shadow tests/conftest.py for every `from conftest import ...` in a full run.
