"""Seconds per training step of recipe D's last stage (2 mm) and of a cascade stage (1 mm), interleaved (issue 22).

Each measurement is one epoch of ``--steps`` optimiser steps (batch 2: sampling, augmentation, forward, backward,
update: what ``glioseg cv train`` spends per step) of a trainer built on a work folder's cache, the two stages
taking turns ``--repeats`` times; the medians are printed with the ratio, the number that sizes recipe E's
cascade stage against recipe D's last stage (benchmarks/cv/recipe_e.yaml). Peak memory: ``ru_maxrss`` of
the process at the end (both trainers; run one stage alone for its own).

    python benchmarks/cv/cascade_step_time.py WORK --recipe benchmarks/cv/recipe_e.yaml \\
        --base recipe_d --cascade recipe_e --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path

from glioseg.cv.recipe import fold_config, load_recipe
from glioseg.cv.train import stage_cache
from glioseg.cv.workdir import open_work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="a cv work folder whose caches of both stages exist")
    parser.add_argument("--recipe", required=True, help="the recipe file holding both stages")
    parser.add_argument("--base", default="recipe_d")
    parser.add_argument("--cascade", default="recipe_e")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from glioseg.training.loop import build_trainer

    recipe = load_recipe(args.recipe)
    work = open_work(args.work)
    split = work.splits()[args.fold]
    trainers = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in (args.base, args.cascade):
            stage = next(s for s in recipe.stages if s.name == name)
            config = fold_config(stage, recipe, args.fold, threads=args.threads, device="cpu", init_from=None)
            train = dataclasses.replace(config.train, samples_per_epoch=2 * args.steps, batch_size=2)
            config = dataclasses.replace(config, train=train)
            cache = stage_cache(work.path, stage)
            from glioseg.data.cache import cached_case_ids

            kept = set(cached_case_ids(cache, config.preprocess))
            trainers[name] = build_trainer(
                config, cache, Path(scratch) / name, progress=False,
                split={"method": "fold", "seed": 0, "train": [c for c in split["train"] if c in kept], "val": []},
            )
        seconds: dict[str, list[float]] = {name: [] for name in trainers}
        for repeat in range(args.repeats + 1):  # the first round warms up (allocations, page cache)
            for name, trainer in trainers.items():
                started = time.perf_counter()
                trainer.train_epoch()
                if repeat:
                    seconds[name].append((time.perf_counter() - started) / args.steps)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "seconds_per_step": seconds,
                "median_s": medians,
                "ratio_cascade_to_base": medians[args.cascade] / medians[args.base],
                "patch_sizes": {n: list(t.config.train.patch_size) for n, t in trainers.items()},
                "threads": args.threads,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
