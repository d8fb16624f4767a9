"""GGUF parity: llama.cpp's outputs of the written file against torch's on the same inputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.export.gguf.checkpoint import normalize_task, read_config, resolve_arch
from edgedistill.export.gguf.runner import GGUFRunner
from edgedistill.export.gguf.tokenizer import _load_tokenizer

log = logging.getLogger(__name__)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def gguf_parity(
    model_dir: Path, gguf_file: Path, texts: Sequence[str], *, task: str, kv_cache: str = "f32"
) -> dict[str, Any]:
    """Compare a GGUF file run by llama.cpp with the torch model on ``texts``.

    The GGUF model is fed the HF token ids (so numeric parity is not mixed up with tokenizer
    differences); tokenizer agreement is measured and reported separately.
    Embeddings: cosine and max abs diff of mean-pooled vectors. LM: max abs diff of logits and
    top-1 agreement over every position. The KV cache is f32 by default so the figures measure
    the exported weights; llama.cpp's runtime default (``kv_cache="f16"``) adds its own rounding.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    task = normalize_task(task)
    resolve_arch(read_config(Path(model_dir)), task)
    tokenizer = _load_tokenizer(Path(model_dir))
    cls = AutoModel if task == "feature-extraction" else AutoModelForCausalLM
    model = cls.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    mismatches, cosines, max_abs, agree, positions = [], [], 0.0, 0, 0
    with GGUFRunner(gguf_file, task=task, kv_cache=kv_cache) as runner:
        for text in texts:
            hf_ids = tokenizer(text)["input_ids"][: runner.n_ctx]
            gguf_ids = runner.tokenize(text)
            if gguf_ids != hf_ids:
                mismatches.append({"text": text, "hf": hf_ids, "gguf": gguf_ids})
            with torch.no_grad():
                out = model(input_ids=torch.tensor([hf_ids]))
            if task == "feature-extraction":
                ref = out.last_hidden_state[0].mean(dim=0).numpy()
                got = runner.embed_ids(hf_ids)
                cosines.append(_cosine(ref, got))
                max_abs = max(max_abs, float(np.abs(ref - got).max()))
            else:
                ref = out.logits[0].numpy()
                got = runner.logits_ids(hf_ids)
                max_abs = max(max_abs, float(np.abs(ref - got).max()))
                agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
                positions += len(hf_ids)
    result: dict[str, Any] = {
        "n_texts": len(texts),
        "kv_cache": kv_cache,
        "tokenization_equal": len(texts) - len(mismatches),
        "tokenization_mismatches": mismatches,
        "max_abs_diff": max_abs,
    }
    if task == "feature-extraction":
        result["min_cosine"] = min(cosines)
        result["mean_cosine"] = float(np.mean(cosines))
    else:
        result["top1_agreement"] = agree / positions
        result["positions"] = positions
    return result
