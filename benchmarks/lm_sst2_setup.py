"""What `lm_sst2.py` trains: the sizes of each scale, the student variants and their distill recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Sizes and steps. "full" fits the 40-minute budget on a busy 2-core CPU (timed on short runs).
FULL: dict[str, Any] = {
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
}
SCALES: dict[str, dict[str, Any]] = {
    "full": FULL,
    # the whole pipeline at toy scale (minutes): full's settings with these in their place
    "smoke": {
        **FULL,
        # models: the teacher, the students, the vocabulary they share, the top-k cached for token KD
        "teacher": {"hidden_size": 128, "intermediate_size": 256, "layers": 2, "heads": 2},
        "student": {"hidden_size": 64, "intermediate_size": 128, "layers": 1},
        "vocab_size": 1024,
        "kd_top_k": 16,
        # training: steps, batches, rows
        "teacher_steps": 12,
        "student_steps": 6,
        "cont_steps": 6,
        "teacher_batch": 16,
        "student_batch": 16,
        "student_train_rows": 96,
        # sequences: length, teacher samples, evaluation
        "max_length": 48,
        "on_policy_max_new_tokens": 8,
        "generate_prompts": 32,
        "generate_max_new_tokens": 8,
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
