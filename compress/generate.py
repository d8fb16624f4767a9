"""Sequence-level KD data: sample a teacher LM's responses to prompts into a resumable store.

``edgedistill generate --teacher DIR --prompts FILE --out DIR`` (or ``generate(GenerateConfig(...), out)``)
writes, in ``OUT/``:

- ``samples.jsonl``: one JSON object per line with ``id`` (sha256 of prompt and response),
  ``prompt_id`` (0-based position in the prompts file), ``sample_index``, ``prompt`` (the text
  the teacher was conditioned on, chat template included when one was applied), ``response``,
  ``seed``, ``finish_reason`` ("stop": an end-of-sequence token; "length": max_new_tokens hit),
  ``prompt_tokens`` and ``response_tokens`` (generated tokens, the end token included), and
  ``source_prompt`` (the prompt as written) when a chat template was applied. The ``prompt`` /
  ``response`` columns are what the distill data path reads (prompt tokens masked in the loss).
- ``duplicates.jsonl``: samples whose (prompt, response) pair is already stored (not stored twice).
- ``generate.json``: config, teacher fingerprint, prompts fingerprint, counts, run history.
- ``samples.parquet``: with ``output_format: parquet``, the same records, written at the end.

Resuming: every record is flushed and fsynced as it is written; a rerun skips finished
(prompt_id, sample_index) pairs and cuts off a line torn by a kill. Each sample draws from its
own random generator seeded from (seed, prompt_id, sample_index), and batches are fixed slices
of the work list (a partly done batch is generated again whole, and only its missing samples
are written), so a resumed run stores exactly what an uninterrupted one would with the same
batch size. A changed config, teacher or prompts file is refused unless ``force`` (append to the
store anyway) or ``restart`` (delete it and start again).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from edgedistill.cliargs import add_set_flag
from edgedistill.compress.config import ModelSource
from edgedistill.config import StrictModel, dump_config
from edgedistill.errors import DataError, EdgeDistillError
from edgedistill.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

GENERATE_CONFIG_VERSION = 1
STORE_FORMAT = "edgedistill.generate"
STORE_FORMAT_VERSION = 1
SAMPLES_FILE = "samples.jsonl"
DUPLICATES_FILE = "duplicates.jsonl"
META_FILE = "generate.json"
PARQUET_FILE = "samples.parquet"
LOCK_FILE = ".generate.lock"
PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".tsv", ".csv", ".parquet")
# Config keys that do not change what is generated: a resume may change them freely.
_NOT_IDENTITY = {"batch_size", "device", "output_format", "teacher", "prompts"}


class GenerateError(EdgeDistillError):
    """Generation cannot start or go on (bad prompts, a store made with other settings...)."""


# --------------------------------------------------------------------------- config


class SamplingConfig(StrictModel):
    """How each response is drawn. ``do_sample: false`` is greedy decoding (the temperature and
    top-k/top-p filters are then unused)."""

    num_samples: int = Field(1, gt=0, description="Responses drawn per prompt.")
    max_new_tokens: int = Field(128, gt=0, description="Longest response, in tokens.")
    do_sample: bool = Field(True, description="Sample (true) or decode greedily (false).")
    temperature: float = Field(1.0, gt=0, description="Divides the logits before sampling.")
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set with this mass."
    )
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens (0: no limit).")
    repetition_penalty: float = Field(
        1.0, gt=0, description="CTRL-style penalty on tokens already seen (1: off)."
    )
    seed: int = Field(
        0, ge=0, description="Base seed; each sample's seed derives from it, the prompt and the index."
    )


class GenerateConfig(StrictModel):
    """Everything `edgedistill generate` needs. `version` pins the format."""

    version: Literal[1] = GENERATE_CONFIG_VERSION
    teacher: ModelSource = Field(description="The teacher: an HF causal-LM folder (or hub id).")
    prompts: str = Field(
        description="Prompts file: .txt (one prompt a line), .jsonl/.json (a `prompt` field), or .tsv/.csv/.parquet."
    )
    prompt_column: str = Field("prompt", description="Field/column holding the prompt (not for .txt).")
    chat_template: bool = Field(
        False, description="Wrap each prompt as a user message with the tokenizer's chat template."
    )
    system_prompt: str | None = Field(None, description="System message (needs chat_template).")
    sampling: SamplingConfig = SamplingConfig()
    batch_size: int = Field(8, gt=0, description="Sequences generated together (left-padded).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Teacher weights: auto = float32 on CPU, the checkpoint's dtype on GPU."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="jsonl: samples.jsonl only; parquet: also samples.parquet at the end."
    )

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.system_prompt is not None and not self.chat_template:
            raise ValueError(
                "system_prompt needs chat_template: true (a system message needs a chat template)"
            )
        return self


def identity_of(cfg: GenerateConfig) -> dict[str, Any]:
    """The config values that decide what is generated (a resume must not change them)."""
    return {k: v for k, v in dump_config(cfg).items() if k not in _NOT_IDENTITY}


def sample_seed(seed: int, prompt_id: int, sample_index: int) -> int:
    """The seed of one sample: a 63-bit hash of (seed, prompt_id, sample_index), the same in every run."""
    digest = hashlib.sha256(f"edgedistill-generate:{seed}:{prompt_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def record_id(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\0{response}".encode()).hexdigest()[:16]


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- prompts


def read_prompts(path: str | Path, column: str = "prompt") -> list[str]:
    """Prompts from a file, in file order. Refuses the file, naming every bad line, rather than
    skipping: a skipped prompt would silently shift the prompt ids of a resumed run."""
    name = str(path)
    file = Path(path).expanduser()
    if not file.exists():
        raise GenerateError(f"prompts file not found: {name}. Pass --prompts with an existing file.")
    suffix = file.suffix.lower()
    if file.is_dir() or suffix not in PROMPT_SUFFIXES:
        raise GenerateError(
            f"{name}: unsupported prompts file type '{suffix or '(folder)'}'. Use a .txt file (one prompt a "
            f"line), a .jsonl file (one JSON object a line with a '{column}' field), or {', '.join(PROMPT_SUFFIXES[2:])}."
        )
    if suffix == ".txt":
        prompts = _read_txt(file, name)
    elif suffix == ".jsonl" or (suffix == ".json" and not _starts_with_array(file)):
        prompts = _read_jsonl(file, name, column)
    else:
        prompts = _read_with_data_readers(name, column)
    if not prompts:
        raise GenerateError(f"{name}: no prompts in the file. Add at least one prompt (.txt: one a line).")
    return prompts


def _read_txt(file: Path, name: str) -> list[str]:
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise GenerateError(
            f"{name}, line {line}: not UTF-8 (byte {exc.start}). Save the file as UTF-8."
        ) from None
    # Blank lines separate nothing and are skipped; a prompt spanning lines needs .jsonl.
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _starts_with_array(file: Path) -> bool:
    with open(file, "rb") as fh:
        return fh.read(4096).lstrip().startswith(b"[")


def _read_jsonl(file: Path, name: str, column: str) -> list[str]:
    from edgedistill.data import iter_jsonl

    prompts: list[str] = []
    problems: list[str] = []
    for line_number, record, problem in iter_jsonl(file):
        if problem is not None:
            problems.append(f"line {line_number}: {problem[1]}")
        elif column not in record:
            keys = ", ".join(map(str, record)) or "(none)"
            problems.append(f"line {line_number}: no '{column}' field (fields: {keys})")
        elif not isinstance(record[column], str) or not record[column].strip():
            problems.append(f"line {line_number}: '{column}' is {record[column]!r}, expected non-empty text")
        else:
            prompts.append(record[column])
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise GenerateError(
            f"{name}: {len(problems)} bad line(s):\n{shown}{more}\nEach line must be a JSON object with a "
            f"non-empty '{column}' text field (choose another field with --prompt-column)."
        )
    return prompts


def _read_with_data_readers(name: str, column: str) -> list[str]:
    from edgedistill.compress.config import DataConfig
    from edgedistill.data import read_examples

    cfg = DataConfig(train=name, text_column=column, label_column=None, strict=True)
    try:
        examples, _report = read_examples(name, cfg, needs_labels=False, num_labels=None)
    except DataError as exc:
        raise GenerateError(
            f"{exc}\n(for `edgedistill generate` the prompt column is set with --prompt-column, "
            "and every row needs a non-empty prompt)"
        ) from None
    return [ex.text for ex in examples]


def prompts_fingerprint(prompts: list[str]) -> str:
    return hashlib.sha256(json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- the store


@dataclass
class _Store:
    """What the store on disk already holds, and appends to it (each line flushed and fsynced)."""

    out: Path
    # (prompt_id, sample_index) -> digest of the prompt it was generated for
    done: dict[tuple[int, int], str] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)  # record ids: sha256 of (prompt, response)
    stored: int = 0
    duplicates: int = 0
    finish_reasons: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    response_tokens: int = 0
    torn_bytes: int = 0

    @classmethod
    def open(cls, out: Path) -> _Store:
        store = cls(out)
        for record in _read_jsonl_store(out / SAMPLES_FILE, store):
            store._count(record)
        for record in _read_jsonl_store(out / DUPLICATES_FILE, store):
            key = (int(record["prompt_id"]), int(record["sample_index"]))
            store.done[key] = record.get("prompt_digest", "")
            store.duplicates += 1
        return store

    def _count(self, record: dict[str, Any]) -> None:
        digest = prompt_digest(record["prompt"])
        self.done[(int(record["prompt_id"]), int(record["sample_index"]))] = digest
        self.ids.add(record["id"])
        self.stored += 1
        self.finish_reasons[record.get("finish_reason")] += 1
        self.prompt_tokens += int(record.get("prompt_tokens") or 0)
        self.response_tokens += int(record.get("response_tokens") or 0)

    @contextlib.contextmanager
    def appending(self) -> Iterator[Callable[[dict[str, Any]], bool]]:
        """Yield ``add(record) -> stored``: a record is stored unless its (prompt, response) pair is."""
        with open(self.out / SAMPLES_FILE, "ab") as samples, open(self.out / DUPLICATES_FILE, "ab") as dups:

            def add(record: dict[str, Any]) -> bool:
                if record["id"] in self.ids:
                    entry = {
                        "prompt_id": record["prompt_id"],
                        "sample_index": record["sample_index"],
                        "seed": record["seed"],
                        "duplicate_of": record["id"],
                        "prompt_digest": prompt_digest(record["prompt"]),
                    }
                    _append_line(dups, entry)
                    self.done[(record["prompt_id"], record["sample_index"])] = entry["prompt_digest"]
                    self.duplicates += 1
                    return False
                _append_line(samples, record)
                self._count(record)
                return True

            yield add

    def counts(self) -> dict[str, Any]:
        return {
            "records_stored": self.stored,
            "duplicates_skipped": self.duplicates,
            "samples_done": self.stored + self.duplicates,
            "finish_reasons": dict(self.finish_reasons),
            "prompt_tokens": self.prompt_tokens,
            "response_tokens": self.response_tokens,
        }


def _append_line(fh: Any, record: dict[str, Any]) -> None:
    # One write per record; a kill can only tear the last line, which the next open cuts off.
    fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    fh.flush()
    os.fsync(fh.fileno())


def _read_jsonl_store(path: Path, store: _Store | None) -> list[dict[str, Any]]:
    """Records of a store file. A torn last line (a kill mid-write: no final newline, or a final
    line that is not JSON) is ignored, and cut off the file when a ``store`` is being opened for
    writing; damage anywhere else is an error."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # bytes up to the last complete line
    lines = data[:keep].split(b"\n")[:-1]
    records = []
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if number == len(lines):  # e.g. zero bytes after a power loss: as good as torn
                keep -= len(raw) + 1
                break
            raise GenerateError(
                f"{path}, line {number}: damaged record ({exc}). Fix or delete that line, or start the "
                "store again with --restart."
            ) from None
        records.append(record)
    if keep < len(data) and store is not None:
        logger.warning(
            "%s: cutting off %d bytes of a line torn by an interrupted run", path, len(data) - keep
        )
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        store.torn_bytes += len(data) - keep
    return records


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One writer per store: a second run into the same folder would interleave records."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(out / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GenerateError(
                f"another `edgedistill generate` is writing to {out}; wait for it to finish or use another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clear_store(out: Path) -> None:
    for name in (SAMPLES_FILE, DUPLICATES_FILE, META_FILE, PARQUET_FILE):
        (out / name).unlink(missing_ok=True)


def _check_resume(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the stored run and this one (empty: the store can be continued)."""
    problems = []
    old_cfg, new_cfg = previous.get("identity", {}), current["identity"]
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if key == "sampling":
            old_s, new_s = old_cfg.get(key) or {}, new_cfg.get(key) or {}
            problems += [
                f"sampling.{k}: stored {old_s.get(k)!r}, now {new_s.get(k)!r}"
                for k in sorted(set(old_s) | set(new_s))
                if old_s.get(k) != new_s.get(k)
            ]
        elif old_cfg.get(key) != new_cfg.get(key):
            problems.append(f"{key}: stored {old_cfg.get(key)!r}, now {new_cfg.get(key)!r}")
    old_p, new_p = previous.get("prompts", {}), current["prompts"]
    if old_p.get("fingerprint") != new_p["fingerprint"]:
        problems.append(
            f"prompts: the prompts differ ({old_p.get('path')}: {old_p.get('count')} prompts, "
            f"now {new_p['path']}: {new_p['count']} prompts)"
        )
    if "teacher" in current:
        old_t, new_t = previous.get("teacher", {}), current["teacher"]
        if old_t.get("dtype") != new_t["dtype"]:
            problems.append(
                f"teacher dtype: stored {old_t.get('dtype')}, now {new_t['dtype']} (with dtype: auto this follows "
                "the device; pass --dtype to match the stored one)"
            )
        elif old_t.get("fingerprint") != new_t["fingerprint"]:
            problems.append(
                f"teacher: other weights or tokenizer (stored {old_t.get('path')} fingerprint "
                f"{old_t.get('fingerprint')}, now {new_t['path']} fingerprint {new_t['fingerprint']})"
            )
    return problems


def _refuse_mix(out: Path, problems: list[str]) -> GenerateError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return GenerateError(
        f"{out} holds samples generated with other settings:\n{listed}\nRerun with the original settings to "
        "resume, --restart to delete the store and start again, --force to add to it anyway (records keep "
        "their own seed), or choose another --out."
    )


def read_store(out: str | Path) -> list[dict[str, Any]]:
    """The records of a store (samples.jsonl), in the order they were written."""
    return _read_jsonl_store(Path(out) / SAMPLES_FILE, None)


def write_parquet(out: str | Path) -> Path:
    """samples.jsonl -> samples.parquet (atomically)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise GenerateError(
            "output_format: parquet needs the Python package 'pyarrow', which is not installed. Install it "
            "with: pip install pyarrow (or use the default jsonl store)"
        ) from None
    out = Path(out)
    records = read_store(out)
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    table = pa.table({name: [r.get(name) for r in records] for name in columns})
    with atomic_path(out / PARQUET_FILE) as tmp:
        pq.write_table(table, tmp)
    return out / PARQUET_FILE


# --------------------------------------------------------------------------- the teacher


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


# --------------------------------------------------------------------------- the verb


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
    meta_path = out / META_FILE
    if meta_path.is_file():
        try:
            previous = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise GenerateError(f"{meta_path} is damaged ({exc}); start again with --restart") from None
        if previous.get("format") != STORE_FORMAT:
            raise GenerateError(f"{out} holds something else than a generate store; choose another --out")
        return previous
    if (out / SAMPLES_FILE).exists():
        raise GenerateError(
            f"{out} has {SAMPLES_FILE} but no {META_FILE}, so its settings are unknown. Use --restart to "
            "delete it and start again, or choose another --out."
        )
    return {}


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


# --------------------------------------------------------------------------- command line


def add_generate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `generate` verb: flags map onto GenerateConfig keys; ``--set KEY=VALUE`` reaches any other."""
    p = subparsers.add_parser(
        "generate",
        help="sample a teacher LM's responses to prompts (sequence-level KD data), resumable",
        description=(
            "Write OUT/samples.jsonl (prompt, response, ids, seeds, finish reasons, token counts) and "
            "OUT/generate.json. Rerunning the same command resumes; identical (prompt, response) pairs are "
            "stored once. Exit code 0 on success, 2 on a bad input or a store made with other settings, "
            "130 when interrupted."
        ),
    )
    p.add_argument(
        "config", nargs="?", help="GenerateConfig YAML (optional: flags alone can describe the run)"
    )
    p.add_argument(
        "--teacher", dest="teacher.path", help="teacher: HF causal-LM folder or hub id", metavar="DIR"
    )
    p.add_argument(
        "--prompts",
        dest="prompts",
        help=".txt (a prompt a line), .jsonl (a 'prompt' field), ...",
        metavar="FILE",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="store folder (rerunning the same command resumes)"
    )
    p.add_argument(
        "--prompt-column",
        dest="prompt_column",
        help="field holding the prompt (default: prompt)",
        metavar="NAME",
    )
    p.add_argument(
        "--chat-template",
        dest="chat_template",
        action="store_true",
        default=None,
        help="wrap prompts with the tokenizer's chat template",
    )
    p.add_argument(
        "--system-prompt", dest="system_prompt", help="system message (with --chat-template)", metavar="TEXT"
    )
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--num-samples", dest="sampling.num_samples", type=int, help="responses per prompt", metavar="N"
    )
    g.add_argument("--max-new-tokens", dest="sampling.max_new_tokens", type=int, metavar="N")
    g.add_argument("--temperature", dest="sampling.temperature", type=float, metavar="T")
    g.add_argument("--top-p", dest="sampling.top_p", type=float, metavar="P")
    g.add_argument("--top-k", dest="sampling.top_k", type=int, help="0: no limit", metavar="K")
    g.add_argument("--repetition-penalty", dest="sampling.repetition_penalty", type=float, metavar="X")
    g.add_argument("--seed", dest="sampling.seed", type=int, metavar="N")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--greedy", dest="sampling.do_sample", action="store_const", const=False, help="greedy decoding"
    )
    mode.add_argument(
        "--sample", dest="sampling.do_sample", action="store_const", const=True, help="sampling (default)"
    )
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", dest="batch_size", type=int, metavar="N")
    g.add_argument("--dtype", dest="dtype", choices=["auto", "float32", "float16", "bfloat16"])
    g.add_argument("--device", dest="device", choices=["auto", "cpu", "cuda"])
    g.add_argument(
        "--format", dest="output_format", choices=["jsonl", "parquet"], help="parquet: also samples.parquet"
    )
    g.add_argument("--trust-remote-code", dest="teacher.trust_remote_code", action="store_true", default=None)
    g.add_argument("--allow-pickle", dest="teacher.allow_pickle", action="store_true", default=None)
    again = g.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="add to a store made with other settings")
    again.add_argument("--restart", action="store_true", help="delete the store in --out and start again")
    add_set_flag(p, "any GenerateConfig key", "sampling.top_p=0.9")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
    return p


_NOT_CONFIG = {"config", "out", "force", "restart", "sets", "quiet", "func", "command", "verbose"}


def cmd_generate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgedistill.config import load_config

    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}
    overrides.update(dict(args.sets))
    cfg = load_config(GenerateConfig, args.config, overrides)
    report = generate(cfg, args.out, force=args.force, restart=args.restart, progress=not args.quiet)
    counts = report["counts"]
    Console(stderr=True).print(
        f"[bold green]done[/] {counts['records_stored']} samples stored, {counts['duplicates_skipped']} "
        f"duplicates skipped ({counts['samples_done']}/{counts['samples_planned']} done)\n"
        f"store: {Path(args.out) / SAMPLES_FILE}"
    )
    return 0
