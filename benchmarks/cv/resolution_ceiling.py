"""What a perfect prediction on a recipe's working grid scores on the original grid.

Each case's reference label map goes through the recipe's own preprocessing (brain crop,
resampling of the one-hot labels to the working spacing, as ``glioseg preprocess`` writes the
training targets) and back through glioseg's inverse mapping (trilinear to the cropped 1 mm grid,
region threshold 0.5, pasted into the original volume), and is scored against the untouched
reference with the legacy Dice of ``glioseg evaluate``. No network is involved: the figure is the
Dice that the working resolution alone costs, the ceiling of any model trained on that grid.

Usage (from the repository root)::

    python benchmarks/cv/resolution_ceiling.py --recipe benchmarks/cv/recipe_c.yaml \\
        --data ../shared/data/brats2018 --out benchmarks/cv/resolution_ceiling
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def ceiling(case, config) -> dict[str, float]:
    """Legacy Dice per region of the reference after the round trip to ``config``'s grid and back."""
    from glioseg.data.io import read_volume
    from glioseg.data.preprocess import invert_probabilities, preprocess_case
    from glioseg.labels import region_masks, to_internal
    from glioseg.metrics import dice

    prepared = preprocess_case(case, config)
    regions = np.stack([mask.astype(np.float32) for mask in region_masks(prepared.label).values()])
    back = invert_probabilities(regions, prepared.crop, background=False) >= 0.5
    reference = region_masks(to_internal(read_volume(case.label, dtype=None).data, "brats2018"))
    return {region: dice(back[k], reference[region]) for k, region in enumerate(reference)}


def main() -> int:
    from glioseg.config import load_config
    from glioseg.data.discovery import discover

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, required=True, help="preset YAML (its preprocess section is used)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brats2018"))
    parser.add_argument("--out", type=Path, required=True, help="output stem (OUT.csv, OUT.md)")
    args = parser.parse_args()
    config = load_config(args.recipe).preprocess
    rows = {}
    for case in discover(args.data).cases:
        rows[case.case_id] = ceiling(case, config)
        print(case.case_id, " ".join(f"{r} {v:.3f}" for r, v in rows[case.case_id].items()), flush=True)
    regions = list(next(iter(rows.values())))
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", *[f"dice_{r}" for r in regions]])
        for case_id, row in rows.items():
            writer.writerow([case_id, *[f"{row[r]:.6f}" for r in regions]])
    means = {r: float(np.mean([row[r] for row in rows.values()])) for r in regions}
    lines = [
        f"# Dice of a perfect prediction on the `{args.recipe.name}` grid ({config.target_spacing} mm), {len(rows)} cases",
        "",
        "The reference, preprocessed as the training targets and mapped back with glioseg's inverse",
        "mapping, scored against itself on the original grid (`benchmarks/cv/resolution_ceiling.py`).",
        "",
        "| case | " + " | ".join(f"Dice {r.upper()}" for r in regions) + " |",
        "|---|" + "---:|" * len(regions),
        *[f"| {case_id} | " + " | ".join(f"{row[r]:.3f}" for r in regions) + " |" for case_id, row in rows.items()],
        "| **mean** | " + " | ".join(f"**{means[r]:.3f}**" for r in regions) + " |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("mean", " ".join(f"{r} {v:.3f}" for r, v in means.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
