"""All-four-modality Dice of two models on the same held-out cases, paired: mean per model and mean difference.

Usage (from the repository root)::

    python benchmarks/missing_modalities/full_row.py --data ../shared/data/brats2018 ../shared/data/brats2018_extra \\
        --pred A=WORK_A/STAGE/pred B=WORK_B/STAGE/pred

Each ``--pred`` folder holds one label map per case (``glioseg cv train``'s out-of-fold ``pred/``, or one
subset folder of ``benchmarks/missing_modalities.py``'s ``--work``); the cases of the first folder are
scored in every folder with ``missing_modalities.dice_rows`` (legacy Dice, raw labels as written). Prints
a markdown table: per model the mean Dice WT / TC / ET, and for each later model the mean paired
difference against the first with its standard error.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

REGIONS = ("wt", "tc", "et")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="the labelled dataset folder(s)")
    parser.add_argument(
        "--pred", nargs="+", required=True, metavar="NAME=DIR", help="label-map folders, the first the reference"
    )
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("mm", Path(__file__).resolve().parents[1] / "missing_modalities.py")
    assert spec is not None and spec.loader is not None
    mm = importlib.util.module_from_spec(spec)
    sys.modules["mm"] = mm
    spec.loader.exec_module(mm)
    cases = mm.load_data(args.data)
    references: dict[str, object] = {}
    named = [(item.split("=", 1)[0], Path(item.split("=", 1)[1])) for item in args.pred]
    ids = [row["case"] for row in mm.dice_rows(named[0][1], cases, references)]
    scores = {
        name: {row["case"]: row for row in mm.dice_rows(folder, cases, references, ids)} for name, folder in named
    }
    for name, rows in scores.items():
        if sorted(rows) != sorted(ids):
            raise SystemExit(
                f"error: {name}: has {len(rows)} of the {len(ids)} cases. Fix: predict every case of {named[0][0]}"
            )
    header = f"paired difference vs {named[0][0]} (mean +- SE), WT / TC / ET"
    print(f"| model | cases | Dice WT | Dice TC | Dice ET | {header} |")
    print("|---|---:|---:|---:|---:|---|")
    first = scores[named[0][0]]
    for name, rows in scores.items():
        means = [statistics.mean(rows[c][f"dice_{r}"] for c in ids) for r in REGIONS]
        cells = " | ".join(f"{m:.3f}" for m in means)
        diffs = []
        for r in REGIONS:
            d = [rows[c][f"dice_{r}"] - first[c][f"dice_{r}"] for c in ids]
            diffs.append(f"{statistics.mean(d):+.3f} +- {statistics.stdev(d) / len(d) ** 0.5:.3f}")
        print(f"| {name} | {len(ids)} | {cells} | {' / '.join(diffs) if rows is not first else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
