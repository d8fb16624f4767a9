"""Shared by the device tests: a tiny exported ONNX artifact (fp32 + int8) and a real sshd on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

_CACHE: dict[str, Any] = {}
SSHD = "/usr/sbin/sshd"


def tiny_onnx(tmp_path_factory, classifier: Path) -> dict[str, Path]:
    """onnx-fp32 and onnx-int8 of the conftest tiny classifier, exported once per session."""
    if "onnx" in _CACHE:
        return _CACHE["onnx"]
    from edgedistill.export import ExportConfig, export

    root = tmp_path_factory.mktemp("device_artifacts")
    cfg = ExportConfig(
        formats=["onnx"],
        precisions=["fp32", "int8"],
        parity_samples=6,
        calib_samples=6,
        int8_method="dynamic",
    )
    export(classifier, root / "cls", cfg)
    _CACHE["onnx"] = {"onnx-fp32": root / "cls" / "onnx-fp32", "onnx-int8": root / "cls" / "onnx-int8"}
    return _CACHE["onnx"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_missing_reason() -> str | None:
    if not Path(SSHD).is_file():
        return f"{SSHD} not installed (apt-get install openssh-server); the ssh runner is tested against a real sshd"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None or shutil.which("scp") is None:
        return "ssh/scp/ssh-keygen not installed (apt-get install openssh-client)"
    if os.geteuid() != 0:
        return (
            "sshd on a loopback port is started as root here (privilege separation needs root); run as root"
        )
    return None


class Sshd:
    """An sshd on 127.0.0.1:PORT with host and user keys in ``folder``; `stop` kills it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.key = self.folder / "user_ed25519"
        host_key = self.folder / "host_ed25519"
        for path in (self.key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (self.folder / "authorized_keys").write_text((self.folder / "user_ed25519.pub").read_text())
        os.chmod(self.folder / "authorized_keys", 0o600)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder
        cfg = self.folder / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {self.folder}/sshd.pid\n"
            f"AuthorizedKeysFile {self.folder}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\nMaxStartups 50\nMaxSessions 50\n"
        )
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cfg)], stderr=open(self.folder / "sshd.log", "wb")
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not start: {(self.folder / 'sshd.log').read_text()[-2000:]}")

    def device(self, **extra: Any) -> dict[str, Any]:
        import getpass

        return {"kind": "ssh", "host": "127.0.0.1", "port": self.port, "user": getpass.getuser(),
                "key": str(self.key), "connect_timeout_s": 5, **extra}  # fmt: skip

    def drop(self) -> None:
        """A lost connection: kill this sshd and every session process it forked (by their ids)."""
        import psutil

        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
