"""Does data loading stay behind compute? A training step with the real loader vs tensors in memory.

Builds the real trainer of a recipe (``glioseg.training.loop.build_trainer``: the real cache,
patch sampling and augmentation, the real model, loss and optimiser), then times, step by step:

* ``load``: drawing the next batch from the trainer's own DataLoader (sampling, augmentation,
  collation; in worker processes when ``train.num_workers > 0``);
* ``compute``: forward, loss, backward and optimiser step on that batch, already in memory.

A step with the real loader costs ``load + compute``; a step on tensors already in memory costs
``compute``. The ratio of their medians is the loader's overhead.

Usage (from the repository root, after ``glioseg preprocess`` of the recipe into CACHE)::

    python benchmarks/loader_overhead.py --recipe benchmarks/cv/recipe_a.yaml --cache /tmp/glioseg-cv/recipe_a/cache
    --steps 30

Writes ``benchmarks/loader_overhead.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from glioseg.config import load_config
from glioseg.training.loop import build_trainer

HERE = Path(__file__).resolve().parent


def time_steps(recipe: Path, cache: Path, steps: int, workers: int, threads: int) -> list[tuple[float, float]]:
    """``[(load_s, compute_s)]`` for ``steps`` training steps (after one warm-up step)."""
    config = load_config(
        recipe,
        [
            f"train.num_workers={workers}",
            f"train.threads={threads}",
            "train.device=cpu",
            f"train.samples_per_epoch={2 * (steps + 1)}",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, cache, Path(tmp) / "run", progress=False)
        model, loss_fn, optimizer = trainer.model, trainer.loss_fn, trainer.optimizer
        model.train()
        loader = iter(trainer._loader())
        timings = []
        for step in range(steps + 1):
            started = time.perf_counter()
            image, labels = next(loader)
            loaded = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), labels)
            loss.backward()
            optimizer.step()
            done = time.perf_counter()
            if step > 0:
                timings.append((loaded - started, done - loaded))
        return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("benchmarks/cv/recipe_a.yaml"))
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="train.num_workers settings to compare")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rows = []
    for workers in args.workers:
        timings = time_steps(args.recipe, args.cache, args.steps, workers, args.threads)
        load = statistics.median(t[0] for t in timings)
        compute = statistics.median(t[1] for t in timings)
        real = statistics.median(t[0] + t[1] for t in timings)
        rows.append(
            {
                "num_workers": workers,
                "steps": len(timings),
                "load_s": round(load, 4),
                "compute_s": round(compute, 3),
                "real_step_s": round(real, 3),
                "ratio": round(real / compute, 3),
            }
        )
        print(rows[-1], flush=True)
    with (args.out / "loader_overhead.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Data loading vs compute ({args.recipe.name}, {args.steps} steps each, torch {torch.__version__}, "
        f"{args.threads} thread(s), {platform.machine()})",
        "",
        "| train.num_workers | median load s | median step on tensors in memory s | median step with the real loader s "
        "| ratio |",
        "|---:|---:|---:|---:|---:|",
        *[
            f"| {r['num_workers']} | {r['load_s']} | {r['compute_s']} | {r['real_step_s']} | {r['ratio']} |"
            for r in rows
        ],
        "",
        "Reproduce: `"
        + " ".join(
            [
                "python",
                "benchmarks/loader_overhead.py",
                "--recipe",
                str(args.recipe),
                "--cache",
                "CACHE",
                "--steps",
                str(args.steps),
            ]
        )
        + "`",
    ]
    (args.out / "loader_overhead.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
