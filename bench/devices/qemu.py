"""``arm64-emulated``: the same remote protocol inside an aarch64 userland under qemu-user.

The "device" is the sysroot `qemu_sysroot` builds (Debian arm64 ``python3.11`` and aarch64 wheels
of numpy, onnxruntime, tokenizers; llama.cpp cross-built by `qemu_llamacpp` for GGUF, when cached)
run with ``qemu-aarch64 -L ROOT``: the runtime's aarch64
kernels (NEON, dotprod, i8mm where the emulated CPU offers them) compute the outputs, so parity
on ARM64 is proven for real. Its *latency* is the emulator's, not a device's: every entry is marked
``emulated: true`` and the gate never judges a latency budget on it. Files are shared with the host
(the work folder is a host folder), so push and pull are copies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgedistill.bench.devices import qemu_llamacpp, qemu_sysroot
from edgedistill.bench.devices.base import DeviceUnavailable, RemoteDevice

EMULATION_NOTE = "latency under emulation is not a device latency"


class Arm64EmulatedDevice(RemoteDevice):
    kind = "arm64-emulated"
    emulated = True

    def __init__(self, spec: dict[str, Any], run_dir: Path):
        super().__init__(spec, run_dir)
        self.base = Path(spec.get("sysroot") or qemu_sysroot.DEFAULT_ROOT).expanduser()
        self.cpu = spec.get("qemu_cpu")
        info = qemu_sysroot.sysroot_info(self.base)
        qemu = shutil.which("qemu-aarch64")
        if qemu is None:
            raise DeviceUnavailable("arm64-emulated: qemu-aarch64 not found (apt-get install qemu-user)")
        if info is None:
            raise DeviceUnavailable(
                f"arm64-emulated: no aarch64 sysroot at {self.base}; build it once with "
                "`python -m edgedistill.bench.devices.qemu_sysroot` (needs Debian and PyPI)"
            )
        root = str(qemu_sysroot.sysroot_root(self.base))
        self.site = root + info["site"]
        # llama.cpp cross-built for aarch64 (PyPI has no aarch64 wheel): GGUF runs when it is cached
        self.llamacpp = qemu_llamacpp.build_info(self.base)
        self.python = [qemu, *(["-cpu", self.cpu] if self.cpu else []), "-L", root, root + info["python"]]

    def default_workdir(self) -> str:
        return str(self.run_dir / "device")

    def address(self) -> str:
        return f"qemu-aarch64{':' + self.cpu if self.cpu else ''} -L {self.base / 'root'}"

    def python_env(self) -> list[str]:
        sites = [self.site] if self.llamacpp is None else [self.llamacpp["site"], self.site]
        path = os.pathsep.join([f"{self.workdir}/bundle.zip", *sites])
        return ["env", f"PYTHONPATH={path}", "PYTHONNOUSERSITE=1", "OPENBLAS_CORETYPE=ARMV8"]

    def child_prefix(self) -> list[str] | None:
        # the emulated runner starts its fresh worker through qemu again (execve of a host binary
        # from an emulated process runs natively), so each measurement is a fresh aarch64 process
        return list(self.python)

    def runtime_reason(self, runtime: Any) -> str | None:
        if runtime.name == "llamacpp" and self.llamacpp is None:
            return (
                f"no aarch64 llama.cpp build of llama-cpp-python {qemu_llamacpp.host_version()} in "
                f"{self.base / 'llamacpp'} (PyPI has no aarch64 wheel); cross-build it once with "
                "`python -m edgedistill.bench.devices.qemu_llamacpp` (minutes; "
                f"{qemu_llamacpp.APT_HINT})"
            )
        return super().runtime_reason(runtime)

    def exec(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        cwd = (
            self.workdir if Path(self.workdir).is_dir() else None
        )  # never a folder with an edgedistill/ in it
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd
        )

    def push(self, local: Path, remote: str, timeout: float) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote, local)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["cpu_model"] = f"qemu-aarch64 -cpu {self.cpu or 'max (qemu default)'}"
        out["emulation"] = {
            "emulator": "qemu-user",
            "note": EMULATION_NOTE,
            "sysroot": str(self.base),
            "wheels": (qemu_sysroot.sysroot_info(self.base) or {}).get("wheels"),
            "llamacpp_build": None if self.llamacpp is None else _build_facts(self.llamacpp),
        }
        return out


def _build_facts(info: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "llama_cpp_python",
        "ggml_version",
        "ggml_commit",
        "arch",
        "compiler",
        "cmake_flags",
        "system_info",
    )
    return {"summary": qemu_llamacpp.summary(info), **{k: info.get(k) for k in keys}}
