"""The one-command demo: synthetic cohort -> preprocess -> train the three variants -> predict ->
evaluate -> report, on the CPU, with no data and no downloads.

Each network trains for a fixed number of optimiser steps, not minutes, so a busy machine makes the
demo slower but never less trained: the networks in its report are the same on any machine (up to
floating-point scheduling). ``tests/test_demo.py`` (slow) checks that it finishes in 12 minutes
with another process on one of two cores and that each network reaches Dice WT >= 0.80 and
TC >= 0.60 on the held-out synthetic cases; the README states what was measured.
``glioseg demo --quick`` takes about one minute (the networks then barely train: it shows the
pipeline, not the accuracy).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.io import check_output_path
from glioseg.data.synth import write_cohort
from glioseg.evaluation import evaluate, write_evaluation
from glioseg.inference.predictor import Predictor
from glioseg.networks import NETWORKS
from glioseg.reporting.report import build_report
from glioseg.training.runs import start_or_continue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run.

    Attributes:
        train_cases: synthetic cases for training and validation (75:25).
        test_cases: held-out synthetic cases that are predicted and evaluated.
        shape: voxels per case (1 mm).
        patch: edge of the cubic training patches (voxels).
        epochs: epochs of each variant (the poly schedule ends there).
        samples_per_epoch: patches per epoch; each variant trains for
            ``epochs * samples_per_epoch / 2`` optimiser steps (batch 2), whatever the machine's load.
        lr: AdamW learning rate (0.01: at 0.005 the plain ``unet`` had not learned the tumor core
            within the budget, validation TC stalling near 0.40; at 0.01 all three networks
            reach TC >= 0.76 on the test cases, measured with two seeds for ``unet``).
    """

    train_cases: int
    test_cases: int
    shape: tuple[int, int, int]
    patch: int
    epochs: int
    samples_per_epoch: int
    lr: float = 0.01

    @property
    def steps_per_model(self) -> int:
        """Optimiser steps each network trains for (batch 2)."""
        return self.epochs * math.ceil(self.samples_per_epoch / 2)


FULL = DemoSettings(train_cases=12, test_cases=4, shape=(64, 64, 64), patch=48, epochs=24, samples_per_epoch=8)
QUICK = DemoSettings(train_cases=6, test_cases=2, shape=(40, 40, 40), patch=32, epochs=2, samples_per_epoch=4)


def idle_cores() -> int:
    """Cores this process may use that other processes do not keep busy: the cores it may run on
    minus the 1-minute load average, rounded, at least 1.

    PyTorch's default (one thread per core) is several times slower when another job holds one
    of the cores, because its threads wait for each other at every operation.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def run_demo(out: str | Path, *, quick: bool = False, threads: int = 0, progress: bool = True) -> Path:
    """Run the whole pipeline into ``out`` and return the path of the report's HTML page.

    Args:
        out: output folder (data, cache, runs, predictions, report); an interrupted demo
            continues where it stopped.
        quick: the one-minute version (barely trained networks).
        threads: torch CPU threads; 0 uses :func:`idle_cores`.
        progress: show progress bars.
    """
    settings = QUICK if quick else FULL
    out = Path(out)
    check_output_path(out, folder=True)  # a file as --out: one line before any work
    started = time.perf_counter()
    threads = threads or idle_cores()
    logger.info("demo: writing %d + %d synthetic cases to %s", settings.train_cases, settings.test_cases, out)
    write_cohort(
        out / "data" / "train", cases=settings.train_cases, shape=settings.shape, layout="brats2021", seed=0, force=True
    )  # the demo's own folder
    write_cohort(
        out / "data" / "test",
        cases=settings.test_cases,
        shape=settings.shape,
        layout="brats2021",
        seed=1000,
        force=True,
    )
    patch = settings.patch
    overrides = [
        "preprocess.target_spacing=null",
        f"train.patch_size=[{patch},{patch},{patch}]",
        f"train.epochs={settings.epochs}",
        f"train.samples_per_epoch={settings.samples_per_epoch}",
        f"train.val_every={max(settings.epochs // 5, 1)}",
        "train.time_limit_min=0",
        f"train.threads={threads}",
        f"train.lr={settings.lr}",
        "train.device=cpu",
    ]
    config = load_config("cpu", overrides)
    cache = out / "cache"
    preprocess_dataset(discover(out / "data" / "train").cases, config.preprocess, cache, progress=progress)
    runs = []
    for name in NETWORKS:
        run = out / "runs" / name
        model_config = load_config("cpu", [*overrides, f"model.name={name}"])
        resume = (run / "last.pt").exists()  # a finished run returns at once; an interrupted one continues
        logger.info(
            "demo: training %s for %d steps on %d thread(s)%s",
            name,
            settings.steps_per_model,
            threads,
            " (resumed)" if resume else "",
        )
        start_or_continue(model_config, cache, run, progress=progress)
        predictor = Predictor.from_checkpoints([run / "best.pt"], "cpu", threads=threads)
        test_cases = discover(out / "data" / "test").cases
        predictor.predict_cases(test_cases, out / "predictions" / name, resume=True, progress=progress)
        result = evaluate(out / "predictions" / name, out / "data" / "test", workers=1)
        write_evaluation(result, run / "eval_test")
        logger.info(
            "demo: %s on the %d test cases: Dice %s",
            name,
            settings.test_cases,
            ", ".join(
                f"{r.upper()} {result.summary[f'dice_{r}']['mean']:.3f}"
                for r in ("wt", "tc", "et")
                if f"dice_{r}" in result.summary
            ),
        )
        runs.append((name, run))
    report = build_report(
        runs, out / "report", cases_root=out / "data" / "test",
        predictions=[(name, out / "predictions" / name) for name, _ in runs], num_cases=2,
    )
    logger.info("demo finished in %.0f s", time.perf_counter() - started)
    return report
