"""Writing a GGUF file: hyper-parameters, tensors by the plan, llama.cpp's k-quant quantizer, the file summary."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.export.core import (
    ExportError,
)
from edgedistill.export.gguf.checkpoint import (
    _arch_array,
    _numeric_warnings,
    read_config,
    read_weights,
    resolve_arch,
    rope_settings,
)
from edgedistill.export.gguf.runner import _captured_llama_log, _import_llama_cpp, read_gguf_summary
from edgedistill.export.gguf.tokenizer import _write_tokenizer
from edgedistill.io import atomic_path
from edgedistill.quant.gguf_arch import GGUFArch, bert_problems
from edgedistill.quant.gguf_plan import plan_tensors
from edgedistill.quant.gguf_types import (
    K_QUANT_TYPES,
    LLAMA_CPP_PRECISIONS,
    PYTHON_PRECISIONS,
    QK_K,
    _import_gguf,
    normalize_precision,
)

log = logging.getLogger(__name__)


def _write_hparams(writer, gguf, arch: GGUFArch, config: dict[str, Any], n_vocab: int) -> None:
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(heads)
    if arch.model_type == "bert":
        problems = bert_problems(config)
        if problems:
            raise ExportError("this BERT cannot run in llama.cpp: " + "; ".join(problems))
        writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        # Without a pooling type llama.cpp's embed() returns one vector per token.
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        return
    if config.get("hidden_act", "silu") != "silu":
        raise ExportError(f"{arch.hf_class} with hidden_act={config['hidden_act']!r}: llama.cpp uses SiLU")
    if config.get("use_sliding_window"):
        raise ExportError(f"{arch.hf_class} with use_sliding_window=true is not supported by llama.cpp")
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_vocab_size(n_vocab)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(head_dim)
    theta, scaling = rope_settings(config)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
        elif kind != "default":
            raise ExportError(
                f"rope_scaling type {kind!r} is not supported by the GGUF exporter (only linear); "
                f"export to ONNX or OpenVINO instead"
            )


def _ftype_for(gguf, precision: str):
    L = gguf.LlamaFileType
    if precision in LLAMA_CPP_PRECISIONS:
        return L[LLAMA_CPP_PRECISIONS[precision]]
    return L.ALL_F32 if precision == "f32" else L[f"MOSTLY_{precision.upper()}"]


def _write_file(
    gguf, model_dir: Path, out_file: Path, precision: str, arch: GGUFArch, config: dict[str, Any]
) -> dict[str, Any]:
    """Write ``out_file`` at a Python-quantizable precision; return fallbacks/overrides/skips."""
    tensors = read_weights(model_dir)
    plan = plan_tensors(config, {k: a.shape for k, a in tensors.items()}, precision, source=str(model_dir))
    n_vocab = next(r.shape[0] for r in plan.tensors if r.kind == "TOKEN_EMBD")

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(model_dir).name)
    writer.add_file_type(_ftype_for(gguf, precision))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_hparams(writer, gguf, arch, config, n_vocab)
    tokenizer_info = _write_tokenizer(writer, gguf, arch, Path(model_dir), config, n_vocab)

    for rule in plan.tensors:
        array = _arch_array(arch, config, rule.name, tensors[rule.source])
        qtype = gguf.GGMLQuantizationType[rule.ggml_type]
        try:
            data = gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
        except gguf.QuantError as exc:  # the plan checked the block size: this is a bug, not a fallback
            raise ExportError(f"gguf refused to store {rule.gguf_name} as {rule.ggml_type}: {exc}") from exc
        writer.add_tensor(rule.gguf_name, data, raw_dtype=qtype)

    writer.write_header_to_file(path=out_file)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "fallbacks": plan.fallbacks(),
        "overrides": plan.overrides(),
        "skipped_tensors": list(plan.skipped),
        "tokenizer": tokenizer_info,
        "expected_tensors": sorted({r.gguf_name for r in plan.tensors}),
        "quantizable_tensors": [r.gguf_name for r in plan.tensors if not r.float_only],
        "output_tensor": plan.output_tensor,
    }


def _llama_cpp_quantize(gguf, src: Path, dst: Path, precision: str) -> list[str]:
    llama_cpp = _import_llama_cpp(f"GGUF {precision} (llama.cpp's k-quant quantizer)")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(_ftype_for(gguf, precision))
    params.nthread = max(1, os.cpu_count() or 1)
    with _captured_llama_log(llama_cpp) as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        tail = "".join(lines)[-1500:]
        raise ExportError(f"llama.cpp failed to quantize {src.name} to {precision} (code {rc}):\n{tail}")
    return lines


_FALLBACK_LINE = re.compile(
    r"(?P<tensor>\S+)\s+- ncols\s+(?P<cols>\d+) not divisible by (?P<block>\d+) "
    r"\(required for type\s+(?P<wanted>\S+)\) -> falling back to\s+(?P<got>\S+)"
)


def _k_quant_report(
    tensor_types: dict[str, str],
    row_lengths: dict[str, int],
    log_lines: list[str],
    quantizable: list[str],
    output_name: str,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(fallbacks, overrides) of a llama.cpp k-quant file.

    Every quantizable tensor (2-D weights that are not norms or position/token-type tables) that
    did not get a k-quant is reported: with llama.cpp's own reason when its log gives one,
    otherwise with the row length. The output projection (token_embd when there is no
    output.weight) is llama.cpp's deliberate choice (Q6_K, or Q8_0 when rows are not a multiple
    of 256) and is listed as an override.
    """
    logged = {m["tensor"]: m for m in map(_FALLBACK_LINE.search, "".join(log_lines).splitlines()) if m}
    fallbacks, overrides = [], []
    for name in quantizable:
        got = tensor_types[name]
        if got in K_QUANT_TYPES:
            continue
        row = row_lengths[name]
        if name == output_name:
            overrides.append(
                {"tensor": name, "type": got, "reason": "llama.cpp keeps the output projection at 6-8 bits"}
            )
        elif name in logged:
            m = logged[name]
            fallbacks.append(
                {
                    "tensor": name,
                    "wanted": m["wanted"].upper(),
                    "got": got,
                    "reason": f"row length {m['cols']} is not a multiple of {m['block']} (k-quant super-block)",
                }
            )
        else:
            reason = (
                f"row length {row} is not a multiple of {QK_K}" if row % QK_K else "llama.cpp tensor rule"
            )
            fallbacks.append({"tensor": name, "wanted": "k-quant", "got": got, "reason": reason})
    return fallbacks, overrides


def write_gguf(model_dir: Path, out_file: Path, precision: str, *, task: str) -> dict[str, Any]:
    """Write ``model_dir`` (an HF safetensors folder) as one GGUF file at ``precision``.

    The file appears at ``out_file`` only when it was fully written and read back with
    ``gguf.GGUFReader``. Returns tensor-type counts, per-tensor fallbacks/overrides, the tensors
    skipped on purpose and a metadata summary.
    """
    model_dir, out_file = Path(model_dir), Path(out_file)
    precision = normalize_precision(precision)
    config = read_config(model_dir)
    arch = resolve_arch(config, task)
    gguf = _import_gguf()

    log_lines: list[str] = []
    with atomic_path(out_file) as tmp:
        if precision in PYTHON_PRECISIONS:
            info = _write_file(gguf, model_dir, tmp, precision, arch, config)
        else:
            # k-quants: an f32 file beside the output, then llama.cpp's quantizer on it.
            with tempfile.TemporaryDirectory(prefix=".gguf-f32-", dir=out_file.parent) as scratch:
                f32_file = Path(scratch) / "model-f32.gguf"
                info = _write_file(gguf, model_dir, f32_file, "f32", arch, config)
                log_lines = _llama_cpp_quantize(gguf, f32_file, tmp, precision)
        summary = read_gguf_summary(tmp)
        missing = sorted(set(info["expected_tensors"]) - set(summary["tensors"]))
        if missing:
            raise ExportError(f"the GGUF written for {model_dir} lacks tensors: {', '.join(missing)}")
        if precision in LLAMA_CPP_PRECISIONS:
            info["fallbacks"], info["overrides"] = _k_quant_report(
                summary["tensors"],
                summary["row_lengths"],
                log_lines,
                info["quantizable_tensors"],
                info["output_tensor"],
            )
        size_bytes = tmp.stat().st_size

    result = {
        "file": str(out_file),
        "format": "gguf",
        "architecture": arch.model_type,
        "gguf_architecture": summary["metadata"]["general.architecture"],
        "task": arch.task,
        "precision": precision,
        "quantizer": "llama.cpp llama_model_quantize" if precision in LLAMA_CPP_PRECISIONS else "gguf.quants",
        "size_bytes": size_bytes,
        "tensor_types": summary["tensor_types"],
        "tensors": summary["tensors"],
        "fallbacks": info["fallbacks"],
        "overrides": info["overrides"],
        "skipped_tensors": info["skipped_tensors"],
        "metadata": summary["metadata"],
        # how tokenizer.ggml.pre was decided (byte-level BPE): teacher file, check hash or shape
        "tokenizer_pre_from": info["tokenizer"].get("tokenizer_pre_from"),
        "warnings": info["tokenizer"]["warnings"] + _numeric_warnings(arch, config),
    }
    summary_line = next((ln.strip() for ln in log_lines if "required fallback quantization" in ln), None)
    if summary_line:
        result["llama_cpp_fallback_summary"] = summary_line.split(": ", 1)[-1]
    if result["fallbacks"]:
        log.warning(
            "GGUF %s: %d tensor(s) could not take the requested type and fell back: %s",
            precision,
            len(result["fallbacks"]),
            ", ".join(f"{fb['tensor']}->{fb['got']}" for fb in result["fallbacks"]),
        )
    return result
