"""Time every metric of glioseg.metrics on one real BraTS case pair (median of 5 runs).

``--lesion-wise`` times all metrics, legacy and lesion-wise (``rules="brats2023-gli"``), for the
three regions of whole 240 x 240 x 155 cases, beside the legacy metrics alone: the grown pair
below, a speckled copy of the reference (300 specks of random tumour classes within 40 voxels of
the tumour, 2 % of its voxels removed), and with ``--pred DIR`` every prediction of that folder
against its case (median over cases of the median of ``--runs``).

The pair is a case's reference label map and a copy with the whole tumour grown by one voxel
(the new voxels edema), both 240 x 240 x 155 in the BraTS 2018 convention, so each region has
a non-trivial HD95. ``--untrained`` also times two predictions of an untrained network against
the same reference, the slow regime of HD95 (its distance transforms span the whole volume):
edema everywhere, and 1 % of the voxels set to random tumour labels.

Usage::

    python benchmarks/metrics_speed.py [--data-root ../shared/data/brats2018] [--case Brats18_2013_11_1]

Results on the development machine (2 CPU cores shared with other jobs, load 4-6),
Brats18_2013_11_1, median of 5:

* ``case_metrics``, all 16 metrics, label conversion included: 0.10-0.12 s (target: under 2 s);
  HD95 0.04-0.11 s per region (0 s for the unchanged TC and ET), every other metric under 0.025 s.
  The same reference against a copy shifted by (2, -1, 1) voxels, 8 cases: 0.07-0.52 s.
* ``--lesion-wise --runs 3`` (CPU seconds; one core shared by about 15 processes, so the wall
  times were 10-70 s): legacy only 0.25 s, legacy + lesion-wise 0.79 s for the grown pair;
  0.72 and 1.65 s for the speckled copy (278 false-positive WT lesions).
* ``--untrained``: edema everywhere 4-7 s, 1 % speckle 11-14 s (6 distance transforms of
  the whole volume).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from glioseg.labels import REGION_NAMES, from_internal, region_masks, to_internal
from glioseg.metrics import accuracy, case_metrics, dice, hd95, iou, sensitivity, specificity

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018"


def median_seconds(function: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls."""
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--case", default="Brats18_2013_11_1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--untrained", action="store_true", help="also time untrained-network predictions")
    parser.add_argument("--lesion-wise", action="store_true", help="time legacy + lesion-wise metrics of whole cases")
    parser.add_argument(
        "--pred", type=Path, help="with --lesion-wise: also every prediction of this folder (BraTS 2018 labels)"
    )
    args = parser.parse_args()
    if args.lesion_wise:
        lesion_wise_timings(args)
        return

    image = nib.load(args.data_root / args.case / f"{args.case}_seg.nii.gz")
    ref = np.asarray(image.dataobj)
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    ref_internal = to_internal(ref, "brats2018")
    grown = ref_internal.copy()
    grown[ndimage.binary_dilation(ref_internal > 0) & (ref_internal == 0)] = 2
    pred = from_internal(grown, "brats2018")

    print(f"{args.case}: shape {ref.shape}, spacing {spacing} mm, median of {args.runs} runs")
    seconds = median_seconds(lambda: case_metrics(pred, ref, spacing, "brats2018"), args.runs)
    print(f"  {'case_metrics (all metrics)':<28} {seconds:8.4f} s")

    timings: dict[str, Callable[[], object]] = {}
    pred_regions, ref_regions = region_masks(grown), region_masks(ref_internal)
    for region in REGION_NAMES:
        p, r = pred_regions[region], ref_regions[region]
        for metric in (dice, iou, sensitivity, specificity):
            timings[f"{metric.__name__}_{region}"] = lambda metric=metric, p=p, r=r: metric(p, r)
        timings[f"hd95_{region}"] = lambda p=p, r=r: hd95(p, r, spacing)
    timings["accuracy"] = lambda: accuracy(grown, ref_internal)
    for name, function in timings.items():
        print(f"  {name:<28} {median_seconds(function, args.runs):8.4f} s  (full volume)")

    if args.untrained:
        rng = np.random.default_rng(0)
        speckle = np.where(rng.random(ref.shape) < 0.01, rng.choice([1, 2, 4], ref.shape), 0)
        untrained = {"edema everywhere": np.full(ref.shape, 2, ref.dtype), "1% speckle": speckle.astype(ref.dtype)}
        for name, labels in untrained.items():
            seconds = median_seconds(lambda labels=labels: case_metrics(labels, ref, spacing, "brats2018"), args.runs)
            print(f"  {'case_metrics, ' + name:<28} {seconds:8.4f} s")


def median_cpu_and_wall(function: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median CPU time of this (single-threaded) process and median wall time of ``runs`` calls."""
    cpu, wall = [], []
    for _ in range(runs):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        function()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return statistics.median(cpu), statistics.median(wall)


def lesion_wise_timings(args: argparse.Namespace) -> None:
    """Median seconds of case_metrics without and with the lesion-wise rules, per kind of pair."""
    rng = np.random.default_rng(0)
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]] = {
        "grown by 1 voxel": [],
        "speckled": [],
        "predictions": [],
    }
    cases = [args.case] if args.pred is None else sorted(p.name[:-7] for p in args.pred.glob("*.nii.gz"))
    for case in cases:
        image = nib.load(args.data_root / case / f"{case}_seg.nii.gz")
        ref = to_internal(np.asarray(image.dataobj), "brats2018")
        spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
        if case == args.case:
            grown = ref.copy()
            grown[ndimage.binary_dilation(ref > 0) & (ref == 0)] = 2
            speckled = ref.copy()
            tumour = np.argwhere(ref > 0)
            low, high = np.maximum(tumour.min(0) - 40, 0), np.minimum(tumour.max(0) + 41, ref.shape)
            speckled[tuple(rng.integers(low, high, size=(300, 3)).T)] = rng.choice([1, 2, 3], size=300)
            speckled[tuple(tumour[rng.random(len(tumour)) < 0.02].T)] = 0
            pairs["grown by 1 voxel"].append((grown, ref, spacing))
            pairs["speckled"].append((speckled, ref, spacing))
        if args.pred is not None:
            pred = to_internal(np.asarray(nib.load(args.pred / f"{case}.nii.gz").dataobj), "brats2018")
            pairs["predictions"].append((pred, ref, spacing))
    print(f"case_metrics of whole {ref.shape} cases, CPU (wall) seconds, median of {args.runs} runs, median over pairs")
    for name, items in pairs.items():
        if not items:
            continue
        legacy = np.array(
            [median_cpu_and_wall(lambda p=p, r=r, s=s: case_metrics(p, r, s), args.runs) for p, r, s in items]
        )
        both = np.array(
            [
                median_cpu_and_wall(lambda p=p, r=r, s=s: case_metrics(p, r, s, rules="brats2023-gli"), args.runs)
                for p, r, s in items
            ]
        )
        (legacy_cpu, legacy_wall), (both_cpu, both_wall) = np.median(legacy, axis=0), np.median(both, axis=0)
        print(
            f"  {name:<18} ({len(items):2d} pairs)  legacy only {legacy_cpu:.2f} ({legacy_wall:.2f}) s   "
            f"legacy + lesion-wise {both_cpu:.2f} ({both_wall:.2f}) s, slowest pair {both[:, 0].max():.2f} "
            f"({both[:, 1].max():.2f}) s"
        )


if __name__ == "__main__":
    main()
