"""The summary of `lm_sst2.py`: every row's figures, the bars it set itself, and summary.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_sst2_setup import PAIRS_VARIANTS

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
