"""What `lm_smollm2.py` measures through llama.cpp on the held-out prompts, one GGUF file at a time:
the perplexity of the teacher's held-out responses (response tokens only), top-1 agreement with the
teacher's next token there, greedy responses, and the teacher's NLL of another model's responses.

`lm_sst2_stages.llama_cpp_perplexity` scores whole sentences; here the prompt (the chat template and
the instruction) is context, not target, and the model also generates, so this module drives
llama.cpp's evaluation itself, through a GGUFRunner whose context is the longest sequence it will run
(not the file's 8192 tokens: a 1.6 GB logits buffer at this vocabulary). Token ids come from the
teacher's transformers tokenizer, the ids the students were trained on.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

Pair = tuple[list[int], list[int]]  # prompt ids, response ids


def heldout_pairs(store: Path, tokenizer_dir: Path) -> tuple[list[Pair], int]:
    """(prompt ids, response ids) of every held-out record, and the EOS id. A response that stopped
    ends with EOS (as distill's data does); one cut at max_new_tokens does not."""
    from transformers import AutoTokenizer

    from edgedistill.compress.generate import read_store

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs = []
    for record in sorted(read_store(store), key=lambda r: (r["prompt_id"], r["sample_index"])):
        # the stored prompt is the chat-templated text, which already holds the special tokens
        prompt = tok(record["prompt"], add_special_tokens=False)["input_ids"]
        response = tok(record["response"], add_special_tokens=False)["input_ids"]
        if record["finish_reason"] == "stop":
            response = response + [tok.eos_token_id]
        if response:
            pairs.append((list(prompt), list(response)))
    return pairs, int(tok.eos_token_id)


@contextmanager
def opened(gguf_file: Path, n_ctx: int, threads: int = 1):
    """The file's llama-cpp-python model with every position's logits kept, a context for sequences
    of up to ``n_ctx`` tokens, ``threads`` threads (llama.cpp's workers spin: one thread is the steady
    choice on a shared machine)."""
    from edgedistill.export.gguf import GGUFRunner

    with GGUFRunner(gguf_file, task="causal-lm", n_threads=threads, n_ctx=n_ctx) as runner:
        yield runner.llm


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def score(llm: Any, pairs: list[Pair]) -> dict[str, Any]:
    """Mean NLL of every response token given its prompt, and the model's top-1 token at each of
    those positions (concatenated over the pairs)."""
    nll_sum, tokens, predictions = 0.0, 0, []
    started = time.perf_counter()
    for prompt, response in pairs:
        ids = prompt + response
        llm.reset()
        llm.eval(ids)
        # logits at position i predict token i + 1: the response's tokens are predicted from
        # positions len(prompt) - 1 ... len(ids) - 2
        logits = np.array(llm.scores[len(prompt) - 1 : len(ids) - 1], dtype=np.float32)
        logp = _log_softmax(logits)
        nll_sum -= float(logp[np.arange(len(response)), response].sum())
        tokens += len(response)
        predictions.append(logits.argmax(-1))
    return {
        "nll_per_token": nll_sum / tokens,
        "perplexity": float(np.exp(nll_sum / tokens)),
        "tokens": tokens,
        "wall_s": round(time.perf_counter() - started, 1),
        "predictions": np.concatenate(predictions),
    }


def greedy(llm: Any, prompts: list[list[int]], max_new_tokens: int, eos: int) -> dict[str, Any]:
    """The model's greedy response to each prompt (ids, EOS kept when it stops), and decode time."""
    responses, decode_s, decoded = [], 0.0, 0
    for prompt in prompts:
        llm.reset()
        llm.eval(prompt)
        out: list[int] = []
        started = time.perf_counter()
        while len(out) < max_new_tokens:
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(token)
            if token == eos:
                break
            llm.eval([token])
        decode_s += time.perf_counter() - started
        decoded += len(out)
        responses.append(out)
    return {"responses": responses, "tokens": decoded, "decode_s": round(decode_s, 1)}


def measure_row(
    gguf_file: Path,
    pairs: list[Pair],
    eos: int,
    max_new_tokens: int,
    folder: Path,
    teacher_predictions: np.ndarray | None,
) -> dict[str, Any]:
    """One file on the held-out set: perplexity and top-1 predictions of the teacher's responses
    (saved as ``folder``/predictions.npy) and its greedy responses (``folder``/greedy.json)."""
    n_ctx = max(max(len(p) + len(r) for p, r in pairs), max(len(p) for p, _ in pairs) + max_new_tokens)
    with opened(gguf_file, n_ctx) as llm:
        scored = score(llm, pairs)
        gen = greedy(llm, [p for p, _ in pairs], max_new_tokens, eos)
    folder.mkdir(parents=True, exist_ok=True)
    predictions = scored.pop("predictions")
    np.save(folder / "predictions.npy", predictions)
    (folder / "greedy.json").write_text(json.dumps(gen["responses"]) + "\n")
    result = {
        "heldout_response_perplexity": scored["perplexity"],
        "heldout_response_nll_per_token": scored["nll_per_token"],
        "heldout_response_tokens": scored["tokens"],
        "score_wall_s": scored["wall_s"],
        "greedy_tokens": gen["tokens"],
        "greedy_decode_s": gen["decode_s"],
        "greedy_mean_length": gen["tokens"] / len(pairs),
        "greedy_stopped_share": sum(1 for r in gen["responses"] if r and r[-1] == eos) / len(pairs),
    }
    if teacher_predictions is not None:
        result["top1_agreement_with_teacher"] = float(np.mean(predictions == teacher_predictions))
    return result


def teacher_nll_of(teacher_gguf: Path, pairs: list[Pair], responses: list[list[int]]) -> dict[str, Any]:
    """The teacher's mean NLL per token of another model's greedy responses to the same prompts."""
    kept = [(p, r) for (p, _), r in zip(pairs, responses, strict=True) if r]
    n_ctx = max(len(p) + len(r) for p, r in kept)
    with opened(teacher_gguf, n_ctx) as llm:
        scored = score(llm, kept)
    return {
        "teacher_nll_per_token": scored["nll_per_token"],
        "tokens": scored["tokens"],
        "wall_s": scored["wall_s"],
    }


def tensor_types(gguf_file: Path) -> dict[str, Any]:
    """File bytes and GGML type counts of a GGUF file, and the tied token_embd's type and bytes."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_file))
    counts: dict[str, int] = {}
    embd = None
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        if t.name == "token_embd.weight":
            embd = {"type": t.tensor_type.name, "bytes": int(t.n_bytes)}
    return {
        "file_bytes": gguf_file.stat().st_size,
        "tensor_types": dict(sorted(counts.items())),
        "token_embd": embd,
    }
