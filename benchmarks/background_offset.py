"""Dice of the shipped model on real BraTS cases whose images are shifted by a constant.

Some converters and scanners write a constant background offset instead of exact zeros. The
brain mask (crop box and z-score statistics) used to be ``image != 0``, so with an offset the
whole volume counted as brain. It is now built from each modality's background value
(:func:`glioseg.data.preprocess.brain_mask`). This script predicts each case three times with
the model shipped in the package: as distributed, shifted by ``--offset`` with the current
mask, and shifted with the old ``!= 0`` mask (monkeypatched back in), and scores all three
against the reference labels with the official BraTS rules.

Usage::

    python benchmarks/background_offset.py [--data-root ../shared/data/brats2018] [--offset 1000] [--out benchmarks/]

Writes ``background_offset.md`` and ``.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

import glioseg.data.preprocess as preprocess_module
from glioseg.data.discovery import discover
from glioseg.inference.predictor import Predictor, resolve_checkpoints
from glioseg.labels import to_internal
from glioseg.metrics import case_metrics

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018"
VALIDATION = ("Brats18_CBICA_AOZ_1", "Brats18_TCIA01_499_1", "Brats18_TCIA02_370_1", "Brats18_TCIA13_623_1")
"""The shipped model's held-out cases (see glioseg/weights/MODEL_CARD.md)."""


def _old_brain_mask(image: np.ndarray) -> np.ndarray:
    return np.any(image != 0, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--cases", nargs="+", default=list(VALIDATION))
    parser.add_argument("--offset", type=float, default=1000.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()

    predictor = Predictor.from_checkpoints(resolve_checkpoints(None), "cpu", threads=args.threads)
    cases = {case.case_id: case for case in discover(args.data_root).cases}
    rows = []
    for case_id in args.cases:
        loaded = predictor.read(cases[case_id])
        reference = to_internal(np.asarray(nib.load(str(cases[case_id].label)).dataobj), cases[case_id].convention)
        shifted = dataclasses.replace(loaded, image=loaded.image + np.float32(args.offset))
        runs = {
            "original": (loaded, preprocess_module.brain_mask),
            "shifted": (shifted, preprocess_module.brain_mask),
            "shifted, old != 0 mask": (shifted, _old_brain_mask),
        }
        current = preprocess_module.brain_mask
        for name, (case, mask) in runs.items():
            preprocess_module.brain_mask = mask
            try:
                pre = predictor.preprocess(case)
                labels = predictor.labels_from_probabilities(predictor.network_probabilities(pre.image), pre.crop)
            finally:
                preprocess_module.brain_mask = current
            metrics = case_metrics(labels, reference, loaded.spacing)
            rows.append({"case": case_id, "input": name, **{k: metrics[k] for k in ("dice_wt", "dice_tc", "dice_et")}})
            print(
                f"{case_id} {name}: WT {metrics['dice_wt']:.4f} TC {metrics['dice_tc']:.4f} ET "
                f"{metrics['dice_et']:.4f}",
                flush=True,
            )

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "background_offset.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Shipped model on real cases shifted by a constant (+{args.offset:g} in every modality)",
        "",
        f"`python benchmarks/background_offset.py --offset {args.offset:g}`",
        "",
        "| case | input | Dice WT | Dice TC | Dice ET |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['case']} | {r['input']} | {r['dice_wt']:.4f} | {r['dice_tc']:.4f} | {r['dice_et']:.4f} |" for r in rows
    ]
    lines += [
        "",
        "| input | mean Dice WT | mean Dice TC | mean Dice ET | largest change from the original |",
        "|---|---:|---:|---:|---:|",
    ]
    original = {r["case"]: r for r in rows if r["input"] == "original"}
    for name in ("original", "shifted", "shifted, old != 0 mask"):
        chosen = [r for r in rows if r["input"] == name]
        change = max(abs(r[k] - original[r["case"]][k]) for r in chosen for k in ("dice_wt", "dice_tc", "dice_et"))
        means = [np.mean([r[k] for r in chosen]) for k in ("dice_wt", "dice_tc", "dice_et")]
        lines.append(f"| {name} | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} | {change:.4f} |")
    (args.out / "background_offset.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
