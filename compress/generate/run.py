"""Generating: load the teacher, sample responses per prompt with per-sample seeds, append them to the store, resume."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.compress.generate.config import (
    GenerateConfig,
    GenerateError,
    identity_of,
    resolve_engine,
    sample_seed,
)
from edgedistill.compress.generate.prompts import prompts_fingerprint, read_prompts
from edgedistill.compress.generate.store import (
    DUPLICATES_FILE,
    META_FILE,
    SAMPLES_FILE,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    _check_resume,
    _clear_store,
    _locked,
    _refuse_mix,
    _Store,
    prompt_digest,
    read_meta,
    record_id,
    write_parquet,
)
from edgedistill.config import dump_config
from edgedistill.io import atomic_write_json
from edgedistill.signals import interruptible

logger = logging.getLogger(__name__)


def _open_engine(cfg: GenerateConfig) -> Any:
    """The engine that runs the teacher (`resolve_engine`): torch or llama.cpp."""
    if resolve_engine(cfg) == "llama.cpp":
        from edgedistill.compress.generate.llamacpp import LlamaCppEngine

        if cfg.dtype != "auto":
            logger.warning("dtype %s is not used: llama.cpp runs the GGUF file's own types", cfg.dtype)
        return LlamaCppEngine(cfg)
    from edgedistill.compress.generate.torch_engine import TorchEngine

    return TorchEngine(cfg)


def _format_prompts(cfg: GenerateConfig, tokenizer: Any, prompts: list[str]) -> list[str]:
    if not cfg.chat_template:
        if getattr(tokenizer, "chat_template", None):
            logger.info("the teacher's tokenizer has a chat template; pass --chat-template to apply it")
        return prompts
    if not getattr(tokenizer, "chat_template", None):
        raise GenerateError(
            f"chat_template is on, but the teacher's tokenizer ({cfg.teacher.path}) has no chat template. "
            "Drop --chat-template to use the prompts as written, or use a teacher whose tokenizer_config.json "
            "has a chat_template."
        )
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return [
        tokenizer.apply_chat_template(
            [*system, {"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


@interruptible
def generate(
    cfg: GenerateConfig,
    out: str | Path,
    *,
    force: bool = False,
    restart: bool = False,
    progress: bool = True,
    on_record: Callable[[dict[str, Any], bool], None] | None = None,
) -> dict[str, Any]:
    """Sample the teacher's responses to every prompt into ``out`` (resuming a store already there).

    Returns the report written to ``out/generate.json``. ``on_record(record, stored)`` runs after
    each sample is written (``stored`` is False for a duplicate); tests interrupt runs from it.
    """
    out = Path(out)
    started = time.time()
    prompts = read_prompts(cfg.prompts, cfg.prompt_column)
    current: dict[str, Any] = {
        "identity": identity_of(cfg),
        "prompts": {"path": cfg.prompts, "count": len(prompts), "fingerprint": prompts_fingerprint(prompts)},
    }
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        previous = _read_previous(out, restart)
        # Cheap checks first: a changed config or prompts file fails before the teacher loads.
        problems = _check_resume(previous, current) if previous else []
        if problems and not force:
            raise _refuse_mix(out, problems)

        engine = _open_engine(cfg)
        tokenizer = engine.tokenizer
        current["teacher"] = engine.teacher_info()
        if previous and not problems:
            problems = _check_resume(previous, current)
            if problems and not force:
                raise _refuse_mix(out, problems)
        texts = _format_prompts(cfg, tokenizer, prompts)
        engine.prepare(texts)
        store = _Store.open(out)

        n = cfg.sampling.num_samples
        work = [(p, s) for p in range(len(prompts)) for s in range(n)]
        # Under --force a finished pair counts only if its stored prompt is this run's prompt.
        digests = [prompt_digest(t) for t in texts]
        pending = [w for w in work if store.done.get(w) != digests[w[0]]]
        meta = {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "status": "running",
            "config": dump_config(cfg),
            **current,
            "chat_template_applied": cfg.chat_template,
            "add_special_tokens": not cfg.chat_template,
            "files": {"samples": SAMPLES_FILE, "duplicates": DUPLICATES_FILE},
            "mixed_settings": bool(previous.get("mixed_settings")) or bool(problems),
            "runs": list(previous.get("runs", [])),
        }
        history = [*previous.get("settings_history", []), *([_settings_of(previous)] if problems else [])]
        if history:  # the settings of earlier runs that --force mixed into this store
            meta["settings_history"] = history
        run = {
            "started_utc": _utc(started),
            "samples_planned": len(work),
            "already_done": len(work) - len(pending),
            "torn_bytes_cut": store.torn_bytes,
            **engine.run_info(),
        }
        meta["runs"].append(run)
        meta["counts"] = {"prompts": len(prompts), "samples_planned": len(work), **store.counts()}
        atomic_write_json(out / META_FILE, meta)

        speed = _run_batches(cfg, engine, prompts, texts, work, pending, store, progress, on_record)

        if cfg.output_format == "parquet":
            meta["files"]["parquet"] = write_parquet(out).name
        run.update(**speed, finished_utc=_utc(time.time()), seconds=round(time.time() - started, 2))
        meta["status"] = "complete"
        meta["counts"] = {"prompts": len(prompts), "samples_planned": len(work), **store.counts()}
        atomic_write_json(out / META_FILE, meta)
    return meta


def _read_previous(out: Path, restart: bool) -> dict[str, Any]:
    if restart:
        _clear_store(out)
        return {}
    previous = read_meta(out, META_FILE, GenerateError)
    if previous is not None and previous.get("format") != STORE_FORMAT:
        raise GenerateError(f"{out} holds something else than a generate store; choose another --out")
    return previous or {}


def _settings_of(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("identity", "prompts", "teacher")}


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _run_batches(
    cfg: GenerateConfig,
    engine: Any,
    prompts: list[str],
    texts: list[str],
    work: list[tuple[int, int]],
    pending: list[tuple[int, int]],
    store: _Store,
    progress: bool,
    on_record: Callable[[dict[str, Any], bool], None] | None,
) -> dict[str, Any]:
    """Generate every batch holding a pending sample; return the run's counts and speed: the
    response tokens of every sequence generated (a resumed batch's finished rows too: they were
    computed), over the seconds spent generating (wall, and CPU of all threads: on a shared
    machine wall seconds measure the neighbours too)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    todo = set(pending)
    size = cfg.batch_size
    # Fixed slices of the work list: a resumed batch is the same batch, so its samples are the same.
    batches = [work[i : i + size] for i in range(0, len(work), size)]
    generated = tokens = 0
    seconds = cpu_seconds = 0.0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar, store.appending() as add:
        task = bar.add_task("generating teacher samples", total=len(work), completed=len(work) - len(todo))
        for batch in batches:
            if not todo.intersection(batch):
                continue
            seeds = [sample_seed(cfg.sampling.seed, p, s) for p, s in batch]
            tick, cpu_tick = time.perf_counter(), time.process_time()
            results = engine.generate_batch([texts[p] for p, _ in batch], seeds)
            seconds += time.perf_counter() - tick
            cpu_seconds += time.process_time() - cpu_tick
            tokens += sum(r["response_tokens"] for r in results)
            for (prompt_id, sample_index), seed, result in zip(batch, seeds, results, strict=True):
                if (prompt_id, sample_index) not in todo:
                    continue
                prompt = texts[prompt_id]
                record = {
                    "id": record_id(prompt, result["response"]),
                    "prompt_id": prompt_id,
                    "sample_index": sample_index,
                    "prompt": prompt,
                    "response": result["response"],
                    "seed": seed,
                    "finish_reason": result["finish_reason"],
                    "prompt_tokens": result["prompt_tokens"],
                    "response_tokens": result["response_tokens"],
                }
                if cfg.chat_template:
                    record["source_prompt"] = prompts[prompt_id]
                stored = add(record)
                todo.discard((prompt_id, sample_index))
                generated += 1
                bar.advance(task)
                if on_record is not None:
                    on_record(record, stored)
    return {
        "generated": generated,
        "response_tokens": tokens,
        "generation_seconds": round(seconds, 3),
        "generation_cpu_seconds": round(cpu_seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if seconds else None,
    }
