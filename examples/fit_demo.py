"""`python examples/fit_demo.py`: `edgedistill fit` on the demo's data, offline.

The student of all-MiniLM-L6-v2 is *searched*, not named: `examples/fit.yaml` lists the shapes
(2 or 3 teacher layers, FFN 384 or the teacher's 1536) and the exports (ONNX and OpenVINO int8);
the `cpu` target's budgets ask for 3x the teacher's speed at half its size, judged against the
teacher measured interleaved on this host. The corpus is the demo's (docstrings of installed
packages). Results: runs/fit-demo/run/fit/candidates.md and the run report runs/fit-demo/run/report.html.
"""

from __future__ import annotations

import shlex
import sys

from demo import ROOT, demo_argv
from rich.console import Console

from edgedistill.cli import main as edgedistill


def main() -> int:
    console = Console()
    argv = demo_argv("fit", "fit.yaml", ROOT / "runs" / "fit-demo", console)
    console.print(f"[bold]$ edgedistill {shlex.join(argv)}[/]")
    return edgedistill(argv)


if __name__ == "__main__":
    sys.exit(main())
