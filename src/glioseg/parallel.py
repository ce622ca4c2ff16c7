"""Run one function over many cases, in worker processes or in this one, with a progress bar."""

from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


def _ignore_interrupts() -> None:
    """Worker initializer: Ctrl-C is handled by the parent alone.

    The terminal sends SIGINT to every process of the group; a worker that raised
    KeyboardInterrupt would print its own traceback. The parent stops handing out cases and
    waits for the running ones, which finish (their writes are atomic), then exits quietly.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    half-written), no further case is started, and ``KeyboardInterrupt`` is raised here.
    """
    with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress or not jobs) as bar:
        if workers > 1 and len(jobs) > 1:
            pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_ignore_interrupts)
            try:
                for result in pool.map(func, jobs):
                    bar.update()
                    yield result
            except BaseException:  # Ctrl-C (or an error): let running cases finish, start no other
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        else:
            for job in jobs:
                result = func(job)
                bar.update()
                yield result
