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

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import CLI, RESULTS, add_note_flag, parser, run_main, sst2_missing, write_summary
from lm_sst2_setup import PAIRS_VARIANTS, SCALES, VARIANTS, distill_recipe
from lm_sst2_stages import (
    Stages,
    build_teacher_init,
    dev_token_ids,
    gguf_weight_bytes,
    llama_cpp_perplexity,
    memcpy_bandwidth,
    write_pairs,
    write_prompts,
    write_seqkd_text,
)
from lm_sst2_summary import markdown, summarize


def main() -> int:
    ap = parser(__doc__, sst2=True)
    ap.add_argument("--out", type=Path, default=None, help="default bench-results/lm_sst2 (…_smoke)")
    ap.add_argument("--smoke", action="store_true", help="the whole pipeline at toy scale (minutes)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2)")
    add_note_flag(ap)
    args = ap.parse_args()
    train_tsv, dev_tsv = args.data / "train.tsv", args.data / "dev.tsv"
    if sst2_missing(args.data):
        return 2
    scale_name = "smoke" if args.smoke else "full"
    scale = SCALES[scale_name]
    out = (args.out or RESULTS / ("lm_sst2_smoke" if args.smoke else "lm_sst2")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
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
        CLI + ["finetune", str(recipes / "teacher.yaml"), "--out", str(out / "teacher"), "--quiet"],
        out / "teacher" / "finetune_report.json",
        log,
        env,
    )
    teacher = out / "teacher" / "model"

    # 2. sequence-level KD data: teacher samples continuing the opening words of train sentences
    seqkd = out / "seqkd"
    prompts = seqkd / "prompts.jsonl"
    stages.python("seqkd_prompts", prompts, write_prompts, prompts, train_tsv, scale["generate_prompts"])
    gen_cmd = CLI + ["generate", "--teacher", str(teacher), "--prompts", str(prompts)]
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
        cmd = CLI + ["distill", str(recipes / f"{name}.yaml"), "--out", str(out / name), "--quiet"]
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
        cmd = CLI + ["export", str(model_dir), "--format", "gguf", "--precision", precision]
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
        bench_cmd = CLI + ["bench", *(str(artifacts[r]) for r in rows_in), "--target", "cpu"]
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
    write_summary(out, summary, markdown(summary), quick=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
