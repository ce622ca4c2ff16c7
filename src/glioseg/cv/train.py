"""``glioseg cv train``: train every fold of a recipe and predict each fold's held-out cases.

For each fold k (or only those asked for), each stage of the recipe in order: a finished run is
skipped, an interrupted one continues from its ``last.pt``, a new one starts (a later stage from
the earlier stage's ``last.pt`` of the same fold). Then fold k's model of the last stage (its
last epoch: nothing is chosen on held-out cases) predicts fold k's held-out cases on their
original grids into ``WORK/<stage>/pred``. Several folds train at once in separate processes
(``workers``), which end with the command on Ctrl-C or SIGTERM.

A recipe with a cascade stage (:mod:`glioseg.cv.recipe`) runs in two phases: every asked fold of the
stages before the first cascade stage (a stage named as a prior predicts its held-out cases too), then
the cascade stages' input cache from the prior's out-of-fold label maps of all cases
(:mod:`glioseg.cv.cascade`), then every asked fold of the cascade stages.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glioseg.cv.recipe import Recipe, Stage, fold_config
from glioseg.cv.workdir import RECORD, WorkFolder, cache_dir, find_cases, prepare_work, stage_cache
from glioseg.data.discovery import Case
from glioseg.errors import GliosegError
from glioseg.files import write_json

logger = logging.getLogger(__name__)

FINISHED = "finished.json"
"""Written into a run folder when its training has finished: ``{"epochs", "train_s", "threads", "device"}``."""


class FoldsFailed(GliosegError):
    """Some folds failed; the others were trained. ``problems`` holds one line per failed fold."""

    def __init__(self, work: Path, folds: Sequence[int | None], problems: Sequence[str]) -> None:
        self.folds = list(folds)
        self.problems = list(problems)
        names = ", ".join(_fold_name(f) for f in self.folds)
        super().__init__(
            work, f"training or prediction failed for fold(s) {names}; the other folds were trained",
            "fix what each error names, then run the same command again: finished folds are skipped",
        )


def _fold_name(fold: int | None) -> str:
    return "all" if fold is None else str(fold)


@dataclass(frozen=True)
class FoldJob:
    """What one worker process does: some folds (``None``: the all-cases model) of every stage."""

    work: Path
    recipe: Recipe
    folds: tuple[int | None, ...]
    threads: int
    device: str | None
    cases: tuple[Case, ...]
    progress: bool
    stages: tuple[int, int] = (0, 1 << 30)
    """The recipe's stages ``[start, stop)`` this job trains (a cascade recipe runs in two phases)."""


def run_cv_train(
    recipe: Recipe,
    roots: Sequence[Path],
    work_path: Path,
    *,
    folds: Sequence[int] | None = None,
    all_cases: bool = False,
    workers: int = 1,
    threads: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> WorkFolder:
    """Train and predict the folds of ``recipe`` on the cases under ``roots`` into ``work_path``.

    Args:
        recipe: stages, folds and split seed.
        roots: dataset folders (any layout glioseg reads; several are joined).
        work_path: the work folder (made, or checked against this recipe and dataset).
        folds: the folds to do (default: all).
        all_cases: train the model on all cases instead of the folds (nnU-Net's "all").
        workers: folds trained at once, one process each.
        threads: torch threads per process (0: the machine's cores shared among the workers).
        device: ``cpu``, ``cuda``, ... (default: each stage's ``train.device``).
        progress: progress bars (one worker only).

    Raises:
        GliosegError: a broken dataset, a work folder of another recipe or dataset, a fold out
            of range, a preprocessing or training failure (the other folds are finished first
            when several workers run).
    """
    from glioseg.data.cache import preprocess_dataset
    from glioseg.device import resolve_device

    real_work = Path(os.path.realpath(work_path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real_work == real_root or real_root in real_work.parents:
            raise GliosegError(
                work_path,
                f"lies inside the dataset folder {root}, which this command reads",
                "choose a work folder outside the data",
            )
    cases = find_cases(roots, recipe.modalities)
    if len(cases) < recipe.folds:
        raise GliosegError(
            roots[0],
            f"holds {len(cases)} labelled cases, fewer than the {recipe.folds} folds",
            f"use 2 to {len(cases)} folds",
        )
    # a fold given twice is trained once (two workers would train it into one run folder at once)
    asked = folds if folds is not None else range(recipe.folds)
    todo: list[int | None] = [None] if all_cases else list(dict.fromkeys(asked))
    for fold in todo:  # before the work folder is made or recorded
        if fold is not None and not 0 <= fold < recipe.folds:
            raise GliosegError(
                None,
                f"fold {fold} is outside 0..{recipe.folds - 1} ({recipe.folds} folds)",
                f"give folds (--fold) between 0 and {recipe.folds - 1}",
            )
    for name in dict.fromkeys(device or stage.config.train.device for stage in recipe.stages):
        resolve_device(name)  # e.g. cuda on a machine without a GPU: one line now, not one per fold after preprocessing
    fresh = not (work_path / RECORD).is_file()
    work = prepare_work(work_path, recipe, roots, cases)
    for fingerprint, stage in {
        s.config.preprocess.fingerprint(): s for s in recipe.stages if s.prior is None
    }.items():  # before any worker starts (a cascade stage's cache needs its prior's predictions: see below)
        report = preprocess_dataset(
            cases,
            stage.config.preprocess,
            cache_dir(work.path, fingerprint),
            workers=max(1, workers),
            progress=progress,
        )
        if report.failed:  # the case's own one-line error, its fix extended: every case is needed
            if fresh:  # nothing trained yet: unrecorded, so the same command runs once the case is removed
                (work.path / RECORD).unlink(missing_ok=True)
            problem, _, fix = report.failed[0].rpartition(". Fix: ")
            raise GliosegError(
                None, problem or fix, f"{fix if problem else 'fix that case'}, or remove that case, then run again"
            )
    workers = max(1, min(workers, len(todo)))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    cascade = next((i for i, s in enumerate(recipe.stages) if s.prior is not None), len(recipe.stages))
    phases = [(0, cascade), (cascade, len(recipe.stages))] if cascade else [(0, len(recipe.stages))]
    for phase in phases:
        if phase[0] == phase[1]:
            continue
        if phase[0] == cascade:
            from glioseg.cv.cascade import build_cascade_cache

            for stage in recipe.stages[cascade:]:
                build_cascade_cache(work, stage, cases, progress=progress)
        jobs = [
            FoldJob(
                work.path, recipe, tuple(todo[i::workers]), threads, device, tuple(cases), progress and workers == 1,
                phase,
            )
            for i in range(workers)
        ]
        failures = _run_job(jobs[0]) if workers == 1 else _run_in_processes(jobs)
        if failures:
            raise FoldsFailed(work.path, [fold for fold, _ in failures], [problem for _, problem in failures])
    return work


def _run_in_processes(jobs: Sequence[FoldJob]) -> list[tuple[int | None, str]]:
    """One process per job; on Ctrl-C or SIGTERM every process is ended (its temporary files
    removed) before this returns, and a process whose parent dies is ended too. A fold that
    fails lets its process go on with its other folds, and the other processes with theirs.

    Returns:
        ``(fold, one-line problem)`` per failed fold, in fold order.
    """
    from glioseg.interrupts import sigterm_raises

    context = multiprocessing.get_context("spawn")
    reports = context.SimpleQueue()  # (fold, problem) per failed fold, then (process index, _DONE)
    processes = [
        context.Process(target=_process_main, args=(job, os.getpid(), reports, i), name=f"glioseg-cv-{i}")
        for i, job in enumerate(jobs)
    ]
    with sigterm_raises():
        try:
            for process in processes:
                process.start()
            for process in processes:
                process.join()
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                if process.pid is not None:
                    process.join()
    failures: list[tuple[int | None, str]] = []
    finished = set()
    while not reports.empty():
        fold, problem = reports.get()
        if problem == _DONE:
            finished.add(fold)
        else:
            failures.append((fold, problem))
    for i, (job, process) in enumerate(zip(jobs, processes, strict=True)):
        if i not in finished:  # ended without reporting (killed, or a crash outside a fold)
            reported = {fold for fold, _ in failures}
            failures += [
                (f, f"fold {_fold_name(f)}: its process ended with exit code {process.exitcode}")
                for f in job.folds
                if f not in reported
            ]
    return sorted(failures, key=lambda item: -1 if item[0] is None else item[0])


_DONE = "done"
"""What a fold process reports, with its index, once every fold of its job was tried."""


def _process_main(job: FoldJob, parent: int, reports: multiprocessing.SimpleQueue, index: int) -> None:
    """A worker process: its folds, each failure reported to the parent as one line; SIGTERM (from
    the parent, or when the parent dies) unwinds the running fold and ends the process; Ctrl-C is
    the parent's."""
    from glioseg.parallel import init_worker, run_in_worker

    folds = ",".join(_fold_name(f) for f in job.folds)
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s fold {folds}: %(message)s")
    init_worker(parent)
    for fold, problem in run_in_worker(_run_job, job):
        reports.put((fold, problem))
    reports.put((index, _DONE))


def _run_job(job: FoldJob) -> list[tuple[int | None, str]]:
    """Train and predict every fold of ``job``; a fold that fails is reported and the next one runs.

    Returns:
        ``(fold, one-line problem)`` per failed fold.
    """
    from glioseg.cv.workdir import open_work

    work = open_work(job.work)
    splits = work.splits()
    failures: list[tuple[int | None, str]] = []
    for fold in job.folds:
        try:
            _run_fold(job, work, splits, fold)
        except GliosegError as exc:
            failures.append((fold, f"fold {_fold_name(fold)}: {exc}"))
        except Exception as exc:  # a bug or the machine (e.g. out of memory): still one line, the other folds go on
            logger.debug("fold %s failed", _fold_name(fold), exc_info=True)
            failures.append(
                (
                    fold,
                    f"fold {_fold_name(fold)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                    "(run with -v for the traceback)",
                )
            )
    return failures


def _run_fold(job: FoldJob, work: WorkFolder, splits: list[dict], fold: int | None) -> None:
    """Every stage of one fold (skipping finished runs), then its held-out predictions."""
    started = time.perf_counter()
    stages = job.recipe.stages
    start, stop = job.stages[0], min(job.stages[1], len(stages))
    priors = {s.prior for s in stages}
    for index in range(start, stop):
        stage = stages[index]
        run = work.run_dir(stage.name, fold)
        split = _split(splits, fold, work.record["cases"])
        before = stages[index - 1] if index else None
        # a cascade stage has three more input channels: it continues only a cascade stage of the same prior
        continues = before is not None and before.prior == stage.prior
        init = work.run_dir(before.name, fold) / "last.pt" if before is not None and continues else None
        train_stage(job, stage, fold, run, init, split)
    if fold is not None:
        held_out = [case for case in job.cases if case.case_id in set(splits[fold]["val"])]
        for index in range(start, stop):
            if index == len(stages) - 1 or stages[index].name in priors:
                predict_held_out(work, stages[index].name, fold, held_out, job.threads, job.device, job.progress)
    logger.info("fold %s done in %.0f s", "all" if fold is None else fold, time.perf_counter() - started)


def _split(splits: list[dict], fold: int | None, cases: list[str]) -> dict:
    if fold is None:
        return {"method": "all", "seed": 0, "train": list(cases), "val": []}
    return splits[fold]


def train_stage(
    job: FoldJob, stage: Stage, fold: int | None, run: Path, init_from: Path | None, split: dict
) -> None:
    """Train (or finish) one fold of one stage; a finished run is left as it is."""
    from glioseg.data.cache import cached_case_ids
    from glioseg.training.loop import run_settings
    from glioseg.training.runs import continue_run, start_run

    if (run / FINISHED).is_file():
        return
    started = time.perf_counter()
    if (run / "last.pt").is_file():
        logger.info("%s fold %s: continuing from %s", stage.name, "all" if fold is None else fold, run / "last.pt")
        history = continue_run(run, progress=job.progress)
        config, _ = run_settings(run)
    else:
        config = fold_config(stage, job.recipe, fold, threads=job.threads, device=job.device, init_from=init_from)
        cache = stage_cache(job.work, stage)
        kept = set(cached_case_ids(cache, config.preprocess))  # a preset may drop cases (the paper's < 1% tumour)
        given = len(split["train"])
        split = {
            **split,
            "train": [c for c in split["train"] if c in kept],
            "val": [c for c in split["val"] if c in kept],
        }
        if given and not split["train"] and stage.prior is not None:  # stage 1's result stands for every case
            raise GliosegError(
                job.work / stage.prior / "pred",
                f"holds no tumour in any of the {given} training cases of {'all' if fold is None else f'fold {fold}'}"
                f" (stage {stage.prior}'s out-of-fold label maps): cascade stage {stage.name} has nothing to train on",
                f"train stage {stage.prior} until it finds tumours (a new work folder), or leave out the cascade stage",
            )
        logger.info(
            "%s fold %s: training on %d cases", stage.name, "all" if fold is None else fold, len(split["train"])
        )
        history = start_run(config, run, cache=cache, split=split, progress=job.progress)
    if not history or history[-1]["epoch"] < config.train.epochs:  # stopped early (a time limit): not finished
        raise GliosegError(run, "training stopped before its last epoch", "run the same command again to continue it")
    write_json(
        run / FINISHED,
        {
            "epochs": int(history[-1]["epoch"]),
            "train_s": float(history[-1]["time_s"]),
            "this_session_s": time.perf_counter() - started,
            "threads": config.train.threads,
            "device": config.train.device,
        },
    )


def predict_held_out(
    work: WorkFolder, stage: str, fold: int, cases: Sequence[Case], threads: int, device: str | None, progress: bool
) -> None:
    """Fold ``fold``'s last-epoch model of ``stage`` predicts its held-out ``cases`` into ``WORK/<stage>/pred``."""
    from glioseg.inference.predictor import Predictor

    timings_file = work.stage_dir(stage) / f"timings-fold{fold}.json"
    predictor = Predictor.from_checkpoints(
        [work.run_dir(stage, fold) / "last.pt"], device or "auto", threads=threads, backend="torch"
    )
    prior = work.stage_prior(stage)
    if prior is not None:  # a cascade stage: the prior is the prior stage's out-of-fold map, as in training
        from glioseg.inference.cascade import CascadePredictor, FilePrior

        predictor = CascadePredictor(predictor, FilePrior(work.pred_dir(prior), prior))
    report = predictor.predict_cases(cases, work.pred_dir(stage), resume=True, progress=progress)
    if report.failed:
        raise GliosegError(None, next(iter(report.failed.values())), "fix that case, then run the same command again")
    if report.timings or not timings_file.is_file():
        earlier = json.loads(timings_file.read_text())["cases"] if timings_file.is_file() else {}
        write_json(
            timings_file, {"threads": threads, "device": str(predictor.device), "cases": {**earlier, **report.timings}}
        )
