"""Run one function over many cases, in worker processes or in this one, with a progress bar."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


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
    """
    with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress or not jobs) as bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                for result in pool.map(func, jobs):
                    bar.update()
                    yield result
        else:
            for job in jobs:
                result = func(job)
                bar.update()
                yield result
