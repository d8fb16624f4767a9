"""`python examples/fit_demo.py`: `edgedistill fit` on the demo's data, offline, in about ten minutes on two cores.

The student of all-MiniLM-L6-v2 is *searched*, not named: `examples/fit.yaml` lists the shapes
(2 or 3 teacher layers, FFN 384 or the teacher's 1536) and the exports (ONNX and OpenVINO int8);
the `cpu` target's budgets ask for 3x the teacher's speed at half its size, judged against the
teacher measured interleaved on this host. The corpus is the demo's (docstrings of installed
packages). Results: runs/fit-demo/fit/candidates.md and the run report runs/fit-demo/report.html.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from demo import ROOT, minilm_folder
from rich.console import Console

from edgedistill.cli import main as edgedistill
from edgedistill.corpus import build_docstring_corpus


def main() -> int:
    console = Console()
    out = ROOT / "runs" / "fit-demo"
    data = build_docstring_corpus(out / "corpus", train_size=4000, eval_size=300)
    argv = [
        *(["--verbose"] if "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:] else []),
        "fit",
        str(ROOT / "examples" / "fit.yaml"),
        "--out",
        str(out / "run"),
        "--set",
        f"distill.teacher.path={minilm_folder()}",
        "--set",
        f"distill.data.train={data['train']}",
        "--set",
        f"distill.data.eval={data['eval']}",
    ]
    console.print(f"[bold]$ edgedistill {shlex.join(argv)}[/]")
    return edgedistill(argv)


if __name__ == "__main__":
    sys.exit(main())
