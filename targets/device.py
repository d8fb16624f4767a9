"""Where a target's measurements run: ``device:`` in a target YAML (default ``{kind: local}``, this host)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgedistill.config import StrictModel


class DeviceSpec(StrictModel):
    """The device a target measures on; the bench runs the same protocol there (see `edgedistill.bench.devices`)."""

    kind: Literal["local", "ssh", "adb", "arm64-emulated"] = Field(
        "local",
        description="local: this host. ssh: a board (system ssh/scp). adb: a phone. "
        "arm64-emulated: an aarch64 userland under qemu-user (parity on ARM64; latency never judged).",
    )
    host: str | None = Field(None, description="ssh: host name or address.")
    user: str | None = Field(None, description="ssh: login user (default: ssh's own default).")
    port: int = Field(22, ge=1, le=65535, description="ssh: port.")
    key: str | None = Field(None, description="ssh: private key file (BatchMode: a key, never a password).")
    serial: str | None = Field(None, description="adb: the phone's serial (`adb devices`).")
    adb: str | None = Field(None, description="adb: the adb binary (default: `adb` on PATH).")
    python: str | None = Field(
        None,
        description="ssh/adb: the device's Python 3.10+ with numpy, tokenizers and the runtime "
        "(default python3 over ssh; unset over adb with `native` set: Python-free).",
    )
    workdir: str | None = Field(
        None,
        description="Folder on the device (default /tmp/edgedistill-bench, adb /data/local/tmp/edgedistill).",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="ssh ConnectTimeout and the base of every call's limit."
    )
    native: dict[str, str] = Field(
        default_factory=dict,
        description="adb: native benchmark binaries already on the phone, e.g. {llama-bench: /data/local/tmp/lcpp/llama-bench}.",
    )
    sysroot: str | None = Field(
        None, description="arm64-emulated: the sysroot cache (default ~/.cache/edgedistill/arm64)."
    )
    qemu_cpu: str | None = Field(None, description="arm64-emulated: qemu -cpu model (default: qemu's).")
    parity: bool = Field(
        True,
        description="Also run the artifact's parity sentences on the device and here, and record max abs "
        "diff, cosine and top-1 agreement of the outputs (non-local devices).",
    )

    @model_validator(mode="after")
    def _needs(self) -> DeviceSpec:
        if self.kind == "ssh" and not self.host:
            raise ValueError("device kind ssh needs host")
        if self.kind == "adb" and not self.serial:
            raise ValueError("device kind adb needs serial (see `adb devices`)")
        if self.native and self.kind != "adb":
            raise ValueError("device.native (Python-free binaries) is for kind adb")
        return self
