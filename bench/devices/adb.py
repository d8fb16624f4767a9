"""A phone over ``adb -s SERIAL``: ``push``/``pull`` files, ``shell`` commands, as Android benchmark scripts do.

Two ways to measure, chosen per artifact:

- **Python on the phone** (Termux's ``python``, or any ``python3`` the target names as
  ``device.python``): the same remote protocol as SSH: bundle pushed to ``workdir``, the worker in
  a fresh process per measurement, RSS polled from ``/proc/PID/status`` on the phone.
- **Python-free, native binaries** (``device.native: {llama-bench: /data/local/tmp/llama-bench}``):
  for GGUF artifacts the phone runs llama.cpp's own ``llama-bench`` (pushed beforehand, with its
  ``lib/`` beside it) as ``cd WORKDIR && LD_LIBRARY_PATH=DIR/lib DIR/llama-bench -m MODEL -p P -n N
  -t T -r R -o json``, its peak RSS polled by a ``sh`` loop on the phone. Each repetition's request
  time is prompt-processing plus generation time (``samples_ns`` of the two tests); time to first
  token is the prompt test's time; decode speed is the generation test's tokens per second.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from edgedistill.bench.devices.base import DeviceError, RemoteDevice
from edgedistill.bench.harness import MeasurementError

_TRANSPORT_ERRORS = ("error: device", "no devices/emulators found", "device offline", "device unauthorized")


class AdbDevice(RemoteDevice):
    kind = "adb"

    def __init__(self, spec: dict[str, Any], run_dir: Path):
        super().__init__(spec, run_dir)
        self.serial = str(spec["serial"])
        self.adb = str(spec.get("adb") or "adb")
        self.native: dict[str, str] = dict(spec.get("native") or {})
        self.can_predict = bool(spec.get("python")) or not self.native

    def default_workdir(self) -> str:
        return "/data/local/tmp/edgedistill"

    def address(self) -> str:
        return f"adb://{self.serial}"

    def _adb(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.adb, "-s", self.serial, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def exec(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return self._adb(["shell", self.shell_line(argv)], timeout)

    def check_transport(self, proc: subprocess.CompletedProcess, what: str) -> None:
        err = (proc.stderr or "").lower()
        if any(marker in err for marker in _TRANSPORT_ERRORS):
            raise DeviceError(f"{self.address()}: adb failed during {what}: {proc.stderr.strip()[-600:]}")

    def _copy(self, verb: str, src: str, dst: str, timeout: float) -> None:
        try:
            proc = self._adb([verb, src, dst], timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"{self.address()}: adb {verb} {src} did not finish within {timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise DeviceError(
                f"{self.address()}: cannot run {self.adb!r} ({exc}); install Android platform-tools"
            ) from None
        if proc.returncode != 0:
            raise DeviceError(
                f"{self.address()}: adb {verb} {src} failed: {(proc.stderr or proc.stdout).strip()[-600:]}"
            )

    def push(self, local: Path, remote: str, timeout: float) -> None:
        self._copy("push", str(local), remote, timeout)

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self._copy("pull", remote, str(local), timeout)

    # the python-free path
    def native_tool(self, fmt: str) -> str | None:
        return self.native.get("llama-bench") if fmt == "gguf" else None

    def open(self) -> dict[str, Any]:
        if self.spec.get("python") or not self.native:
            return super().open()
        # native only: no Python on the phone; facts come from the shell
        try:
            self._call(
                ["mkdir", "-p", f"{self.workdir}/artifacts", f"{self.workdir}/jobs"],
                self.timeout_s + 20,
                "mkdir",
            )
            uname = self._call(["uname", "-a"], self.timeout_s + 20, "uname").stdout.strip()
            cpuinfo = self._call(["cat", "/proc/cpuinfo"], self.timeout_s + 20, "cpuinfo").stdout
        except DeviceError as exc:
            from edgedistill.bench.devices.base import DeviceUnavailable

            raise DeviceUnavailable(str(exc)) from None
        features = next(
            (ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.lower().startswith("features")),
            [],
        )
        model = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.lower().startswith("hardware")),
            None,
        )
        self.facts = {"uname": uname, "machine": uname.split()[-1] if uname else None, "cpu_model": model,
                      "cpuinfo_flags": features, "python": None}  # fmt: skip
        return self.facts

    def verify_copy(self, remote_dir: str, hashes: dict[str, str]) -> dict[str, Any]:
        if self.spec.get("python") or not self.native:
            return super().verify_copy(remote_dir, hashes)
        # no Python on the phone: its own sha256sum (toybox has one) hashes the copy there
        proc = self._call(["sh", "-c", f"cd {shlex.quote(remote_dir)} 2>/dev/null && sha256sum -- {' '.join(shlex.quote(r) for r in hashes)}"],
                          self.timeout_s + 300, "sha256sum")  # fmt: skip
        seen = {}
        for line in proc.stdout.splitlines():
            digest, _, name = line.strip().partition(" ")
            seen[name.strip().lstrip("*")] = digest
        missing = [r for r in hashes if r not in seen]
        mismatched = [r for r in hashes if r in seen and seen[r] != hashes[r]]
        return {
            "ok": not missing and not mismatched,
            "files": len(hashes),
            "missing": missing,
            "mismatched": mismatched,
        }

    def runtime_reason(self, runtime: Any) -> str | None:
        tool = self.native_tool(runtime.formats[0] if runtime.formats else "")
        if tool is not None:
            proc = self._call(["test", "-x", tool], self.timeout_s + 20, "test -x")
            return (
                None
                if proc.returncode == 0
                else f"{tool} is not an executable on {self.address()}: push it (and its lib/) first"
            )
        if not self.spec.get("python") and self.native:
            return f"no Python on {self.address()} (device.python unset) and no native tool for {runtime.name} in device.native"
        return super().runtime_reason(runtime)

    def run(
        self, job: dict[str, Any], *, timeout_s: float, poll_interval_s: float, work_dir: Path
    ) -> dict[str, Any]:
        tool = self.native_tool(job["artifact"]["format"])
        if tool is None or job["kind"] != "latency":
            if tool is not None:
                raise MeasurementError(
                    f"{self.address()}: accuracy needs Python on the phone (device.python); llama-bench only times"
                )
            return super().run(job, timeout_s=timeout_s, poll_interval_s=poll_interval_s, work_dir=work_dir)
        return self._llama_bench(tool, job, timeout_s, poll_interval_s, Path(work_dir))

    def llama_bench_argv(self, tool: str, model: str, job: dict[str, Any]) -> list[str]:
        w, m, o = job["workload"], job["measurement"], job["options"]
        reps = max(int(m["min_iterations"]), 1)
        return [tool, "-m", model, "-p", str(w["prompt_tokens"]), "-n", str(w["generate_tokens"]),
                "-t", str(o["threads"]), "-r", str(reps), "-ngl", "0", "-o", "json"]  # fmt: skip

    def _llama_bench(
        self, tool: str, job: dict[str, Any], timeout_s: float, poll_s: float, work_dir: Path
    ) -> dict:
        remote_dir = self.push_artifact(Path(job["artifact"]["path"]))
        model = f"{remote_dir}/{next(f for f in job['artifact']['model_files'] if f.endswith('.gguf'))}"
        argv = self.llama_bench_argv(tool, model, job)
        lib = str(Path(tool).parent / "lib")
        out = f"{self.workdir}/jobs/llama-bench.json"
        # run in the background, poll its VmHWM, print the peak in kB: POSIX sh (Android's mksh too)
        script = (
            f"cd {shlex.quote(self.workdir)} && LD_LIBRARY_PATH={shlex.quote(lib)} {shlex.join(argv)} > {out} 2>/dev/null & "
            f"pid=$!; peak=0; while kill -0 $pid 2>/dev/null; do "
            f"v=$(grep VmHWM /proc/$pid/status 2>/dev/null | tr -s ' ' | cut -d' ' -f2); "
            f'[ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v; sleep {poll_s}; done; wait $pid; '
            f'echo "rc=$? peak_kb=$peak"'
        )
        proc = self._call(["sh", "-c", script], timeout_s + self.timeout_s, "llama-bench")
        status = dict(
            kv.split("=", 1) for kv in (proc.stdout.strip().splitlines() or ["rc=1"])[-1].split() if "=" in kv
        )
        if status.get("rc") != "0":
            raise MeasurementError(
                f"{self.address()}: {tool} exited {status.get('rc')}: {proc.stderr[-600:]}"
            )
        local = work_dir / "llama-bench.json"
        self.pull(out, local, self.timeout_s + 60)
        return llama_bench_result(
            json.loads(local.read_text(encoding="utf-8")), job, int(status.get("peak_kb") or 0), tool
        )


def llama_bench_result(
    tests: list[dict[str, Any]], job: dict[str, Any], peak_kb: int, tool: str
) -> dict[str, Any]:
    """A worker-shaped latency result from llama-bench's JSON (one prompt test, one generation test)."""
    pp = next((t for t in tests if int(t.get("n_prompt") or 0) > 0 and int(t.get("n_gen") or 0) == 0), None)
    tg = next((t for t in tests if int(t.get("n_gen") or 0) > 0 and int(t.get("n_prompt") or 0) == 0), None)
    if pp is None or tg is None or not pp.get("samples_ns") or not tg.get("samples_ns"):
        raise MeasurementError(
            f"{tool}: its JSON has no prompt and generation tests with samples_ns (too old a build?)"
        )
    n_gen = int(tg["n_gen"])
    ttft = [ns / 1e6 for ns in pp["samples_ns"]]
    gen = [ns / 1e6 for ns in tg["samples_ns"]]
    samples = [a + b for a, b in zip(ttft, gen, strict=False)]
    peak = round(peak_kb * 1024 / 1e6, 2) if peak_kb else None
    return {
        "ok": True,
        "import_ms": 0.0,
        "session_create_ms": 0.0,  # llama-bench does not report model load time separately
        "first_inference_ms": samples[0],
        "samples_ms": samples,
        "ttft_ms": ttft,
        "decode_tokens_per_s": [n_gen * 1000.0 / g for g in gen],
        "prompt_tokens": int(pp["n_prompt"]),
        "generate_tokens": n_gen,
        "measure_seconds": sum(samples) / 1000.0,
        "effective_options": {
            "tool": tool,
            "n_threads": tg.get("n_threads"),
            "build": tg.get("build_commit"),
        },
        "runtime_info": {
            "llama-bench": tg.get("build_commit"),
            "cpu_info": tg.get("cpu_info"),
            "backends": tg.get("backends"),
        },
        "ran": None,
        "precision_policy": None,
        "memory": {"peak_rss_mb": peak, "vmhwm_mb": peak, "polled_peak_rss_mb": peak, "polls": None},
        "process": {"cpus": None, "threads_env": {}, "pid": None},
        "host": {
            "wall_seconds": None,
            "child_cpu_seconds": None,
            "other_cpu_seconds": None,
            "load_average": None,
        },
        "device": {"kind": "adb", "native_tool": tool, "emulated": False},
    }
