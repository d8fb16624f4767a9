"""A device the bench measures on: a transport (run a command, copy a file each way) plus the protocol.

A `RemoteDevice` subclass gives three things: `exec` (run an argv on the device), `push` and
`pull` (copy a file or a folder). Everything else is shared and happens here:

1. `open`: make the work folder on the device, ship the bundle (a zip of the worker, the runtime
   plugins and `remote`, no edgedistill install needed there), read the device's facts;
2. `runtime_reason`: whether the runtime's module imports *on the device* (else: skipped, reason);
3. `run`: push the artifact once (re-hashed on the device with sha256 against the hashes taken
   here: a mismatch is an error), push the job, run ``remote measure`` (one fresh worker process,
   warmup, iterations, RSS polled on the device), pull the result (and the predictions).

A device that cannot be reached when the run starts makes every artifact ``skipped``; one that
drops during a measurement, or a command past its time, raises `DeviceError` (an ``error`` entry).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from edgedistill.bench.harness import MeasurementError
from edgedistill.io import sha256_file

BUNDLE_MODULES = (
    "edgedistill",
    "edgedistill.errors",
    "edgedistill.io",  # the runtimes' tokenizer reads tokenizer_config.json with read_json_object
    "edgedistill.plugins",
    "edgedistill.host",
    "edgedistill.numerics",
    "edgedistill.bench",
    "edgedistill.bench._worker",
    "edgedistill.bench.runtimes",
    "edgedistill.bench.runtimes.base",
    "edgedistill.bench.runtimes.onnxruntime",
    "edgedistill.bench.runtimes.openvino",
    "edgedistill.bench.runtimes.llamacpp",
    "edgedistill.bench.runtimes.torch",
    "edgedistill.bench.devices",
    "edgedistill.bench.devices.remote",
    "edgedistill.export.gguf.header",  # llama.cpp's session checks a GGUF header before opening it
    "edgedistill.gguf_header",  # the bounded GGUF header reader (export/gguf/header.py re-exports it)
)
# packages shipped as a docstring-only __init__: the device needs one leaf module of them, not the
# imports of their real __init__ (edgedistill.export.gguf's pulls in the GGUF writer)
BUNDLE_STUBS = ("edgedistill.export", "edgedistill.export.gguf")
# what the measuring child imports besides the runtime's own module (checked before measuring)
DEVICE_MODULES = ("numpy", "tokenizers")


class DeviceError(MeasurementError):
    """The device could not be reached, dropped the connection, or a command on it ran out of time."""


class DeviceUnavailable(DeviceError):
    """The device is not there when the run starts: every artifact is reported skipped with this reason."""


def build_bundle(path: Path) -> Path:
    """Zip the modules the device runs (sources only, from wherever edgedistill is installed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in BUNDLE_MODULES:
            parent, _, leaf = name.rpartition(".")
            if parent in BUNDLE_STUBS:  # find the file without running the stubbed package's __init__
                spec = importlib.util.find_spec(parent)  # imports only the grandparent
                if spec is None or not spec.submodule_search_locations:
                    raise DeviceError(f"cannot find package {parent} to ship {name} to the device")
                zf.write(
                    Path(spec.submodule_search_locations[0]) / f"{leaf}.py", name.replace(".", "/") + ".py"
                )
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise DeviceError(f"cannot find module {name} to ship to the device")
            arc = name.replace(".", "/") + ("/__init__.py" if spec.submodule_search_locations else ".py")
            zf.write(spec.origin, arc)
        for name in BUNDLE_STUBS:
            zf.writestr(
                name.replace(".", "/") + "/__init__.py",
                '"""Stub in the device bundle: only the submodules the device runs are shipped."""\n',
            )
    return path


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative POSIX paths)."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


class RemoteDevice:
    """The shared protocol; subclasses provide `exec`, `push`, `pull` and `address`."""

    kind = "remote"
    emulated = False

    def __init__(self, spec: dict[str, Any], run_dir: Path):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = str(spec.get("workdir") or self.default_workdir())
        self.python: list[str] = [str(spec.get("python") or "python3")]
        self.timeout_s = float(spec.get("connect_timeout_s") or 10.0)
        self.facts: dict[str, Any] = {}
        self._pushed: dict[str, str] = {}
        self._probed: dict[str, Any] = {}
        self._jobs = 0

    # transport, per kind
    def default_workdir(self) -> str:
        return "/tmp/edgedistill-bench"

    def address(self) -> str:
        raise NotImplementedError

    def exec(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def push(self, local: Path, remote: str, timeout: float) -> None:
        raise NotImplementedError

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        raise NotImplementedError

    def shell_line(self, argv: list[str]) -> str:
        """The command line a device shell runs: in the work folder (so no ``edgedistill/`` folder of
        the login directory shadows the bundle), then ``argv`` quoted."""
        return f"cd {shlex.quote(self.workdir)} 2>/dev/null; {shlex.join(argv)}"

    def python_env(self) -> list[str]:
        """``env VAR=... `` words that start the device's Python on the bundle."""
        return ["env", f"PYTHONPATH={self.workdir}/bundle.zip", "PYTHONNOUSERSITE=1"]

    def child_prefix(self) -> list[str] | None:
        """The argv that starts a fresh Python on the device (None: the runner's own interpreter)."""
        return None

    # protocol
    def _call(self, argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        try:
            proc = self.exec(argv, timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.address()}: {what} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise DeviceUnavailable(f"{self.address()}: cannot run {argv[0]!r} here ({exc})") from None
        self.check_transport(proc, what)
        return proc

    def check_transport(self, proc: subprocess.CompletedProcess, what: str) -> None:
        """Raise `DeviceError` when the transport itself failed (not the command on the device)."""

    def remote(self, verb: str, *args: str, timeout: float) -> dict[str, Any]:
        argv = [*self.python_env(), *self.python, "-m", "edgedistill.bench.devices.remote", verb, *args]
        proc = self._call(argv, timeout, f"remote {verb}")
        lines = [ln for ln in (proc.stdout or "").splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise DeviceError(
                f"{self.address()}: `remote {verb}` exited {proc.returncode} "
                f"(is {' '.join(self.python)} Python 3.10+ on the device?): {(proc.stderr or proc.stdout)[-800:]}"
            )
        return json.loads(lines[-1])

    def open(self) -> dict[str, Any]:
        """Reach the device, ship the bundle, read its facts. `DeviceUnavailable` when it is not there."""
        try:
            self._call(
                ["mkdir", "-p", f"{self.workdir}/artifacts", f"{self.workdir}/jobs"],
                self.timeout_s + 20,
                "mkdir",
            )
            bundle = build_bundle(self.run_dir / "bundle.zip")
            self.push(bundle, f"{self.workdir}/bundle.zip", self.timeout_s + 60)
            self.facts = self.remote("facts", timeout=self.timeout_s + 60)
        except DeviceUnavailable:
            raise
        except DeviceError as exc:
            raise DeviceUnavailable(str(exc)) from None
        return self.facts

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": self.address(),
            "emulated": self.emulated,
            "workdir": self.workdir,
            **self.facts,
        }

    def runtime_reason(self, runtime: Any) -> str | None:
        """Why ``runtime`` cannot run on the device (its module does not import there), or None."""
        modules = [m for m, _extra in runtime.requires] + list(DEVICE_MODULES)
        key = ",".join(modules)
        if key not in self._probed:
            self._probed[key] = self.remote("probe", *modules, timeout=self.timeout_s + 120)
        bad = {m: r.get("error") for m, r in self._probed[key].items() if not r.get("ok")}
        if not bad:
            return None
        detail = "; ".join(f"{m}: {e}" for m, e in bad.items())
        return (
            f"the {runtime.name} runtime is missing on device {self.address()} ({detail}); install "
            f"{', '.join(bad)} for {' '.join(self.python)} there (pip install {' '.join(runtime.packages[:1])} numpy tokenizers)"
        )

    def verify_copy(self, remote_dir: str, hashes: dict[str, str]) -> dict[str, Any]:
        """sha256 of the device's copy against ``hashes`` (computed on the device), by `remote verify`."""
        return self.remote("verify", remote_dir, f"{remote_dir}.sha256.json", timeout=self.timeout_s + 300)

    def push_artifact(self, path: Path) -> str:
        """Copy an artifact folder to the device once and check its sha256 there; returns its path there."""
        key = str(Path(path).resolve())
        if key in self._pushed:
            return self._pushed[key]
        hashes = folder_hashes(Path(path))
        digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
        remote_dir = f"{self.workdir}/artifacts/{digest}"
        hashes_file = self.run_dir / f"hashes-{digest}.json"
        hashes_file.write_text(json.dumps(hashes), encoding="utf-8")
        self.push(hashes_file, f"{remote_dir}.sha256.json", self.timeout_s + 60)
        check = self.verify_copy(remote_dir, hashes)
        if not check.get("ok"):  # not there yet (or changed): copy, then check again
            dirs = sorted({f"{remote_dir}/{Path(rel).parent.as_posix()}".rstrip("/.") for rel in hashes})
            self._call(["mkdir", "-p", remote_dir, *dirs], self.timeout_s + 20, "mkdir")
            for rel in hashes:
                self.push(Path(path) / rel, f"{remote_dir}/{rel}", self.timeout_s + 600)
            check = self.verify_copy(remote_dir, hashes)
        if not check.get("ok"):
            raise DeviceError(
                f"{path}: the copy on device {self.address()} at {remote_dir} does not match its sha256 "
                f"(missing {check.get('missing')}, mismatched {check.get('mismatched')}): the transfer corrupted it"
            )
        self._pushed[key] = remote_dir
        return remote_dir

    def run(
        self, job: dict[str, Any], *, timeout_s: float, poll_interval_s: float, work_dir: Path
    ) -> dict[str, Any]:
        """Run one measurement job on the device; the result as `run_worker` returns it, ``device`` added."""
        self._jobs += 1
        name = f"job-{self._jobs:04d}"
        remote_job_dir = f"{self.workdir}/jobs/{name}"
        job = json.loads(json.dumps(job))
        job["artifact"]["path"] = self.push_artifact(Path(job["artifact"]["path"]))
        self._call(["mkdir", "-p", remote_job_dir], self.timeout_s + 20, "mkdir")
        if job.get("texts_file"):
            self.push(Path(job["texts_file"]), f"{remote_job_dir}/texts.json", self.timeout_s + 120)
            job["texts_file"] = f"{remote_job_dir}/texts.json"
        local_job = Path(work_dir) / "job.json"
        local_job.parent.mkdir(parents=True, exist_ok=True)
        local_job.write_text(json.dumps(job), encoding="utf-8")
        self.push(local_job, f"{remote_job_dir}/job.json", self.timeout_s + 60)
        args = [
            f"{remote_job_dir}/job.json",
            f"{remote_job_dir}/result.json",
            str(timeout_s),
            str(poll_interval_s),
        ]
        prefix = self.child_prefix()
        if prefix is not None:
            args.append(json.dumps(prefix))
        self.remote("measure", *args, timeout=timeout_s + self.timeout_s + 60)
        local_result = Path(work_dir) / "result.json"
        self.pull(f"{remote_job_dir}/result.json", local_result, self.timeout_s + 60)
        result = json.loads(local_result.read_text(encoding="utf-8"))
        if not result.get("ok"):
            detail = result.get("traceback") or result.get("stderr_tail") or ""
            raise MeasurementError(f"on device {self.address()}: {result.get('error')}\n{detail}".rstrip())
        if result.get("predictions_file"):
            local_pred = Path(work_dir) / "predictions.npy"
            self.pull(result["predictions_file"], local_pred, self.timeout_s + 120)
            result["predictions_file"] = str(local_pred)
        for name, remote_file in (result.get("output_files") or {}).items():  # a generalist's other outputs
            local_file = Path(work_dir) / f"{name}.npy"
            self.pull(remote_file, local_file, self.timeout_s + 120)
            result["output_files"][name] = str(local_file)
        if result.get("memory", {}).get("peak_rss_mb") is None:
            raise MeasurementError(f"on device {self.address()}: no memory figure for the measuring process")
        result["device"] = {"kind": self.kind, "address": self.address(), "emulated": self.emulated}
        return result

    def close(self) -> None:
        """Nothing to release by default (subclasses may remove what they made)."""
