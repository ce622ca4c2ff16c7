"""What a perfect prediction on a recipe's working grid scores on the original grid.

Each case's reference label map goes through the recipe's own preprocessing (brain crop, then
the training targets on the working spacing) and back through glioseg's inverse mapping
(trilinear to the cropped 1 mm grid, region threshold 0.5, pasted into the original volume), and
is scored against the untouched reference with the legacy Dice of ``glioseg evaluate``. No network
is involved: the figure is the Dice that the working resolution alone costs, the ceiling of any
model trained on those targets. Two kinds of targets, from one preprocessing pass:

* ``hard``: the resampled label map (one-hot trilinear + argmax), the targets of recipes A-C;
* ``soft``: the WT/TC/ET footprint fractions of ``preprocess.soft_targets`` (recipe D).

Usage (from the repository root)::

    python benchmarks/cv/resolution_ceiling.py --recipe benchmarks/cv/recipe_d.yaml \\
        --data ../shared/data/brats2018 ../shared/data/brats2018_extra --out benchmarks/cv/resolution_ceiling
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import numpy as np

TARGETS = ("hard", "soft")


def ceiling(case, config) -> dict[str, float]:
    """Legacy Dice per region and kind of target after the round trip to ``config``'s grid and back."""
    from glioseg.data.io import read_volume
    from glioseg.data.preprocess import invert_probabilities, preprocess_case
    from glioseg.labels import region_masks, to_internal
    from glioseg.metrics import dice

    prepared = preprocess_case(case, dataclasses.replace(config, soft_targets=True))
    targets = {
        "hard": np.stack([mask.astype(np.float32) for mask in region_masks(prepared.label).values()]),
        "soft": prepared.regions,
    }
    reference = region_masks(to_internal(read_volume(case.label, dtype=None).data, "brats2018"))
    out = {}
    for kind, regions in targets.items():
        back = invert_probabilities(regions, prepared.crop, background=False) >= 0.5
        out.update({f"{region}_{kind}": dice(back[k], reference[region]) for k, region in enumerate(reference)})
    return out


def main() -> int:
    from glioseg.config import load_config
    from glioseg.cv.recipe import load_recipe
    from glioseg.data.discovery import discover
    from glioseg.errors import GliosegError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe",
        type=Path,
        required=True,
        help="preset or recipe YAML (its (last stage's) preprocess section is used)",
    )
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/data/brats2018")])
    parser.add_argument("--out", type=Path, required=True, help="output stem (OUT.csv, OUT.md)")
    args = parser.parse_args()
    try:
        config = load_recipe(args.recipe).stages[-1].config.preprocess
    except GliosegError:  # a plain preset, not a recipe
        config = load_config(args.recipe).preprocess
    rows = {}
    for root in args.data:
        for case in discover(root).cases:
            rows[case.case_id] = ceiling(case, config)
            print(case.case_id, " ".join(f"{r} {v:.3f}" for r, v in rows[case.case_id].items()), flush=True)
    columns = list(next(iter(rows.values())))
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", *[f"dice_{c}" for c in columns]])
        for case_id, row in rows.items():
            writer.writerow([case_id, *[f"{row[c]:.6f}" for c in columns]])

    def means(ids) -> dict[str, float]:
        return {c: float(np.mean([rows[i][c] for i in ids])) for c in columns}

    first16 = [i for i in rows][:16]
    header = "| case | " + " | ".join(f"{c.split('_')[0].upper()} {c.split('_')[1]}" for c in columns) + " |"
    lines = [
        f"# Dice of a perfect prediction on the `{args.recipe.name}` grid ({config.target_spacing} mm), {len(rows)} "
        "cases",
        "",
        "The reference, preprocessed into the training targets and mapped back with glioseg's inverse",
        "mapping (trilinear to 1 mm, region threshold 0.5), scored against itself on the original grid",
        "(`benchmarks/cv/resolution_ceiling.py`). *hard*: the resampled label map (recipes A-C);",
        "*soft*: the WT/TC/ET footprint fractions (`preprocess.soft_targets`, recipe D).",
        "",
        header,
        "|---|" + "---:|" * len(columns),
        *[f"| {case_id} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |" for case_id, row in rows.items()],
        f"| **mean, first {len(first16)}** | " + " | ".join(f"**{v:.3f}**" for v in means(first16).values()) + " |",
        f"| **mean, all {len(rows)}** | " + " | ".join(f"**{v:.3f}**" for v in means(list(rows)).values()) + " |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("mean", " ".join(f"{c} {v:.3f}" for c, v in means(list(rows)).items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
