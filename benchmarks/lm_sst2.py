"""Language-model distillation benchmark on SST-2 sentences (issue 6).

A Llama teacher (~10M parameters, ByteLevel BPE trained here on the SST-2 train sentences) is
trained with `edgedistill finetune`; students of about a quarter of its size, all from the same
fresh initialisation and trained for the same number of steps, side by side:

(a) no KD: next_token_ce on the train sentences only;
(b) token-level KD: token_kd (forward KL, T=1, teacher top-k log-probs cached once) + next_token_ce;
(c) sequence-level KD: next_token_ce on teacher samples (`edgedistill generate`) continuing the
    first 1-3 words of train sentences (prompt + response trained as plain text);
(d) (b) exported post-training to GGUF Q4_0 vs (b) trained with `qat.mode: gguf_q4_0`;
(e) the equal-compute fine-tune comparison: (b)'s trained student continued for `cont_steps` more
    steps with (b)'s losses and teacher cache at `cont_lr` (short warmup), (e0) in float, then
    exported post-training to GGUF F16 and Q4_0, vs (e1) with `qat.mode: gguf_q4_0` for all of
    those steps (`start_fraction: 0`), exported to Q4_0 (the trained codes). Both runs see the
    same batches in the same order;
(f) off- vs on-policy token KD on a prompt/response view of the same first `student_train_rows`
    train sentences (prompt: the first 1-3 words, response: the rest; one-word sentences have no
    response and are left out): (b)'s student continued `cont_steps` steps at `cont_lr` with (b)'s
    losses, float, (f0) off-policy (a top-k teacher cache of its own) vs (f1) with `on_policy`
    (GKD: on `on_policy_fraction` of the batches the student samples the responses itself, the
    teacher scores them live, next_token_ce is skipped there). Same seed, so the same batches in the
    same order; their torch figures are on the dev sentences' responses (the same prompt/response
    view), their llama.cpp figures on the whole dev sentences like every other row.

Every model is exported with `edgedistill export --format gguf`; perplexity on the SST-2 dev
sentences is measured in llama.cpp (llama-cpp-python) on the same token ids as torch, decode
tokens/s with `edgedistill bench` (the llama.cpp runtime, one fresh process per artifact) and set
next to a memory-bandwidth bound: memcpy bandwidth / GGUF weight bytes. Finished stages are
skipped, so an interrupted run resumes.

    python benchmarks/lm_sst2.py [--data ../shared/data/sst2] [--out bench-results/lm_sst2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2"

# Sizes and steps. "full" fits the 40-minute budget on a busy 2-core CPU (timed on short runs).
SCALES: dict[str, dict[str, Any]] = {
    "full": {
        "vocab_size": 4096,
        "teacher": {"hidden_size": 320, "intermediate_size": 864, "layers": 6, "heads": 5},
        "student": {"hidden_size": 192, "intermediate_size": 512, "layers": 2},
        "max_length": 64,
        "teacher_steps": 250,
        "teacher_batch": 32,
        "teacher_lr": 2e-3,
        "student_steps": 160,
        "student_batch": 32,
        "student_train_rows": 5120,
        "student_lr": 3e-3,
        "cont_steps": 160,
        "cont_lr": 3e-4,
        "on_policy_fraction": 0.5,
        "on_policy_max_new_tokens": 24,
        "on_policy_temperature": 1.0,
        "kd_top_k": 64,
        "generate_prompts": 2560,
        "generate_max_new_tokens": 24,
        "generate_temperature": 0.9,
        "dev_rows": None,
        "bench_min_iterations": 20,
        "bench_min_seconds": 2.0,
    },
    "smoke": {
        "vocab_size": 1024,
        "teacher": {"hidden_size": 128, "intermediate_size": 256, "layers": 2, "heads": 2},
        "student": {"hidden_size": 64, "intermediate_size": 128, "layers": 1},
        "max_length": 48,
        "teacher_steps": 12,
        "teacher_batch": 16,
        "teacher_lr": 2e-3,
        "student_steps": 6,
        "student_batch": 16,
        "student_train_rows": 96,
        "student_lr": 3e-3,
        "cont_steps": 6,
        "cont_lr": 3e-4,
        "on_policy_fraction": 0.5,
        "on_policy_max_new_tokens": 8,
        "on_policy_temperature": 1.0,
        "kd_top_k": 16,
        "generate_prompts": 32,
        "generate_max_new_tokens": 8,
        "generate_temperature": 0.9,
        "dev_rows": 64,
        "bench_min_iterations": 3,
        "bench_min_seconds": 0.2,
    },
}
VARIANTS = {
    "a_noKD": "(a) no KD: next_token_ce only",
    "b_tokenKD": "(b) token-level KD: token_kd (forward KL) + next_token_ce",
    "c_seqKD": "(c) sequence-level KD: next_token_ce on teacher samples",
    "d_tokenKD_QAT_q4_0": "(d) (b) with GGUF Q4_0-aware QAT (second half of training)",
    "e_tokenKD_cont_float": "(e0) (b)'s student continued cont_steps steps in float (then PTQ)",
    "e_tokenKD_cont_QAT_q4_0": "(e1) (b)'s student continued cont_steps steps with GGUF Q4_0-aware QAT",
    "f_tokenKD_pairs_offpolicy": "(f0) (b)'s student continued on prompt/response pairs, off-policy token KD",
    "f_tokenKD_pairs_onpolicy": "(f1) (f0) with on-policy distillation (GKD) on a share of the batches",
}
# (e0)/(e1) start from (b)'s trained student; their rows are benchmarked in a separate decode run.
CONT_VARIANTS = ("e_tokenKD_cont_float", "e_tokenKD_cont_QAT_q4_0")
# (f0)/(f1) too, on the prompt/response view of the train rows (their own teacher cache and decode run).
PAIRS_VARIANTS = ("f_tokenKD_pairs_offpolicy", "f_tokenKD_pairs_onpolicy")
KD_VARIANTS = ("b_tokenKD", "d_tokenKD_QAT_q4_0", *CONT_VARIANTS, *PAIRS_VARIANTS)


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
        started = time.time()
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"\n+ {shlex.join(cmd)}\n")
            fh.flush()
            subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env)
        wall = time.time() - started
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
    """Teacher samples as plain text (prompt + response): the student learns the opening words too."""
    from edgedistill.compress.generate import read_store

    records = read_store(store)
    path.write_text(
        "".join(json.dumps({"sentence": r["prompt"] + r["response"]}) + "\n" for r in records),
        encoding="utf-8",
    )


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
    with GGUFRunner(gguf_file, task="causal-lm", n_threads=1) as runner:
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


# --------------------------------------------------------------------------- recipes


def distill_recipe(
    name: str, teacher: Path, train: str, dev: Path, scale: dict[str, Any], cache_root: Path, out: Path
) -> dict[str, Any]:
    s = scale["student"]
    kd = name in KD_VARIANTS
    pairs = name in PAIRS_VARIANTS
    cont = name in CONT_VARIANTS or pairs
    recipe: dict[str, Any] = {
        "task": "causal-lm",
        "teacher": {"path": str(teacher)},
        "student": (
            {"path": str(out / "b_tokenKD" / "student")}
            if cont
            else {
                "hidden_size": s["hidden_size"],
                "intermediate_size": s["intermediate_size"],
                "layers": s["layers"],
            }
        ),
        "data": {
            "train": train,
            "eval": str(dev),
            "text_column": "sentence",
            **({"prompt_column": "prompt", "response_column": "response"} if pairs else {}),
            "label_column": None,
            "max_length": scale["max_length"],
            "cache_dir": str(cache_root),
            **({"max_eval_samples": scale["dev_rows"]} if scale["dev_rows"] else {}),
            # the pairs files hold the first student_train_rows sentences already
            **({"max_train_samples": scale["student_train_rows"]} if name != "c_seqKD" and not pairs else {}),
        },
        "losses": (
            [{"name": "token_kd", "top_k": scale["kd_top_k"]}, {"name": "next_token_ce"}]
            if kd
            else [{"name": "next_token_ce"}]
        ),
        "training": {
            "max_steps": scale["cont_steps"] if cont else scale["student_steps"],
            "batch_size": scale["student_batch"],
            "lr": scale["cont_lr"] if cont else scale["student_lr"],
            "warmup_ratio": 0.05,
            # distill seeds its QAT phase with seed + 1: (e0)'s float run and (e1)'s QAT-only run
            # both train with seed 1, i.e. on the same batches in the same order; (f0)/(f1) too
            "seed": 1 if name == "e_tokenKD_cont_float" or pairs else 0,
            "logging_steps": 20,
            "save_steps": 10_000,
            **(
                {
                    "cache_teacher_outputs": True,
                    # the pairs rows are other sequences (one-word sentences left out): own cache
                    "teacher_cache_dir": str(
                        out / ("teacher_topk_cache_pairs" if pairs else "teacher_topk_cache")
                    ),
                }
                if kd
                else {}
            ),
        },
    }
    if name == "f_tokenKD_pairs_onpolicy":
        recipe["on_policy"] = {
            "fraction": scale["on_policy_fraction"],
            "max_new_tokens": scale["on_policy_max_new_tokens"],
            "temperature": scale["on_policy_temperature"],
        }
    if name == "d_tokenKD_QAT_q4_0":
        recipe["qat"] = {"mode": "gguf_q4_0", "start_fraction": 0.5}
    if name == "e_tokenKD_cont_QAT_q4_0":
        recipe["qat"] = {"mode": "gguf_q4_0", "start_fraction": 0.0}
    return recipe


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with SST-2 train.tsv and dev.tsv")
    ap.add_argument("--out", type=Path, default=None, help="default bench-results/lm_sst2 (…_smoke)")
    ap.add_argument("--smoke", action="store_true", help="the whole pipeline at toy scale (minutes)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2)")
    ap.add_argument("--note", default=None, help="free text recorded in summary.json (how the run was done)")
    args = ap.parse_args()
    train_tsv, dev_tsv = args.data / "train.tsv", args.data / "dev.tsv"
    if not (train_tsv.is_file() and dev_tsv.is_file()):
        print(
            f"SST-2 not found under {args.data}: pass --data DIR with train.tsv and dev.tsv", file=sys.stderr
        )
        return 2
    scale_name = "smoke" if args.smoke else "full"
    scale = SCALES[scale_name]
    out = (args.out or ROOT / "bench-results" / ("lm_sst2_smoke" if args.smoke else "lm_sst2")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    cli = [sys.executable, "-m", "edgedistill"]
    # Finished stages are reused, so a folder must not mix sizes: the first run records them. Keys
    # added to SCALES since (the sizes of later stages) are allowed; a changed or dropped key is not.
    scale_file = out / "scale.json"
    old_scale = json.loads(scale_file.read_text()) if scale_file.is_file() else {}
    if any(scale.get(key, object()) != value for key, value in old_scale.items()):
        print(
            f"{out} holds a run made with other sizes ({scale_file}); choose another --out or delete it",
            file=sys.stderr,
        )
        return 2
    scale_file.write_text(json.dumps(scale, indent=2) + "\n")
    stages = Stages(out, args.threads)
    run_started = time.time()

    # 1. tokenizer + fresh teacher, then the teacher trained with `edgedistill finetune`
    init_dir = out / "teacher_init"
    stages.python("teacher_init", init_dir, build_teacher_init, init_dir, train_tsv, scale)
    teacher_recipe = {
        "task": "causal-lm",
        "model": {"path": str(init_dir)},
        "data": {
            "train": str(train_tsv),
            "eval": str(dev_tsv),
            "text_column": "sentence",
            "label_column": None,
            "max_length": scale["max_length"],
            "cache_dir": str(out / "token_cache"),
            **({"max_eval_samples": scale["dev_rows"]} if scale["dev_rows"] else {}),
        },
        "training": {
            "max_steps": scale["teacher_steps"],
            "batch_size": scale["teacher_batch"],
            "lr": scale["teacher_lr"],
            "warmup_ratio": 0.05,
            "seed": 0,
            "logging_steps": 20,
            "save_steps": 10_000,
        },
    }
    recipes = out / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "teacher.yaml").write_text(yaml.safe_dump(teacher_recipe, sort_keys=False))
    stages.run(
        "teacher_finetune",
        cli + ["finetune", str(recipes / "teacher.yaml"), "--out", str(out / "teacher"), "--quiet"],
        out / "teacher" / "finetune_report.json",
        log,
        env,
    )
    teacher = out / "teacher" / "model"

    # 2. sequence-level KD data: teacher samples continuing the opening words of train sentences
    seqkd = out / "seqkd"
    prompts = seqkd / "prompts.jsonl"
    stages.python("seqkd_prompts", prompts, write_prompts, prompts, train_tsv, scale["generate_prompts"])
    gen_cmd = cli + ["generate", "--teacher", str(teacher), "--prompts", str(prompts)]
    gen_cmd += ["--out", str(seqkd / "store"), "--max-new-tokens", str(scale["generate_max_new_tokens"])]
    gen_cmd += ["--temperature", str(scale["generate_temperature"]), "--batch-size", "64", "--quiet"]
    meta = seqkd / "store" / "generate.json"
    if meta.is_file() and json.loads(meta.read_text()).get("status") != "complete":
        meta_done = seqkd / "store" / "missing"  # unfinished store: rerun the command, it resumes
    else:
        meta_done = meta
    stages.run("seqkd_generate", gen_cmd, meta_done, log, env)
    seqkd_train = seqkd / "train.jsonl"
    stages.python("seqkd_text", seqkd_train, write_seqkd_text, seqkd / "store", seqkd_train)

    # 2b. prompt/response view of the same train rows (and of the dev sentences) for (f0)/(f1)
    pairs_dir = out / "pairs"
    stages.python(
        "pairs_data",
        pairs_dir / "train.jsonl",
        write_pairs,
        pairs_dir,
        train_tsv,
        dev_tsv,
        scale["student_train_rows"],
        scale["dev_rows"],
    )

    # 3. students (same fresh init, same steps); (b), (d) and (e) share the teacher's top-k cache;
    #    (e0), (e1), (f0) and (f1) continue from (b)'s student, so they run after it
    reports: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:
        pairs = name in PAIRS_VARIANTS
        train = (
            str(seqkd_train)
            if name == "c_seqKD"
            else str(pairs_dir / "train.jsonl")
            if pairs
            else str(train_tsv)
        )
        dev = pairs_dir / "dev.jsonl" if pairs else dev_tsv
        recipe = distill_recipe(name, teacher, train, dev, scale, out / "token_cache", out)
        (recipes / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        report = out / name / "distill_report.json"
        cmd = cli + ["distill", str(recipes / f"{name}.yaml"), "--out", str(out / name), "--quiet"]
        stages.run(f"distill_{name}", cmd, report, log, env)
        reports[name] = json.loads(report.read_text())

    # 4. GGUF exports (parity against torch runs inside export)
    exports = {
        "teacher_f16": (teacher, "fp16"),
        "a_noKD_f16": (out / "a_noKD" / "student", "fp16"),
        "b_tokenKD_f16": (out / "b_tokenKD" / "student", "fp16"),
        "b_tokenKD_PTQ_q4_0": (out / "b_tokenKD" / "student", "q4_0"),
        "c_seqKD_f16": (out / "c_seqKD" / "student", "fp16"),
        "d_tokenKD_QAT_q4_0": (out / "d_tokenKD_QAT_q4_0" / "student", "q4_0"),
        "e_tokenKD_cont_float_f16": (out / "e_tokenKD_cont_float" / "student", "fp16"),
        "e_tokenKD_cont_float_PTQ_q4_0": (out / "e_tokenKD_cont_float" / "student", "q4_0"),
        "e_tokenKD_cont_QAT_q4_0": (out / "e_tokenKD_cont_QAT_q4_0" / "student", "q4_0"),
        "f_tokenKD_pairs_offpolicy_f16": (out / "f_tokenKD_pairs_offpolicy" / "student", "fp16"),
        "f_tokenKD_pairs_onpolicy_f16": (out / "f_tokenKD_pairs_onpolicy" / "student", "fp16"),
    }
    # Post-training Q4_0 of a small model is expected to move top-1 a lot: that is what is measured
    # here, so its parity bound is off (the exporter still runs and reports the parity figures).
    loose = ["--set", "tolerances.q4_0.min_top1_agreement=0.0", "--set", "tolerances.q4_0.min_cosine=-1"]
    # F16 logits stay within 1e-3 of torch, but an undertrained LM has near-tied top-1 tokens that flip.
    near_ties = ["--set", "tolerances.fp16.min_top1_agreement=0.99"]
    artifacts: dict[str, Path] = {}
    for row, (model_dir, precision) in exports.items():
        dest = out / "gguf" / row
        artifacts[row] = dest / f"gguf-{precision}"
        cmd = cli + ["export", str(model_dir), "--format", "gguf", "--precision", precision]
        cmd += ["--out", str(dest), "--calib-data", str(dev_tsv), "--calib-text-column", "sentence"]
        cmd += ["--max-length", str(scale["max_length"])] + (loose if precision == "q4_0" else near_ties)
        stages.run(f"export_{row}", cmd, artifacts[row] / "manifest.json", log, env)

    # 5. perplexity of every GGUF in llama.cpp on the dev sentences (the torch eval's token ids);
    #    a resumed run measures only the rows not in the file yet
    ppl_file = out / "llama_cpp_perplexity.json"
    ppl: dict[str, Any] = json.loads(ppl_file.read_text()) if ppl_file.is_file() else {}
    missing = [row for row in artifacts if row not in ppl]
    if missing:
        import numpy as np

        started = time.time()
        first = not ppl
        sequences = dev_token_ids(teacher, dev_tsv, scale["max_length"], scale["dev_rows"])
        # the teacher's llama.cpp top-1 predictions, for the agreement column of later rows
        teacher_pred_file = out / "llama_cpp_teacher_f16_predictions.npy"
        teacher_pred = np.load(teacher_pred_file) if teacher_pred_file.is_file() else None
        if teacher_pred is None and "teacher_f16" not in missing:
            print(f"[{time.strftime('%H:%M:%S')}] llama.cpp teacher_f16 predictions", flush=True)
            gguf_file = next(artifacts["teacher_f16"].glob("*.gguf"))
            teacher_pred = llama_cpp_perplexity(gguf_file, sequences)["predictions"]
            np.save(teacher_pred_file, teacher_pred)
        for row in missing:
            gguf_file = next(artifacts[row].glob("*.gguf"))
            print(f"[{time.strftime('%H:%M:%S')}] llama.cpp perplexity: {row}", flush=True)
            result = llama_cpp_perplexity(gguf_file, sequences)
            pred = result.pop("predictions")
            if row == "teacher_f16":
                teacher_pred = pred
                np.save(teacher_pred_file, pred)
            elif teacher_pred is not None:
                result["top1_agreement_with_teacher_f16"] = float(np.mean(pred == teacher_pred))
            result["gguf_file_bytes"] = gguf_file.stat().st_size
            result["gguf_weight_bytes"] = gguf_weight_bytes(gguf_file)
            ppl[row] = result
        ppl = {row: ppl[row] for row in artifacts}
        ppl_file.write_text(json.dumps(ppl, indent=2) + "\n")
        if first:
            stages.record("llama_cpp_perplexity", time.time() - started)
        else:
            # one entry per resumed run that added rows (llama_cpp_perplexity_added, ..._added_2, ...)
            name, n = "llama_cpp_perplexity_added", 1
            while name in stages.times:
                n += 1
                name = f"llama_cpp_perplexity_added_{n}"
            stages.record(name, time.time() - started, rows=missing)

    # 6. decode tokens/s with the bench harness (llama.cpp runtime, fresh process per artifact);
    #    the (e) and (f) rows, added later, in bench runs of their own (bench_cpu_cont.json,
    #    bench_cpu_pairs.json)
    bench_settings = []
    for key, value in (
        ("runtime.threads", 1),
        ("measurement.warmup_iterations", 3),
        ("measurement.min_iterations", scale["bench_min_iterations"]),
        ("measurement.min_seconds", scale["bench_min_seconds"]),
    ):
        bench_settings += ["--set", f"{key}={value}"]
    bench_groups = {
        "bench_decode": (out / "bench_cpu.json", [r for r in artifacts if not r.startswith(("e_", "f_"))]),
        "bench_decode_cont": (out / "bench_cpu_cont.json", [r for r in artifacts if r.startswith("e_")]),
        "bench_decode_pairs": (out / "bench_cpu_pairs.json", [r for r in artifacts if r.startswith("f_")]),
    }
    bench: dict[str, Any] = {}
    for stage, (bench_file, rows_in) in bench_groups.items():
        bench_cmd = cli + ["bench", *(str(artifacts[r]) for r in rows_in), "--target", "cpu"]
        bench_cmd += ["--out", str(bench_file), *bench_settings, "--quiet"]
        stages.run(stage, bench_cmd, bench_file, log, env)
        part = json.loads(bench_file.read_text())
        bench = {**part, **bench, "artifacts": bench.get("artifacts", []) + part.get("artifacts", [])}
    memcpy_file = out / "memcpy.json"
    if not memcpy_file.is_file():
        started = time.time()
        memcpy_file.write_text(json.dumps(memcpy_bandwidth(64 if args.smoke else 512), indent=2) + "\n")
        stages.record("memcpy_bandwidth", time.time() - started)

    summary = summarize(
        scale_name,
        scale,
        reports,
        json.loads((out / "teacher" / "finetune_report.json").read_text()),
        json.loads(meta.read_text()),
        ppl,
        bench,
        json.loads(memcpy_file.read_text()),
        artifacts,
        stages.times,
        time.time() - run_started,
        args.note,
        json.loads((pairs_dir / "pairs.json").read_text()),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    return 0


# --------------------------------------------------------------------------- summary


def _bench_entries(bench: dict[str, Any], artifacts: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Bench report entry per row, matched by artifact path."""
    by_path = {}
    for entry in bench.get("artifacts", []):
        path = entry.get("path") or entry.get("artifact", {}).get("path")
        if path:
            by_path[str(Path(path).resolve())] = entry
    return {row: by_path.get(str(art.resolve()), {}) for row, art in artifacts.items()}


def _decode(entry: dict[str, Any]) -> dict[str, Any] | None:
    def find(node: Any) -> dict[str, Any] | None:
        if isinstance(node, dict):
            if "decode_tokens_per_s" in node and isinstance(node["decode_tokens_per_s"], dict):
                return node
            for value in node.values():
                found = find(value)
                if found:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = find(value)
                if found:
                    return found
        return None

    return find(entry)


def summarize(
    scale_name: str,
    scale: dict[str, Any],
    reports: dict[str, dict[str, Any]],
    teacher_report: dict[str, Any],
    generate_meta: dict[str, Any],
    ppl: dict[str, Any],
    bench: dict[str, Any],
    memcpy: dict[str, Any],
    artifacts: dict[str, Path],
    stage_times: dict[str, Any],
    wall_s: float,
    note: str | None = None,
    pairs_counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    bandwidth = memcpy["copy_bandwidth_gb_per_s"] * 1e9
    bench_rows = _bench_entries(bench, artifacts)
    source = {
        "teacher_f16": None,
        "a_noKD_f16": "a_noKD",
        "b_tokenKD_f16": "b_tokenKD",
        "b_tokenKD_PTQ_q4_0": "b_tokenKD",
        "c_seqKD_f16": "c_seqKD",
        "d_tokenKD_QAT_q4_0": "d_tokenKD_QAT_q4_0",
        "e_tokenKD_cont_float_f16": "e_tokenKD_cont_float",
        "e_tokenKD_cont_float_PTQ_q4_0": "e_tokenKD_cont_float",
        "e_tokenKD_cont_QAT_q4_0": "e_tokenKD_cont_QAT_q4_0",
        "f_tokenKD_pairs_offpolicy_f16": "f_tokenKD_pairs_offpolicy",
        "f_tokenKD_pairs_onpolicy_f16": "f_tokenKD_pairs_onpolicy",
    }
    rows: dict[str, dict[str, Any]] = {}
    for row in artifacts:
        run = reports.get(source[row]) if source[row] else None
        if run is None:
            model = teacher_report["model"]
            params, torch_ppl, agree, evaluated = (
                model["parameters"],
                model["metrics"]["perplexity"],
                None,
                None,
            )
        else:
            student = run["student"]
            params = student["parameters"]
            quantized_row = row.endswith("q4_0")
            qat_row = bool(run.get("qat"))
            # the float student's torch figures do not describe its post-training Q4_0 file
            torch_ppl = student["metrics"]["perplexity"] if (qat_row or not quantized_row) else None
            agree = student["metrics"].get("top1_agreement_with_teacher") if torch_ppl else None
            evaluated = student.get("evaluated_with", "float32 in torch") if torch_ppl else None
            if source[row] in PAIRS_VARIANTS:
                # not comparable with the other rows' torch columns (whole dev sentences)
                evaluated += "; dev prompt/response view, response tokens only"
        measured = ppl[row]
        decode = _decode(bench_rows.get(row, {}))
        tps = decode["decode_tokens_per_s"]["p50"] if decode else None
        bound = bandwidth / measured["gguf_weight_bytes"]
        rows[row] = {
            "params": params,
            "params_vs_teacher": params / teacher_report["model"]["parameters"],
            "gguf_file_mb": measured["gguf_file_bytes"] / 1e6,
            "gguf_weight_mb": measured["gguf_weight_bytes"] / 1e6,
            "torch_perplexity": torch_ppl,
            "torch_evaluated_with": evaluated,
            "torch_top1_agreement_with_teacher": agree,
            "llama_cpp_perplexity": measured["perplexity"],
            "llama_cpp_eval_tokens": measured["eval_tokens"],
            "llama_cpp_top1_agreement_with_teacher_f16": measured.get("top1_agreement_with_teacher_f16"),
            "decode_tokens_per_s_p50": tps,
            "ttft_ms_p50": decode["ttft_ms"]["p50_ms"] if decode else None,
            "bound_tokens_per_s": bound,
            "achieved_over_bound": (tps / bound) if tps else None,
            "achieved_weight_bandwidth_gb_per_s": (tps * measured["gguf_weight_bytes"] / 1e9)
            if tps
            else None,
            "train_wall_s": (run or teacher_report).get("training", {}).get("train_wall_time_s"),
        }
    lp = {row: r["llama_cpp_perplexity"] for row, r in rows.items()}
    tp = {row: r["torch_perplexity"] for row, r in rows.items()}
    best_kd = min(lp["b_tokenKD_f16"], lp["c_seqKD_f16"])
    ptq_loss = lp["b_tokenKD_PTQ_q4_0"] - lp["b_tokenKD_f16"]
    qat_loss = lp["d_tokenKD_QAT_q4_0"] - lp["b_tokenKD_f16"]
    bars = {
        "kd_beats_no_kd": {
            "met": best_kd < lp["a_noKD_f16"],
            "rule": "llama.cpp F16 perplexity of (b) or (c) below (a)",
            "a_ppl": lp["a_noKD_f16"],
            "b_ppl": lp["b_tokenKD_f16"],
            "c_ppl": lp["c_seqKD_f16"],
            "torch_agrees": min(tp["b_tokenKD_f16"], tp["c_seqKD_f16"]) < tp["a_noKD_f16"],
        },
        "qat_loses_less_than_ptq": {
            "met": qat_loss < ptq_loss,
            "rule": "llama.cpp perplexity increase vs the F16 token-KD student (b): QAT Q4_0 (d) < post-training Q4_0 of (b)",
            "ptq_ppl_increase": ptq_loss,
            "qat_ppl_increase": qat_loss,
        },
    }
    if "e_tokenKD_cont_float_f16" in lp:
        cont_f16 = lp["e_tokenKD_cont_float_f16"]
        cont_ptq, cont_qat = lp["e_tokenKD_cont_float_PTQ_q4_0"], lp["e_tokenKD_cont_QAT_q4_0"]
        bars["qat_finetune_beats_ptq_equal_compute"] = {
            "met": cont_qat < cont_ptq,
            "rule": "equal-compute fine-tune of (b)'s student: llama.cpp perplexity of the Q4_0-aware "
            "continuation (e1) below post-training Q4_0 of the float continuation (e0)",
            "steps": scale["cont_steps"],
            "lr": scale["cont_lr"],
            "b_f16_ppl": lp["b_tokenKD_f16"],
            "float_cont_f16_ppl": cont_f16,
            "float_cont_ptq_q4_0_ppl": cont_ptq,
            "qat_cont_q4_0_ppl": cont_qat,
            "qat_minus_ptq_ppl": cont_qat - cont_ptq,
            "ptq_ppl_increase": cont_ptq - cont_f16,
            "qat_ppl_increase": cont_qat - cont_f16,
            "ptq_ppl_increase_pct": 100 * (cont_ptq / cont_f16 - 1),
            "qat_ppl_increase_pct": 100 * (cont_qat / cont_f16 - 1),
        }
    on_policy_comparison = None
    if all(f"{name}_f16" in rows for name in PAIRS_VARIANTS):

        def pairs_row(name: str) -> dict[str, Any]:
            row, report = rows[f"{name}_f16"], reports[name]
            # the logged share covers the batches since the previous log: weight it by those steps
            covered, on_batches = 0, 0.0
            for h in report.get("history", []):
                if "on_policy_batches" in h:
                    on_batches += h["on_policy_batches"] * (h["global_step"] - covered)
                    covered = h["global_step"]
            return {
                "torch_response_perplexity": row["torch_perplexity"],
                "torch_response_top1_agreement_with_teacher": row["torch_top1_agreement_with_teacher"],
                "torch_eval_tokens": report["student"]["metrics"].get("eval_tokens"),
                "llama_cpp_perplexity": row["llama_cpp_perplexity"],
                "llama_cpp_top1_agreement_with_teacher_f16": row["llama_cpp_top1_agreement_with_teacher_f16"],
                "distill_stage_wall_s": stage_times.get(f"distill_{name}", {}).get("wall_s"),
                "train_wall_s": row["train_wall_s"],
                # off-policy run (no on_policy section): none by construction
                "on_policy_batch_share": (on_batches / covered)
                if covered
                else (None if report["config"].get("on_policy", {}).get("fraction") else 0.0),
                "on_policy_batch_share_steps_logged": covered,
            }

        off, on = (pairs_row(name) for name in PAIRS_VARIANTS)
        on_policy_comparison = {
            "rule": "none (reported as measured): (b)'s student continued on prompt/response pairs, "
            "off-policy token KD (f0) vs on-policy (f1), same seed, steps, lr and losses",
            "steps": scale["cont_steps"],
            "lr": scale["cont_lr"],
            "on_policy": {
                "fraction": scale["on_policy_fraction"],
                "max_new_tokens": scale["on_policy_max_new_tokens"],
                "temperature": scale["on_policy_temperature"],
                "top_p": 1.0,
            },
            "pairs": pairs_counts,
            "teacher_f16_ppl": lp["teacher_f16"],
            "teacher_torch_response_perplexity": reports[PAIRS_VARIANTS[0]]["teacher"]["metrics"].get(
                "perplexity"
            ),
            "b_f16_ppl": lp["b_tokenKD_f16"],
            "e0_float_cont_f16_ppl": lp.get("e_tokenKD_cont_float_f16"),
            "off_policy": off,
            "on_policy_run": on,
            "on_minus_off_llama_cpp_ppl": on["llama_cpp_perplexity"] - off["llama_cpp_perplexity"],
            "on_minus_off_torch_response_ppl": on["torch_response_perplexity"]
            - off["torch_response_perplexity"],
            "on_over_off_distill_wall": (
                on["distill_stage_wall_s"] / off["distill_stage_wall_s"]
                if on["distill_stage_wall_s"] and off["distill_stage_wall_s"]
                else None
            ),
        }
    teacher_cfg = scale["teacher"]
    return {
        "benchmark": "lm_sst2",
        "scale": scale_name,
        "units": {
            "params": "count",
            "*_mb": "10^6 bytes",
            "*perplexity": "exp(mean NLL per target token), dev sentences, BOS + sentence + EOS",
            "decode_tokens_per_s_p50": "tokens/s, median over requests (64-token prompt, 32 generated)",
            "bound_tokens_per_s": "memcpy bandwidth / GGUF weight bytes, tokens/s",
            "*_wall_s": "seconds",
            "*_gb_per_s": "10^9 bytes/s",
        },
        "sizes": {**scale, "teacher": teacher_cfg},
        "teacher_training": {
            "steps": teacher_report["training"].get("steps") or scale["teacher_steps"],
            "training": teacher_report["training"],
        },
        "seqkd_generation": {
            "counts": generate_meta.get("counts"),
            "sampling": generate_meta.get("config", {}).get("sampling"),
            "wall_s": sum(r.get("seconds", 0) for r in generate_meta.get("runs", [])),
        },
        "student_training": {name: rep.get("training") for name, rep in reports.items()},
        "qat": reports.get("d_tokenKD_QAT_q4_0", {}).get("qat"),
        "qat_cont": reports.get("e_tokenKD_cont_QAT_q4_0", {}).get("qat"),
        "memcpy": memcpy,
        "bench_settings": {
            "target": "cpu",
            "threads": 1,
            "host": bench.get("host") or bench.get("system"),
        },
        "note": note,
        "rows": rows,
        "bars": bars,
        "on_policy_comparison": on_policy_comparison,
        "stage_times": stage_times,
        "stages_wall_s_total": round(sum(v["wall_s"] for v in stage_times.values()), 1),
        "run_wall_s_this_invocation": round(wall_s, 1),
        "notes": [
            "All students (a)-(d) start from the same fresh initialisation (student.hidden_size narrower "
            "than the teacher) and train the same number of steps with the same batch size.",
            f"(e0) and (e1) start from (b)'s trained student (student.path) and train {scale['cont_steps']} "
            f"more steps with (b)'s losses, batch size and teacher top-k cache at lr {scale['cont_lr']:g} "
            "(5% warmup, linear decay), on the same batches in the same order: (e0) in float, (e1) with "
            "qat.mode gguf_q4_0 from step 0. Their decode rows come from a second bench run "
            "(bench_cpu_cont.json).",
            f"(f0) and (f1) start from (b)'s trained student too and train {scale['cont_steps']} more steps "
            f"at lr {scale['cont_lr']:g} with (b)'s losses on a prompt/response view of the same first "
            f"{scale['student_train_rows']} train sentences (prompt: the first 1-3 words, cycling; response: "
            "the rest; one-word sentences have no response and are left out, counts in "
            "on_policy_comparison.pairs), so token_kd and next_token_ce see only response tokens; their own "
            "teacher top-k cache (teacher_topk_cache_pairs: other sequences than (b)'s), seed 1 for both "
            "(same batches in the same order). (f1) adds on_policy (GKD): on "
            f"{scale['on_policy_fraction']:g} of the batches the student samples each response "
            f"(max {scale['on_policy_max_new_tokens']} new tokens, temperature "
            f"{scale['on_policy_temperature']:g}), the teacher scores it live and next_token_ce is "
            "skipped. Their torch perplexity / top-1 agreement are on the dev sentences' responses (the "
            "same prompt/response view), not the whole sentences; their llama.cpp columns are on the whole "
            "dev sentences like every row. Decode rows from a third bench run (bench_cpu_pairs.json).",
            "Q4_0 exports run with tolerances.q4_0.min_top1_agreement=0 / min_cosine=-1 so the post-training "
            "file is written whatever its parity; the perplexity columns measure the damage. F16 exports "
            "run with tolerances.fp16.min_top1_agreement=0.99 (near-tied top-1 tokens flip; max_abs_diff "
            "stays at its 0.05 default).",
            "The bandwidth bound assumes every weight byte is read once per token from DRAM at the memcpy "
            "rate; a GGUF smaller than the L3 cache (e.g. 8 MiB on the 2-core test VM) is read from cache, so "
            "for small students the bound is not the binding limit (per-token overheads are).",
        ],
    }


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(summary: dict[str, Any]) -> str:
    sizes = summary["sizes"]
    gen = (summary["seqkd_generation"]["counts"] or {}).get("records_stored")
    lines = [
        f"LM distillation on SST-2 sentences ({summary['scale']} scale). Perplexity on the dev sentences; "
        "decode on the `cpu` target with 1 thread.",
        "",
        f"Teacher: Llama {sizes['teacher']['layers']} layers x {sizes['teacher']['hidden_size']} (FFN "
        f"{sizes['teacher']['intermediate_size']}), {sizes['teacher_steps']} steps x batch {sizes['teacher_batch']}; "
        f"students: {sizes['student']['layers']} layers x {sizes['student']['hidden_size']} (FFN "
        f"{sizes['student']['intermediate_size']}), {sizes['student_steps']} steps x batch {sizes['student_batch']} "
        f"(train rows: first {sizes['student_train_rows']}; (c): {gen} teacher samples); vocab "
        f"{sizes['vocab_size']} ByteLevel BPE; max length {sizes['max_length']} tokens. "
        f"Stages took {summary['stages_wall_s_total']:.0f} s in all.",
        "",
        "| variant | params | GGUF MB | torch ppl | llama.cpp ppl | top-1 agr. (torch) | top-1 agr. (llama.cpp) "
        "| decode tok/s | bound tok/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in summary["rows"].items():
        # (f) rows: torch figures on the dev responses only (marked)
        mark = " (resp.)" if "response tokens only" in (r["torch_evaluated_with"] or "") else ""
        lines.append(
            f"| {row} | {r['params'] / 1e6:.2f}M ({100 * r['params_vs_teacher']:.0f}%) | {r['gguf_file_mb']:.2f} | {_f(r['torch_perplexity'], '.2f')}{mark} "
            f"| {r['llama_cpp_perplexity']:.2f} | {_f(r['torch_top1_agreement_with_teacher'], '.3f')}{mark} "
            f"| {_f(r['llama_cpp_top1_agreement_with_teacher_f16'], '.3f')} "
            f"| {_f(r['decode_tokens_per_s_p50'], '.0f')} | {r['bound_tokens_per_s']:.0f} "
            f"| {_f(r['achieved_over_bound'], '.3f')} |"
        )
    bars = summary["bars"]
    kd, q = bars["kd_beats_no_kd"], bars["qat_loses_less_than_ptq"]
    mem = summary["memcpy"]
    lines += [
        "",
        f"- Bar 1, (b) or (c) beats (a): **{'met' if kd['met'] else 'missed'}** (llama.cpp F16 ppl: "
        f"a {kd['a_ppl']:.2f}, b {kd['b_ppl']:.2f}, c {kd['c_ppl']:.2f}; torch agrees: {kd['torch_agrees']}).",
        f"- Bar 2, Q4_0-aware student loses less perplexity than post-training Q4_0: "
        f"**{'met' if q['met'] else 'missed'}** (increase over the F16 KD student: PTQ "
        f"{q['ptq_ppl_increase']:+.2f}, QAT {q['qat_ppl_increase']:+.2f}).",
    ]
    e = bars.get("qat_finetune_beats_ptq_equal_compute")
    if e:
        lines.append(
            f"- Bar 2b, equal-compute fine-tune ({e['steps']} more steps of (b)'s student at lr {e['lr']:g}), "
            f"QAT Q4_0 beats PTQ Q4_0 of the float continuation: **{'met' if e['met'] else 'missed'}** "
            f"(llama.cpp ppl: float continuation F16 {e['float_cont_f16_ppl']:.2f} (b F16 {e['b_f16_ppl']:.2f}), "
            f"its PTQ Q4_0 {e['float_cont_ptq_q4_0_ppl']:.2f} ({e['ptq_ppl_increase']:+.2f}, "
            f"{e['ptq_ppl_increase_pct']:+.2f}%), QAT Q4_0 {e['qat_cont_q4_0_ppl']:.2f} "
            f"({e['qat_ppl_increase']:+.2f}, {e['qat_ppl_increase_pct']:+.2f}%); QAT - PTQ "
            f"{e['qat_minus_ptq_ppl']:+.2f})."
        )
    f = summary.get("on_policy_comparison")
    if f:
        off, on, pol = f["off_policy"], f["on_policy_run"], f["on_policy"]
        lines.append(
            f"- (f) off- vs on-policy token KD continuation on prompt/response pairs ({f['steps']} more steps "
            f"of (b)'s student at lr {f['lr']:g}; on-policy fraction {pol['fraction']:g}, max "
            f"{pol['max_new_tokens']} new tokens, temperature {pol['temperature']:g}; on-policy share of "
            f"(f1)'s batches {_f(on['on_policy_batch_share'], '.2f')} over the first "
            f"{on['on_policy_batch_share_steps_logged']} steps (logged)), no bar: llama.cpp F16 ppl on the dev sentences "
            f"off-policy {off['llama_cpp_perplexity']:.2f} vs on-policy {on['llama_cpp_perplexity']:.2f} "
            f"({f['on_minus_off_llama_cpp_ppl']:+.2f}; b {f['b_f16_ppl']:.2f}, e0 "
            f"{_f(f['e0_float_cont_f16_ppl'], '.2f')}), top-1 agreement with the teacher (llama.cpp) "
            f"{_f(off['llama_cpp_top1_agreement_with_teacher_f16'], '.3f')} vs "
            f"{_f(on['llama_cpp_top1_agreement_with_teacher_f16'], '.3f')}; torch on the dev responses: ppl "
            f"{off['torch_response_perplexity']:.2f} vs {on['torch_response_perplexity']:.2f}, top-1 agreement "
            f"{off['torch_response_top1_agreement_with_teacher']:.3f} vs "
            f"{on['torch_response_top1_agreement_with_teacher']:.3f}; distill stage wall time "
            f"{_f(off['distill_stage_wall_s'], '.0f')} s vs {_f(on['distill_stage_wall_s'], '.0f')} s "
            f"(train loop {off['train_wall_s']:.0f} s vs {on['train_wall_s']:.0f} s)."
        )
    lines += [
        f"- memcpy bandwidth {mem['copy_bandwidth_gb_per_s']:.1f} GB/s ({mem['method']}; read + written bytes); "
        "bound tok/s = bandwidth / GGUF weight bytes; ratio = decode tok/s / bound.",
        "- Stage wall times (s): "
        + ", ".join(f"{k} {v['wall_s']:.0f}" for k, v in summary["stage_times"].items()),
        "",
        *[f"Note: {n}" for n in summary["notes"]],
        *([f"Run note: {summary['note']}"] if summary.get("note") else []),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
