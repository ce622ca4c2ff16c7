"""Starting, continuing and finishing runs: what ``glioseg train``, the demo and ``glioseg cv train`` share.

:func:`start_run` preprocesses the cases (when given) into the run's cache on the main process,
waits for it under ``torchrun``, and trains a new run folder; :func:`continue_run` resumes a run
folder with the settings it was written with; :func:`start_or_continue` does whichever the run
folder needs (a finished run returns at once). The training itself is
:func:`glioseg.training.loop.train`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from glioseg.config import Config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import Case
from glioseg.errors import GliosegError
from glioseg.training.loop import run_settings, train

logger = logging.getLogger(__name__)

History = list[dict[str, float]]


def default_cache(config: Config, run_dir: str | Path) -> Path:
    """The cache a new run keeps beside its folder when none is given: ``<parent>/cache-<recipe fingerprint>``."""
    return Path(run_dir).parent / f"cache-{config.preprocess.fingerprint()}"


def start_run(
    config: Config,
    run_dir: str | Path,
    *,
    cache: str | Path | None = None,
    cases: Sequence[Case] | None = None,
    workers: int = 1,
    split: dict | None = None,
    progress: bool = True,
    on_failed: Callable[[str], None] | None = None,
) -> History:
    """Train a new run: preprocess ``cases`` into ``cache`` (main process only), then train.

    Args:
        config: the run's preset.
        run_dir: the new run folder.
        cache: the preprocessed cache (default :func:`default_cache`).
        cases: raw cases to preprocess into the cache first (``None``: the cache is ready).
        workers: preprocessing processes.
        split: train/val case ids instead of the preset's split (see :func:`glioseg.training.loop.build_trainer`).
        progress: progress bars.
        on_failed: called with the one-line error of each case preprocessing could not use
            (default: logged); the other cases are used.

    Returns:
        The per-epoch history.

    Raises:
        GliosegError: ``run_dir`` already holds a run, or training cannot start.
    """
    from glioseg.device import resolve_device
    from glioseg.training.distributed import barrier, init_distributed

    run_dir = Path(run_dir)
    cache = Path(cache) if cache is not None else default_cache(config, run_dir)
    if (run_dir / "last.pt").exists():
        raise GliosegError(run_dir, "already holds a run", "resume it to continue, or choose another run folder")
    dist_info = init_distributed(resolve_device(config.train.device).type)
    if dist_info.is_main and cases is not None:
        report = preprocess_dataset(cases, config.preprocess, cache, workers=workers, progress=progress)
        for message in report.failed:
            (on_failed or logger.error)(message)
    barrier(dist_info)
    return train(config, cache, run_dir, split=split, progress=progress and dist_info.is_main)


def continue_run(run_dir: str | Path, *, progress: bool = True) -> History:
    """Resume ``run_dir`` from its ``last.pt`` with the preset and cache it was written with.

    Raises:
        GliosegError: ``run_dir`` is not a run folder, or has no ``last.pt``.
    """
    config, cache = run_settings(run_dir)
    return train(config, cache, run_dir, resume=True, progress=progress)


def start_or_continue(
    config: Config, cache: str | Path, run_dir: str | Path, *, split: dict | None = None, progress: bool = True
) -> History:
    """Continue ``run_dir`` if it holds a ``last.pt`` (an interrupted run goes on, a finished one
    returns at once), else start it with ``config`` on ``cache``."""
    run_dir = Path(run_dir)
    if (run_dir / "last.pt").is_file():
        logger.info("continuing %s from its last.pt", run_dir)
        return continue_run(run_dir, progress=progress)
    return train(config, cache, run_dir, split=split, progress=progress)


def finished_line(history: History, run_dir: str | Path) -> str:
    """One line on a finished training: epochs, seconds, the run folder and the last validation Dice."""
    last = history[-1]
    dice = "  ".join(f"{r.upper()} {last[f'val_dice_{r}']:.3f}" for r in ("wt", "tc", "et") if f"val_dice_{r}" in last)
    return f"trained {last['epoch']} epochs in {last['time_s']:.0f} s -> {run_dir}  {dice}"
