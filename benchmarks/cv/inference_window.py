"""Recipe D's out-of-fold predictions again with another inference window, for ``glioseg cv report``.

Issue 27 asks for the network time per case to drop by half; recipe D slides eight 64^3 windows at
overlap 0.5 over a 2 mm brain (about 70 x 86 x 70 voxels), 3.4x the brain's voxels. One window of
80 x 96 x 80 covers every 2 mm brain of the 24 shared cases (a larger brain gets two along an axis).
The networks are fully convolutional, so the same weights run on it; what changes is what instance
normalisation sees and the context at the borders. This script measures what that costs.

It makes a copy of a recipe-D work folder (hard links: no weights or caches copied) whose stage
``--stage`` has no predictions, predicts every fold's held-out cases there with the fold's own
last-epoch model (as ``glioseg cv train`` does: PyTorch, the same code path) and the window given,
then ``glioseg cv report`` scores it with the nested post-processing::

    python benchmarks/cv/inference_window.py /work/glioseg-runs/recipe_d_24 /work/glioseg-runs/recipe_d_window \\
        --stage recipe_d --window 80 96 80 --report benchmarks/cv/recipe_d_window
    python benchmarks/cv/paired.py benchmarks/cv/recipe_d benchmarks/cv/recipe_d_window \\
        --data ../shared/data/brats2018 ../shared/data/brats2018_extra --out benchmarks/cv/recipe_d_window/vs_d.md

Resumable: cases already predicted in the copy are skipped (the predictor's own ``resume``).
The rule that decides what ships is in ``benchmarks/cv/recipe_d_window.md``, written before any
score was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path


def link_copy(source: Path, target: Path, stage: str) -> None:
    """``target``: ``source``'s cv.json with the stages up to ``stage``, its caches and those stages'
    run folders hard-linked, and an empty ``<stage>/pred``."""
    record = json.loads((source / "cv.json").read_text())
    names = [s["name"] for s in record["stages"]]
    keep = names[: names.index(stage) + 1]
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "cv.json").is_file():
        record["stages"] = record["stages"][: len(keep)]
        (target / "cv.json").write_text(json.dumps(record, indent=1))
    for entry in source.iterdir():
        wanted = entry.is_dir() and (entry.name.startswith("cache-") or entry.name in keep)
        if wanted and not (target / entry.name).exists():
            shutil.copytree(entry, target / entry.name, copy_function=os.link, ignore=_skip_pred(entry, stage))


def _skip_pred(root: Path, stage: str):  # the stage's own predictions (and its old report files) are redone
    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == root and root.name == stage:
            redone = ("pred", "scores", "choice.json", "summary.json")
            return [n for n in names if n in redone or n.startswith("timings")]
        return []

    return ignore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="a recipe-D work folder of `glioseg cv train`")
    parser.add_argument("copy", type=Path, help="the copy to make (outside the repository)")
    parser.add_argument("--stage", default="recipe_d")
    parser.add_argument("--window", type=int, nargs=3, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", type=Path, help="then run `glioseg cv report` into this folder")
    args = parser.parse_args()

    from glioseg.cv.report import write_cv_report
    from glioseg.cv.workdir import open_work
    from glioseg.inference.predictor import Predictor

    link_copy(args.work, args.copy, args.stage)
    work = open_work(args.copy)
    cases = work.cases()
    for fold, split in enumerate(work.splits()):
        held_out = [case for case in cases if case.case_id in set(split["val"])]
        predictor = Predictor.from_checkpoints(
            [work.run_dir(args.stage, fold) / "last.pt"],
            "cpu",
            patch_size=args.window,
            threads=args.threads,
            backend="torch",
        )
        report = predictor.predict_cases(held_out, work.pred_dir(args.stage), resume=True, progress=False)
        if report.failed:
            raise SystemExit(f"fold {fold}: {report.failed}")
        print(f"fold {fold}: {len(held_out)} cases predicted with window {args.window}", flush=True)
    if args.report is not None:
        write_cv_report(work, args.report, stage=args.stage)


if __name__ == "__main__":
    main()
