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

Engines (``engine:``): ``torch`` runs the teacher in transformers (a GGUF file dequantized to
float32), ``llama.cpp`` runs a GGUF file as it is on the CPU, fed the token ids of the same HF
tokenizer, one sequence at a time with the same per-sample seeds (its own RNG: the same
distribution, not the torch engine's samples; see `llamacpp`). ``auto`` picks llama.cpp for a GGUF
teacher on the CPU. The engine is part of a store's identity; each run records its engine, version,
threads and tokens/s in ``generate.json``'s ``runs``.

Where things are: `config` (GenerateConfig, SamplingConfig, LlamaCppConfig, seeds, resolve_engine),
`prompts` (read_prompts), `store` (the JSONL store, lock, resume checks, read_store, write_parquet),
`torch_engine` and `llamacpp` (the engines; `open_llama`, the one opener of a GGUF LM in llama.cpp),
`run` (generate), `cli` (``edgedistill generate``).
"""

from __future__ import annotations

from edgedistill.compress.generate.cli import add_generate_parser, cmd_generate
from edgedistill.compress.generate.config import (
    GENERATE_CONFIG_VERSION,
    GenerateConfig,
    GenerateError,
    LlamaCppConfig,
    SamplingConfig,
    identity_of,
    resolve_engine,
    sample_seed,
)
from edgedistill.compress.generate.prompts import PROMPT_SUFFIXES, prompts_fingerprint, read_prompts
from edgedistill.compress.generate.run import generate
from edgedistill.compress.generate.store import (
    DUPLICATES_FILE,
    LOCK_FILE,
    META_FILE,
    PARQUET_FILE,
    SAMPLES_FILE,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    prompt_digest,
    read_store,
    record_id,
    write_parquet,
)

__all__ = [
    "DUPLICATES_FILE",
    "GENERATE_CONFIG_VERSION",
    "LOCK_FILE",
    "META_FILE",
    "PARQUET_FILE",
    "PROMPT_SUFFIXES",
    "SAMPLES_FILE",
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "GenerateConfig",
    "GenerateError",
    "LlamaCppConfig",
    "SamplingConfig",
    "add_generate_parser",
    "cmd_generate",
    "generate",
    "identity_of",
    "prompt_digest",
    "prompts_fingerprint",
    "read_prompts",
    "read_store",
    "record_id",
    "resolve_engine",
    "sample_seed",
    "write_parquet",
]
