"""The summary of `benchmarks/teachers_sst2.py`: the teachers, the step cost, and the bars of issue 26.

Every figure is read from the stages' files: a section appears when its bench report measured
exactly its stage's artifacts (``measured_sections``). The bars, each judged on ONNX Runtime int8
artifacts measured by `edgedistill bench` on SST-2 dev, and never passed when a figure is missing
("not judged", with what is missing):

- ensemble: the student of two teachers beats the student of the better single teacher at equal steps;
- generalist: one student keeps >= 98.5 % of the SST-2 teacher's dev accuracy and >= 97 % of the
  embedding-only student's recall@10 (to all-MiniLM-L6-v2), at the classifier-only student's latency
  (the interleaved comparison's verdict, the `cpu` target's rule: unchanged or improved within 5 %);
- data-free: the student of LM-written text keeps >= 97 % of the teacher's dev accuracy (the corpus
  and random-token students are its baselines, judged alike).
"""

from __future__ import annotations

import json
from pathlib import Path

STUDENTS = {"minilm": "MiniLM teacher alone", "mpnet": "MPNet teacher alone", "both": "both (combine: mean)"}
GENERALIST = {
    "minilm": "classifier only (SST-2 teacher)",
    "embedding": "embedding only (all-MiniLM-L6-v2)",
    "generalist": "generalist (both)",
}
DATA_FREE = {
    "minilm": "SST-2 train (real data)",
    "free-lm": "SmolLM2-written reviews",
    "free-corpus": "docstring corpus (out of domain)",
    "free-random": "random teacher tokens",
}
GENERALIST_BARS = {"accuracy_vs_teacher": 0.985, "recall_at_10_vs_embedding_student": 0.97}
DATA_FREE_BAR = 0.97
# each section: (its artifacts file, its bench report), both written by teachers_sst2.py
SECTIONS = {
    "ensemble": ("artifacts.json", "bench_cpu.json"),
    "generalist": ("artifacts_generalist.json", "bench_generalist_cpu.json"),
    "data_free": ("artifacts_data_free.json", "bench_data_free_cpu.json"),
}
# the interleaved comparison's verdict (bench/stats.py) as the latency bar reads it
LATENCY_VERDICT = {
    "unchanged": "met",
    "improved": "met",
    "regressed": "not met",
    "inconclusive": "inconclusive",
}


def _isa(cpu: dict) -> str:
    return " ".join(k for k, v in cpu["isa"].items() if v)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _teacher(report: dict | None, rows: int | str) -> dict | None:
    if report is None:
        return None
    return {
        "path": report["model"]["path"],
        "parameters": report["model"]["parameters"],
        "torch_dev_accuracy": report["model"]["metrics"].get("accuracy"),
        "train_rows": rows,
        "train_steps": report["training"]["steps"],
        "train_wall_time_s": report["training"]["train_wall_time_s"],
    }


def measured_sections(out: Path) -> dict[str, dict]:
    """section -> {"table": bench report, "folders": label -> artifact folder} of every stage whose bench
    report measured exactly its artifacts (a stale or missing report leaves the section out)."""
    sections = {}
    for name, (artifacts, report) in SECTIONS.items():
        folders, table = _read(out / artifacts), _read(out / report)
        if folders is None or table is None:
            continue
        measured = {str(Path(a["path"]).resolve()) for a in table["artifacts"]}
        if measured == {str(Path(f).resolve()) for f in folders.values()}:
            sections[name] = {"table": table, "folders": folders}
    return sections


def _students(out: Path, measured: dict, taught_by: dict[str, str]) -> dict[str, dict]:
    """name -> the row of each measured candidate: bench figures (accuracy, embedding, interleaved
    latency) and its distill report's."""
    name_of = {str(Path(f).resolve()): label.split(":", 1)[0] for label, f in measured["folders"].items()}
    compared = {
        str(Path(c["candidate_path"]).resolve()): c["result"] for c in measured["table"]["comparisons"]
    }
    students = {}
    for entry in measured["table"]["artifacts"]:
        if entry.get("role") == "baseline":  # its figures are in each candidate's comparison
            continue
        path = str(Path(entry["path"]).resolve())
        name = name_of[path]
        lat, acc = entry.get("latency") or {}, entry.get("accuracy") or {}
        embedding = acc.get("sentence_embedding") or {}
        rep = _read(out / f"student-{name}" / "distill_report.json") or {}
        students[name] = {
            "taught_by": taught_by[name],
            "artifact": "ONNX int8 (QAT ranges), ONNX Runtime",
            "status": entry["status"],
            "reason": entry.get("reason"),
            "size_mb": entry.get("size_mb"),
            "p50_ms": lat.get("p50_ms"),
            "dev_accuracy": acc.get("accuracy"),
            "recall_at_10": embedding.get("recall_at_10"),
            "cosine_mean": embedding.get("cosine_mean"),
            "interleaved": _interleaved(compared.get(path)),
            "torch_dev_accuracy": rep.get("student", {}).get("metrics", {}).get("accuracy"),
            "train_rows": rep.get("data", {}).get("train", {}).get("rows_kept"),
            "steps": rep.get("training", {}).get("steps"),
            "train_wall_time_s": rep.get("training", {}).get("train_wall_time_s"),
            "agreement": {t["name"]: t.get("student_agreement") for t in rep.get("teachers", [])},
            "ensemble_dev_accuracy": rep.get("ensemble", {}).get("metrics", {}).get("accuracy"),
            "command": rep.get("command"),
        }
    return students


def _interleaved(result: dict | None) -> dict | None:
    """A candidate's comparison with the baseline: p50s (medians of process medians), ratios, verdict."""
    if result is None or result.get("ratio") is None:
        return None
    return {
        "p50_ms": round(result["candidate_median_ms"], 3),
        "baseline_p50_ms": round(result["baseline_median_ms"], 3),
        "p50_ratio": round(result["candidate_median_ms"] / result["baseline_median_ms"], 4),
        "ratio": round(result["ratio"], 4),  # Hodges-Lehmann candidate/baseline over all process pairs
        "ratio_upper": result.get("ratio_upper"),
        "processes_per_side": result["candidate_rounds"],
        "verdict": result["verdict"],
        "reason": result.get("reason"),
    }


def _ratio_bar(numerator: float | None, denominator: float | None, bar: float, of: str) -> dict:
    """``numerator / denominator`` against ``bar``; "not judged" (never met) when a figure is missing."""
    if numerator is None or not denominator:
        missing = "the numerator" if numerator is None else "the denominator"
        return {
            "of": of,
            "bar": bar,
            "ratio": None,
            "verdict": "not judged",
            "reason": f"{missing} is missing",
        }
    ratio = round(numerator / denominator, 4)
    return {"of": of, "bar": bar, "ratio": ratio, "verdict": "met" if ratio >= bar else "not met"}


def _minilm_report(out: Path, rows_limit: int | None) -> dict | None:
    """The MiniLM teacher's finetune report: this run's own in quick mode, else the headline's."""
    report = _read(out / "teacher" / "finetune_report.json") if rows_limit else None
    return report or _read(out.parent / "headline_sst2" / "teacher" / "finetune_report.json")


def _teacher_accuracy(teacher: dict | None) -> dict:
    return {
        "dev_accuracy": (teacher or {}).get("torch_dev_accuracy"),
        "source": "the SST-2 teacher's finetune_report.json: torch fp32 on SST-2 dev (872 sentences)",
    }


def _equal_steps(students: dict[str, dict]) -> bool | None:
    steps = {st["steps"] for st in students.values()}
    return None if None in steps or not steps else len(steps) == 1


def generalist_summary(out: Path, measured: dict, teacher: dict | None) -> dict:
    students = _students(out, measured, GENERALIST)
    gen, emb = students.get("generalist") or {}, students.get("embedding") or {}
    accuracy = _teacher_accuracy(teacher)
    latency = gen.get("interleaved")
    latency_bar = {
        "of": "generalist vs classifier-only, interleaved (p50 ratio and Hodges-Lehmann ratio, verdict of "
        "the cpu target's rule)",
        "p50_ratio": None if latency is None else latency["p50_ratio"],
        "ratio": None if latency is None else latency["ratio"],
        "ratio_upper": None if latency is None else latency["ratio_upper"],
        "verdict": "not judged" if latency is None else LATENCY_VERDICT[latency["verdict"]],
        "reason": "no interleaved comparison of the generalist" if latency is None else latency["reason"],
    }
    emb_latency = emb.get("interleaved")
    bars = {
        "accuracy": _ratio_bar(
            gen.get("dev_accuracy"),
            accuracy["dev_accuracy"],
            GENERALIST_BARS["accuracy_vs_teacher"],
            "generalist ONNX int8 dev accuracy / SST-2 teacher dev accuracy",
        ),
        "recall_at_10": _ratio_bar(
            gen.get("recall_at_10"),
            emb.get("recall_at_10"),
            GENERALIST_BARS["recall_at_10_vs_embedding_student"],
            "generalist recall@10 / embedding-only student's recall@10 (ONNX int8, to all-MiniLM-L6-v2)",
        ),
        "latency": latency_bar,
    }
    return {
        "students": students,
        "teacher": accuracy,
        "equal_steps": _equal_steps(students),
        "bars": bars,
        "all_bars_met": all(b["verdict"] == "met" for b in bars.values()),
        # each over its own interleaved pair with the classifier-only student
        "latency_generalist_vs_embedding": round(latency["ratio"] / emb_latency["ratio"], 4)
        if latency and emb_latency
        else None,
    }


def data_free_summary(out: Path, measured: dict, teacher: dict | None) -> dict:
    students = _students(out, measured, DATA_FREE)
    accuracy = _teacher_accuracy(teacher)
    real = (students.get("minilm") or {}).get("dev_accuracy")
    for name, st in students.items():
        st["retention"] = _ratio_bar(
            st["dev_accuracy"], accuracy["dev_accuracy"], DATA_FREE_BAR, "ONNX int8 dev accuracy / teacher's"
        )
        acc = st["dev_accuracy"]
        st["points_vs_real_data"] = None if acc is None or real is None else round(100 * (acc - real), 2)
        synth = _read(out / "transfer" / name.removeprefix("free-") / "synthesize_report.json")
        if name != "minilm" and synth is not None:
            st["transfer"] = {
                "counts": synth["counts"],
                "lm": synth.get("lm"),
                "seconds": synth.get("seconds"),
            }
    lm = students.get("free-lm") or {}
    return {
        "students": students,
        "teacher": accuracy,
        "equal_steps": _equal_steps(students),
        "bar": lm.get("retention") or _ratio_bar(None, None, DATA_FREE_BAR, "the LM-written set's student"),
    }


def build_summary(
    out: Path, sections: dict, totals: dict, cpu: dict, rows_limit: int | None, mpnet: dict, mpnet_rows: int
) -> dict:
    """``sections``: `measured_sections` (at least one)."""
    host = next(iter(sections.values()))["table"]["host"]["cpu"]
    minilm_report = _minilm_report(out, rows_limit)
    teachers = {
        "minilm": _teacher(minilm_report, rows_limit or "all"),
        "mpnet": _teacher(_read(out / "mpnet-teacher" / "finetune_report.json"), rows_limit or mpnet_rows),
    }
    students, bar = {}, None
    if "ensemble" in sections:
        students = _students(out, sections["ensemble"], STUDENTS)
        single = [students[n]["dev_accuracy"] for n in ("minilm", "mpnet") if n in students]
        both = students.get("both", {}).get("dev_accuracy")
        if both is not None and len(single) == 2 and None not in single:
            best = max(single)
            bar = {
                "both": both,
                "best_single": best,
                "points": round(100 * (both - best), 2),
                "met": both > best,
            }
    return {
        "cpu": {"model": host.get("model"), "generation": host.get("generation"), "isa": _isa(host)},
        "train_rows": rows_limit or "all",
        "mpnet_source": {
            k: mpnet.get(k)
            for k in ("packages", "safetensors_sha256", "safetensors_bytes", "parameters", "left_out")
        },
        "step_cost": _read(out / "step_cost.json"),
        "teachers": teachers,
        "students": students,
        "ensemble_bar": bar,
        "generalist": generalist_summary(out, sections["generalist"], teachers["minilm"])
        if "generalist" in sections
        else None,
        "data_free": data_free_summary(out, sections["data_free"], teachers["minilm"])
        if "data_free" in sections
        else None,
        "stages": totals,
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _bar_text(bar: dict) -> str:
    figure = "-" if bar["ratio"] is None else f"{100 * bar['ratio']:.1f}%"
    why = f" ({bar['reason']})" if bar.get("reason") and bar["verdict"] == "not judged" else ""
    return f"{figure} (bar {100 * bar['bar']:.1f}%): **{bar['verdict']}**{why}"


def generalist_markdown(g: dict) -> list[str]:
    lines = [
        "",
        "Generalist: one 3L-f384 student with an SST-2 head and a sentence embedding, ONNX int8 through ONNX "
        "Runtime; embeddings against all-MiniLM-L6-v2; latency interleaved with the classifier-only student.",
        "",
        "| student (3L-f384) | steps | dev acc | recall@10 | cosine | p50 ms | vs classifier (p50 ratio, verdict) "
        "| size MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in g["students"].values():
        inter = st["interleaved"]
        vs = "-" if inter is None else f"{inter['p50_ratio']:.3f}, {inter['verdict']}"
        lines.append(
            f"| {st['taught_by']} | {st['steps']} | {_pct(st['dev_accuracy'])} | {_num(st['recall_at_10'], 3)} | "
            f"{_num(st['cosine_mean'], 3)} | {_num(st['p50_ms'])} | {vs} | {_num(st['size_mb'], 1)} |"
        )
    bars, teacher = g["bars"], g["teacher"]
    lat = bars["latency"]
    unmet = ", ".join(f"{name} {bar['verdict']}" for name, bar in bars.items() if bar["verdict"] != "met")
    verdict = "met" if g["all_bars_met"] else f"not all met ({unmet})"
    lines += [
        "",
        f"- accuracy: {_bar_text(bars['accuracy'])} of the teacher's {_pct(teacher['dev_accuracy'])} "
        f"({teacher['source']})",
        f"- recall@10: {_bar_text(bars['recall_at_10'])} of the embedding-only student's",
        f"- latency: generalist / classifier-only p50 {_num(lat['p50_ratio'], 3)}, Hodges-Lehmann "
        f"{_num(lat['ratio'], 3)} (upper bound {_num(lat['ratio_upper'], 3)}): **{lat['verdict']}** "
        f"({lat['reason']})",
        f"- all three bars: {verdict}; equal steps: {g['equal_steps']}; "
        f"generalist / embedding-only latency (ratio of their ratios to the classifier): "
        f"{_num(g['latency_generalist_vs_embedding'], 3)}",
    ]
    return lines


def data_free_markdown(d: dict) -> list[str]:
    lines = [
        "",
        f"Data-free: 3L-f384 students at equal steps, ONNX int8 through ONNX Runtime on SST-2 dev; the teacher's "
        f"dev accuracy {_pct(d['teacher']['dev_accuracy'])} ({d['teacher']['source']}).",
        "",
        "| transfer set | rows (kept / made) | steps | dev acc | % of teacher | vs real data (points) | 97 % bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, st in d["students"].items():
        counts = (st.get("transfer") or {}).get("counts")
        rows = f"{counts['kept']:,} / {counts['generated']:,}" if counts else f"{st['train_rows'] or 0:,}"
        ret = st["retention"]
        kept = "-" if ret["ratio"] is None else f"{100 * ret['ratio']:.1f}%"
        gap = "-" if st["points_vs_real_data"] is None else f"{st['points_vs_real_data']:+.2f}"
        bar = "reference" if name == "minilm" else ret["verdict"]
        lines.append(
            f"| {st['taught_by']} | {rows} | {st['steps']} | {_pct(st['dev_accuracy'])} | {kept} | {gap} | {bar} |"
        )
    lm = ((d["students"].get("free-lm") or {}).get("transfer") or {}).get("lm")
    lines += [
        "",
        f"- the bar (the LM-written set's student): {_bar_text(d['bar'])}; equal steps: {d['equal_steps']}",
    ]
    if lm:
        lines.append(
            f"- SmolLM2 ({lm['threads']} thread): {lm['response_tokens']:,} tokens in {lm['generation_seconds']:.0f} s, "
            f"{lm['tokens_per_s']} tokens/s, {lm['tokens_per_cpu_s']} per CPU second"
        )
    return lines


def markdown(s: dict) -> str:
    pct = _pct
    src = s["mpnet_source"]
    lines = [
        f"CPU: {s['cpu']['model']} ({s['cpu']['generation']}; ISA: {s['cpu']['isa']}); student training rows: "
        f"{s['train_rows']}; SST-2 dev (872) through ONNX Runtime int8.",
        f"MPNet: all-mpnet-base-v2 from PyPI ({', '.join(src['packages'] or {})}), model.safetensors sha256 "
        f"`{src['safetensors_sha256']}`, {src['safetensors_bytes']:,} bytes, {src['parameters']:,} parameters.",
        "",
        "| teacher | train rows | steps | torch dev acc | train loop s |",
        "|---|---|---|---|---|",
    ]
    for name, t in s["teachers"].items():
        if t:
            lines.append(
                f"| {name} | {t['train_rows']} | {t['train_steps']} | {pct(t['torch_dev_accuracy'])} | "
                f"{t['train_wall_time_s']:.0f} |"
            )
    if s["students"]:
        lines += [
            "",
            "| student (3L-f384) | steps | ONNX int8 dev acc | torch dev acc | agreement | size MB | p50 ms |",
            "|---|---|---|---|---|---|---|",
        ]
    for st in s["students"].values():
        agree = ", ".join(f"{k} {pct(v)}" for k, v in st["agreement"].items() if v is not None) or "-"
        lines.append(
            f"| {st['taught_by']} | {st['steps']} | {pct(st['dev_accuracy'])} | "
            f"{pct(st['torch_dev_accuracy'])} | {agree} | {_num(st['size_mb'], 1)} | {_num(st['p50_ms'])} |"
        )
    lines.append("")
    bar = s["ensemble_bar"]
    if bar:
        lines.append(
            f"- ensemble bar: both {pct(bar['both'])} vs best single {pct(bar['best_single'])} "
            f"({bar['points']:+.2f} points): {'met' if bar['met'] else 'not met'}"
        )
    cost = s["step_cost"]
    if cost:
        per = cost["median_step_s"]
        lines.append(
            f"- one fine-tuning step (batch 32, length 66): MPNet {per['mpnet']:.2f} s vs MiniLM "
            f"{per['minilm']:.2f} s, {cost['mpnet_vs_minilm']}x (median of {cost['rounds']} "
            f"alternating rounds)"
        )
    if s.get("generalist"):
        lines += generalist_markdown(s["generalist"])
    if s.get("data_free"):
        lines += data_free_markdown(s["data_free"])
    lines.append("- stage wall times (all sessions): " + ", ".join(
        f"{k} {v['wall_s']:.0f} s ({v['sessions']} session{'s' if v['sessions'] > 1 else ''})" for k, v in s["stages"].items()
    ))  # fmt: skip
    return "\n".join(lines) + "\n"
