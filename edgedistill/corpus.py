"""An English text corpus that is already on every machine: docstrings of installed Python packages.

No dataset can be downloaded on an offline build machine, yet sentence-embedding distillation
needs sentences. The docstrings of installed packages are real, varied English prose. They are
parsed with ``ast`` (nothing is imported), split into sentences, filtered, deduplicated and
split into train/eval deterministically.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import sysconfig
from pathlib import Path

from edgedistill.io import atomic_path

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODEISH = re.compile(r"[`{}<>\[\]=_\\|#@$~^]|::|\.\.|\(\)|>>>|https?:|\d{3,}")
DEFAULT_PACKAGES = (
    "transformers",
    "torch",
    "numpy",
    "datasets",
    "matplotlib",
    "pydantic",
    "rich",
    "accelerate",
    "tokenizers",
    "yaml",
    "safetensors",
    "nncf",
    "onnx",
    "openvino",
    "email",
    "json",
    "logging",
    "argparse",
    "asyncio",
    "http",
    "unittest",
    "collections",
    "concurrent",
    "xml",
)


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _sentences(doc: str):
    # Paragraphs only up to the first section header (Args:, Returns:, Parameters ---) are prose.
    prose = re.split(
        r"\n\s*(?:Args|Arguments|Returns|Parameters|Raises|Examples?|Note|Yields)\s*[:\n-]", doc
    )[0]
    for paragraph in re.split(r"\n\s*\n", prose):
        text = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(text):
            words = sentence.split()
            if (
                6 <= len(words) <= 40
                and sentence[0].isupper()
                and sentence[-1] in ".!?"
                and not _CODEISH.search(sentence)
            ):
                yield sentence


def _package_dirs(packages) -> list[Path]:
    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])}
    return sorted({root / name for root in roots for name in packages if (root / name).is_dir()})


def build_docstring_corpus(
    out_dir: str | Path,
    *,
    train_size: int = 4000,
    eval_size: int = 500,
    seed: int = 0,
    packages=DEFAULT_PACKAGES,
) -> dict[str, Path]:
    """Write ``train.tsv`` and ``eval.tsv`` (column ``sentence``) of deduplicated docstring sentences."""
    seen: set[str] = set()
    sentences: list[str] = []
    for folder in _package_dirs(packages):
        for path in sorted(folder.rglob("*.py")):
            for doc in _docstrings(path):
                for sentence in _sentences(doc):
                    key = sentence.lower()
                    if key not in seen:
                        seen.add(key)
                        sentences.append(sentence.replace("\t", " "))
    random.Random(seed).shuffle(sentences)
    needed = train_size + eval_size
    if len(sentences) < needed:
        train_size = int(len(sentences) * train_size / needed)
    splits = {"eval": sentences[:eval_size], "train": sentences[eval_size : eval_size + train_size]}
    out = Path(out_dir)
    paths = {}
    for name, rows in splits.items():
        paths[name] = out / f"{name}.tsv"
        with atomic_path(paths[name]) as tmp:
            tmp.write_text("sentence\n" + "".join(f"{s}\n" for s in rows), encoding="utf-8")
    digest = hashlib.sha256("".join(sentences[:needed]).encode()).hexdigest()[:12]
    (out / "SOURCE.txt").write_text(
        f"Docstring sentences of installed packages: {', '.join(p.name for p in _package_dirs(packages))}\n"
        f"{len(sentences)} unique sentences found; train={len(splits['train'])} eval={len(splits['eval'])}; sha={digest}\n",
        encoding="utf-8",
    )
    return paths
