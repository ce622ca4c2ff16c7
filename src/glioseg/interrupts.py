"""SIGTERM as an exception, so that a terminated command cleans up as an interrupted one does.

Python ends a process on SIGTERM at once, without running ``finally`` blocks: a temporary file
of an atomic write (:func:`glioseg.files.atomic_path`) would stay behind, and the worker
processes of a pool would be left running. Inside :func:`sigterm_raises`, SIGTERM raises
:class:`Terminated` instead, which unwinds like Ctrl-C's ``KeyboardInterrupt`` (temporary files
removed, workers ended by :func:`glioseg.parallel.map_cases`); the command-line interface then
prints ``terminated`` and exits with status 143 (128 + SIGTERM), as a process killed by it would.

Python runs a signal handler wherever the main thread is, also inside a weakref callback, a ``__del__``
or another callback of the garbage collector. An exception raised there cannot propagate: Python prints
"Exception ignored in ..." and goes on, and the SIGTERM would be lost (:func:`resend_lost_terminated`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM
"""Exit status after SIGTERM (143), as a shell reports a process that SIGTERM ended."""


class Terminated(BaseException):  # not ...Error: named after the signal's meaning, like KeyboardInterrupt
    """SIGTERM was received. A ``BaseException``: no ``except Exception`` swallows it."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """Signal handler: raise :class:`Terminated` where the main thread is."""
    raise Terminated()


RESEND_S = 0.1
"""How long after a lost :class:`Terminated` SIGTERM is sent again (the callback that lost it has returned by then)."""


def resend_lost_terminated(unraisable: Any, otherwise: Callable[[Any], object] = sys.__unraisablehook__) -> None:
    """For ``sys.unraisablehook``: send SIGTERM again when Python dropped the :class:`Terminated` it raised.

    A SIGTERM whose handler ran inside a weakref callback, a ``__del__`` or another callback of the
    garbage collector raised :class:`Terminated` where it cannot propagate: Python printed "Exception
    ignored in ..." and the command went on as if no signal had come (a ``cv train`` fold worker, which
    heeds one SIGTERM only, trained on for all its epochs and its parent waited for it: 1 in 20 runs
    of the test that terminates it, on a busy machine). Here SIGTERM is sent again :data:`RESEND_S`
    later, from another thread, so that the handler runs once the main thread has left that callback
    (one that lands in such a callback again is sent again). Ctrl-C's ``KeyboardInterrupt`` is lost
    the same way and SIGINT is sent again likewise. Any other unraisable exception goes to
    ``otherwise`` (the hook in place before).
    """
    lost = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}.get(type(unraisable.exc_value))
    if lost is None:
        otherwise(unraisable)
        return
    resend = threading.Timer(RESEND_S, os.kill, (os.getpid(), lost))
    resend.daemon = True  # never keeps the process alive
    resend.start()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (the previous
    handler comes back after it), also when a callback of the garbage collector dropped the first
    :class:`Terminated` (:func:`resend_lost_terminated`). Outside the main thread, where Python
    cannot set handlers, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(resend_lost_terminated, otherwise=previous_hook)
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


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
