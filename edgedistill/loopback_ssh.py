"""A real sshd on 127.0.0.1 with keys of its own: the ssh device of tests and benchmarks, on this machine.

The ssh runner (`edgedistill.bench.devices.ssh`) is tested and benchmarked against a real sshd,
not a fake: `Sshd` starts one on a free loopback port with a fresh host key and user key in its
folder, `device()` is the target's ``device:`` block that reaches it, and `stop` kills it (by
its process id). sshd's privilege separation needs root; `sshd_missing_reason` says why one
cannot start here (not installed, not root), for a skip or a benchmark stage's note.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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
    """An sshd on 127.0.0.1:PORT with host and user keys in ``folder``; `stop` kills it.

    ``reuse``: a folder an earlier `Sshd` left keeps its keys and, while free, its port, so the
    device it serves is the same device (a benchmark stage resumed; its known_hosts still valid)."""

    def __init__(self, folder: Path, reuse: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "sshd_config"
        earlier = re.search(r"^Port (\d+)$", cfg.read_text(), re.M) if reuse and cfg.is_file() else None
        self.port = int(earlier.group(1)) if earlier and _port_free(int(earlier.group(1))) else free_port()
        self.key = self.folder / "user_ed25519"
        host_key = self.folder / "host_ed25519"
        for path in (self.key, host_key):
            if reuse and path.is_file() and path.with_name(path.name + ".pub").is_file():
                continue
            for old in (path, path.with_name(path.name + ".pub")):
                old.unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (self.folder / "authorized_keys").write_text((self.folder / "user_ed25519.pub").read_text())
        os.chmod(self.folder / "authorized_keys", 0o600)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation folder
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {self.folder}/sshd.pid\n"
            f"AuthorizedKeysFile {self.folder}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\nMaxStartups 50\nMaxSessions 50\n"
        )
        with open(self.folder / "sshd.log", "wb") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
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

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
