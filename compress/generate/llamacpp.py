"""The llama.cpp engine of `edgedistill generate`, and the one opener of a GGUF LM in llama.cpp.

`open_llama` is what every compress verb that runs a GGUF LM in llama.cpp uses (generate here,
synthesize's LM source). `LlamaCppEngine` runs a GGUF teacher as it is, without dequantizing it:
prompts are formatted and tokenized by the teacher's HF tokenizer exactly as the torch engine does,
the token ids go to llama.cpp one sequence at a time, and responses are decoded by that tokenizer.

Sampling maps onto a llama.cpp sampler chain in transformers' order: the repetition penalty (CTRL
style, over the prompt and the response, as transformers' processor sees them), temperature,
top-k, top-p, then a draw seeded per sample. Where it differs from the torch engine:

- the draw: llama.cpp's own RNG (std::mt19937 seeded with 32 bits: the sample's 63-bit seed modulo
  2^32 - 1, as llama.cpp reads 2^32 - 1 as "pick a random seed") instead of a torch generator. The
  same seed gives the same response in every run, but not the torch engine's response: the
  distribution is the same, the samples are not, so the engine belongs to the store's identity;
- the numbers: llama.cpp's kernels on the file's quantized weights (activations rounded to q8
  blocks) instead of float32 matmuls on dequantized weights: near-ties can flip, even greedily;
- the torch engine pads a batch on the left and its repetition penalty then also sees the pad
  (end) token of shorter prompts; here each sequence runs alone, unpadded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgedistill.compress.generate.config import GenerateConfig, GenerateError

logger = logging.getLogger(__name__)

# llama.cpp reads this seed as "draw a random one" (LLAMA_DEFAULT_SEED).
_RANDOM_SEED = 0xFFFFFFFF


def idle_cores() -> int:
    """The cores this process may use that the 1-minute load average leaves idle, at least 1.

    llama.cpp's workers spin at every barrier: measured here, with another process holding one of
    two cores, 2 threads ran about 4x slower than 1 (FIELD-NOTES.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cores - busy)


def open_llama(file: Path, *, purpose: str, n_ctx: int, n_batch: int, threads: int, seed: int = 0) -> Any:
    """A checked GGUF LM (the caller ran the bounded header check) opened in llama.cpp.

    Prompt batches and single tokens use the same ``threads``: llama-cpp-python's default for
    batches is every core, whose spinning workers made prompts several times slower on a shared
    machine. Extra weight buffers follow `edgedistill.numerics` (off on AMX CPUs, where they crash).
    """
    from edgedistill import numerics

    try:
        import llama_cpp
    except ImportError:
        from edgedistill.errors import MissingDependencyError

        raise MissingDependencyError("llama-cpp-python", "gguf", purpose) from None
    try:
        with numerics.llama_cpp_extra_buffers(numerics.llama_cpp_extra_buffers_default()):
            return llama_cpp.Llama(
                model_path=str(file),
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed & 0x7FFFFFFF,
                verbose=False,
            )
    except (ValueError, RuntimeError) as exc:
        raise GenerateError(f"llama.cpp could not load {file}: {exc}") from exc


class LlamaCppEngine:
    """A GGUF teacher run by llama.cpp on the CPU (``engine: llama.cpp``)."""

    name = "llama.cpp"

    def __init__(self, cfg: GenerateConfig) -> None:
        from types import SimpleNamespace

        from edgedistill.compress.models import load_gguf_config, load_tokenizer

        self.cfg = cfg
        self.file = cfg.teacher.gguf_file
        assert self.file is not None, "engine llama.cpp needs a GGUF teacher (GenerateConfig checks it)"
        self.tokenizer = load_tokenizer(str(self.file), trust_remote_code=cfg.teacher.trust_remote_code)
        # The end tokens the torch engine stops at: its generation config comes from the model
        # config transformers derives from the file (eos_token_id), plus the tokenizer's.
        from edgedistill.compress.generate.torch_engine import stop_token_ids

        eos = load_gguf_config(str(self.file)).get("eos_token_id")
        self.stop_ids = stop_token_ids(SimpleNamespace(eos_token_id=eos), self.tokenizer)
        self.threads = cfg.llama_cpp.threads or idle_cores()
        self.threads_from = "config" if cfg.llama_cpp.threads else "idle cores (load average)"
        self.llm: Any = None
        self.prompt_ids: dict[str, list[int]] = {}

    def teacher_info(self) -> dict[str, Any]:
        from edgedistill.compress.data import tokenizer_fingerprint
        from edgedistill.compress.models import teacher_provenance

        provenance = teacher_provenance(self.cfg.teacher) or {}
        template = getattr(self.tokenizer, "chat_template", None)
        material = {
            "gguf_sha256": provenance.get("sha256"),
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "chat_template": template if self.cfg.chat_template else None,
        }
        return {
            "path": self.cfg.teacher.path,
            "class": f"llama.cpp {provenance.get('architecture')}",
            "dtype": provenance.get("file_type"),  # the file's own types: nothing is dequantized
            "vocab_size": len(self.tokenizer),
            "fingerprint": hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20],
            "gguf": provenance,
        }

    def prepare(self, texts: list[str]) -> None:
        """Tokenize every prompt as the torch engine does and open llama.cpp with a context that
        holds the longest prompt and its response (from all prompts, so a resume opens the same)."""
        for text in texts:
            self.prompt_ids[text] = self.tokenizer(
                text, add_special_tokens=not self.cfg.chat_template, return_token_type_ids=False
            )["input_ids"]
        longest = max((len(ids) for ids in self.prompt_ids.values()), default=1)
        self.llm = open_llama(
            self.file,
            purpose="engine: llama.cpp (generate)",
            n_ctx=longest + self.cfg.sampling.max_new_tokens,
            n_batch=self.cfg.llama_cpp.prompt_batch,
            threads=self.threads,
        )
        rows = self.llm.n_vocab()
        too_big = sorted({t for ids in self.prompt_ids.values() for t in ids if t >= rows})
        if too_big:
            raise GenerateError(
                f"the teacher's tokenizer gives token ids {too_big[:5]} that {self.file} has no rows for "
                f"({rows}); the file's tokenizer and weights disagree. Use --engine torch, or another file."
            )

    def run_info(self) -> dict[str, Any]:
        import llama_cpp

        return {
            "engine": self.name,
            "llama_cpp_python": llama_cpp.__version__,
            "threads": self.threads,
            "threads_from": self.threads_from,
            "prompt_batch": self.llm.n_batch if self.llm is not None else None,
            "context": self.llm.n_ctx() if self.llm is not None else None,
        }

    def generate_batch(self, texts: list[str], seeds: list[int]) -> list[dict[str, Any]]:
        return [self._generate(self.prompt_ids[text], seed) for text, seed in zip(texts, seeds, strict=True)]

    def _sampler(self, seed: int, prompt: list[int]) -> Any:
        from llama_cpp import _internals

        sampling, rows = self.cfg.sampling, self.llm.n_vocab()
        sampler = _internals.LlamaSampler()
        if len(self.tokenizer) < rows:  # rows the tokenizer cannot decode, masked as the torch engine does
            sampler.add_logit_bias(rows, dict.fromkeys(range(len(self.tokenizer), rows), -float("inf")))
        if sampling.repetition_penalty != 1.0:
            # the window covers the whole sequence; transformers penalizes the prompt's tokens too
            sampler.add_penalties(rows, self.llm.n_ctx(), sampling.repetition_penalty, 0.0, 0.0)
        if not sampling.do_sample:
            sampler.add_greedy()
        else:
            # transformers' order: the temperature first, so top-p keeps mass of the tempered distribution
            sampler.add_temp(sampling.temperature)
            if sampling.top_k:
                sampler.add_top_k(sampling.top_k)
            if sampling.top_p < 1.0:
                sampler.add_top_p(sampling.top_p, 1)
            sampler.add_dist(seed % _RANDOM_SEED)
        if sampling.repetition_penalty != 1.0:
            for token in prompt:
                sampler.accept(token)
        return sampler

    def _generate(self, prompt: list[int], seed: int) -> dict[str, Any]:
        import llama_cpp

        llm, limit, stops = self.llm, self.cfg.sampling.max_new_tokens, set(self.stop_ids)
        sampler = self._sampler(seed, prompt)
        try:
            llm.reset()  # every sequence from an empty cache: what one gets cannot depend on the one before
            llm.eval(prompt)
            new: list[int] = []
            while True:
                token = llama_cpp.llama_sampler_sample(sampler.sampler, llm.ctx, -1)  # also accepts it
                new.append(int(token))
                if token in stops or len(new) == limit:
                    break
                llm.eval([token])
        finally:
            sampler.close()
        end = len(new) - 1 if new[-1] in stops else None
        return {
            "response": self.tokenizer.decode(new if end is None else new[:end], skip_special_tokens=True),
            "finish_reason": "length" if end is None else "stop",
            "prompt_tokens": len(prompt),
            "response_tokens": len(new),
            "token_ids": new,  # not stored: the record keeps the text
        }
