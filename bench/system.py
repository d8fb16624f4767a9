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

from edgedistill import host

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


def cpu_info() -> dict[str, Any]:
    import psutil

    model, flags = host.read_cpuinfo()
    isa = host.isa(flags)
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
        "bf16": host.has_bf16(flags),
        "generation": host.generation(flags),
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
