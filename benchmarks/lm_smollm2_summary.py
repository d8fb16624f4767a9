"""The summary of `lm_smollm2.py`: every file's figures through llama.cpp, the issue's bars, the
size arithmetic against the real files, the commands, CPU model and ISA; and summary.md."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from lm_smollm2_setup import QAT_VARIANT, VARIANTS, student_layers

# the file each bench row is judged against (same precision)
BENCH_BASELINE = {
    "teacher_q4_0": "teacher_q4_0",
    "qat_q4_0": "teacher_q4_0",
    "best_ptq_q4_k_m": "teacher_q4_0",
    "teacher_q8_0": "teacher_q8_0",
    "best_q8_0": "teacher_q8_0",
}


def _teacher_provenance(path: Path) -> dict[str, Any]:
    from edgedistill.export.gguf.runner import read_gguf_summary
    from edgedistill.io import sha256_file

    meta = read_gguf_summary(path)
    return {
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "tensor_types": meta.get("tensor_types"),
        "file_type": meta["metadata"].get("general.file_type"),
        "name": meta["metadata"].get("general.name"),
    }


def _bench_rows(bench: dict[str, Any], artifacts: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Decode tokens/s, TTFT and the interleaved latency ratio of every benched row."""
    by_path = {str(path.resolve()): row for row, path in artifacts.items()}
    rows: dict[str, dict[str, Any]] = {}
    for group, report in bench.items():
        compare = {str(Path(c["candidate_path"]).resolve()): c for c in report.get("comparisons", [])}
        for entry in report.get("artifacts", []):
            path = str(Path(entry.get("path", "")).resolve())
            row = by_path.get(path)
            if row is None or entry.get("role") == "baseline":
                continue
            lm = entry.get("lm") or {}
            c = compare.get(path, {})
            result = c.get("result", {})
            rows[row] = {
                "bench_group": group,
                "status": entry.get("status"),
                "reason": entry.get("reason"),
                "decode_tokens_per_s_p50": (lm.get("decode_tokens_per_s") or {}).get("p50"),
                "ttft_ms_p50": (lm.get("ttft_ms") or {}).get("p50_ms"),
                "prompt_tokens": lm.get("prompt_tokens"),
                "generate_tokens": lm.get("generate_tokens"),
                "request_latency_ms_p50": (entry.get("latency") or {}).get("p50_ms"),
                "interleaved_with": BENCH_BASELINE.get(row),
                "latency_ratio_vs_baseline": result.get("ratio"),
                "verdict_vs_baseline": result.get("verdict"),
                "rounds_per_side": c.get("candidate_rounds"),
                "threads": (entry.get("applied") or {}).get("threads"),
            }
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(
    *,
    name: str,
    scale: dict[str, Any],
    teacher: dict[str, str],
    prompts: dict[str, Any],
    pairs: dict[str, dict[str, int]],
    generated: dict[str, dict[str, Any]],
    reports: dict[str, dict[str, Any]],
    best: dict[str, Any],
    quality: dict[str, Any],
    judged: dict[str, Any],
    bench: dict[str, Any],
    artifacts: dict[str, Path],
    sizes: dict[str, Any],
    stage_times: dict[str, Any],
    wall_s: float,
    note: str | None,
) -> dict[str, Any]:
    from edgedistill.host import cpu_summary

    benched = _bench_rows(bench, artifacts)
    rows: dict[str, dict[str, Any]] = {}
    for row, q in quality.items():
        rows[row] = {
            "file_mb": q["file_bytes"] / 1e6,
            "weight_mb": q["gguf_weight_bytes"] / 1e6,
            "tensor_types": q["tensor_types"],
            "token_embd": q["token_embd"],
            "heldout_response_perplexity": q["heldout_response_perplexity"],
            "top1_agreement_with_teacher": q.get("top1_agreement_with_teacher"),
            "teacher_nll_of_greedy": (judged.get(row) or {}).get("teacher_nll_per_token"),
            "greedy_mean_tokens": q["greedy_mean_length"],
            "greedy_stopped_share": q["greedy_stopped_share"],
            "export_parity": q.get("export_parity"),
            **benched.get(row, {}),
        }
    for row, r in rows.items():
        base = rows.get(BENCH_BASELINE.get(row, ""), {})
        r["decode_speedup_vs_teacher"] = _ratio(
            r.get("decode_tokens_per_s_p50"), base.get("decode_tokens_per_s_p50")
        )
        r["smaller_than_teacher"] = _ratio(base.get("weight_mb"), r["weight_mb"]) if base else None

    def ppl(row: str) -> float:
        return rows[row]["heldout_response_perplexity"]

    def agree(row: str) -> float | None:
        return rows[row]["top1_agreement_with_teacher"]

    best_f16 = f"{best['best']}_f16"
    kd_rows = [v for v in ("kd", "kd_jsd") if f"{v}_f16" in rows]
    qat, ptq, kq = rows["qat_q4_0"], rows["best_ptq_q4_0"], rows["best_ptq_q4_k_m"]
    bars = {
        "kd_beats_sft": {
            "rule": "a token_kd student (kd or kd_jsd, F16) has lower held-out perplexity and higher top-1 "
            "agreement through llama.cpp than sft at equal steps",
            "met": any(
                ppl(f"{v}_f16") < ppl("sft_f16") and (agree(f"{v}_f16") or 0) > (agree("sft_f16") or 0)
                for v in kd_rows
            ),
            **{f"{v}_perplexity": ppl(f"{v}_f16") for v in VARIANTS},
            **{f"{v}_top1_agreement": agree(f"{v}_f16") for v in VARIANTS},
        },
        "qat_loses_less_than_ptq_q4_0": {
            "rule": f"through llama.cpp, the Q4_0-aware student ({best['best']} + qat gguf_q4_0) at Q4_0 has lower "
            f"held-out perplexity and higher agreement than post-training Q4_0 of {best['best']}'s float weights",
            "met": ppl("qat_q4_0") < ppl("best_ptq_q4_0")
            and (agree("qat_q4_0") or 0) > (agree("best_ptq_q4_0") or 0),
            "float_f16_perplexity": ppl(best_f16),
            "ptq_q4_0_perplexity": ptq["heldout_response_perplexity"],
            "ptq_q4_k_m_perplexity": kq["heldout_response_perplexity"],
            "qat_q4_0_perplexity": qat["heldout_response_perplexity"],
            "float_f16_top1_agreement": agree(best_f16),
            "ptq_q4_0_top1_agreement": ptq["top1_agreement_with_teacher"],
            "ptq_q4_k_m_top1_agreement": kq["top1_agreement_with_teacher"],
            "qat_q4_0_top1_agreement": qat["top1_agreement_with_teacher"],
        },
        "q4_0_student_2x_faster_and_smaller": {
            "rule": "the Q4_0-aware student decodes >= 2x the teacher's tokens/s at Q4_0 (bench, cpu target, "
            "interleaved) and its tensors are >= 2x smaller",
            "met": (qat.get("decode_speedup_vs_teacher") or 0) >= 2
            and (qat["smaller_than_teacher"] or 0) >= 2,
            "decode_speedup": qat.get("decode_speedup_vs_teacher"),
            "smaller": qat["smaller_than_teacher"],
        },
    }
    generation = {}
    for split, meta in generated.items():
        counts = meta.get("counts", {})
        seconds = sum(r.get("seconds", 0) for r in meta.get("runs", []))
        generation[split] = {
            "records": counts.get("records_stored"),
            "prompt_tokens": counts.get("prompt_tokens"),
            "response_tokens": counts.get("response_tokens"),
            "finish_reasons": counts.get("finish_reasons"),
            "seconds_incl_teacher_load": seconds,
            "response_tokens_per_s_incl_load": _ratio(counts.get("response_tokens"), seconds),
            "sampling": meta.get("config", {}).get("sampling"),
            "batch_size": meta.get("config", {}).get("batch_size"),
            "teacher": meta.get("teacher"),
        }
    any_report = next(iter(reports.values()), {})
    students = {
        v: {
            "description": VARIANTS.get(v, f"{best['best']} with qat.mode gguf_q4_0 from half-way"),
            "parameters": rep.get("student", {}).get("parameters"),
            "torch_metrics": rep.get("student", {}).get("metrics"),
            "train_wall_time_s": rep.get("training", {}).get("train_wall_time_s"),
            "distill_stage_wall_s": stage_times.get(f"distill_{v}", {}).get("wall_s"),
            "qat": rep.get("qat"),
        }
        for v, rep in reports.items()
    }
    return {
        "benchmark": "lm_smollm2",
        "run": name,
        "command": shlex.join(["python", *sys.argv]),
        "host": cpu_summary(),
        "units": {
            "*_mb": "10^6 bytes",
            "heldout_response_perplexity": "exp(mean NLL per response token) of the teacher's held-out responses",
            "top1_agreement_with_teacher": "share of held-out response positions whose argmax equals the shipped "
            "teacher's (Q4_1 file) argmax, llama.cpp",
            "teacher_nll_of_greedy": "the shipped teacher's mean NLL per token of the row's greedy responses",
            "decode_tokens_per_s_p50": "tokens/s, median over requests (bench workload)",
            "*_wall_s": "seconds",
        },
        "scale": scale,
        "teacher": {
            "recipe_spelling": {k: v for k, v in teacher.items() if k != "gguf_path"},
            **_teacher_provenance(Path(teacher["gguf_path"])),
            "parameters": any_report.get("teacher", {}).get("parameters"),
            "distill_report_teacher": {
                k: v for k, v in any_report.get("teacher", {}).items() if k != "metrics"
            },
        },
        "student_layers": student_layers(scale["student_layers"]),
        "prompts": prompts,
        "generation": generation,
        "training_pairs": pairs,
        "students": students,
        "best": best,
        "qat_variant": QAT_VARIANT,
        "rows": rows,
        "bars": bars,
        "size_arithmetic_planned": sizes,
        "size_real": {
            "q4_0_teacher_over_qat_student": _ratio(rows["teacher_q4_0"]["weight_mb"], qat["weight_mb"]),
            "q8_0_teacher_over_student": _ratio(
                rows["teacher_q8_0"]["weight_mb"], rows["best_q8_0"]["weight_mb"]
            ),
        },
        "note": note,
        "stage_times": stage_times,
        "stages_wall_s_total": round(sum(v["wall_s"] for v in stage_times.values()), 1),
        "run_wall_s_this_invocation": round(wall_s, 1),
        "notes": [
            "Every student trains the same optimiser steps at the same batch size and learning rate from the "
            "same teacher layers and seed; kd/kd_jsd/gkd read the same top-k teacher cache. gkd's on-policy "
            "batches also sample from the student and run the teacher live, so its wall time is higher; "
            "compute is equal in optimiser steps, not in FLOPs.",
            f"The QAT run repeats {best['best']}'s recipe with qat.mode gguf_q4_0 from half-way (distill seeds "
            "its QAT phase with seed + 1, so the second half sees other batches than the float run).",
            "Q4_K_M is written by llama.cpp's own k-quant code through the exporter; rows of 576 are not a "
            "multiple of its 256-weight super-blocks, so llama.cpp stores many tensors in other types "
            "(tensor_types of that row).",
            "Token ids fed to llama.cpp come from the teacher's transformers tokenizer (what the students "
            "trained on), not from llama.cpp's tokenizer.",
        ],
    }


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(summary: dict[str, Any]) -> str:
    host, t, s = summary["host"], summary["teacher"], summary["scale"]
    gen = summary["generation"]
    lines = [
        f"SmolLM2-135M-Instruct ({t['file']}, sha256 {t['sha256'][:16]}...) distilled into "
        f"{len(summary['student_layers'])}-layer students (teacher layers {summary['student_layers']}), "
        f"{s['student_steps']} steps x batch {s['student_batch']} each; run `{summary['run']}`.",
        f"CPU: {host['model']} ({host['generation']}; {', '.join(host['isa_flags'])}), {host['logical_cores']} "
        "logical cores.",
        "",
        "Teacher generation (`edgedistill generate --chat-template`, incl. loading the teacher): "
        + "; ".join(
            f"{split} {g['records']} responses, {g['response_tokens']} tokens in {g['seconds_incl_teacher_load']:.0f} s "
            f"({_f(g['response_tokens_per_s_incl_load'], '.1f')} tokens/s, batch {g['batch_size']})"
            for split, g in gen.items()
        ),
        "",
        "| file | MB | held-out ppl | top-1 agr. | teacher NLL of greedy | decode tok/s | TTFT ms | "
        "speed-up | smaller |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in summary["rows"].items():
        lines.append(
            f"| {row} | {r['file_mb']:.1f} | {r['heldout_response_perplexity']:.2f} "
            f"| {_f(r['top1_agreement_with_teacher'], '.3f')} | {_f(r['teacher_nll_of_greedy'], '.3f')} "
            f"| {_f(r.get('decode_tokens_per_s_p50'), '.1f')} | {_f(r.get('ttft_ms_p50'), '.1f')} "
            f"| {_f(r.get('decode_speedup_vs_teacher'), '.2f')} | {_f(r.get('smaller_than_teacher'), '.2f')} |"
        )
    bars = summary["bars"]
    q4 = summary["size_arithmetic_planned"]["q4_0"]
    lines += [
        "",
        f"- Best variant by the rule fixed before the run ({summary['best']['rule']}): **{summary['best']['best']}**.",
        f"- kd beats sft: **{'met' if bars['kd_beats_sft']['met'] else 'missed'}**.",
        f"- Q4_0-aware loses less than post-training Q4_0: "
        f"**{'met' if bars['qat_loses_less_than_ptq_q4_0']['met'] else 'missed'}**.",
        f"- Q4_0 student >= 2x faster and smaller: "
        f"**{'met' if bars['q4_0_student_2x_faster_and_smaller']['met'] else 'missed'}** "
        f"(decode {_f(bars['q4_0_student_2x_faster_and_smaller']['decode_speedup'], '.2f')}x, "
        f"tensors {_f(bars['q4_0_student_2x_faster_and_smaller']['smaller'], '.2f')}x smaller).",
        "- Planned Q4_0 tensor bytes (GGUF plan; token_embd at Q8_0 is also the output projection): "
        + ", ".join(f"{k} {v['total'] / 1e6:.1f} MB ({v['ratio']:.2f}x)" for k, v in q4.items())
        + f"; deepest student at >= 2x: {summary['size_arithmetic_planned']['deepest_at_2x_q4_0']} layers.",
        "- Stage wall times (s): "
        + ", ".join(f"{k} {v['wall_s']:.0f}" for k, v in summary["stage_times"].items()),
        "",
        f"Command: `{summary['command']}`",
        "",
        *[f"Note: {n}" for n in summary["notes"]],
        *([f"Run note: {summary['note']}"] if summary.get("note") else []),
    ]
    return "\n".join(lines) + "\n"
