"""One table of the whole-tumour gap's controls: Dice of the raw run minus the BraTS-ready run, per condition and case.

Reads ``results.json`` (the benchmark: random motions, clinical grids) and ``gap/<condition>/results.json``
(written by ``run.py`` with ``--motion none|same``, ``--iso`` and ``--interpolation bspline``) and writes
``gap/gap.md``. Usage: ``python benchmarks/scanner/gap_table.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONDITIONS = {  # folder -> what differs from the BraTS-ready run
    ".": "own random motion per series, clinical grids (5 mm FLAIR, 4 mm T2), linear, atlas pose: the benchmark",
    "gap/random_clinical_atlas_bspline": "the same, B-spline resampling in prepare",
    "gap/random_clinical_scanner": "own random motion per series, clinical grids, linear, scanner pose (before)",
    "gap/random_clinical_bspline": "the same, scanner pose, B-spline resampling in prepare",
    "gap/none_clinical": "no motion, clinical grids: thick slices alone",
    "gap/random_iso": "own random motion per series, every series 1 mm: registration, pose, two interpolations",
    "gap/same_iso": "every series moved as the T1ce, 1 mm: the head's pose and two interpolations",
    "gap/none_iso": "no motion, every series 1 mm: two interpolations alone",
}


def main() -> None:
    lines = [
        "# Whole-tumour gap: which step moves the Dice",
        "",
        "Dice of `glioseg predict --raw` (on the T1ce series' grid) minus the BraTS-ready run's, per region, for the "
        "same",
        "4 real cases (held out from the shipped model) and the same random motions (seed 23); one run each.",
        "The controls without motion, or with one motion for all series, ran before the pose step (scanner pose).",
        "",
    ]
    header_done = False
    for folder, what in CONDITIONS.items():
        path = HERE / folder / "results.json"
        if not path.exists():
            continue
        cases = json.loads(path.read_text())["cases"]
        if not header_done:
            lines += [
                "| condition (Dice raw - ready, WT / TC / ET) | "
                + " | ".join(c["case"].removeprefix("Brats18_") for c in cases)
                + " |",
                "|---|" + "---|" * len(cases),
            ]
            header_done = True
        cells = [
            " / ".join(f"{c['dice_raw_on_t1ce'][k] - c['dice_ready'][k]:+.3f}" for k in ("wt", "tc", "et"))
            for c in cases
        ]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    (HERE / "gap" / "gap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
