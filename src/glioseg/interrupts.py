"""SIGTERM as an exception, so that a terminated command cleans up as an interrupted one does.

Python ends a process on SIGTERM at once, without running ``finally`` blocks: a temporary file
of an atomic write (:func:`glioseg.files.atomic_path`) would stay behind, and the worker
processes of a pool would be left running. Inside :func:`sigterm_raises`, SIGTERM raises
:class:`Terminated` instead, which unwinds like Ctrl-C's ``KeyboardInterrupt`` (temporary files
removed, workers ended by :func:`glioseg.parallel.map_cases`); the command-line interface then
prints ``terminated`` and exits with status 143 (128 + SIGTERM), as a process killed by it would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM
"""Exit status after SIGTERM (143), as a shell reports a process that SIGTERM ended."""


class Terminated(BaseException):  # not ...Error: named after the signal's meaning, like KeyboardInterrupt
    """SIGTERM was received. A ``BaseException``: no ``except Exception`` swallows it."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """Signal handler: raise :class:`Terminated` where the main thread is."""
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (the previous
    handler comes back after it). Outside the main thread, where Python cannot set handlers,
    the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are recorded, not acted on; on leaving it the
    handlers in place before come back and run for a signal that arrived meanwhile.

    For a block that forks worker processes: Python calls its after-fork hooks (``logging``'s
    among them) in a way that swallows an exception, so a ``KeyboardInterrupt`` or
    :class:`Terminated` raised by a signal handler there would be lost and the command would go
    on working. Outside the main thread the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(received):  # each signal once, in the order they came
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
