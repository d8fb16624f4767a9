"""The CPU this process runs on: model, ISA flags, and the generation they make it.

Export parity and bench reports both record this, because the runtimes pick kernels (and, for
OpenVINO, even the arithmetic precision) by ISA: an int8 figure from an AVX2-only CPU and one
from a VNNI/AMX CPU are different measurements. Reads ``/proc/cpuinfo``; imports nothing heavy.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

# ISA extensions that change which kernels the runtimes pick (x86 names as in /proc/cpuinfo,
# ARM names as in its Features line).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
    "bf16",
)


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(model name, flags) from the text of ``/proc/cpuinfo`` (x86 ``flags`` or ARM ``Features``)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


@lru_cache(maxsize=1)
def read_cpuinfo() -> tuple[str | None, frozenset[str]]:
    """(model name, flags) of this CPU, read once."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return platform.processor() or None, frozenset()
    model, flags = parse_cpuinfo(path.read_text(errors="replace"))
    if platform.machine() in ("aarch64", "arm64") and "sse2" in flags:
        # qemu-user passes the x86 host's /proc/cpuinfo through: those flags are not this CPU's
        return None, frozenset()
    return model or platform.processor() or None, frozenset(flags)


def cpu_flags() -> frozenset[str]:
    """Every flag the kernel reports for this CPU."""
    return read_cpuinfo()[1]


def isa(flags: frozenset[str] | set[str] | None = None) -> dict[str, bool]:
    """The flags of `ISA_FLAGS` present on this CPU (or in ``flags``)."""
    present = cpu_flags() if flags is None else flags
    return {name: name in present for name in ISA_FLAGS}


def generation(flags: frozenset[str] | set[str] | None = None) -> str:
    """A short name of what the runtimes can use here, e.g. ``x86-64 AVX-512 VNNI BF16 AMX`` or ``x86-64 AVX2``."""
    f = isa(flags)
    arch = platform.machine() or "cpu"
    if f["asimd"] or arch in ("aarch64", "arm64"):
        parts = ["arm64"] + [
            name for key, name in (("asimddp", "dotprod"), ("i8mm", "i8mm"), ("sve", "SVE")) if f[key]
        ]
        return " ".join(parts)
    parts = [arch.replace("_", "-")]
    parts.append("AVX-512" if f["avx512f"] else "AVX2" if f["avx2"] else "AVX" if f["avx"] else "SSE")
    if f["avx512_vnni"] or f["avx_vnni"]:
        parts.append("VNNI")
    if f["avx512_bf16"] or f["amx_bf16"]:
        parts.append("BF16")
    if f["avx512_fp16"]:
        parts.append("FP16")
    if f["amx_int8"] or f["amx_bf16"]:
        parts.append("AMX")
    return " ".join(parts)


def has_vnni(flags: frozenset[str] | set[str] | None = None) -> bool:
    """int8 dot products that accumulate in int32 (VNNI or AMX): no int16 pair saturation."""
    f = isa(flags)
    return f["avx512_vnni"] or f["avx_vnni"] or f["amx_int8"]


def has_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """bf16 arithmetic in hardware (AVX-512 BF16 or AMX-BF16): OpenVINO's CPU plugin then defaults to bf16."""
    f = isa(flags)
    return f["avx512_bf16"] or f["amx_bf16"]


def cpu_summary() -> dict[str, Any]:
    """What a manifest or report row needs to say which CPU produced a figure."""
    model, flags = read_cpuinfo()
    return {
        "model": model,
        "architecture": platform.machine(),
        "generation": generation(flags),
        "isa_flags": sorted(k for k, v in isa(flags).items() if v),
        "logical_cores": os.cpu_count(),
    }
