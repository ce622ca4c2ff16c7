"""Two cross-validation reports of the same cases side by side: paired per-case differences.

For each region and for raw and post-processed Dice: the two means, the mean of the per-case
differences (B - A) with its standard error, and how many cases moved each way. Also the check of
issue 22: cases whose reference tumour core holds 2,000 voxels or more and whose prediction scores
TC 0 (counted from the reference label maps under ``--data``)::

    python benchmarks/cv/paired.py benchmarks/cv/recipe_a_short benchmarks/cv/recipe_d_short \\
        --data ../shared/data/brats2018 ../shared/data/brats2018_extra --out benchmarks/cv/recipe_d_short/vs_a_short.md
    python benchmarks/cv/paired.py benchmarks/cv/recipe_c benchmarks/cv/recipe_d --common \\
        --data ../shared/data/brats2018 ../shared/data/brats2018_extra --out benchmarks/cv/recipe_d/vs_c_first16.md
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

REGIONS = ("wt", "tc", "et")


def read(report: Path) -> dict[str, dict[str, str]]:
    with (report / "per_case.csv").open() as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def core_voxels(roots: list[Path]) -> dict[str, int]:
    """Voxels of the reference tumour core (NCR + ET) per case."""
    from glioseg.data.discovery import discover
    from glioseg.data.io import read_volume
    from glioseg.labels import region_masks, to_internal

    out = {}
    for root in roots:
        found = discover(root)
        for case in found.cases:
            label = to_internal(read_volume(case.label, dtype=None).data, case.convention)
            out[case.case_id] = int(np.count_nonzero(region_masks(label)["tc"]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="report folder A (glioseg cv report -o)")
    parser.add_argument("b", type=Path, help="report folder B")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folders with the reference labels")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file")
    parser.add_argument(
        "--common", action="store_true", help="compare on the cases both reports hold (e.g. recipe C's 16 of D's 24)"
    )
    args = parser.parse_args()
    a, b = read(args.a), read(args.b)
    if args.common:
        a = {case: row for case, row in a.items() if case in b}
        b = {case: row for case, row in b.items() if case in a}
    if set(a) != set(b) or not a:
        raise SystemExit(f"the reports hold different cases ({len(a)} vs {len(b)}); --common compares the shared ones")
    cases = sorted(a)
    lines = [
        f"# `{args.b.name}` against `{args.a.name}`: the same {len(cases)} cases, out-of-fold",
        "",
        "Paired per-case differences (B - A) of the legacy Dice; SE: standard error of their mean",
        "(`benchmarks/cv/paired.py`).",
        "",
        "| Dice | mean A | mean B | mean B - A | SE | cases B > A / B < A |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("raw", "pp"):
        for region in REGIONS:
            va = np.array([float(a[c][f"{kind}_dice_{region}"]) for c in cases])
            vb = np.array([float(b[c][f"{kind}_dice_{region}"]) for c in cases])
            d = vb - va
            se = float(d.std(ddof=1) / math.sqrt(len(d)))
            label = "raw" if kind == "raw" else "post-processed (nested)"
            lines.append(
                f"| {label} {region.upper()} | {va.mean():.3f} | {vb.mean():.3f} | {d.mean():+.3f} | {se:.3f} | "
                f"{int((d > 1e-9).sum())} / {int((d < -1e-9).sum())} |"
            )
    cores = core_voxels(args.data)
    lines += ["", "Cases whose reference core holds >= 2,000 voxels and whose post-processed TC Dice is 0:", ""]
    for name, rows in ((args.a.name, a), (args.b.name, b)):
        lost = [c for c in cases if cores.get(c, 0) >= 2000 and float(rows[c]["pp_dice_tc"]) == 0.0]
        lines.append(f"- `{name}`: {', '.join(f'{c} ({cores[c]} voxels)' for c in lost) or 'none'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
