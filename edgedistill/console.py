"""What reaches the console: edgedistill's own progress and results; third-party output goes to a log.

The libraries a verb drives print much that is not meant for its user: Python warnings
(deprecations, exporter UserWarnings), their loggers, their progress bars (transformers'
"Loading weights"), and messages their native code writes straight to file descriptor 2
(OpenVINO, torchao library loads). Inside `third_party_to_log`:

- Python warnings are logged (`logging.captureWarnings`), and every logger but edgedistill's
  writes only to the log file; edgedistill's warnings also reach the console;
- transformers and huggingface_hub progress bars are off (their own switches; NNCF's, which has
  none, by constructing its progress tracker disabled, for the rest of the process), and libraries
  that attach their own console handler (transformers, huggingface_hub, datasets, nncf, torch) hand
  their records to the log instead, also when they are first imported during the verb;
- file descriptor 2 points at the log, so native code's messages land there, while ``sys.stderr``
  (rich progress bars, our messages) keeps writing to the terminal through a duplicate of it.

``--verbose`` turns all of this off: everything is shown on the console, as before.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OURS = ("edgedistill", "__main__")
LOG_NAME = "edgedistill.log"
# progress bars of the hub client and of transformers (which follows the hub's switch); children see it too
_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def log_path_for(command: str | None, out: str | None) -> Path | None:
    """Where a verb's third-party output goes: ``OUT/edgedistill.log`` for a verb that writes a folder
    (`run`, `fit`, `distill`, `export`...), ``REPORT.log`` beside a report file (``bench --out
    report.json``); None when the verb writes no output (nothing noisy runs then)."""
    if not out:
        return None
    path = Path(out)
    return path.with_suffix(".log") if path.suffix else path / LOG_NAME


class _OursOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in OURS


def _hand_over(logger_name: str) -> None:
    """A library logger with its own console handler: drop the handler, let records reach the root."""
    logger = logging.getLogger(logger_name)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
    logger.propagate = True


def _tame_transformers(_module: Any) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()


def _tame_hub(_module: Any) -> None:
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    _hand_over("huggingface_hub")


def _tame_nncf(_module: Any) -> None:
    """NNCF logs to stdout through its own handler and draws rich progress bars ("Statistics
    collection") on a console of its own: its records go to the log, its bars are switched off."""
    from nncf.common.logging import track_progress

    _hand_over("nncf")
    track = track_progress.track
    if getattr(track.__init__, "_edgedistill_quiet", False):
        return
    original = track.__init__

    def quiet_init(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    quiet_init._edgedistill_quiet = True
    track.__init__ = quiet_init


def _nothing(_module: Any) -> None:
    pass


# top-level module -> what to do once it is imported; after each, handlers the import attached to
# the console (a StreamHandler made while sys.stderr was our console stream) are moved to the log
_LIBRARIES: dict[str, Callable[[Any], None]] = {
    "transformers": _tame_transformers,
    "huggingface_hub": _tame_hub,
    "datasets": lambda _m: _hand_over("datasets"),
    "nncf": _tame_nncf,
    **{name: _nothing for name in ("torch", "torchao", "onnx", "onnxruntime", "openvino", "optimum")},
    **{name: _nothing for name in ("llama_cpp", "executorch", "accelerate", "tokenizers")},
}


def _move_handlers(console, log_file) -> None:
    """Every non-edgedistill logger's handler that writes to the console writes to the log instead."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        if logger.name.split(".")[0] in OURS:
            continue
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is console:
                handler.setStream(log_file)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a library's fix right after the library is first imported (heavy imports stay lazy)."""

    def __init__(self, pending: dict[str, Callable[[Any], None]], after: Callable[[], None]):
        self.pending = pending
        self.after = after

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        # the fix stays pending until the module runs: `importlib.util.find_spec` (an "is it installed?"
        # check, `edgedistill.plugins.is_installed`) finds a spec it never executes, and the import
        # that follows finds a fresh one
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            original(module)
            fix = self.pending.pop(name, None)
            if fix is None:
                return
            with contextlib.suppress(Exception):  # quieting a library never breaks the verb
                fix(module)
                self.after()

        loader.exec_module = exec_module
        return spec


_EMIT = logging.StreamHandler.emit.__code__


class _Console:
    """``sys.stderr`` during a verb: the terminal, except what a library's own logging handler or a
    tqdm progress bar writes.

    Libraries may build a console handler while the verb runs (torch re-creates its handlers on
    later imports), holding this stream; a record of a logger that is not edgedistill's, written by
    `logging.StreamHandler.emit`, goes to the log instead."""

    def __init__(self, stream, log_file):
        self._stream = stream
        self._log = log_file

    def write(self, text: str) -> int:
        caller = sys._getframe(1)
        if caller.f_code is _EMIT:
            record = caller.f_locals.get("record")
            if record is not None and record.name.split(".")[0] not in OURS:
                return self._log.write(text)
        # a tqdm bar a library draws itself, with no switch to turn it off (transformers' GGUF loader);
        # edgedistill's own bars are rich's
        if str(caller.f_globals.get("__name__", "")).split(".")[0] == "tqdm":
            return self._log.write(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _console_stream():
    """A text stream to the terminal that survives fd 2 being pointed at the log.

    When ``sys.stderr`` is not file descriptor 2 (pytest's capture, a redirected stream), it stays as is."""
    try:
        if sys.stderr.fileno() != 2:
            return sys.stderr, False
    except (AttributeError, OSError, ValueError):
        return sys.stderr, False
    sys.stderr.flush()
    stream = os.fdopen(
        os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace"
    )
    return stream, True


@contextlib.contextmanager
def third_party_to_log(
    log_path: Path | None, *, verbose: bool = False, live: bool = False
) -> Iterator[Path | None]:
    """Send third-party output to ``log_path`` for the duration; yields the log path (None: nothing moved).

    ``verbose`` or no ``log_path``: plain logging to the console (DEBUG with ``verbose``).
    ``live``: append to ``log_path`` as things happen (its folder must exist and stay), so a process
    killed hours in keeps its log; otherwise a temporary file lands in the folder at the end."""
    root = logging.getLogger()
    if verbose or log_path is None:
        logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format=LOG_FORMAT)
        yield None
        return
    # The verb's output folder may not exist yet (or be refused, or be replaced by --overwrite): the
    # log is written to a temporary file and lands in the folder at the end, only if the folder exists.
    if live:
        temporary = log_path
        log_file = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in finally)
    else:
        handle, temporary = tempfile.mkstemp(prefix="edgedistill-", suffix=".log")
        log_file = open(handle, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in finally)
    log_file.write(
        f"==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {' '.join(sys.argv)}: "
        "third-party output (warnings, library logs, native messages); --verbose shows it on the console\n"
    )
    console, own_stream = _console_stream()
    saved_fd = os.dup(2)
    saved = (sys.stderr, list(root.handlers), root.level, {k: os.environ.get(k) for k in _QUIET_ENV})
    to_file = logging.StreamHandler(log_file)
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    to_console = logging.StreamHandler(console)
    to_console.setLevel(logging.WARNING)
    to_console.addFilter(_OursOnly())
    to_console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    hook = _AfterImport({}, lambda: _move_handlers(sys.stderr, log_file))
    try:
        os.dup2(log_file.fileno(), 2)
        sys.stderr = _Console(console, log_file) if own_stream else console
        root.handlers = [to_file, to_console]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        os.environ.update(_QUIET_ENV)
        for name, fix in _LIBRARIES.items():
            if name in sys.modules:
                with contextlib.suppress(Exception):
                    fix(sys.modules[name])
            else:
                hook.pending[name] = fix
        sys.meta_path.insert(0, hook)
        yield log_path
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(hook)
        logging.captureWarnings(False)
        old_stderr, handlers, level, env = saved
        root.handlers, root.level = handlers, level
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.stderr = old_stderr
        with contextlib.suppress(OSError):
            console.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        if own_stream:
            console.close()
        log_file.close()
        if not live:
            _land(Path(temporary), log_path)


def _land(temporary: Path, log_path: Path) -> None:
    """Append the session's log to ``log_path`` where its folder exists (a refused verb leaves nothing).

    Under a multi-process launcher (accelerate/torchrun set RANK) only rank 0 writes into the output,
    as every verb promises; the other ranks' library output is dropped with their temporary file."""
    try:
        if log_path.parent.is_dir() and os.environ.get("RANK", "0") == "0":
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(temporary.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        pass  # a full disk or a removed folder: the log is not worth failing the verb for
    finally:
        temporary.unlink(missing_ok=True)
