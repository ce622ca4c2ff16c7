"""The one-command demo: synthetic cohort -> preprocess -> train the three variants -> predict ->
evaluate -> report, on the CPU, with no data and no downloads.

``glioseg demo`` takes under 10 minutes on a 2-core laptop CPU; ``glioseg demo --quick`` about
one minute (the networks then barely train: it shows the pipeline, not the accuracy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from glioseg.config import load_config
from glioseg.data.discovery import discover
from glioseg.data.cache import preprocess_dataset
from glioseg.data.synth import write_cohort
from glioseg.evaluation import evaluate, write_evaluation
from glioseg.inference.predictor import Predictor
from glioseg.networks import NETWORKS
from glioseg.reporting.report import build_report
from glioseg.training.loop import train

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run.

    Attributes:
        train_cases: synthetic cases for training and validation (75:25).
        test_cases: held-out synthetic cases that are predicted and evaluated.
        shape: voxels per case (1 mm).
        minutes_per_model: training budget of each variant.
        epochs: epochs of each variant (the poly schedule ends there, or at the budget).
    """

    train_cases: int
    test_cases: int
    shape: tuple[int, int, int]
    minutes_per_model: float
    epochs: int


FULL = DemoSettings(train_cases=12, test_cases=4, shape=(64, 64, 64), minutes_per_model=2.2, epochs=30)
QUICK = DemoSettings(train_cases=6, test_cases=2, shape=(40, 40, 40), minutes_per_model=0.1, epochs=2)


def run_demo(out: str | Path, *, quick: bool = False, threads: int = 0, progress: bool = True) -> Path:
    """Run the whole pipeline into ``out`` and return the path of the report's HTML page."""
    settings = QUICK if quick else FULL
    out = Path(out)
    started = time.perf_counter()
    logger.info("demo: writing %d + %d synthetic cases to %s", settings.train_cases, settings.test_cases, out)
    write_cohort(out / "data" / "train", cases=settings.train_cases, shape=settings.shape, layout="brats2021", seed=0, force=True)  # the demo's own folder
    write_cohort(out / "data" / "test", cases=settings.test_cases, shape=settings.shape, layout="brats2021", seed=1000, force=True)
    patch = min(64, settings.shape[0] - settings.shape[0] % 16)
    overrides = [
        "preprocess.target_spacing=null",
        f"train.patch_size=[{patch},{patch},{patch}]",
        f"train.epochs={settings.epochs}",
        "train.samples_per_epoch=8",
        f"train.val_every={max(settings.epochs // 5, 1)}",
        f"train.time_limit_min={settings.minutes_per_model}",
        f"train.threads={threads}",
        "train.lr=0.005",
        "train.device=cpu",
    ]
    config = load_config("cpu", overrides)
    cache = out / "cache"
    preprocess_dataset(discover(out / "data" / "train").cases, config.preprocess, cache, progress=progress)
    runs = []
    for name in NETWORKS:
        run = out / "runs" / name
        if not (run / "last.pt").exists():
            model_config = load_config("cpu", [*overrides, f"model.name={name}"])
            logger.info("demo: training %s for up to %.1f min", name, settings.minutes_per_model)
            train(model_config, cache, run, progress=progress)
        predictor = Predictor.from_checkpoints([run / "best.pt"], "cpu", threads=threads)
        test_cases = discover(out / "data" / "test").cases
        predictor.predict_cases(test_cases, out / "predictions" / name, resume=True, progress=progress)
        result = evaluate(out / "predictions" / name, out / "data" / "test", workers=1)
        write_evaluation(result, run / "eval_test")
        runs.append((name, run))
    report = build_report(
        runs, out / "report", cases_root=out / "data" / "test",
        predictions=[(name, out / "predictions" / name) for name, _ in runs], num_cases=2,
    )
    logger.info("demo finished in %.0f s", time.perf_counter() - started)
    return report
