"""Run one function over many cases, in worker processes or in this one, with a progress bar."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from types import FrameType
from typing import Any, TypeVar

from tqdm.auto import tqdm

from glioseg.interrupts import Terminated, deferred_signals, resend_lost_terminated

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")

_PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when its parent dies."""

_in_job = False
"""In a worker: whether a job is running (SIGTERM then unwinds it before the worker exits)."""

_unwinding = False
"""In a worker: a SIGTERM is unwinding the job; further SIGTERMs must not cut its cleanup short."""


def _end_with_parent(parent: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (even by SIGKILL); exit now
    if the parent ``parent`` is already gone."""
    if sys.platform.startswith(
        "linux"
    ):  # the process's own symbols hold libc's prctl (no library search in a forked child)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(128 + signal.SIGTERM)


def init_worker(parent: int) -> None:
    """Worker initializer: Ctrl-C is handled by the parent alone; SIGTERM, or the parent's death, ends the worker.

    The terminal sends SIGINT to every process of the group; a worker that raised
    KeyboardInterrupt would print its own traceback. The parent stops handing out cases and
    waits for the running ones, which finish (their writes are atomic), then exits quietly.

    SIGTERM (from the parent when it is terminated, from ``kill`` of the process group, or sent
    by Linux when the parent dies, even by SIGKILL: ``PR_SET_PDEATHSIG``) unwinds the running job
    (its temporary files are removed) and ends the worker at once, also when a callback of the
    garbage collector dropped the first :class:`Terminated` (:func:`_worker_unraisable`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    sys.unraisablehook = _worker_unraisable
    _end_with_parent(parent)


def _worker_sigterm(signum: int, frame: FrameType | None) -> None:
    """The first SIGTERM unwinds the running job (or ends an idle worker); later ones are ignored.

    A worker often gets SIGTERM more than once: from ``kill`` of the process group and from the
    parent ending its workers, and from Linux (``PR_SET_PDEATHSIG``) once for each of a killed
    parent's threads as they exit, since the orphan is handed to the next live thread each time.
    A second :class:`Terminated` raised while the first unwinds would skip the cleanup under way
    (an atomic write's temporary file stayed behind in 1 of 50 parent kills on a busy machine; in
    2 of 10 kills a worker got a second SIGTERM).
    """
    global _unwinding  # noqa: PLW0603 - one flag per worker process, read by this handler
    if _unwinding:
        return
    if _in_job:
        _unwinding = True
        raise Terminated()
    os._exit(128 + signal.SIGTERM)  # idle: nothing to clean up


def _worker_unraisable(unraisable: Any) -> None:
    """A worker's ``sys.unraisablehook``: a :class:`Terminated` that Python dropped (the SIGTERM handler
    ran inside a weakref callback or a ``__del__``) unwound nothing, so the worker is not unwinding:
    the SIGTERM that :func:`~glioseg.interrupts.resend_lost_terminated` sends again must not be ignored.

    Before, the worker then ignored every later SIGTERM and trained on; its parent waited in ``join``.
    """
    global _unwinding  # noqa: PLW0603 - one flag per worker process, read by the SIGTERM handler
    if isinstance(unraisable.exc_value, Terminated):
        _unwinding = False
    resend_lost_terminated(unraisable)


def run_in_worker(func: Callable[[JobT], ResultT], job: JobT) -> ResultT:
    """Run one job in a worker; on SIGTERM, let it clean up, then end the worker process."""
    global _in_job  # noqa: PLW0603 - the SIGTERM handler reads it: one flag per worker process
    _in_job = True
    try:
        return func(job)
    except Terminated:
        os._exit(128 + signal.SIGTERM)  # the job's `finally` blocks (atomic writes) have run
    finally:
        _in_job = False
        if _unwinding:  # the job caught the Terminated and went on: the worker ends all the same
            os._exit(128 + signal.SIGTERM)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Send SIGTERM to every worker process of ``pool`` (each cleans up its job and exits)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


RUNTIMES = ("torch", "onnxruntime", "openvino")
"""Modules whose thread pools are not safe to fork once they have run (OpenMP's, ONNX Runtime's)."""


def pool_context() -> multiprocessing.context.BaseContext:
    """How :func:`map_cases` starts its workers: ``fork``, or ``spawn`` where forking is unsafe.

    ``fork`` is fast (no re-import, and the parent's state is the worker's) but copies only the
    calling thread: a lock that another thread held at that moment stays locked for ever in the
    child, and its first use there hangs. That happened to a worker forked after a network had run
    in the same process (OpenMP's and ONNX Runtime's thread pools). So a process that has loaded
    one of :data:`RUNTIMES`, or runs another Python thread (tqdm's idle progress monitor aside),
    starts fresh interpreters instead. numpy's BLAS threads, which every process here has, are
    fork-safe (OpenBLAS quiesces them at the fork).
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and type(t).__name__ != "TMonitor"]
    unsafe = others or any(name in sys.modules for name in RUNTIMES)
    return multiprocessing.get_context("spawn" if unsafe else "fork")


def map_cases(
    func: Callable[[JobT], ResultT], jobs: Sequence[JobT], *, workers: int, desc: str, progress: bool
) -> Iterator[ResultT]:
    """Yield ``func(job)`` for each job, in order.

    Args:
        func: a picklable (module-level) function.
        jobs: its arguments, one per case.
        workers: processes to use; 1 (or a single job) runs in this process.
        desc: label of the progress bar.
        progress: show a tqdm progress bar.

    On Ctrl-C the worker processes finish the cases they are on (no traceback, nothing
    half-written), no further case is started, and ``KeyboardInterrupt`` is raised here. On
    :class:`~glioseg.interrupts.Terminated` (SIGTERM, see :func:`glioseg.interrupts.sigterm_raises`)
    the workers are ended at once (each removes its temporary files) and it is raised here. A
    worker whose parent dies (even by SIGKILL) ends too. Workers are forked, or spawned where
    forking is unsafe (:func:`pool_context`).
    """
    context = pool_context()  # before the progress bar, whose monitor is a thread of its own
    with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress or not jobs) as bar:
        if workers > 1 and len(jobs) > 1:
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(jobs)),
                mp_context=context,
                initializer=init_worker,
                initargs=(os.getpid(),),
            )
            with deferred_signals():  # the pool forks its workers here: a signal then is acted on after
                futures = [pool.submit(run_in_worker, func, job) for job in jobs]
            try:
                try:
                    for future in futures:
                        _wait(future)
                        result = future.result()
                        bar.update()
                        yield result
                except BaseException as exc:  # Ctrl-C (or an error): let running cases finish, start no other
                    if not isinstance(exc, Terminated):
                        for future in futures:
                            future.cancel()
                        for future in futures:
                            _wait(future)
                        pool.shutdown(wait=True)
                    raise
                pool.shutdown(wait=True)
            except Terminated:  # SIGTERM, also while the running cases finish after Ctrl-C: end them now
                _end_workers(pool)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        else:
            for job in jobs:
                result = func(job)
                bar.update()
                yield result


_POLL_S = 0.2
"""How often the parent wakes while it waits for a worker, to run its signal handlers."""


def _wait(future: Future) -> None:
    """Wait until ``future`` is done, waking every :data:`_POLL_S` seconds.

    A signal may be delivered to any thread of the process; Python runs its handler in the main
    thread only once that thread wakes. A wait without a timeout could then sleep through
    SIGINT and SIGTERM until the worker's case ends.
    """
    while not future.done():
        wait([future], timeout=_POLL_S)


def loader_worker_init(parent: int, worker_id: int) -> None:
    """``worker_init_fn`` of a PyTorch ``DataLoader`` (see :func:`loader_batches`): Ctrl-C is
    handled by the parent alone, SIGTERM or the parent's death (even by SIGKILL) ends the worker
    at once (a data-loader worker only reads, it has nothing to clean up)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent)


def loader_worker_init_fn() -> Callable[[int], None]:
    """The ``worker_init_fn`` to give a ``DataLoader`` created in this process."""
    return functools.partial(loader_worker_init, os.getpid())


@contextlib.contextmanager
def loader_batches(loader: Any) -> Iterator[Iterator[Any]]:
    """Iterate ``loader`` (a PyTorch ``DataLoader``) so that its worker processes end with this one.

    PyTorch shuts its workers down when an iteration is abandoned, but waits up to 5 s for each
    (a worker inside a slow ``__getitem__`` does not answer), and a signal that arrives while it
    forks them is lost (see :func:`glioseg.interrupts.deferred_signals`). Here the workers are
    started with SIGINT and SIGTERM deferred, and on any exception in the block (Ctrl-C,
    SIGTERM, an error) they are sent SIGTERM at once. Give the loader
    :func:`loader_worker_init_fn` as its ``worker_init_fn``.
    """
    with deferred_signals():
        iterator = iter(loader)
    try:
        yield iterator
    except BaseException as exc:
        # A worker ended by the same signal (SIGTERM to the process group) makes PyTorch's SIGCHLD
        # handler raise "DataLoader worker ... is killed by signal" over the signal's exception:
        # the signal's exception is the one raised, and cleanup is retried past such an error.
        stopped = exc if isinstance(exc, (KeyboardInterrupt, Terminated)) else exc.__context__
        for _ in range(3):
            try:
                _end_loader_workers(iterator)
                break
            except RuntimeError:
                continue
        if isinstance(stopped, (KeyboardInterrupt, Terminated)) and stopped is not exc:
            raise stopped from None
        raise


def _end_loader_workers(iterator: Any) -> None:
    """Stop watching a ``DataLoader`` iterator's workers, send each SIGTERM, and let PyTorch reap them."""
    if getattr(iterator, "_worker_pids_set", False):  # PyTorch's SIGCHLD handler no longer reports them
        from torch.utils.data._utils import signal_handling

        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False
    for process in getattr(iterator, "_workers", ()):  # multiprocessing.Process objects
        if process.is_alive():
            process.terminate()
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
