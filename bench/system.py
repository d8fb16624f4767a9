"""What machine a report was measured on: CPU model, cores, ISA flags, OS, library versions, GPUs.

Every figure in a bench report is only meaningful next to this: int8 speed-ups depend on
VNNI/AMX, thread counts on the cores the process was allowed, and so on. Nothing here imports
a runtime; versions come from package metadata.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
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

LIBRARIES = (
    "edgedistill",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "llama-cpp-python",
    "gguf",
    "torch",
    "transformers",
    "tokenizers",
    "nncf",
    "psutil",
    "scipy",
)


def _cpuinfo() -> tuple[str | None, set[str]]:
    path = Path("/proc/cpuinfo")
    model, flags = None, set()
    if not path.is_file():
        return platform.processor() or None, flags
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or None, flags


def cpu_info() -> dict[str, Any]:
    import psutil

    model, flags = _cpuinfo()
    isa = {name: name in flags for name in ISA_FLAGS}
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    freq = None
    try:
        f = psutil.cpu_freq()
        freq = round(f.max or f.current, 1) if f else None
    except (NotImplementedError, FileNotFoundError, OSError):
        pass
    return {
        "model": model,
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "allowed_cpus": allowed,
        "max_mhz": freq,
        "isa": isa,
        "vnni": isa["avx512_vnni"] or isa["avx_vnni"],
        "amx": isa["amx_int8"] or isa["amx_bf16"],
        "avx512": isa["avx512f"],
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def nvidia_gpus() -> list[str] | None:
    """GPU names from nvidia-smi, or None when no NVIDIA driver answers."""
    if not Path("/proc/driver/nvidia/version").exists() and shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names or None


def system_info() -> dict[str, Any]:
    import psutil

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_info(),
        "memory_total_mb": round(psutil.virtual_memory().total / 1e6, 1),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "platform": platform.platform(),
            "libc": " ".join(platform.libc_ver()).strip() or None,
        },
        "load_average": [round(x, 2) for x in load] if load else None,
        "nvidia_gpus": nvidia_gpus(),
        "libraries": library_versions(),
    }
