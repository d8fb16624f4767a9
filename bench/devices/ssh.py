"""A board over SSH, with the system's ``ssh``/``scp`` (no Python SSH library).

Every call is non-interactive and bounded: ``BatchMode=yes`` (a key, never a password prompt),
``StrictHostKeyChecking=accept-new`` with a ``known_hosts`` in the run folder (the first contact
records the host key; a changed key is refused), ``ConnectTimeout`` and server-alive probes so a
host that disappears mid-measurement ends the call. ssh's exit code 255 (its own failure, not the
remote command's) becomes `DeviceError`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgedistill.bench.devices.base import DeviceError, RemoteDevice


class SshDevice(RemoteDevice):
    kind = "ssh"

    def __init__(self, spec: dict[str, Any], run_dir: Path):
        super().__init__(spec, run_dir)
        self.host = str(spec["host"])
        self.user = spec.get("user")
        self.port = int(spec.get("port") or 22)
        self.key = spec.get("key")
        self.known_hosts = self.run_dir / "known_hosts"
        # a Unix socket path must stay under 108 bytes: the control socket lives in a short folder
        self._control_dir = tempfile.mkdtemp(prefix="edssh-", dir="/tmp" if Path("/tmp").is_dir() else None)

    def address(self) -> str:
        who = f"{self.user}@{self.host}" if self.user else self.host
        return f"ssh://{who}:{self.port}"

    def options(self) -> list[str]:
        opts = [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"ConnectTimeout={max(1, int(self.timeout_s))}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
            # one connection for the run's many calls (closed in `close`)
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._control_dir}/%C",
            "-o", "ControlPersist=120",
        ]  # fmt: skip
        if self.key:
            opts += ["-i", str(Path(self.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        return opts

    def _target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def exec(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        cmd = ["ssh", *self.options(), "-p", str(self.port), self._target(), "--", self.shell_line(argv)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def check_transport(self, proc: subprocess.CompletedProcess, what: str) -> None:
        if proc.returncode == 255:
            raise DeviceError(
                f"{self.address()}: ssh failed during {what}: {(proc.stderr or '').strip()[-600:]}"
            )

    def _scp(self, src: str, dst: str, timeout: float, what: str) -> None:
        cmd = ["scp", "-q", "-p", *self.options(), "-P", str(self.port), src, dst]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"{self.address()}: scp of {what} did not finish within {timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            raise DeviceError(f"{self.address()}: scp of {what} failed: {(proc.stderr or '').strip()[-600:]}")

    def push(self, local: Path, remote: str, timeout: float) -> None:
        self._scp(str(local), f"{self._target()}:{remote}", timeout, str(local))

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self._scp(f"{self._target()}:{remote}", str(local), timeout, remote)

    def close(self) -> None:
        subprocess.run(
            ["ssh", *self.options(), "-p", str(self.port), "-O", "exit", self._target()],
            capture_output=True,
            timeout=15,
            stdin=subprocess.DEVNULL,
        )
        shutil.rmtree(self._control_dir, ignore_errors=True)
