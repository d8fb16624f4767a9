"""Cross-build llama.cpp for aarch64 so the ``arm64-emulated`` device runs GGUF artifacts (cached, atomic).

    python -m edgedistill.bench.devices.qemu_llamacpp            # builds into ~/.cache/edgedistill/arm64/llamacpp
    python -m edgedistill.bench.devices.qemu_llamacpp --check    # says whether the build is there

PyPI has no aarch64 wheel of llama-cpp-python, so the llama.cpp that the host's llama-cpp-python
vendors (its sdist, the *same version*, so the ctypes bindings match the library) is cross-compiled
with Debian's ``aarch64-linux-gnu`` GCC for a phone-class ARMv8.2-A CPU (``FLAGS``: NEON, dotprod,
fp16 vector arithmetic; ``GGML_NATIVE=OFF``, no OpenMP). The package's pure-Python part goes beside
the libraries (``site/llama_cpp`` with ``lib/libllama.so`` etc.: both of its loaders look there;
``_ggml.py`` ignores ``LLAMA_CPP_LIB_PATH``), with the aarch64 wheels of what it and the GGUF header
check import (diskcache, jinja2, markupsafe, typing_extensions, gguf, pyyaml). The
`qemu_sysroot` userland runs it.

Steps: the sysroot (built if missing), the sdist (``pip download --no-binary :all:``, pip's cache
serves it offline once fetched), unpacking, ``cmake`` configure and build (the build folder is wiped
when a previous build was killed), then everything is staged in ``.tmp-*``, smoke-tested under qemu
(``llama_print_system_info``) and renamed into place with ``build.json`` inside: a folder without
it is never trusted, so a killed build leaves nothing that a later run believes.

Needs: ``aarch64-linux-gnu-gcc``/``g++`` (``apt-get install -y gcc-aarch64-linux-gnu
g++-aarch64-linux-gnu cmake``), ``cmake``, ``ninja`` or ``make``, ``qemu-aarch64``; the network to
PyPI the first time.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

from edgedistill.bench.devices import qemu_sysroot

ARCH = "armv8.2-a+dotprod+fp16"  # Cortex-A55/A75/A76-class phones (2018 on); no SVE, no i8mm
APT_HINT = "apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu cmake"
CC, CXX = "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"
PURE_WHEELS = ("typing-extensions", "diskcache", "jinja2", "markupsafe", "gguf", "pyyaml")
LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so")
OFF = ("LLAMA_BUILD_TESTS", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_SERVER",
       "LLAMA_BUILD_COMMON", "LLAMA_BUILD_APP", "LLAMA_CURL", "LLAMA_OPENSSL", "GGML_CCACHE",
       "GGML_NATIVE", "GGML_OPENMP")  # fmt: skip


class LlamaCppBuildError(qemu_sysroot.SysrootError):
    """A step of the cross-build failed; the message names the step, the tool or the command."""


def host_version() -> str | None:
    """The llama-cpp-python version installed here (the x86 reference the device is compared with)."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def cmake_flags(arch: str = ARCH) -> list[str]:
    """The cmake definitions of the cross-build (recorded in ``build.json``)."""
    return [
        "-DCMAKE_SYSTEM_NAME=Linux",
        "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
        f"-DCMAKE_C_COMPILER={CC}",
        f"-DCMAKE_CXX_COMPILER={CXX}",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN",
        f"-DGGML_CPU_ARM_ARCH={arch}",
        *(f"-D{name}=OFF" for name in OFF),
    ]


def _tag(arch: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", arch)


def build_dir(base: Path | None = None, version: str | None = None, arch: str = ARCH) -> Path:
    """The finished build's folder (trusted only with its ``build.json``)."""
    return (base or qemu_sysroot.DEFAULT_ROOT) / "llamacpp" / f"{version or host_version()}-{_tag(arch)}"


def build_info(base: Path | None = None, version: str | None = None, arch: str = ARCH) -> dict | None:
    """The finished build's facts, or None when there is none for this version and arch."""
    if (version or host_version()) is None:
        return None
    path = build_dir(base, version, arch) / "build.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    info["site"] = str(path.parent / "site")
    return info


def missing_tools() -> list[str]:
    tools = [CC, CXX, "cmake", "qemu-aarch64"]
    gone = [t for t in tools if shutil.which(t) is None]
    if shutil.which("ninja") is None and shutil.which("make") is None:
        gone.append("ninja or make")
    return gone


def _status(console):
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    return console


def _run(cmd: list[str], step: str, *, cwd: Path | None = None, timeout: float = 1800, env=None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise LlamaCppBuildError(
            f"llama.cpp cross-build step {step!r}: {cmd[0]} not found ({APT_HINT})"
        ) from None
    if proc.returncode != 0:
        raise LlamaCppBuildError(
            f"llama.cpp cross-build step {step!r} failed: {' '.join(cmd[:5])} ... exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout)[-1500:]}"
        )
    return proc.stdout


def _sdist(base: Path, version: str, given: Path | None) -> Path:
    if given is not None:
        if not given.is_file():
            raise LlamaCppBuildError(f"--sdist {given}: no such file (the llama-cpp-python {version} sdist)")
        if f"-{version}.tar.gz" not in given.name:
            raise LlamaCppBuildError(
                f"--sdist {given}: not the {version} sdist; the ctypes bindings must match the library"
            )
        return given
    folder = base / "llamacpp" / "sdist"
    path = folder / f"llama_cpp_python-{version}.tar.gz"
    if path.is_file():
        return path
    tmp = folder / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
          "--quiet", "-d", str(tmp), f"llama-cpp-python=={version}"], "sdist", timeout=1800)  # fmt: skip
    found = sorted(tmp.glob("*.tar.gz"))
    if not found:
        raise LlamaCppBuildError(
            f"step 'sdist': pip downloaded no llama-cpp-python {version} sdist into {tmp}"
        )
    os.replace(found[0], path)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def _unpack(base: Path, sdist: Path, version: str) -> Path:
    src = base / "llamacpp" / f"src-{version}"
    if (src / ".complete").is_file():
        return src
    tmp = src.with_name(f".tmp-src-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(tmp)
    inner = next(tmp.iterdir())
    if (
        not (inner / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file()
        or not (inner / "llama_cpp").is_dir()
    ):
        raise LlamaCppBuildError(f"step 'unpack': {sdist} has no vendor/llama.cpp or llama_cpp/ package")
    (inner / ".complete").write_text(sdist.name, encoding="utf-8")
    shutil.rmtree(src, ignore_errors=True)
    os.replace(inner, src)
    shutil.rmtree(tmp, ignore_errors=True)
    return src


def _compile(src: Path, work: Path, arch: str, jobs: int, status) -> dict:
    marker = work / ".building"
    if marker.exists():  # a previous build was killed: its objects may be truncated
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.touch()
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    flags = cmake_flags(arch)
    out = _run(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(work), *gen, *flags], "configure")
    commit = re.search(r"ggml commit:\s*(\S+)", out)
    ggml_version = re.search(r"ggml version:\s*(\S+)", out)
    cmd = ["cmake", "--build", str(work), "--target", "llama", "-j", str(jobs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    shown = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-40:], line.rstrip()]
        step = re.match(r"\s*\[\s*(\d+)/(\d+)\]|\[\s*(\d+)%\]", line)
        if step:
            pct = f"{int(step[1]) * 100 // int(step[2])}%" if step[1] else f"{step[3]}%"
            status.update(f"[bold]llama.cpp aarch64[/] compiling {pct}: {line.split()[-1][-60:]}")
            decile = int(pct[:-1]) // 10
            if not status.console.is_terminal and decile > shown:  # a log file gets a line per 10%
                shown = decile
                status.console.print(f"[arm64-llamacpp] compiling {pct}")
    if proc.wait() != 0:
        raise LlamaCppBuildError(
            f"llama.cpp cross-build step 'compile' failed: {' '.join(cmd)} exited {proc.returncode}:\n"
            + "\n".join(tail[-15:])
        )
    marker.unlink()
    return {
        "ggml_version": ggml_version[1] if ggml_version else None,
        "ggml_commit": commit[1] if commit else None,
        "cmake_flags": flags,
        "generator": "ninja" if gen else "make",
    }


def _stage(base: Path, src: Path, work: Path, tmp: Path) -> dict:
    site = tmp / "site"
    shutil.copytree(
        src / "llama_cpp", site / "llama_cpp", ignore=shutil.ignore_patterns("__pycache__", "lib")
    )
    lib = site / "llama_cpp" / "lib"
    lib.mkdir()
    hashes = {}
    for path in sorted((work / "bin").glob("lib*.so*")):
        if any(path.name.startswith(name) for name in LIBS):
            shutil.copy2(path, lib / path.name, follow_symlinks=False)
            if not path.is_symlink():
                hashes[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    missing = [name for name in LIBS if not (lib / name).exists()]
    if missing:
        raise LlamaCppBuildError(f"step 'stage': {', '.join(missing)} not built in {work / 'bin'}")
    wheels, found = base / "llamacpp" / "wheels", {}
    wheels.mkdir(parents=True, exist_ok=True)
    for name in PURE_WHEELS:
        whl = qemu_sysroot._download_wheel(name, wheels)
        if whl is None:
            raise LlamaCppBuildError(
                f"step 'wheels': no aarch64/pure wheel of {name} for CPython 3.11 on PyPI"
            )
        qemu_sysroot._unpack_wheel(whl, site)
        found[name] = whl.name
    return {"libs_sha256": hashes, "wheels": found}


def _smoke(base: Path, site: Path) -> dict:
    env = qemu_sysroot.qemu_env(base)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    code = ("import json, platform, llama_cpp, gguf.constants; print(json.dumps({'machine': platform.machine(), "
            "'version': llama_cpp.__version__, 'system_info': llama_cpp.llama_print_system_info().decode()}))")  # fmt: skip
    out = _run([*qemu_sysroot.qemu_python_cmd(base), "-c", code], "smoke", timeout=600, env=env)
    return json.loads(out.strip().splitlines()[-1])


def _tool_version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def _clean_stale(folder: Path) -> None:
    for old in folder.glob(".tmp-*"):
        pid = old.name.rsplit("-", 1)[-1]
        alive = pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid()
        if not alive:
            shutil.rmtree(old, ignore_errors=True)


def build(
    base: Path | None = None,
    *,
    arch: str = ARCH,
    sdist: Path | None = None,
    jobs: int | None = None,
    console=None,
) -> dict:
    """Cross-build (or find cached) llama.cpp for aarch64; returns its facts (``build_info``)."""
    base = base or qemu_sysroot.DEFAULT_ROOT
    version = host_version()
    if version is None:
        raise LlamaCppBuildError(
            "llama-cpp-python is not installed here: it is the x86 reference and names the version to "
            "cross-build (pip install 'edgedistill[gguf]')"
        )
    cached = build_info(base, version, arch)
    if cached is not None:
        return cached
    gone = missing_tools()
    if gone:
        raise LlamaCppBuildError(
            f"cannot cross-build llama.cpp for aarch64: {', '.join(gone)} not found ({APT_HINT}; "
            "qemu-aarch64 is in qemu-user)"
        )
    console = _status(console)
    final = build_dir(base, version, arch)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".lock", "w") as lock:  # one builder at a time; a second waits, then reuses
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = build_info(base, version, arch)
        if cached is not None:
            return cached
        _clean_stale(final.parent)
        return _build_locked(base, final, version, arch, sdist, jobs, console)


def _build_locked(base: Path, final: Path, version: str, arch: str, sdist, jobs, console) -> dict:
    timings: dict[str, float] = {}
    with console.status(f"[bold]llama.cpp aarch64[/] {version} for {arch}") as status:

        def step(name: str, fn):
            status.update(f"[bold]llama.cpp aarch64[/] {version}: {name} ...")
            t = time.monotonic()
            value = fn()
            timings[name] = round(time.monotonic() - t, 1)
            console.print(f"[arm64-llamacpp] {name} done in {timings[name]} s")
            return value

        step("sysroot", lambda: qemu_sysroot.sysroot_info(base) or qemu_sysroot.build(base))
        tarball = step("sdist", lambda: _sdist(base, version, sdist))
        src = step("unpack", lambda: _unpack(base, tarball, version))
        work = final.parent / f"work-{final.name}"
        facts = step("compile", lambda: _compile(src, work, arch, jobs or os.cpu_count() or 2, status))
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        staged = step("stage", lambda: _stage(base, src, work, tmp))
        step("pyc", lambda: qemu_sysroot.precompile(tmp, [tmp / "site"], base, seen_as=str(final)))
        smoke = step("smoke", lambda: _smoke(base, tmp / "site"))
    if smoke.get("version") != version or smoke.get("machine") != "aarch64":
        raise LlamaCppBuildError(f"step 'smoke': expected llama_cpp {version} on aarch64, got {smoke}")
    info = {
        "llama_cpp_python": version,
        "arch": arch,
        **facts,
        "compiler": _tool_version(CXX),
        "cmake": _tool_version("cmake"),
        "system_info": smoke["system_info"].strip(),
        **staged,
        "step_seconds": timings,
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)  # a folder without build.json is never trusted
    os.replace(tmp, final)
    return build_info(base, version, arch) or info


def summary(info: dict) -> str:
    """One line naming the build, for reports and tables."""
    return (
        f"llama.cpp (llama-cpp-python {info['llama_cpp_python']}, ggml {info.get('ggml_version')}) "
        f"cross-built by {info.get('compiler')} with -march={info['arch']}, GGML_NATIVE=OFF, GGML_OPENMP=OFF"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=qemu_sysroot.DEFAULT_ROOT, help="the arm64 cache folder")
    ap.add_argument("--arch", default=ARCH, help=f"-march for ggml-cpu (default {ARCH})")
    ap.add_argument("--sdist", type=Path, help="the llama-cpp-python sdist (default: pip download it)")
    ap.add_argument("--jobs", type=int, help="parallel compile jobs (default: every CPU)")
    ap.add_argument("--check", action="store_true", help="only say whether the build is there")
    args = ap.parse_args(argv)
    if args.check:
        info = build_info(args.root, arch=args.arch)
        print(json.dumps(info, indent=1) if info else f"not built: {build_dir(args.root, arch=args.arch)}")
        return 0 if info else 1
    try:
        info = build(args.root, arch=args.arch, sdist=args.sdist, jobs=args.jobs)
    except (qemu_sysroot.SysrootError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1))
    print(summary(info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
