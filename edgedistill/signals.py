"""SIGTERM as an interruption: a verb stopped by ``kill`` (a scheduler, a container stop, Ctrl-C's
cousin) unwinds like Ctrl-C, so its atomic writes clean up, its checkpoints stay resumable and the
CLI prints "interrupted; run the same command again to resume" (exit 130).

`interruptible` wraps a verb: while it runs in the main thread, SIGTERM raises `Terminated` (a
`KeyboardInterrupt`) unless someone else already installed a SIGTERM handler; the previous
handler comes back when the verb returns. Nested verbs (``run`` calls ``distill``) install once.

A process forked during a verb does not inherit that handler: SIGTERM kills it, as it would
without edgedistill. A Python handler runs only between bytecodes, so a forked child blocked in C
could not be stopped by SIGTERM at all. That is not hypothetical: OpenVINO's and NNCF's telemetry
(`openvino_telemetry`, on unless opted out or ``CI=true``) sends from a child forked off a worker
thread and bounds it with ``terminate()``; that child can deadlock in ``getaddrinfo`` (a lock held by
another thread at fork time), and with the handler inherited the terminate never landed and
``multiprocessing``'s exit hook waited for it for ever (seen 2026-12-03: a test process hung at exit).
"""

from __future__ import annotations

import functools
import os
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


def _default_sigterm_in_child() -> None:
    # after fork the forking thread is the child's main thread, so signal.signal is allowed
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


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
