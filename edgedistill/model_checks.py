"""Checks on a model before anything is loaded: config.json, remote code, size, safetensors and GGUF headers.

Every verb that opens a model folder runs them (distill, finetune and generate through
`edgedistill.compress.models.check_model_folder`, export through
`edgedistill.export.student.inspect_student`), so a hostile or broken folder is refused with a `ModelLoadError`
that names the file, the field or byte offset and the fix, before transformers allocates a
tensor or imports a module: a config asking for 10**12 parameters would otherwise be allocated
(and the process OOM-killed), an ``auto_map`` would need code from the folder, and a safetensors
header whose length prefix says 2**60 would be read into memory. A GGUF teacher (one ``.gguf``
file) gets the project's bounded GGUF header reader (`edgedistill.gguf_header`: counts, sizes,
types and offsets against the file) and the same memory check on its dequantized size, before
transformers or the gguf package parse it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from edgedistill.errors import ModelLoadError
from edgedistill.io import read_json_object

MAX_CONFIG_BYTES = 4 << 20  # config.json of real models is a few KB (a big id2label: some 100 KB)
MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own reference reader refuses larger headers
# Bytes per element of every safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def read_config_json(folder: Path, role: str) -> dict[str, Any]:
    """config.json as a dict: size capped, valid JSON, an object."""
    fix = f"The {role} folder needs the config.json `save_pretrained` writes."
    return read_json_object(folder / "config.json", fix, ModelLoadError, MAX_CONFIG_BYTES)


def check_remote_code(config: dict[str, Any], folder: Path, role: str, trust_remote_code: bool) -> None:
    """An ``auto_map`` needs the folder's own code unless transformers knows the model_type natively
    (then, without trust_remote_code, transformers uses its own class and the folder's code never runs)."""
    if "auto_map" not in config or trust_remote_code:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("model_type") in CONFIG_MAPPING_NAMES:
        return
    raise ModelLoadError(
        f"{folder / 'config.json'}: field auto_map names Python code in the folder "
        f"({', '.join(map(str, config['auto_map']))[:200]}) for model_type {config.get('model_type')!r}, which "
        f"transformers does not know, so loading would run that code. Refused by default: use a model "
        f"transformers supports natively, or, only for code you trust, set `{role}.trust_remote_code: true` "
        f"(CLI: --trust-remote-code)."
    )


def _int_field(config: dict[str, Any], names: tuple[str, ...], path: Path) -> int | None:
    for name in names:
        if name in config and config[name] is not None:
            value = config[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelLoadError(f"{path}: field {name} is {value!r}; it must be a non-negative integer")
            return value
    return None


def estimate_bytes(config: dict[str, Any], path: Path) -> tuple[int, dict[str, int]]:
    """Rough parameter bytes of a transformer with this config (embeddings + layers), and the sizes used."""
    sub = config.get("text_config")
    if isinstance(sub, dict):  # multimodal configs keep the language model's sizes here
        config = {**config, **sub}
    hidden = _int_field(config, ("hidden_size", "n_embd", "d_model", "dim"), path) or 0
    layers = _int_field(config, ("num_hidden_layers", "n_layer", "num_layers", "n_layers"), path) or 0
    ffn = _int_field(config, ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim"), path) or 4 * hidden
    vocab = _int_field(config, ("vocab_size",), path) or 0
    positions = _int_field(config, ("max_position_embeddings", "n_positions"), path) or 0
    experts = max(1, _int_field(config, ("num_local_experts", "num_experts", "n_routed_experts"), path) or 1)
    params = (vocab + positions) * hidden + layers * (4 * hidden * hidden + 2 * hidden * ffn * experts)
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32").removeprefix("torch.")
    sizes = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": ffn,
        "vocab_size": vocab,
    }
    return params * _TORCH_DTYPE_BYTES.get(dtype, 4), sizes


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else physical pages; None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(config: dict[str, Any], folder: Path, role: str) -> None:
    """Refuse a config whose weights cannot fit in the memory available now, before allocating."""
    path = folder / "config.json"
    need, sizes = estimate_bytes(config, path)
    available = available_memory_bytes()
    if available is not None and need > available:
        shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ModelLoadError(
            f"{path}: this {role} would need about {need / 1e9:.3g} GB for its weights alone ({shown}), "
            f"but {available / 1e9:.3g} GB of memory is available. Check these fields, or use a machine "
            "with more memory."
        )


_REFETCH = "Copy the file again, or re-save the model with `model.save_pretrained(folder)`."


def check_safetensors(path: Path) -> None:
    """The header of one .safetensors file: length prefix, JSON, dtypes, offsets inside the file, no overlap."""
    size = path.stat().st_size
    if size < 8:
        raise ModelLoadError(
            f"{path}: {size} bytes, shorter than the 8-byte header length; the file is truncated. {_REFETCH}"
        )
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > MAX_SAFETENSORS_HEADER or n > size - 8:
            raise ModelLoadError(
                f"{path}: byte 0: header length {n} but the file has {size - 8} bytes after it "
                f"(limit {MAX_SAFETENSORS_HEADER}); the file is truncated or not safetensors: save it again"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(
            f"{path}: byte 8: the header is not valid JSON ({exc}); the file is corrupt"
        ) from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: byte 8: the header is not a JSON object; the file is corrupt")
    data_len = size - 8 - n
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise ModelLoadError(f"{where}: header entry is not an object; the file is corrupt")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise ModelLoadError(
                f"{where}: unknown dtype {dtype!r}; the file is corrupt or from a newer format"
            )
        ok_shape = isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
        ok_offsets = (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets)
        )
        if not ok_shape or not ok_offsets:
            raise ModelLoadError(
                f"{where}: shape {shape!r} / data_offsets {offsets!r} are not non-negative integers"
            )
        begin, end = offsets
        count = 1
        for d in shape:
            count *= d
        if not begin <= end <= data_len:
            raise ModelLoadError(
                f"{where}: data_offsets [{begin}, {end}] run past the {data_len} data bytes; the file is truncated. "
                + _REFETCH
            )
        if end - begin != count * DTYPE_BYTES[dtype]:
            raise ModelLoadError(
                f"{where}: {end - begin} bytes for shape {shape} of {dtype} ({count * DTYPE_BYTES[dtype]} expected)"
            )
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            raise ModelLoadError(
                f"{path}: tensors {n0!r} [{b0}, {e0}] and {n1!r} (from {b1}) overlap; the file is corrupt"
            )


_GGUF_FIX = (
    "the file is truncated, damaged or not a GGUF file: download it again (compare its sha256 with the "
    "publisher's) or use a file written by a trusted tool"
)


def check_gguf_file(path: Path, role: str):
    """A GGUF model file before transformers parses it: the bounded header reader's checks, an
    architecture named, and its weights dequantized to float32 fitting in the memory available now.
    Returns the checked `GGUFHeader`."""
    from edgedistill.gguf_header import gguf_parameter_count, read_gguf_header

    header = read_gguf_header(path, error=ModelLoadError, fix=_GGUF_FIX)
    arch = header.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelLoadError(
            f"{path}: the GGUF metadata has no general.architecture, so no model class can be chosen; {_GGUF_FIX}"
        )
    if not header.tensors:
        raise ModelLoadError(f"{path}: the GGUF file holds no tensors; {_GGUF_FIX}")
    need = gguf_parameter_count(header) * 4  # transformers dequantizes every tensor to float32
    available = available_memory_bytes()
    if available is not None and need > available:
        raise ModelLoadError(
            f"{path}: this {role} dequantizes to about {need / 1e9:.3g} GB of float32 weights "
            f"({len(header.tensors)} tensors), but {available / 1e9:.3g} GB of memory is available. Use a "
            "machine with more memory."
        )
    return header


def check_folder_contents(folder: Path, role: str, trust_remote_code: bool) -> None:
    """Every check above, on a local model folder that has a config.json."""
    config = read_config_json(folder, role)
    check_remote_code(config, folder, role, trust_remote_code)
    check_model_size(config, folder, role)
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path)
