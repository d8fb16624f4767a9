"""SIGTERM as an interruption: a verb stopped by ``kill`` (a scheduler, a container stop, Ctrl-C's
cousin) unwinds like Ctrl-C, so its atomic writes clean up, its checkpoints stay resumable and the
CLI prints "interrupted; run the same command again to resume" (exit 130).

`interruptible` wraps a verb: while it runs in the main thread, SIGTERM raises `Terminated` (a
`KeyboardInterrupt`) unless someone else already installed a SIGTERM handler; the previous
handler comes back when the verb returns. Nested verbs (``run`` calls ``distill``) install once.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_depth = 0


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM during a verb."""


def _raise_terminated(signum, frame):  # noqa: ARG001 (signal handler signature)
    # once: a second SIGTERM while unwinding must not interrupt the clean-up of the first
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"received signal {signum} (SIGTERM)")


def interruptible(func: F) -> F:
    """Decorate a verb so SIGTERM during it behaves like Ctrl-C (see the module doc)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        global _depth
        if threading.current_thread() is not threading.main_thread() or _depth:
            return func(*args, **kwargs)
        previous = signal.getsignal(signal.SIGTERM)
        install = previous in (signal.SIG_DFL, None)
        if install:
            signal.signal(signal.SIGTERM, _raise_terminated)
        _depth += 1
        try:
            return func(*args, **kwargs)
        finally:
            _depth -= 1
            if install:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]
