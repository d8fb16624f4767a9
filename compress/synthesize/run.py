"""`synthesize(config, out)`: texts (resumable) -> the teacher's soft labels -> selection -> transfer set + report."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgedistill.compress.generate.store import SAMPLES_FILE, prompt_digest, read_store, store_lock
from edgedistill.compress.synthesize.config import SynthesizeConfig, SynthesizeError
from edgedistill.compress.synthesize.label import check_classifier, check_pair, load_classifier, probabilities
from edgedistill.compress.synthesize.selection import Candidate, filter_texts, select
from edgedistill.compress.synthesize.sources import TEXTS_DIR, OnRecord, make_texts
from edgedistill.config import dump_config
from edgedistill.io import atomic_path, atomic_write_json
from edgedistill.signals import interruptible

TRANSFER_TSV = "transfer.tsv"
TRANSFER_JSONL = "transfer.jsonl"
REPORT_FILE = "synthesize_report.json"
REPORT_FORMAT = "edgedistill.synthesize"


@interruptible
def synthesize(
    cfg: SynthesizeConfig,
    out: str | Path,
    *,
    restart: bool = False,
    progress: bool = True,
    on_record: OnRecord | None = None,
) -> dict[str, Any]:
    """Write a transfer set for ``cfg.teacher`` into ``out`` and return the report (``out/synthesize_report.json``).

    ``out/transfer.tsv`` (sentence, label = teacher argmax, teacher_prob_<k>) is what `distill` trains on;
    ``out/transfer.jsonl`` adds scores, student probabilities and provenance per text. Texts are kept in
    ``out/texts`` and a rerun resumes them (``restart`` deletes them first). ``on_record(record)`` runs after
    each new text is stored; tests interrupt runs from it.
    """
    out = Path(out)
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    with store_lock(out, "synthesize"):
        if restart:
            shutil.rmtree(out / TEXTS_DIR, ignore_errors=True)
            for name in (TRANSFER_TSV, TRANSFER_JSONL, REPORT_FILE):
                (out / name).unlink(missing_ok=True)
        _check_models_exist(cfg)  # before the LM spends minutes on texts nobody can label
        texts = make_texts(cfg, out, progress=progress, on_record=on_record)
        records = _records_of_this_config(out, texts["digests"])
        dropped: Counter = Counter()
        # an index the store holds no text for: its (prompt, text) pair was stored once already
        dropped["duplicate"] += len(texts["digests"]) - len(records)
        passed = filter_texts(records, cfg.selection, dropped)

        teacher = load_classifier(cfg.teacher, "teacher")
        student = load_classifier(cfg.student, "student") if cfg.student is not None else None
        check_pair(teacher, student)
        label_started = time.perf_counter()
        sentences = [text for _, text in passed]
        teacher_probs = probabilities(teacher, sentences, cfg.max_length, cfg.batch_size)
        student_probs = (
            probabilities(student, sentences, cfg.max_length, cfg.batch_size)
            if student
            else [None] * len(passed)
        )
        label_seconds = time.perf_counter() - label_started
        candidates = [
            Candidate(index, text, t, s)
            for (index, text), t, s in zip(passed, teacher_probs, student_probs, strict=True)
        ]
        kept = select(candidates, cfg.selection, dropped)
        if not kept:
            raise SynthesizeError(
                f"no text of {len(records)} survived the filters ({dict(dropped)}); raise count, lower "
                "selection.min_words or check the texts in " + str(out / TEXTS_DIR / SAMPLES_FILE)
            )
        by_index = {int(r["prompt_id"]): r for r in records}
        _write_tsv(out / TRANSFER_TSV, kept, teacher.num_labels)
        _write_jsonl(out / TRANSFER_JSONL, kept, by_index)
        report = _report(cfg, texts, records, candidates, kept, dropped, teacher, label_seconds, started)
        atomic_write_json(out / REPORT_FILE, report)
    return report


def _check_models_exist(cfg: SynthesizeConfig) -> None:
    check_classifier(cfg.teacher, "teacher")
    if cfg.student is not None:
        check_classifier(cfg.student, "student")


def _records_of_this_config(out: Path, digests: list[str]) -> list[dict[str, Any]]:
    """The stored texts of indices < count, made from this run's items, in index order."""
    found: dict[int, dict[str, Any]] = {}
    for record in read_store(out / TEXTS_DIR):
        i = int(record["prompt_id"])
        if i < len(digests) and prompt_digest(record["prompt"]) == digests[i]:
            found[i] = record
    return [found[i] for i in sorted(found)]


def _write_tsv(path: Path, kept: list[Candidate], num_labels: int) -> None:
    # Unquoted, like SST-2 (a '"' is text): clean_text left no tab or newline in a sentence.
    header = ["sentence", "label", *(f"teacher_prob_{k}" for k in range(num_labels))]
    lines = ["\t".join(header)]
    lines += ["\t".join([c.text, str(c.label), *(f"{p:.6f}" for p in c.teacher_probs)]) for c in kept]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, kept: list[Candidate], by_index: dict[int, dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for c in kept:
            source = by_index[c.index]
            row = {
                "sentence": c.text,
                "label": c.label,
                "teacher_probs": [round(p, 6) for p in c.teacher_probs],
                "score": round(c.score, 6),
                "index": c.index,
                "id": source["id"],
                "prompt": source["prompt"],
                "seed": source["seed"],
                "finish_reason": source.get("finish_reason"),
            }
            if c.student_probs is not None:
                row["student_probs"] = [round(p, 6) for p in c.student_probs]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _report(
    cfg: SynthesizeConfig,
    texts: dict[str, Any],
    records: list[dict[str, Any]],
    candidates: list[Candidate],
    kept: list[Candidate],
    dropped: Counter,
    teacher: Any,
    label_seconds: float,
    started: float,
) -> dict[str, Any]:
    from edgedistill.compress.synthesize.prompts import distinct_prompts
    from edgedistill.compress.synthesize.selection import normalized_entropy

    meta = texts["meta"]
    runs = meta["runs"]
    lm: dict[str, Any] | None = None
    if cfg.source == "lm":
        gen_s = sum(r.get("generation_seconds", 0.0) for r in runs)
        cpu_s = sum(r.get("generation_cpu_seconds", 0.0) for r in runs)
        tokens = sum(r.get("response_tokens", 0) for r in runs)
        finish = Counter(r.get("finish_reason") for r in records)
        lm = {
            "file": meta.get("lm_file"),
            "sha256": meta.get("lm_sha256"),
            "response_tokens": tokens,
            "generation_seconds": round(gen_s, 2),
            # over the runs that finished (a killed run's seconds died with it); one sequence at a time
            "tokens_per_s": round(tokens / gen_s, 2) if gen_s else None,
            "generation_cpu_seconds": round(cpu_s, 2),
            "tokens_per_cpu_s": round(tokens / cpu_s, 2) if cpu_s else None,
            "threads": cfg.lm.threads if cfg.lm else None,
            "finish_reasons": dict(finish),
        }
    label_counts = Counter(c.label for c in kept)
    return {
        "format": REPORT_FORMAT,
        "format_version": 1,
        "config": dump_config(cfg),
        "source": cfg.source,
        "counts": {
            "planned": len(texts["items"]),
            "generated": len(texts["items"]),
            "stored": len(records),
            "labelled": len(candidates),
            "kept": len(kept),
            "dropped": sum(dropped.values()),
            "dropped_by_reason": dict(sorted(dropped.items())),
            "kept_by_label": {
                teacher.label_names[k]: label_counts.get(k, 0) for k in range(teacher.num_labels)
            },
        },
        "selection": {
            "rule": cfg.selection.rule,
            "keep_fraction": cfg.selection.keep_fraction,
            "balance_classes": cfg.selection.balance_classes,
            "mean_score_labelled": _mean([c.score for c in candidates]),
            "mean_score_kept": _mean([c.score for c in kept]),
            "mean_teacher_entropy_kept": _mean([normalized_entropy(c.teacher_probs) for c in kept]),
        },
        "teacher": {
            "path": cfg.teacher.path,
            "labels": teacher.label_names,
            "label_seconds": round(label_seconds, 2),
        },
        "lm": lm,
        "seeds": {
            "seed": cfg.seed,
            "per_text": "text i draws with sample_seed(seed, i, 0) (sha256 of 'edgedistill-generate:seed:i:0', 63 bits; "
            "llama.cpp gets its low 31 bits)",
        },
        "prompts": _prompts_section(cfg, texts["items"], distinct_prompts(cfg.prompts))
        if cfg.source == "lm"
        else None,
        "corpus": meta.get("corpus"),
        "files": {"tsv": TRANSFER_TSV, "jsonl": TRANSFER_JSONL, "texts": f"{TEXTS_DIR}/{SAMPLES_FILE}"},
        "runs": runs,
        "seconds": round(time.time() - started, 2),
    }


def _prompts_section(cfg: SynthesizeConfig, prompts: list[str], distinct: int | None) -> dict[str, Any]:
    section: dict[str, Any] = {
        "file": cfg.prompts.file,
        "distinct": distinct or len(set(prompts)),
        "list": prompts,
    }
    if cfg.prompts.file is None:
        section.update(template=cfg.prompts.template, slots=cfg.prompts.slots)
    return section
