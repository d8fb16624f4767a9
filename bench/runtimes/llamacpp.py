"""llama.cpp (llama-cpp-python): GGUF artifacts, BERT embedders and decoders.

- BERT GGUF (feature extraction): one inference = one decode of ``batch`` token sequences with
  mean pooling (the same calls as ``Llama.embed``, fed fixed-length token ids); accuracy goes
  through ``Llama.embed`` on text, i.e. llama.cpp's own tokenizer, as an application would.
- Decoder GGUF (text generation): one request = prompt evaluation, then greedy decoding of
  ``generate_tokens`` tokens with the KV cache; time to first token and decode tokens/s are
  recorded per request.

``n_threads`` (and ``n_threads_batch``) default to the target's ``threads``; ``n_gpu_layers``
offloads layers (a CUDA build of llama-cpp-python is needed, else the target is skipped).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill import numerics
from edgedistill.bench.runtimes.base import WORKLOAD_TEXT, Runtime, Session, Text


def _context_length(gguf_file: Path) -> int | None:
    """The model's trained context length, from a header checked before llama.cpp opens the file."""
    from edgedistill.export.gguf.header import gguf_context_length, read_gguf_header

    return gguf_context_length(read_gguf_header(gguf_file))


class LlamaCppSession(Session):
    def __init__(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]):
        super().__init__(artifact, options)
        import llama_cpp

        self._llama_cpp = llama_cpp
        o = options["llamacpp"]
        model = next((f for f in artifact.get("model_files", []) if f.endswith(".gguf")), "model.gguf")
        path = Path(artifact["path"]) / model
        self.embedding = self.task == "feature-extraction"
        threads = int(o.get("n_threads") or options["threads"])
        threads_batch = int(o.get("n_threads_batch") or threads)
        kv_type = llama_cpp.GGML_TYPE_F32 if o.get("kv_cache") == "f32" else llama_cpp.GGML_TYPE_F16
        trained = _context_length(path)
        if self.embedding:
            longest = max(max(workload["sequence_lengths"]), int(workload["eval_max_length"]))
            n_ctx = max(trained or 512, longest * int(workload["batch_size"]))
            n_batch = n_ctx  # BERT is non-causal: a whole batch must fit one micro-batch
        else:
            n_ctx = int(workload["prompt_tokens"]) + int(workload["generate_tokens"]) + 1
            if trained is not None and n_ctx > trained:
                raise ValueError(
                    f"the workload needs {n_ctx} tokens of context (prompt_tokens + generate_tokens), but "
                    f"{path.name} was trained for {trained}; shorten the target's workload"
                )
            n_batch = min(512, n_ctx)
        kwargs: dict[str, Any] = dict(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=threads,
            n_threads_batch=threads_batch,
            n_gpu_layers=int(o.get("n_gpu_layers", 0)),
            type_k=kv_type,
            type_v=kv_type,
            flash_attn=bool(o.get("flash_attn", False)),
            logits_all=False,
            embedding=self.embedding,
            verbose=False,
        )
        if self.embedding:
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        extra = o.get("extra_buffers")
        extra = numerics.llama_cpp_extra_buffers_default() if extra is None else bool(extra)
        with numerics.llama_cpp_extra_buffers(extra):
            self.llm = llama_cpp.Llama(**kwargs)
        self.n_vocab = self.llm.n_vocab()
        self.effective = {
            "n_threads": threads,
            "n_threads_batch": threads_batch,
            "n_gpu_layers": kwargs["n_gpu_layers"],
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "kv_cache": o.get("kv_cache", "f16"),
            "flash_attn": kwargs["flash_attn"],
            "extra_buffers": extra,
            "mode": "embedding (mean pooling)" if self.embedding else "greedy generation with KV cache",
        }
        info = {"llama_cpp_python": getattr(llama_cpp, "__version__", None)}
        try:
            info["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
            info["supports_gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
        except (AttributeError, OSError):
            pass
        unused = numerics.llama_cpp_unused_isa(info.get("system_info", ""))
        if unused:
            info["unused_host_isa"] = unused
            info["warnings"] = [numerics.llama_cpp_rebuild_hint(unused)]
        self.runtime_info = info

    # ------------------------------------------------------------------ embeddings
    def _ids(self, length: int, offset: int = 0) -> list[int]:
        """``length`` token ids of real text, starting ``offset`` tokens in, with llama.cpp's markers."""
        text = WORKLOAD_TEXT
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        while len(ids) < length + offset + 2:
            text += WORKLOAD_TEXT
            ids = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if self.embedding:  # BERT: [CLS] ... [SEP]
            return ids[:1] + ids[1 + offset : offset + length - 1] + ids[-1:]
        return ids[:1] + ids[1 + offset : offset + length]

    def workload_feeds(self, workload: dict[str, Any]) -> list[tuple[str, Any]]:
        if not self.embedding:
            raise ValueError("a decoder GGUF is measured by generation (prompt + generate_tokens), not feeds")
        feeds = []
        for length in workload["sequence_lengths"]:
            rows = [self._ids(int(length), offset=7 * b) for b in range(int(workload["batch_size"]))]
            feeds.append((f"seq{length}", rows))
        return feeds

    def infer(self, feed: list[list[int]]) -> Any:
        llm, llama_cpp = self.llm, self._llama_cpp
        llm._ctx.kv_cache_clear()
        llm._batch.reset()
        for seq, ids in enumerate(feed):
            llm._batch.add_sequence(ids, seq, True)
        llm._ctx.decode(llm._batch)
        llm._batch.reset()
        n_embd = llm.n_embd()
        return [llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, seq)[:n_embd] for seq in range(len(feed))]

    def predict(self, texts: Sequence[Text], max_length: int) -> np.ndarray:
        if not self.embedding:
            raise ValueError("accuracy of decoder GGUF artifacts is not measured")
        if any(isinstance(t, tuple) for t in texts):
            raise ValueError("llama.cpp embeds single texts; text pairs are not supported for GGUF artifacts")
        return np.asarray(self.llm.embed(list(texts), truncate=True), dtype=np.float32)

    # ------------------------------------------------------------------ generation
    supports_generate = True

    def prompt(self, n_tokens: int) -> list[int]:
        return self._ids(n_tokens)

    def _next_token(self) -> int:
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))
        return int(np.argmax(logits))

    def generate(self, prompt: list[int], n_tokens: int) -> tuple[float, float]:
        llm = self.llm
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        token = self._next_token()
        first = time.perf_counter()
        for _ in range(n_tokens - 1):
            llm.eval([token])
            token = self._next_token()
        end = time.perf_counter()
        return first - start, end - start

    def close(self) -> None:
        self.llm.close()


class LlamaCppRuntime(Runtime):
    name = "llamacpp"
    formats = ("gguf",)
    requires = (("llama_cpp", "gguf"),)
    packages = ("llama-cpp-python", "gguf")

    def unavailable_reason(self, options: dict[str, Any], requires: str) -> str | None:
        if int(options["llamacpp"].get("n_gpu_layers", 0)) == 0:
            return None
        import llama_cpp

        if not llama_cpp.llama_supports_gpu_offload():
            return (
                "this llama-cpp-python build cannot offload layers to a GPU (a CPU-only build); "
                "install a CUDA build (CMAKE_ARGS='-DGGML_CUDA=on' pip install llama-cpp-python)"
            )
        return None

    def load(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]) -> Session:
        return LlamaCppSession(artifact, options, workload)
