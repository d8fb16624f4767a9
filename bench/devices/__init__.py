"""Where a bench measures: the device a target names, as a plugin like a runtime.

``device: {kind: local}`` (the default) is this host. ``ssh`` (a board: system ssh/scp), ``adb``
(a phone: ``adb -s SERIAL push/shell``, with a Python-free ``llama-bench`` path) and
``arm64-emulated`` (an aarch64 userland under qemu-user, for ARM64 parity; its latency is never a
device latency) run the *same* protocol on the device: the artifact copied and re-hashed there,
one fresh worker process per measurement, RSS read on the device. Modules are imported only when
their kind is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

DEVICES: dict[str, str] = {
    "local": "edgedistill.bench.devices.local:LocalDevice",
    "ssh": "edgedistill.bench.devices.ssh:SshDevice",
    "adb": "edgedistill.bench.devices.adb:AdbDevice",
    "arm64-emulated": "edgedistill.bench.devices.qemu:Arm64EmulatedDevice",
}


def open_device(spec: dict[str, Any] | None, run_dir: Path) -> Any:
    """The device object for a target's ``device`` block (a dict); not yet connected (call ``open``)."""
    spec = dict(spec or {"kind": "local"})
    module, _, attr = DEVICES[spec.get("kind") or "local"].partition(":")
    return getattr(importlib.import_module(module), attr)(spec, run_dir)


__all__ = ["DEVICES", "open_device"]
