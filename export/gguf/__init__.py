"""GGUF export for llama.cpp: write, quantize, run and parity-check GGUF files.

Files are written with the `gguf` package itself (its tensor-name maps, writer, vocab helpers and
Python quantizers), not with llama.cpp's convert script. Two families are supported:

- BERT encoders (``model_type: bert``, task feature-extraction): llama.cpp runs them as sentence
  embedders with mean pooling over a WordPiece vocabulary.
- Llama / Qwen2 decoders (task causal-lm, a.k.a. text-generation): GPT-2 style byte-level BPE
  tokenizers, or SentencePiece when the folder ships ``tokenizer.model``.

Precisions: f32, f16, q8_0, q5_1, q5_0, q4_1 and q4_0 are produced by ``gguf.quants``; k-quants
(q4_k_m, q6_k, ...) by llama.cpp's own quantizer (``llama_cpp.llama_model_quantize``) from an f32
file, so they follow llama.cpp's per-tensor rules exactly. Tensors that cannot take the requested
type (a row length that is not a multiple of the block size) fall back to another type; every
fallback is listed in the result, never hidden.

Which GGML type each tensor gets is decided in one place, `edgedistill.quant.gguf_plan.plan_tensors`:
the writer follows it, and so does GGUF quantization-aware training (`edgedistill.compress.gguf_quant`),
so a student trained through fake quantization is exported to exactly the weights it was trained with.

Where things are:

- `checkpoint`: config.json, task and architecture, safetensors weights, RoPE layout fixes.
- `tokenizer`: WordPiece / byte-level BPE / SentencePiece metadata for llama.cpp.
- `bpe_pre`: a byte-level BPE's ``tokenizer.ggml.pre``: the GGUF teacher's, else llama.cpp's
  convert-script check hash, else the tokenizer.json pre-tokenizer's shape.
- `writer`: `write_gguf` (hyper-parameters, tensors by the plan, llama.cpp k-quants).
- `runner`: `GGUFRunner`, `run_gguf`, `gguf_tokenize`, `read_gguf_summary` (llama-cpp-python).
- `plugin`: `GGUFPlugin`, the ``gguf`` format of ``edgedistill export``; its parity (llama.cpp against
  torch) is the export verb's, `edgedistill.export.parity`.

``gguf`` and ``llama_cpp`` are imported only inside functions: ``pip install 'edgedistill[gguf]'``.
"""

from __future__ import annotations

from edgedistill.errors import ExportError, UnsupportedModelError
from edgedistill.export.gguf.checkpoint import (
    TASK_ALIASES,
    _arch_array,
    normalize_task,
    read_config,
    read_weights,
    resolve_arch,
    rope_settings,
)
from edgedistill.export.gguf.plugin import GGUFPlugin
from edgedistill.export.gguf.runner import GGUFRunner, gguf_task, gguf_tokenize, read_gguf_summary, run_gguf
from edgedistill.export.gguf.tokenizer import BPE_PRE_TOKENIZERS
from edgedistill.export.gguf.writer import write_gguf
from edgedistill.quant.gguf_arch import (
    ARCHITECTURES,
    RULE_ONLY_ARCHITECTURES,
    GGUFArch,
    supported_architectures,
)
from edgedistill.quant.gguf_plan import TensorPlan, TensorRule, plan_tensors
from edgedistill.quant.gguf_types import (
    K_QUANT_TYPES,
    LLAMA_CPP_PRECISIONS,
    PRECISION_ALIASES,
    PRECISIONS,
    PYTHON_PRECISIONS,
    QK_K,
    normalize_precision,
)

__all__ = [
    "ARCHITECTURES",
    "BPE_PRE_TOKENIZERS",
    "ExportError",
    "GGUFArch",
    "GGUFPlugin",
    "GGUFRunner",
    "K_QUANT_TYPES",
    "LLAMA_CPP_PRECISIONS",
    "PRECISIONS",
    "PRECISION_ALIASES",
    "PYTHON_PRECISIONS",
    "QK_K",
    "RULE_ONLY_ARCHITECTURES",
    "TASK_ALIASES",
    "TensorPlan",
    "TensorRule",
    "UnsupportedModelError",
    "_arch_array",
    "gguf_task",
    "gguf_tokenize",
    "normalize_precision",
    "normalize_task",
    "plan_tensors",
    "read_config",
    "read_gguf_summary",
    "read_weights",
    "resolve_arch",
    "rope_settings",
    "run_gguf",
    "supported_architectures",
    "write_gguf",
]
