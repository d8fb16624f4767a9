"""The in-process stages of `lm_sst2.py` and their bookkeeping: data preparation, the teacher's
initialisation, llama.cpp perplexity, memory bandwidth and GGUF weight bytes.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from common import run_logged

# --------------------------------------------------------------------------- stage bookkeeping


class Stages:
    """Wall time of every stage (kept across resumed runs in OUT/stage_times.json)."""

    def __init__(self, out: Path, threads: int):
        self.threads = threads
        self.path = out / "stage_times.json"
        self.times: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, name: str, wall_s: float, command: str | None = None, **extra: Any) -> None:
        self.times[name] = {"wall_s": round(wall_s, 1), **({"command": command} if command else {}), **extra}
        self.path.write_text(json.dumps(self.times, indent=2) + "\n")

    def run(self, name: str, cmd: list[str], done: Path, log: Path, env: dict[str, str]) -> None:
        """Run one CLI command unless ``done`` exists; its output goes to ``log``."""
        if done.exists():
            print(f"[skip] {name}: {done} exists", flush=True)
            return
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {shlex.join(cmd)}", flush=True)
        wall = run_logged(cmd, log, env, gap="\n")
        self.record(name, wall, shlex.join(cmd), torch_threads=self.threads)
        print(f"  done in {wall:.0f} s", flush=True)

    def python(self, name: str, done: Path, fn, *args) -> None:
        """Run an in-process stage unless ``done`` exists."""
        if done.exists():
            print(f"[skip] {name}: {done} exists", flush=True)
            return
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        started = time.time()
        fn(*args)
        wall = time.time() - started
        self.record(name, wall)
        print(f"  done in {wall:.0f} s", flush=True)


def read_sentences(path: Path, limit: int | None = None) -> list[str]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r["sentence"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    rows = [r for r in rows if r and r.strip()]
    return rows[:limit] if limit else rows


# --------------------------------------------------------------------------- in-process stages


def build_teacher_init(out_dir: Path, train_tsv: Path, scale: dict[str, Any]) -> None:
    """A ByteLevel BPE trained on the train sentences and a freshly initialised Llama over it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=scale["vocab_size"],
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(read_sentences(train_tsv), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=128
    )
    t = scale["teacher"]
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        num_key_value_heads=t["heads"],
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        # untied: distill's Trainer checkpoints fail on tied weights (safetensors shared tensors)
        tie_word_embeddings=False,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    LlamaForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
    fast.save_pretrained(tmp)
    tmp.rename(out_dir)


def opening_words(words: list[str], i: int) -> int:
    """How many words open sentence ``i`` as a prompt: 1-3 (cycling with ``i``), at least one left over."""
    return max(1, min(1 + i % 3, len(words) - 1))


def write_prompts(path: Path, train_tsv: Path, count: int) -> None:
    """The opening words of the first ``count`` train sentences."""
    rows = []
    for i, sentence in enumerate(read_sentences(train_tsv, count)):
        words = sentence.split()
        rows.append({"prompt": " ".join(words[: opening_words(words, i)])})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def prompt_response(sentence: str, i: int) -> dict[str, str] | None:
    """The opening words of sentence ``i`` (`opening_words`) and " " + the rest; None when
    the sentence is a single word (no response left)."""
    words = sentence.split()
    if len(words) < 2:
        return None
    k = opening_words(words, i)
    return {"prompt": " ".join(words[:k]), "response": " " + " ".join(words[k:])}


def write_pairs(folder: Path, train_tsv: Path, dev_tsv: Path, rows: int, dev_rows: int | None) -> None:
    """Prompt/response views of the first ``rows`` train sentences and of the dev sentences.

    train.jsonl is written last: it marks the stage done. pairs.json counts what was left out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {}
    for split, tsv, limit in (("dev", dev_tsv, dev_rows), ("train", train_tsv, rows)):
        sentences = read_sentences(tsv, limit)
        pairs = [p for p in (prompt_response(s, i) for i, s in enumerate(sentences)) if p]
        counts[split] = {
            "sentences": len(sentences),
            "pairs": len(pairs),
            "one_word_left_out": len(sentences) - len(pairs),
        }
        if split == "train":
            (folder / "pairs.json").write_text(json.dumps(counts, indent=2) + "\n")
        tmp = folder / f"{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        tmp.rename(folder / f"{split}.jsonl")


def write_seqkd_text(store: Path, path: Path) -> None:
    """Teacher samples as plain text (prompt + response): the student learns the opening words too.

    Each row keeps its sample's finish_reason (distill's data.finish_reason_column): a response cut
    at max_new_tokens gets no EOS target, so the student is not taught to stop mid-sentence.
    """
    from edgedistill.compress.generate import read_store

    rows = (
        {"sentence": r["prompt"] + r["response"], "finish_reason": r["finish_reason"]}
        for r in read_store(store)
    )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def dev_token_ids(tokenizer_dir: Path, dev_tsv: Path, max_length: int, limit: int | None) -> list[list[int]]:
    """The token ids torch evaluates on (compress.data): BOS + sentence + EOS, cut at max_length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = []
    for sentence in read_sentences(dev_tsv, limit):
        ids = tok(sentence)["input_ids"]
        if not ids or ids[-1] != tok.eos_token_id:
            ids = ids + [tok.eos_token_id]
        rows.append(ids[:max_length])
    return rows


def llama_cpp_perplexity(gguf_file: Path, sequences: list[list[int]]) -> dict[str, Any]:
    """exp(mean NLL per target token) of the GGUF in llama.cpp, and its top-1 predictions."""
    import numpy as np

    from edgedistill.export.gguf import GGUFRunner

    nll_sum, tokens, predictions = 0.0, 0, []
    started = time.perf_counter()
    longest = max(len(ids) for ids in sequences)
    with GGUFRunner(gguf_file, task="causal-lm", n_threads=1, n_ctx=longest) as runner:
        for ids in sequences:
            logits = runner.logits_ids(ids)[:-1].astype(np.float64)
            logits -= logits.max(-1, keepdims=True)
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            nll_sum -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
            tokens += len(ids) - 1
            predictions.append(logits.argmax(-1))
    return {
        "perplexity": float(np.exp(nll_sum / tokens)),
        "nll_per_token": nll_sum / tokens,
        "eval_tokens": tokens,
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "predictions": np.concatenate(predictions),
    }


def memcpy_bandwidth(size_mb: int = 512, repeats: int = 7) -> dict[str, Any]:
    """Best-of-N numpy copy of a buffer far larger than the L3 cache (one thread)."""
    import numpy as np

    src = np.ones(size_mb * 2**20, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages first
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    nbytes = src.nbytes
    return {
        "buffer_mb": size_mb,
        "repeats": repeats,
        "best_copy_s": best,
        # STREAM's convention for copy: bytes read + bytes written
        "copy_bandwidth_gb_per_s": 2 * nbytes / best / 1e9,
        "copy_bandwidth_read_only_count_gb_per_s": nbytes / best / 1e9,
        "method": f"numpy.copyto of a {size_mb} MiB uint8 buffer, best of {repeats}, one thread",
    }


def gguf_weight_bytes(gguf_file: Path) -> int:
    import gguf

    return int(sum(int(t.n_bytes) for t in gguf.GGUFReader(str(gguf_file)).tensors))
