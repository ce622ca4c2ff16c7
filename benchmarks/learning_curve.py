"""Learning curve of recipe D-short: do training cases or optimisation steps limit the model now?

Fixed before any score was seen:

* held-out cases: the 8 cases of ``../shared/data/brats2018_extra`` (every setting is scored on
  exactly these, with the same legacy Dice as ``glioseg evaluate``, without post-processing, so
  nothing is chosen on them);
* training cases: nested subsets of the 16 cases of ``../shared/data/brats2018`` (the first 8, 12
  and all 16 of one seeded permutation, seed 0);
* recipe: ``benchmarks/cv/recipe_d_short.yaml`` (A-short with soft region targets: 96 optimiser
  steps, batch 2, 64^3 patches at 2 mm), the last epoch's weights;
* settings: 8, 12 and 16 cases at 96 steps (the cases axis), and 16 cases at 288 steps (3x the
  steps: the steps axis).

Each setting trains into ``RUNS/n<cases>_s<steps>`` (resumable: the same command continues an
interrupted run from its ``last.pt``; a finished run and its predictions are reused), predicts the
held-out cases with ``glioseg predict`` and is scored. Results: ``OUT.csv`` (per case and setting)
and ``OUT.md`` (means).

Usage (from the repository root)::

    python benchmarks/learning_curve.py --runs /work/glioseg-runs/learning_curve \\
        --cache /work/glioseg-runs/recipe_d_24/cache-d5ff5aab82243a5f --out benchmarks/learning_curve \\
        [--only n8_s96 n12_s96]   # two processes can share the settings on a 2-core machine
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RECIPE = Path("benchmarks/cv/recipe_d_short.yaml")
TRAIN_ROOT = Path("../shared/data/brats2018")
HELD_OUT_ROOT = Path("../shared/data/brats2018_extra")
SETTINGS = {"n8_s96": (8, 96), "n12_s96": (12, 96), "n16_s96": (16, 96), "n16_s288": (16, 288)}
NO_POSTPROCESSING = [
    "--et-threshold",
    "0",
    "--min-component-size",
    "0",
    "--min-et-component-size",
    "0",
    "--min-core-component-size",
    "0",
    "--min-et-component-fraction",
    "0",
    "--min-core-component-fraction",
    "0",
]


def train_setting(name: str, runs: Path, cache: Path, threads: int) -> Path:
    """Train (or finish) one setting; returns its run folder."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import FINISHED
    from glioseg.data.discovery import discover
    from glioseg.files import write_json
    from glioseg.training.loop import run_settings, train

    cases, steps = SETTINGS[name]
    run = runs / name
    if (run / FINISHED).is_file():
        return run
    started = time.perf_counter()
    if (run / "last.pt").is_file():
        config, cache_used = run_settings(run)
        history = train(config, cache_used, run, resume=True, progress=False)
    else:
        stage = load_recipe(RECIPE).stages[0]
        base = stage.config.train
        epochs = steps // base.samples_per_epoch * base.batch_size
        config = dataclasses.replace(
            stage.config, train=dataclasses.replace(base, epochs=epochs, val_every=epochs, threads=threads)
        )
        ids = sorted(case.case_id for case in discover(TRAIN_ROOT).cases)
        order = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]
        split = {"method": "learning_curve", "seed": 0, "train": sorted(order[:cases]), "val": []}
        history = train(config, cache, run, progress=False, split=split)
    write_json(
        run / FINISHED, {"epochs": history[-1]["epoch"], "this_session_s": time.perf_counter() - started}
    )  # atomic: marks the run done
    return run


def predict_and_score(name: str, run: Path, threads: int) -> dict[str, dict[str, float]]:
    """Predict the held-out cases with the run's last weights (no post-processing) and score them."""
    pred, scores = run / "pred", run / "scores"
    glioseg = [sys.executable, "-m", "glioseg"]
    if not (scores / "per_case.csv").is_file():
        subprocess.run(
            [
                *glioseg,
                "predict",
                str(HELD_OUT_ROOT),
                "--model",
                str(run / "last.pt"),
                "-o",
                str(pred),
                "--continue",
                "--threads",
                str(threads),
                "--backend",
                "torch",
                "--quiet",
                *NO_POSTPROCESSING,
            ],
            check=True,
        )
        subprocess.run(
            [*glioseg, "evaluate", "--pred", str(pred), "--ref", str(HELD_OUT_ROOT), "-o", str(scores), "--quiet"],
            check=True,
        )
    with (scores / "per_case.csv").open() as handle:
        return {row["case"]: {r: float(row[f"dice_{r}"]) for r in ("wt", "tc", "et")} for row in csv.DictReader(handle)}


# each step along one axis: (label, from setting, to setting)
STEPS = [
    ("cases 8 -> 12 (96 steps)", "n8_s96", "n12_s96"),
    ("cases 12 -> 16 (96 steps)", "n12_s96", "n16_s96"),
    ("steps 96 -> 288 (16 cases)", "n16_s96", "n16_s288"),
]


def paired_lines(done: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown rows of the paired per-case change along each axis: mean, its standard error, cases up/down."""
    lines = [
        "",
        "Paired per-case change along each axis (the same 8 held-out cases; SE: standard error of the mean",
        "change):",
        "",
        "| change | WT (SE) | TC (SE) | ET (SE) | cases up / down (WT, TC, ET) |",
        "|---|---:|---:|---:|---|",
    ]
    for label, before, after in STEPS:
        if before not in done or after not in done:
            continue
        cases = sorted(set(done[before]) & set(done[after]))
        cells, counts = [], []
        for r in ("wt", "tc", "et"):
            delta = np.array([done[after][c][r] - done[before][c][r] for c in cases])
            cells.append(f"{delta.mean():+.3f} ({delta.std(ddof=1) / np.sqrt(len(delta)):.3f})")
            counts.append(f"{int((delta > 0).sum())}/{int((delta < 0).sum())}")
        lines.append(f"| {label} | {' | '.join(cells)} | {', '.join(counts)} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="run folders (outside the repository)")
    parser.add_argument(
        "--cache", type=Path, required=True, help="the recipe's cache holding all 24 cases (from glioseg cv train)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output stem (OUT.csv, OUT.md)")
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="train only these settings (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    for name in names:
        train_setting(name, args.runs, args.cache, args.threads)
        predict_and_score(name, args.runs / name, args.threads)
    done = {
        name: predict_and_score(name, args.runs / name, args.threads)
        for name in SETTINGS
        if (args.runs / name / "scores" / "per_case.csv").is_file()
    }
    rows = [(name, case, s) for name, per_case in done.items() for case, s in per_case.items()]
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "train_cases", "steps", "case", "dice_wt", "dice_tc", "dice_et"])
        for name, case, s in rows:
            writer.writerow([name, *SETTINGS[name], case, *(f"{s[r]:.6f}" for r in ("wt", "tc", "et"))])
    lines = [
        "# Learning curve of recipe D-short (`benchmarks/learning_curve.py`)",
        "",
        "Trained on nested subsets of the 16 `brats2018` cases, scored on the same 8 held-out",
        "`brats2018_extra` cases (legacy Dice, no post-processing, last epoch's weights).",
        "",
        "| training cases | steps | Dice WT | Dice TC | Dice ET |",
        "|---:|---:|---:|---:|---:|",
    ]
    for name, per_case in done.items():
        means = {r: float(np.mean([s[r] for s in per_case.values()])) for r in ("wt", "tc", "et")}
        lines.append(
            f"| {SETTINGS[name][0]} | {SETTINGS[name][1]} | {means['wt']:.3f} | {means['tc']:.3f} | {means['et']:.3f} |"
        )
    lines += paired_lines(done)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
