"""The device side of a remote bench: ``python3 -m edgedistill.bench.devices.remote VERB ...``.

Shipped to the device inside a zip (`edgedistill.bench.devices.base.build_bundle`) with the
measuring worker and the runtime plugins, and run with ``PYTHONPATH=bundle.zip``: the device needs
``python3`` (3.10+), ``numpy``, ``tokenizers`` and the runtime's package, not edgedistill. Only the
standard library is imported here. Verbs (each prints one JSON object on stdout):

- ``facts``: machine, uname, CPU model and ISA (``/proc/cpuinfo``, and the kernel's HWCAP bits
  from ``/proc/self/auxv`` on aarch64, which is what the CPU really offers the process), OS, Python;
- ``probe MODULE...``: which of the runtime modules import here, with their versions;
- ``verify FOLDER HASHES.json``: sha256 of every listed file, against the expected hashes;
- ``measure JOB RESULT TIMEOUT_S POLL_S [CHILD_PREFIX_JSON]``: the harness's protocol on the device:
  one fresh worker process (``edgedistill.bench._worker``) with the thread variables set, its RSS
  polled from ``/proc/PID/status``, killed past TIMEOUT_S; RESULT gets the worker's result with the
  memory and host blocks the local harness adds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
HWCAP = {0: "fp", 1: "asimd", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32", 8: "atomics",
         9: "fphp", 10: "asimdhp", 12: "asimdrdm", 14: "fcma", 17: "sha3", 20: "asimddp", 21: "sha512",
         22: "sve", 23: "asimdfhm"}  # fmt: skip
HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 15: "dgh", 23: "sme"}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _auxv_isa() -> list[str] | None:
    try:
        with open("/proc/self/auxv", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    values: dict[int, int] = {}
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack("<QQ", raw[i : i + 16])
        values[key] = value
    if 16 not in values:
        return None
    hw, hw2 = values.get(16, 0), values.get(26, 0)
    return [n for b, n in HWCAP.items() if hw >> b & 1] + [n for b, n in HWCAP2.items() if hw2 >> b & 1]


def facts() -> dict:
    cpuinfo = _read("/proc/cpuinfo")
    model, flags = None, []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        if key in ("flags", "features") and not flags:
            flags = value.split()
        if key == "cpu part" and not model:
            model = f"ARM CPU part {value.strip()}"
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        None,
    )
    if os_name is None and Path("/system/build.prop").exists():
        os_name = "Android"
    u = platform.uname()
    machine = u.machine
    isa = _auxv_isa() if machine in ("aarch64", "arm64") else None
    cpuinfo_machine = (
        "x86_64" if "sse2" in flags else ("aarch64" if "asimd" in flags or "fp" in flags else None)
    )
    other = bool(cpuinfo_machine and machine and cpuinfo_machine != machine)
    emulator_host = None
    if other:  # qemu-user passes the host's /proc/cpuinfo through: it describes the emulator's host
        emulator_host, model, flags = model, None, []
    return {
        "machine": machine,
        "uname": " ".join([u.system, u.node, u.release, u.version, u.machine]),
        "system": u.system,
        "release": u.release,
        "os": os_name,
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpuinfo_flags": flags,
        "hwcap_isa": isa,
        "cpuinfo_is_other_machine": other,
        "emulator_host_cpu": emulator_host,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        # where this runner was imported from: inside the shipped bundle.zip, not an installed edgedistill
        "runner": __file__,
    }


def probe(modules: list[str]) -> dict:
    import importlib

    out = {}
    for name in modules:
        try:
            mod = importlib.import_module(name)
            out[name] = {"ok": True, "version": getattr(mod, "__version__", None)}
        except Exception as exc:  # an ImportError, or a binary that does not load here
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def verify(folder: str, hashes_file: str) -> dict:
    expected = json.loads(Path(hashes_file).read_text(encoding="utf-8"))
    missing, mismatched = [], []
    for rel, sha in sorted(expected.items()):
        path = Path(folder) / rel
        if not path.is_file():
            missing.append(rel)
            continue
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sha:
            mismatched.append(rel)
    return {
        "ok": not missing and not mismatched,
        "files": len(expected),
        "missing": missing,
        "mismatched": mismatched,
    }


def _status_kb(pid: int, key: str) -> int | None:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _busy_jiffies() -> int | None:
    line = _read("/proc/stat").splitlines()[:1]
    if not line:
        return None
    parts = [int(x) for x in line[0].split()[1:8]]
    return parts[0] + parts[1] + parts[2] + parts[5] + parts[6]  # user nice system irq softirq


def measure(job_file: str, result_file: str, timeout_s: float, poll_s: float, prefix: list[str]) -> dict:
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    inner = result_file + ".worker.json"
    env = dict(os.environ)
    for key in THREAD_ENV:
        env[key] = str(job["options"]["threads"])
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.setdefault("PYTHONHASHSEED", "0")
    folder = Path(result_file).parent
    busy0, tick = _busy_jiffies(), os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    with open(folder / "stderr.txt", "wb") as err, open(folder / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(
            [*prefix, "-m", "edgedistill.bench._worker", job_file, inner], env=env, stdout=out, stderr=err
        )
    started, peak_kb, polls, timed_out = time.monotonic(), 0, 0, False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        kb = _status_kb(proc.pid, "VmRSS")
        if kb is not None:
            peak_kb, polls = max(peak_kb, kb), polls + 1
        if time.monotonic() - started > timeout_s:
            timed_out = True
            os.kill(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(poll_s)
    wall = time.monotonic() - started
    tail = (folder / "stderr.txt").read_text(encoding="utf-8", errors="replace")[-3000:]
    if timed_out:
        return {
            "ok": False,
            "timed_out": True,
            "error": f"the measuring process on the device ran past {timeout_s:.0f} s and was killed",
            "stderr_tail": tail,
        }
    if not Path(inner).is_file():
        code = os.waitstatus_to_exitcode(status)
        return {
            "ok": False,
            "error": f"the measuring process on the device exited with code {code} without a result",
            "stderr_tail": tail,
        }
    result = json.loads(Path(inner).read_text(encoding="utf-8"))
    memory = result.setdefault("memory", {})
    memory["polled_peak_rss_mb"] = round(peak_kb * 1024 / 1e6, 2) if polls else None
    memory["polls"] = polls
    figures = [v for v in (memory.get("polled_peak_rss_mb"), memory.get("vmhwm_mb")) if v is not None]
    memory["peak_rss_mb"] = max(figures) if figures else None
    busy1 = _busy_jiffies()
    child_cpu = rusage.ru_utime + rusage.ru_stime
    busy = (busy1 - busy0) / tick if busy0 is not None and busy1 is not None else None
    result["host"] = {
        "wall_seconds": wall,
        "child_cpu_seconds": child_cpu,
        "other_cpu_seconds": max(0.0, busy - child_cpu) if busy is not None else None,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if "predictions_file" in result:
        result["predictions_file"] = str(result["predictions_file"])
    return result


def main(argv: list[str]) -> int:
    verb, args = argv[1], argv[2:]
    if verb == "facts":
        out = facts()
    elif verb == "probe":
        out = probe(args)
    elif verb == "verify":
        out = verify(args[0], args[1])
    elif verb == "measure":
        prefix = json.loads(args[4]) if len(args) > 4 else [sys.executable]
        out = measure(args[0], args[1], float(args[2]), float(args[3]), prefix)
        tmp = args[1] + ".tmp"
        Path(tmp).write_text(json.dumps(out), encoding="utf-8")
        os.replace(tmp, args[1])
        out = {"ok": out.get("ok", False), "result": args[1]}
    else:
        print(json.dumps({"ok": False, "error": f"unknown verb {verb!r}"}))
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
