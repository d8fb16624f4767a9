"""Reading a model folder for GGUF: config.json, the task and architecture, safetensors weights, RoPE layout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import ModelLoadError
from edgedistill.export.core import (
    ExportError,
    UnsupportedModelError,
)
from edgedistill.io import read_json_object
from edgedistill.model_checks import check_model_size, check_safetensors, read_config_json
from edgedistill.quant.gguf_arch import ARCHITECTURES, GGUFArch, supported_architectures

log = logging.getLogger(__name__)

TASK_ALIASES = {"text-generation": "causal-lm"}


def normalize_task(task: str) -> str:
    return TASK_ALIASES.get(task, task)


def read_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{model_dir} is not a model folder: it has no config.json. Pass a folder written by save_pretrained."
        )
    # the checks of every verb that opens a model folder (write_gguf is also called directly)
    config = read_config_json(Path(model_dir), "model")
    check_model_size(config, Path(model_dir), "model")
    return config


def resolve_arch(config: dict[str, Any], task: str) -> GGUFArch:
    model_type = config.get("model_type")
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        classes = ", ".join(config.get("architectures") or []) or "unknown class"
        raise UnsupportedModelError(
            f"GGUF export does not support model_type {model_type!r} ({classes}). Supported: "
            f"{supported_architectures()}. Export this model to ONNX or OpenVINO instead."
        )
    task = normalize_task(task)
    if task != arch.task:
        raise UnsupportedModelError(
            f"GGUF export of a {arch.model_type} model supports task {arch.task!r}, not {task!r}: "
            f"llama.cpp runs {arch.hf_class} for {arch.task} only. Use --task {arch.task} or another format."
        )
    return arch


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        fix = "Re-save the model with save_pretrained(..., safe_serialization=True)."
        weight_map = read_json_object(index, fix, ModelLoadError).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelLoadError(f"{index}: 'weight_map' is not an object of file names. {fix}")
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{index} lists shard(s) that are missing: {', '.join(missing)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
    if pickles:
        raise ModelLoadError(
            f"{model_dir} holds only pickle weights ({', '.join(pickles)}); GGUF export reads safetensors only. "
            f"Re-save the model with save_pretrained(..., safe_serialization=True)."
        )
    raise ModelLoadError(f"{model_dir} has a config.json but no *.safetensors weights")


def read_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors model folder as float32 numpy arrays (bf16/f16 upcast)."""
    import torch
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    for path in _weight_files(Path(model_dir)):
        check_safetensors(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    tensors[key] = fh.get_tensor(key).to(torch.float32).numpy()
        except Exception as exc:  # safetensors raises its own SafetensorError, OSError or ValueError
            raise ModelLoadError(
                f"cannot read weights from {path}: {exc}. The file is truncated or corrupted; copy it "
                f"again or re-save the model with save_pretrained(..., safe_serialization=True)."
            ) from exc
    return tensors


def rope_settings(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope theta, rope scaling or None) from a config.json of either transformers line.

    transformers 4.x writes ``rope_theta`` and ``rope_scaling`` at the top level; 5.x writes one
    ``rope_parameters`` dict holding ``rope_theta`` and ``rope_type`` (plus e.g. ``factor``) and
    leaves the old keys out, so reading only ``rope_theta`` would silently fall back to 10000.
    """
    params = config.get("rope_parameters")
    if isinstance(params, dict) and params:
        if "rope_theta" not in params and "rope_type" not in params:
            raise ExportError(
                f"rope_parameters per layer type ({', '.join(map(str, params))}) are not supported by the "
                f"GGUF exporter; export to ONNX or OpenVINO instead"
            )
        theta = float(params.get("rope_theta", config.get("rope_theta") or 10000.0))
        return theta, params
    return float(config.get("rope_theta") or 10000.0), config.get("rope_scaling") or None


def _permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved-pair layout."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _arch_array(arch: GGUFArch, config: dict[str, Any], name: str, array: np.ndarray) -> np.ndarray:
    """Arch-specific data fixes: Llama's q/k rows move to llama.cpp's RoPE layout.

    Only rows are reordered, so the quantization blocks (along each row) are the ones of the
    HF tensor: a fake-quantized HF weight and the GGUF weight hold the same blocks.
    """
    if arch.model_type != "llama":
        return array
    n_head = int(config["num_attention_heads"])
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return _permute_for_rope(array, n_head)
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return _permute_for_rope(array, int(config.get("num_key_value_heads") or n_head))
    return array


def _numeric_warnings(arch: GGUFArch, config: dict[str, Any]) -> list[str]:
    if arch.model_type == "bert" and config.get("hidden_act", "gelu") == "gelu":
        return [
            "llama.cpp's BERT computes GELU with the tanh approximation (HF 'gelu' is exact erf): even f32 "
            "embeddings differ from torch by ~1e-3 abs (all-MiniLM-L6-v2: 1.4e-3, cosine 0.999998)"
        ]
    return []
