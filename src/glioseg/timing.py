"""Seconds spent per stage of one job (predicting a case, preparing a case)."""

from __future__ import annotations

import time
from collections.abc import Iterable


class StageClock:
    """``lap(stage)`` adds the time since the previous lap (or the start) to ``stage``.

    Attributes:
        seconds: stage -> seconds so far (every stage given at the start, at 0).
        started: :func:`time.perf_counter` at the start.
    """

    def __init__(self, stages: Iterable[str]) -> None:
        self.seconds = dict.fromkeys(stages, 0.0)
        self.started = self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def total(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.started
