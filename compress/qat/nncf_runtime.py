"""NNCF as a runtime dependency: the lazy import, its torch C++ extension (build, stale locks, reference
fallback), and its hooks on a model.

What the NNCF 3.4 source says about its C++ extension (read from ``nncf/torch/extensions``,
``nncf/torch/quantization/{extensions,quantize_functions,reference}.py``):

- The torch backend *does* use the C++ extension for QAT fake-quant on CPU: the autograd
  functions behind every ``SymmetricQuantizer``/``AsymmetricQuantizer`` forward and backward
  call ``QuantizedFunctionsCPU.get("Quantize_forward"/"Quantize_backward")``. The extension is
  JIT-compiled with ``torch.utils.cpp_extension.load`` into
  ``$TORCH_EXTENSIONS_DIR/nncf/quantized_functions_cpu/<torch version>/`` (default root
  ``~/.cache/torch_extensions/py<ver>_<cpu|cuXXX>``) on the first *training/inference forward through a
  quantizer*, not at ``import nncf`` and not during ``nncf.quantize`` calibration.
- ``cpp_extension.load`` serialises builds with a ``lock`` file (``FileBaton``): the builder
  creates it with ``O_EXCL`` and keeps its descriptor open until the build ends; everyone else
  polls until the file disappears -- forever. A build killed hard (SIGKILL, OOM, a CI timeout)
  leaves the file behind.
- NNCF loads the extension in a worker thread and waits ``NNCF_EXTENSION_LOAD_TIMEOUT`` seconds
  (read from the environment on every first load, integer, default 60, ``0`` = wait forever).
  On timeout it raises ``ExtensionLoaderTimeoutException``: it does NOT fall back. The worker
  thread is a daemon, so when the process then exits the build dies mid-way *and its lock
  stays*: NNCF's own timeout is what creates stale locks, and every later run then times out on
  the stale lock. Measured here: the first compile took 94 s on this 2-core machine while
  another job was training (the FIELD-NOTES ~30 s is on an idle machine), i.e. longer than
  NNCF's default 60 s.
- NNCF falls back to ``ReferenceQuantizedFunctions`` (pure torch, wrapped in ``torch.compile``
  on first use, eager if that fails) only when the compile itself raises (no compiler, no
  ninja). The fallback is numerically the same fake-quant, slower, and ``torch.compile`` may
  recompile for new input shapes.

``ensure_nncf_extensions`` therefore (1) sets ``NNCF_EXTENSION_LOAD_TIMEOUT`` when unset,
(2) removes ``lock`` files that no live process holds, (3) loads the extension now, and on a
timeout switches NNCF to its reference functions with a warning instead of failing -- the build
keeps going in the background and is reused by the next run if it finishes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from edgedistill.errors import EdgeDistillError, MissingDependencyError

log = logging.getLogger(__name__)


# NNCF adds one submodule, named like this, that holds every quantizer (nncf.torch.function_hook.wrapper).
HOOK_STORAGE_NAME = "__nncf_hooks"


# A lock younger than this may be in the middle of being released (close, then unlink).
_LOCK_RELEASE_GRACE_S = 2.0


_EXAMPLE_ATTR = "_edgedistill_qat_example_input"


class QATError(EdgeDistillError):
    """Quantization-aware training cannot proceed as asked (bad input, a model in the wrong state)."""


# lazy import


def _import_nncf(purpose: str):
    try:
        import nncf
        import nncf.torch  # noqa: F401  (registers the torch backend and its extensions)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "nncf":
            raise  # nncf is installed but one of its own imports is broken: show the real error
        raise MissingDependencyError("nncf", "all", purpose) from exc
    return nncf


# 1. the C++ extension: no hang, ever


def ensure_nncf_extensions(timeout_s: float = 120.0) -> None:
    """Make NNCF's fake-quant kernels usable now, never blocking longer than the load timeout.

    The timeout is ``NNCF_EXTENSION_LOAD_TIMEOUT`` when the user set it (``0`` = wait forever, their
    choice), else ``timeout_s`` rounded up to whole seconds and written to that variable, because
    NNCF reads it on every first load in this process. Then: removes stale build locks (no live
    process holds them), builds/loads the extension, and on a timeout switches NNCF to its
    reference functions with a warning instead of raising. Safe to call many times; cheap once
    the extension is loaded (a lock check and nothing else).
    """
    _import_nncf("Quantization-aware training")
    from nncf.torch import extensions as nncf_ext
    from nncf.torch.quantization import extensions as q_ext  # registers the CPU/CUDA loaders
    from nncf.torch.quantization import quantize_functions as qf

    env_name = getattr(nncf_ext, "EXTENSION_LOAD_TIMEOUT_ENV_VAR", "NNCF_EXTENSION_LOAD_TIMEOUT")
    if env_name not in os.environ:
        os.environ[env_name] = str(max(1, math.ceil(timeout_s)))
    try:
        nncf_timeout_s = nncf_ext._get_extension_load_timeout()  # None: the user disabled the timeout
    except ValueError as exc:
        raise QATError(
            f"{env_name}={os.environ[env_name]!r}: NNCF needs whole seconds (e.g. {env_name}=180; 0 waits forever)"
        ) from exc

    targets = [("cpu", q_ext.QuantizedFunctionsCPULoader, qf.QuantizedFunctionsCPU)]
    if torch.cuda.is_available():
        targets.append(("cuda", q_ext.QuantizedFunctionsCUDALoader, qf.QuantizedFunctionsCUDA))

    for _, loader, _ in targets:
        _remove_stale_lock(
            Path(loader.get_build_dir()) / "lock", stale_after_s=float(nncf_timeout_s or timeout_s)
        )

    for device, loader, namespace in targets:
        if getattr(namespace, "_loaded_namespace", None) is None:
            started = time.monotonic()
            try:
                namespace.get("Quantize_forward")
            except nncf_ext.ExtensionLoaderTimeoutException:
                _use_reference_functions(namespace)
                log.warning(
                    "NNCF's %s fake-quant extension did not build/load within %s s (build folder %s). "
                    "Quantization-aware training continues with NNCF's reference (pure torch) fake-quant: "
                    "same numbers, slower. The build goes on in the background and the next run reuses it "
                    "if it finishes; to wait longer set %s=600 (0 waits forever).",
                    device,
                    nncf_timeout_s,
                    loader.get_build_dir(),
                    env_name,
                )
                continue
            log.info(
                "NNCF %s fake-quant kernels ready in %.1f s (%s)",
                device,
                time.monotonic() - started,
                fake_quant_backend(device),
            )
        if fake_quant_backend(device) == "reference":
            log.warning(
                "NNCF uses its reference (pure torch) %s fake-quant functions, not its C++ extension: "
                "QAT works but is slower. NNCF falls back like this when the extension cannot be compiled "
                "(see its warning above for the reason; it needs a C++ compiler and ninja) or after a "
                "load timeout. Build folder: %s",
                device,
                loader.get_build_dir(),
            )


def fake_quant_backend(device: str = "cpu") -> str:
    """Which fake-quant kernels NNCF uses: 'cpp_extension', 'reference', 'not_loaded' (or 'unavailable')."""
    try:
        from nncf.torch.quantization import quantize_functions as qf
        from nncf.torch.quantization.reference import ReferenceQuantizedFunctions
    except ImportError:
        return "unavailable"
    namespace = qf.QuantizedFunctionsCPU if device == "cpu" else qf.QuantizedFunctionsCUDA
    try:
        loaded = namespace._loaded_namespace
    except Exception:  # the CUDA stub on a machine without CUDA raises on any attribute
        return "unavailable"
    if loaded is None:
        return "not_loaded"
    return "reference" if loaded is ReferenceQuantizedFunctions else "cpp_extension"


def _use_reference_functions(namespace: Any) -> None:
    """Point an NNCF ``ExtensionNamespace`` at the reference functions (what NNCF does on a compile error)."""
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    if not hasattr(namespace, "_loaded_namespace"):
        raise QATError(
            "This NNCF version has no ExtensionNamespace._loaded_namespace; edgedistill cannot switch it to "
            "its reference fake-quant after a load timeout. Set NNCF_EXTENSION_LOAD_TIMEOUT=0 and build "
            "once with: python -c 'import nncf.torch; nncf.torch.force_build_cpu_extensions()'"
        )
    namespace._loaded_namespace = ReferenceQuantizedFunctions


def _remove_stale_lock(lock: Path, stale_after_s: float) -> bool:
    """Remove ``lock`` if no live build owns it; return True when it was removed."""
    try:
        seen = lock.stat()
    except FileNotFoundError:
        return False
    age_s = time.time() - seen.st_mtime
    holders, scan_complete = _processes_using(lock)
    if holders:
        log.info(
            "A torch-extension build is in progress (pid %s holds %s); NNCF waits for it.",
            ", ".join(map(str, holders)),
            lock,
        )
        return False
    if scan_complete:
        # Nobody holds it open and nobody builds in its folder: it was left by a killed build.
        stale = age_s >= _LOCK_RELEASE_GRACE_S
    else:
        # Without a full view of the processes (no /proc, or processes we may not inspect), only age tells.
        stale = age_s >= stale_after_s
    if not stale:
        return False
    try:
        now = lock.stat()
        if (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
            return False  # another process removed it and a new build took a fresh lock meanwhile
        lock.unlink()
    except FileNotFoundError:
        return False  # released meanwhile
    log.warning(
        "Removed a stale torch-extension build lock %s (age %.0f s, no process holds it): a previous NNCF "
        "extension build was killed before it finished, and every later load would have waited on it "
        "forever. The extension is rebuilt now.",
        lock,
        age_s,
    )
    return True


def _processes_using(lock: Path) -> tuple[list[int], bool]:
    """PIDs that hold ``lock`` open or run in its folder (ninja, the compilers), and whether the scan was complete.

    torch's FileBaton keeps the lock's descriptor open for the whole build, and ninja and the
    compilers run with the build folder as their working directory.
    """
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return [], False
    target = os.path.realpath(lock)
    build_dir = os.path.realpath(lock.parent)
    holders: list[int] = []
    complete = True
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid_dir = entry.path
        try:
            if os.readlink(f"{pid_dir}/cwd") == build_dir:
                holders.append(int(entry.name))
                continue
        except OSError:
            pass  # exited, a kernel thread, or not ours to inspect: the fd scan below decides
        try:
            fds = os.listdir(f"{pid_dir}/fd")
        except FileNotFoundError:
            continue
        except PermissionError:
            complete = False
            continue
        for fd in fds:
            try:
                if os.readlink(f"{pid_dir}/fd/{fd}") == target:
                    holders.append(int(entry.name))
                    break
            except OSError:
                continue
    return holders, complete


def _hooks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(hook name, module) for every NNCF hook in ``model``; empty for a plain model."""
    storage = model._modules.get(HOOK_STORAGE_NAME) if isinstance(model, torch.nn.Module) else None
    if storage is None:
        return []
    return list(storage.named_hooks(remove_duplicate=False))


def _is_hook_key(key: str) -> bool:
    return HOOK_STORAGE_NAME in key.split(".")
