"""Generating: load the teacher, sample responses per prompt with per-sample seeds, append them to the store, resume."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.compress.generate.config import (
    GenerateConfig,
    GenerateError,
    SamplingConfig,
    identity_of,
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


def _load_teacher(cfg: GenerateConfig) -> tuple[Any, Any, Any]:
    import torch
    import transformers
    from packaging.version import Version

    from edgedistill.compress.models import load_model, load_tokenizer

    device = torch.device(
        "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if cfg.dtype == "auto":
        dtype: Any = "auto" if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype (the old name warns).
    dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = load_model(cfg.teacher, "causal-lm", role="teacher", **{dtype_key: dtype}).to(device)
    model.eval()
    tokenizer = load_tokenizer(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)
    # Generation appends new tokens on the right, so prompts are padded on the left.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise GenerateError(
                f"the teacher's tokenizer ({cfg.teacher.path}) has neither a pad nor an end-of-sequence token; "
                "batches of prompts cannot be padded. Set a pad_token in its tokenizer_config.json."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, device


def _teacher_info(cfg: GenerateConfig, model: Any, tokenizer: Any) -> dict[str, Any]:
    from edgedistill.compress.data import tokenizer_fingerprint
    from edgedistill.compress.logit_cache import teacher_fingerprint
    from edgedistill.compress.models import teacher_provenance

    template = getattr(tokenizer, "chat_template", None)
    material = {
        "weights": teacher_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "chat_template": template if cfg.chat_template else None,
    }
    return {
        "path": cfg.teacher.path,
        "class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "fingerprint": hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20],
        # a GGUF teacher: the file (sha256) and the quantization its weights were dequantized from
        "gguf": teacher_provenance(cfg.teacher),
    }


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


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def _row_sampler(sampling: SamplingConfig, generators: list[Any], vocab_size: int) -> Any:
    """A logits processor that draws each row's next token from that row's own generator.

    transformers samples a whole batch from the global RNG, so what a row gets would depend on
    the rows beside it. Here the draw happens in the processor (temperature, top-k, top-p, then
    one multinomial per row with its generator) and everything but the drawn token is set to
    -inf, so generate's greedy step picks exactly it. Greedy decoding only masks the rows a
    model may pad its vocabulary with.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            scores = scores.float().clone()
            scores[:, vocab_size:] = -float("inf")
            if not sampling.do_sample:
                return scores
            scores = scores / sampling.temperature
            if sampling.top_k and sampling.top_k < scores.shape[-1]:
                kth = torch.topk(scores, sampling.top_k, dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, -float("inf"))
            if sampling.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
                probs = sorted_scores.softmax(-1)
                # Drop a token when the mass before it already reaches top_p (the first always stays).
                drop = (probs.cumsum(-1) - probs) >= sampling.top_p
                scores = scores.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
            probs = scores.softmax(-1)
            chosen = torch.stack(
                [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(generators)]
            )
            picked = torch.full_like(scores, -float("inf"))
            return picked.scatter_(-1, chosen, 0.0)

    return RowSampler()


def _generate_batch(
    cfg: GenerateConfig,
    model: Any,
    tokenizer: Any,
    device: Any,
    texts: list[str],
    seeds: list[int],
    stop_ids: list[int],
) -> list[dict[str, Any]]:
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    encoded = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        add_special_tokens=not cfg.chat_template,  # a chat template already writes the special tokens
        return_token_type_ids=False,
    ).to(device)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    gen_config = GenerationConfig(
        max_new_tokens=cfg.sampling.max_new_tokens,
        do_sample=False,  # the row sampler draws; see _row_sampler
        num_beams=1,
        repetition_penalty=cfg.sampling.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids or None,
    )
    extra = {}
    # The checkpoint's generation_config.json must not change the sampling (transformers >= 4.50).
    if "use_model_defaults" in inspect.signature(model.generate).parameters:
        extra["use_model_defaults"] = False
    with torch.no_grad():
        sequences = model.generate(
            **encoded,
            generation_config=gen_config,
            logits_processor=LogitsProcessorList([_row_sampler(cfg.sampling, generators, len(tokenizer))]),
            **extra,
        )
    width = encoded["input_ids"].shape[1]
    results = []
    stops = set(stop_ids)
    for row in range(len(texts)):
        new = sequences[row, width:].tolist()
        end = next((i for i, t in enumerate(new) if t in stops), None)
        kept = new if end is None else new[:end]
        results.append(
            {
                "response": tokenizer.decode(kept, skip_special_tokens=True),
                "finish_reason": "length" if end is None else "stop",
                "prompt_tokens": int(encoded["attention_mask"][row].sum()),
                "response_tokens": len(new) if end is None else end + 1,
            }
        )
    return results


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

        model, tokenizer, device = _load_teacher(cfg)
        current["teacher"] = _teacher_info(cfg, model, tokenizer)
        if previous and not problems:
            problems = _check_resume(previous, current)
            if problems and not force:
                raise _refuse_mix(out, problems)
        texts = _format_prompts(cfg, tokenizer, prompts)
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
        }
        meta["runs"].append(run)
        meta["counts"] = {"prompts": len(prompts), "samples_planned": len(work), **store.counts()}
        atomic_write_json(out / META_FILE, meta)

        stop_ids = _stop_token_ids(model, tokenizer)
        generated = _run_batches(
            cfg, model, tokenizer, device, prompts, texts, work, pending, store, stop_ids, progress, on_record
        )

        if cfg.output_format == "parquet":
            meta["files"]["parquet"] = write_parquet(out).name
        run.update(
            generated=generated, finished_utc=_utc(time.time()), seconds=round(time.time() - started, 2)
        )
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
    model: Any,
    tokenizer: Any,
    device: Any,
    prompts: list[str],
    texts: list[str],
    work: list[tuple[int, int]],
    pending: list[tuple[int, int]],
    store: _Store,
    stop_ids: list[int],
    progress: bool,
    on_record: Callable[[dict[str, Any], bool], None] | None,
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    todo = set(pending)
    size = cfg.batch_size
    # Fixed slices of the work list: a resumed batch is the same batch, so its samples are the same.
    batches = [work[i : i + size] for i in range(0, len(work), size)]
    generated = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar, store.appending() as add:
        task = bar.add_task("generating teacher samples", total=len(work), completed=len(work) - len(todo))
        for batch in batches:
            if not todo.intersection(batch):
                continue
            seeds = [sample_seed(cfg.sampling.seed, p, s) for p, s in batch]
            results = _generate_batch(
                cfg, model, tokenizer, device, [texts[p] for p, _ in batch], seeds, stop_ids
            )
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
    return generated
