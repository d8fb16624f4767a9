"""Running GGUF files through llama.cpp (llama-cpp-python): embeddings and next-token logits, tokenization, llama.cpp's log."""

from __future__ import annotations

import ctypes
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill import numerics
from edgedistill.errors import MissingDependencyError
from edgedistill.export.core import (
    ExportError,
)
from edgedistill.export.gguf.checkpoint import normalize_task
from edgedistill.quant.gguf_types import _import_gguf

log = logging.getLogger(__name__)


def _import_llama_cpp(purpose: str):
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependencyError("llama-cpp-python", "gguf", purpose) from None
    return llama_cpp


@contextmanager
def _captured_llama_log(llama_cpp) -> Iterator[list[str]]:
    """Route llama.cpp's log into a list for the duration (restoring llama-cpp-python's handler)."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def _collect(level, text, user_data):  # noqa: ARG001
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def read_gguf_summary(gguf_file: Path) -> dict[str, Any]:
    """Tensor names/types, row lengths and the metadata that matters, read with ``gguf.GGUFReader``."""
    from edgedistill.export.gguf.header import read_gguf_header

    gguf = _import_gguf()
    read_gguf_header(gguf_file)  # bounded checks first: gguf-py trusts the header's counts
    try:
        reader = gguf.GGUFReader(str(gguf_file))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{gguf_file} is not a readable GGUF file: {exc}") from exc

    def value(key: str, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = value("general.architecture")
    tensors = {t.name: t for t in reader.tensors}
    pooling = value(f"{arch}.pooling_type")
    merges = reader.fields.get("tokenizer.ggml.merges")
    token_list = reader.fields.get("tokenizer.ggml.tokens")
    meta = {
        "general.architecture": arch,
        "general.file_type": value("general.file_type"),
        f"{arch}.context_length": value(f"{arch}.context_length"),
        f"{arch}.embedding_length": value(f"{arch}.embedding_length"),
        f"{arch}.block_count": value(f"{arch}.block_count"),
        "tokenizer.ggml.model": value("tokenizer.ggml.model"),
        "tokenizer.ggml.pre": value("tokenizer.ggml.pre"),
        "n_tokens": len(token_list.data) if token_list is not None else 0,
        "n_merges": len(merges.data) if merges is not None else 0,
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "padding_token_id": value("tokenizer.ggml.padding_token_id"),
        "add_bos_token": value("tokenizer.ggml.add_bos_token"),
    }
    if arch == "bert":
        meta["bert.pooling_type"] = gguf.PoolingType(pooling).name if pooling is not None else None
        meta["bert.attention.causal"] = value("bert.attention.causal")
        meta["tokenizer.ggml.token_type_count"] = value("tokenizer.ggml.token_type_count")
    return {
        "tensors": {name: t.tensor_type.name for name, t in tensors.items()},
        # GGUFReader shapes are in ggml order: ne0, the row length, first.
        "row_lengths": {name: int(t.shape[0]) for name, t in tensors.items()},
        "tensor_types": dict(sorted(Counter(t.tensor_type.name for t in tensors.values()).items())),
        "metadata": meta,
    }


# A runner's context is what its caller will run, rounded up to this many tokens (and never past
# the file's context). Sized from the file instead, a SmolLM2 file (8192 tokens, vocabulary 49,152)
# made every causal-lm runner allocate 8192 x 49152 float32 logits (1.6 GB) for a 100-token prompt.
CONTEXT_STEP = 256


def context_for(needed_tokens: int, trained: int | None, what: str = "the sequence") -> int:
    """n_ctx for sequences of up to ``needed_tokens``: rounded up to CONTEXT_STEP, at most the
    file's context ``trained``; an ExportError when the sequence itself does not fit in it."""
    if trained is not None and needed_tokens > trained:
        raise ExportError(
            f"{what} needs {needed_tokens} tokens of context, but the GGUF file's context is {trained} "
            "tokens (its <arch>.context_length); shorten the prompt or the number of generated tokens"
        )
    rounded = -(-max(needed_tokens, 1) // CONTEXT_STEP) * CONTEXT_STEP
    return min(rounded, trained) if trained is not None else rounded


class GGUFRunner:
    """One GGUF file loaded in llama-cpp-python: tokenize, embed (mean-pooled) or next-token logits.

    Token ids can be fed directly so parity checks use exactly the HF tokenization. ``n_ctx`` is the
    longest sequence the caller will run (prompt + generated tokens; default CONTEXT_STEP): the
    context, batch and (with causal-lm) every-position logits buffer are sized from it, not from
    the file's context, which only bounds it.
    """

    def __init__(
        self,
        gguf_file: Path,
        *,
        task: str,
        n_threads: int = 1,
        kv_cache: str = "f16",
        vocab_only: bool = False,
        n_ctx: int | None = None,
    ):
        llama_cpp = _import_llama_cpp("Running GGUF files")
        self._llama_cpp = llama_cpp
        self.task = normalize_task(task)
        if self.task not in ("feature-extraction", "causal-lm"):
            raise ExportError(f"GGUF runs feature-extraction or causal-lm, not {task!r}")
        summary = read_gguf_summary(Path(gguf_file))["metadata"]
        trained = summary.get(f"{summary['general.architecture']}.context_length")
        self.n_ctx_trained = int(trained) if trained is not None else None
        if n_ctx is None:  # no length said: one step of context, or the file's whole context if smaller
            n_ctx = min(CONTEXT_STEP, self.n_ctx_trained or CONTEXT_STEP)
        self.n_ctx = context_for(n_ctx, self.n_ctx_trained, f"running {Path(gguf_file).name}")
        embedding = self.task == "feature-extraction"
        kwargs: dict[str, Any] = dict(
            model_path=str(gguf_file),
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,
            # BERT is non-causal: a whole sequence must fit one micro-batch.
            n_ubatch=self.n_ctx,
            logits_all=not embedding,
            vocab_only=vocab_only,
            verbose=False,
        )
        if embedding and not vocab_only:
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            kwargs["embedding"] = True
        else:
            kwargs["embedding"] = False
        # One thread by default, the same for single tokens and batches: llama.cpp's workers
        # spin-wait at every barrier, and with another process holding a core a tiny model ran
        # ~200x slower on 2 threads (and with llama-cpp-python's default of 1 vs 2 threads).
        kwargs["n_threads"] = kwargs["n_threads_batch"] = n_threads
        if kv_cache not in ("f16", "f32"):
            raise ExportError(f"kv_cache must be 'f16' (llama.cpp's default) or 'f32', not {kv_cache!r}")
        kv_type = llama_cpp.GGML_TYPE_F32 if kv_cache == "f32" else llama_cpp.GGML_TYPE_F16
        kwargs["type_k"] = kwargs["type_v"] = kv_type
        # llama.cpp logs warnings even with verbose=False (e.g. that it pads n_ctx); keep them
        # out of the console, and in the error when loading fails.
        with _captured_llama_log(llama_cpp) as lines:
            try:
                with numerics.llama_cpp_extra_buffers(numerics.llama_cpp_extra_buffers_default()):
                    self.llm = llama_cpp.Llama(**kwargs)
            except (ValueError, RuntimeError) as exc:
                tail = "".join(lines)[-1500:]
                raise ExportError(f"llama.cpp could not load {gguf_file}: {exc}\n{tail}") from exc

    def system_info(self) -> str | None:
        """llama.cpp's own list of the CPU features its kernels use here (AVX2, AVX512, AMX_INT8...)."""
        try:
            return self._llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        except (AttributeError, OSError):
            return None

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False))

    def _check_length(self, ids: Sequence[int]) -> None:
        if not ids:
            raise ExportError("cannot run an empty token sequence")
        if self.n_ctx_trained is not None and len(ids) > self.n_ctx_trained:
            raise ExportError(f"{len(ids)} tokens exceed the model's context of {self.n_ctx_trained}")
        if len(ids) > self.n_ctx:
            raise ExportError(
                f"{len(ids)} tokens exceed this runner's context of {self.n_ctx}; open GGUFRunner with "
                f"n_ctx={len(ids)} (the longest sequence it will run)"
            )

    def embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Mean-pooled, unnormalised embedding of one token sequence (same path as Llama.embed)."""
        self._check_length(ids)
        llm = self.llm
        # Llama.embed() only accepts text; these are the same internal calls with our ids.
        llm._ctx.kv_cache_clear()
        llm._batch.reset()
        llm._batch.add_sequence(list(ids), 0, True)
        llm._ctx.decode(llm._batch)
        llm._batch.reset()
        ptr = self._llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
        return np.array(ptr[: llm.n_embd()], dtype=np.float32)

    def logits_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of one token sequence: shape (len(ids), n_vocab)."""
        self._check_length(ids)
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def run(self, item: str | Sequence[int]) -> np.ndarray:
        ids = self.tokenize(item) if isinstance(item, str) else list(item)
        if self.task == "feature-extraction":
            return self.embed_ids(ids)
        return self.logits_ids(ids)[-1]

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> GGUFRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def gguf_task(gguf_file: Path) -> str:
    """The task a GGUF file serves, from its architecture: BERT embeds, decoders predict tokens."""
    arch = read_gguf_summary(Path(gguf_file))["metadata"]["general.architecture"]
    return "feature-extraction" if arch == "bert" else "causal-lm"


def run_gguf(gguf_file: Path, texts_or_token_ids: Sequence[str | Sequence[int]], *, task: str) -> np.ndarray:
    """Embeddings (n, hidden) for feature-extraction, or last-position logits (n, vocab) for causal-lm.

    Each item is a text (tokenized by llama.cpp, special tokens added) or a list of token ids.
    """
    items = list(texts_or_token_ids)
    if any(isinstance(item, str) for item in items):  # tokenized first: the context is sized from them
        with GGUFRunner(gguf_file, task=task, vocab_only=True) as vocab:
            items = [vocab.tokenize(item) if isinstance(item, str) else list(item) for item in items]
    with GGUFRunner(gguf_file, task=task, n_ctx=max(len(ids) for ids in items)) as runner:
        return np.stack([runner.run(ids) for ids in items])


def gguf_tokenize(gguf_file: Path, text: str, *, add_special: bool = True) -> list[int]:
    """llama.cpp's tokenization of ``text`` with the vocabulary stored in ``gguf_file``."""
    with GGUFRunner(gguf_file, task=gguf_task(gguf_file), vocab_only=True) as runner:
        return runner.tokenize(text, add_special=add_special)
