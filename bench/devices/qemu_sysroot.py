"""Build the aarch64 userland the ``arm64-emulated`` device runs in (resumable, idempotent).

    python -m edgedistill.bench.devices.qemu_sysroot            # builds ~/.cache/edgedistill/arm64
    python -m edgedistill.bench.devices.qemu_sysroot --check    # says whether it is complete

Steps, each skipped when its stamp file exists (so a broken download resumes where it stopped):

1. ``lists``: Debian's arm64 package lists, fetched with ``apt-get update`` into the cache (private
   ``Dir::State::Lists``/``Dir::Cache``: the host's apt configuration and architectures are untouched);
2. ``debs``: ``python3.11`` for arm64 and its dependency closure (``apt-cache depends --recurse``),
   downloaded with ``apt-get download``, plus ``libstdc++6``/``libgcc-s1`` the runtimes link to;
3. ``root``: every .deb unpacked with ``dpkg -x`` into ``root/`` (no maintainer scripts run);
4. ``wheels``: aarch64 wheels of numpy, onnxruntime and tokenizers for CPython 3.11
   (``pip download --platform manylinux..._aarch64 --only-binary=:all:``), the versions this host
   has, unpacked into ``root/opt/edgedistill/site``; llama-cpp-python is tried the same way (PyPI
   has no aarch64 wheel of it as of 0.3.x: GGUF is then reported as not provable here);
5. ``smoke``: ``qemu-aarch64 -L root root/usr/bin/python3.11 -c "import numpy, onnxruntime"``;
6. ``openvino``: OpenVINO's aarch64 wheel (the host's version) and openvino-telemetry, kept only
   when ``import openvino`` works under qemu (an existing sysroot gains it on its next build);
7. ``pyc``: bytecode of the standard library and the wheels (`precompile`).

Needs: ``qemu-aarch64`` (Debian ``qemu-user``), ``apt-get``/``dpkg`` and the network to Debian and PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("EDGEDISTILL_ARM64_SYSROOT", "~/.cache/edgedistill/arm64")).expanduser()
PYTHON = "python3.11"
EXTRA_DEBS = ("libstdc++6", "libgcc-s1", "libgomp1", "ca-certificates")
WHEELS = ("numpy", "onnxruntime", "tokenizers")
OPTIONAL_WHEELS = ("llama-cpp-python",)
PLATFORMS = (  # bookworm's glibc is 2.36; OpenVINO's aarch64 wheels are manylinux_2_35
    "manylinux_2_35_aarch64",
    "manylinux_2_34_aarch64",
    "manylinux_2_31_aarch64",
    "manylinux_2_28_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
)
SITE = "opt/edgedistill/site"
# Versions known to import under qemu-user 7.2 (Debian bookworm's), tried when the host's version
# does not: onnxruntime 1.32's aarch64 wheel dies with SIGSEGV at import under qemu 7.2 (measured).
QEMU_FALLBACKS = {"onnxruntime": ("1.20.1",)}
IMPORT_NAMES = {"llama-cpp-python": "llama_cpp"}


class SysrootError(RuntimeError):
    """A step of the sysroot build failed; the message names the step and the command."""


def _say(msg: str) -> None:
    print(f"[arm64-sysroot] {msg}", file=sys.stderr, flush=True)


def _apt_opts(cache: Path) -> list[str]:
    return [
        "-o", "APT::Architecture=arm64",
        "-o", "APT::Architectures=arm64",
        "-o", f"Dir::State::Lists={cache / 'lists'}",
        "-o", f"Dir::State::Status={cache / 'status'}",
        "-o", f"Dir::Cache={cache / 'apt'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Get::List-Cleanup=0",
    ]  # fmt: skip


def _run(
    cmd: list[str], step: str, cwd: Path | None = None, timeout: float = 1800, env: dict | None = None
) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise SysrootError(
            f"arm64 sysroot step {step!r} failed: {' '.join(cmd[:6])} ... exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout)[-1500:]}"
        )
    return proc.stdout


def sysroot_root(base: Path | None = None) -> Path:
    return (base or DEFAULT_ROOT) / "root"


def sysroot_python(base: Path | None = None) -> Path:
    return sysroot_root(base) / "usr" / "bin" / PYTHON


def sysroot_info(base: Path | None = None) -> dict | None:
    """The finished sysroot's facts (``info.json``), or None when it is not built."""
    path = (base or DEFAULT_ROOT) / "info.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def missing_tools() -> list[str]:
    return [t for t in ("qemu-aarch64", "apt-get", "apt-cache", "dpkg") if shutil.which(t) is None]


def _closure(cache: Path) -> list[str]:
    out = _run(
        ["apt-cache", *_apt_opts(cache), "depends", "--recurse", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", "--no-pre-depends",
         PYTHON, *EXTRA_DEBS],
        "debs",
    )  # fmt: skip
    names = set()
    for line in out.splitlines():
        word = line.strip().split(":")[-1].strip() if ":" in line else line.strip()
        if not word or word.startswith("<") or " " in word:
            continue
        names.add(word.split(":")[0])
    # pre-depends are real dependencies too: ask again for them
    out2 = _run(["apt-cache", *_apt_opts(cache), "depends", "--recurse", "--no-recommends", "--no-suggests",
                 "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *sorted(names)], "debs")  # fmt: skip
    for line in out2.splitlines():
        word = line.strip().split(":", 1)[-1].strip() if ":" in line else line.strip()
        if word and not word.startswith("<") and " " not in word:
            names.add(word.split(":")[0])
    return sorted(n for n in names if not n.endswith("-dbg") and n not in ("debconf", "perl-base"))


def _wheel_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _download_wheel(name: str, dest: Path, version: str | None = None) -> Path | None:
    version = version or _wheel_version(name)
    spec = f"{name}=={version}" if version else name
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
            "3.11", "--implementation", "cp", *platforms, "-d", str(dest), "--quiet"]  # fmt: skip
    for candidate in (spec, name):  # the host's version first, then the newest aarch64 wheel
        before = set(dest.glob("*.whl"))
        proc = subprocess.run([*base, candidate], capture_output=True, text=True, timeout=900)
        if proc.returncode == 0:
            new = sorted(set(dest.glob("*.whl")) - before) or sorted(
                dest.glob(name.replace("-", "_") + "-*.whl")
            )
            if new:
                return new[-1]
    return None


def _unpack_wheel(whl: Path, site: Path) -> None:
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(site)


def _remove_dist(site: Path, name: str) -> None:
    module = IMPORT_NAMES.get(name, name.replace("-", "_"))
    for path in [
        site / module,
        *site.glob(f"{name.replace('-', '_')}-*.dist-info"),
        *site.glob(f"{module}.libs"),
    ]:
        shutil.rmtree(path, ignore_errors=True)


def qemu_python_cmd(base: Path | None = None) -> list[str]:
    root = sysroot_root(base)
    return ["qemu-aarch64", "-L", str(root), str(sysroot_python(base))]


def qemu_env(base: Path | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(sysroot_root(base) / SITE), "PYTHONNOUSERSITE": "1"}


def _imports(base: Path, name: str) -> bool:
    module = IMPORT_NAMES.get(name, name.replace("-", "_"))
    proc = subprocess.run(
        [*qemu_python_cmd(base), "-c", f"import {module}"],
        env=qemu_env(base),
        capture_output=True,
        timeout=600,
    )
    return proc.returncode == 0


def precompile(root: Path, folders: list[Path], base: Path | None = None, seen_as: str = "/") -> None:
    """Write the ``__pycache__`` files the emulated Python would otherwise recompile at every start.

    Debian's postinst (py3compile) never ran and wheels ship no bytecode; with
    ``PYTHONDONTWRITEBYTECODE`` set an emulated ``import numpy`` recompiled everything each time
    (3.6 s CPU under qemu, measured). Paths inside are the ones the emulated process sees
    (``root`` replaced by ``seen_as``). The host compiles when it is CPython 3.11 (same bytecode), else
    the emulated Python does.
    """
    args = ["-q", "-j", "0", "-s", str(root), "-p", seen_as, *map(str, folders)]
    if sys.version_info[:2] == (3, 11) and sys.implementation.name == "cpython":
        cmd, env = [sys.executable, "-m", "compileall", *args], None
    else:
        cmd, env = [*qemu_python_cmd(base), "-m", "compileall", *args], qemu_env(base)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode not in (0, 1):  # 1: some file of a package's test data does not compile
        raise SysrootError(f"step 'pyc': {' '.join(cmd[:4])} exited {proc.returncode}: {proc.stderr[-800:]}")


def build(base: Path | None = None, *, log=_say) -> dict:
    """Build (or finish building) the sysroot; returns its facts. Raises `SysrootError` naming the step."""
    base = base or DEFAULT_ROOT
    gone = missing_tools()
    if gone:
        raise SysrootError(
            f"cannot build the arm64 sysroot: {', '.join(gone)} not found (apt-get install qemu-user)"
        )
    cache, root, debs, wheels = base / "cache", base / "root", base / "debs", base / "wheels"
    for d in (cache / "lists" / "partial", cache / "apt" / "archives" / "partial", debs, wheels, root):
        d.mkdir(parents=True, exist_ok=True)
    (cache / "status").touch()
    timings: dict[str, float] = dict((sysroot_info(base) or {}).get("step_seconds", {}))

    def step(name: str, fn) -> None:
        stamp = base / f".done-{name}"
        if stamp.exists():
            return
        log(f"step {name} ...")
        t = time.monotonic()
        fn()
        timings[name] = round(time.monotonic() - t, 1)
        stamp.write_text(str(timings[name]), encoding="utf-8")
        log(f"step {name} done in {timings[name]} s")

    def lists() -> None:
        sources = cache / "sources.list"
        if not sources.exists():
            sources.write_text(
                "deb [arch=arm64] http://deb.debian.org/debian bookworm main\n"
                "deb [arch=arm64] http://deb.debian.org/debian bookworm-updates main\n"
                "deb [arch=arm64] http://deb.debian.org/debian-security bookworm-security main\n",
                encoding="utf-8",
            )
        _run(["apt-get", *_apt_opts(cache), "-o", f"Dir::Etc::SourceList={sources}",
              "-o", "Dir::Etc::SourceParts=/nonexistent", "update"], "lists")  # fmt: skip

    def get_debs() -> None:
        names = _closure(cache)
        have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
        todo = [n for n in names if n not in have]
        log(f"{len(names)} arm64 packages, {len(todo)} to download")
        if todo:
            _run(["apt-get", *_apt_opts(cache), "download", *todo], "debs", cwd=debs)

    def unpack() -> None:
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)], "root")
        if not sysroot_python(base).exists():
            raise SysrootError(f"step 'root': {sysroot_python(base)} missing after unpacking")

    def get_wheels() -> None:
        site = root / SITE
        site.mkdir(parents=True, exist_ok=True)
        found: dict[str, str | None] = {}
        for name in (*WHEELS, *OPTIONAL_WHEELS):
            whl = _download_wheel(name, wheels)
            found[name] = whl.name if whl else None
            if whl is None and name in WHEELS:
                raise SysrootError(f"step 'wheels': no aarch64 CPython 3.11 wheel of {name} on PyPI")
            if whl is not None:
                _unpack_wheel(whl, site)
                for fallback in QEMU_FALLBACKS.get(name, ()) if not _imports(base, name) else ():
                    log(f"{whl.name} does not import under qemu-user; trying {name}=={fallback}")
                    _remove_dist(site, name)
                    whl = _download_wheel(name, wheels, fallback)
                    found[name] = whl.name if whl else None
                    if whl is not None:
                        _unpack_wheel(whl, site)
                        if _imports(base, name):
                            break
            log(f"wheel {name}: {found[name] or 'none for aarch64 (not provable here)'}")
        (base / "wheels.json").write_text(json.dumps(found, indent=1), encoding="utf-8")

    def get_openvino() -> None:
        # optional: OpenVINO's aarch64 wheel (its ARM CPU plugin) and its pure-Python dependency
        site, found = root / SITE, json.loads((base / "wheels.json").read_text(encoding="utf-8"))
        whl = _download_wheel("openvino", wheels)
        tele = _download_wheel("openvino-telemetry", wheels) if whl is not None else None
        if whl is not None and tele is not None:
            _unpack_wheel(whl, site)
            _unpack_wheel(tele, site)
            if not _imports(base, "openvino"):
                log(f"{whl.name} does not import under qemu-user: OpenVINO is not provable here")
                _remove_dist(site, "openvino")
                whl = None
        found["openvino"] = whl.name if whl else None
        log(f"wheel openvino: {found['openvino'] or 'none for aarch64 (not provable here)'}")
        (base / "wheels.json").write_text(json.dumps(found, indent=1), encoding="utf-8")

    def smoke() -> None:
        out = _run(
            [*qemu_python_cmd(base), "-c",
             "import platform, numpy, onnxruntime, tokenizers; print(platform.machine(), numpy.__version__, onnxruntime.__version__)"],
            "smoke", timeout=600, env=qemu_env(base),
        )  # fmt: skip
        log(f"smoke: {out.strip()}")

    step("lists", lists)
    step("debs", get_debs)
    step("root", unpack)
    step("wheels", get_wheels)
    step("smoke", smoke)
    step("openvino", get_openvino)
    step("pyc", lambda: precompile(root, [root / "usr" / "lib" / PYTHON, root / SITE], base))
    info = {
        "root": str(root),
        "python": f"/usr/bin/{PYTHON}",
        "site": f"/{SITE}",
        "wheels": json.loads((base / "wheels.json").read_text(encoding="utf-8")),
        "step_seconds": timings,
    }
    (base / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"cache folder (default {DEFAULT_ROOT})")
    ap.add_argument("--check", action="store_true", help="only say whether the sysroot is complete")
    args = ap.parse_args(argv)
    if args.check:
        info = sysroot_info(args.root)
        print(json.dumps(info, indent=1) if info else f"not built: {args.root}")
        return 0 if info else 1
    try:
        info = build(args.root)
    except (SysrootError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
