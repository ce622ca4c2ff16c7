"""What ``glioseg predict``'s post-processing does to the legacy and the lesion-wise BraTS metrics.

Evaluates a folder of predicted label maps as written, then after each post-processing
setting applied to the saved maps with the library's own function
(:func:`glioseg.inference.postprocess.postprocess`, as ``predict --min-component-size N`` and
``--et-threshold N`` run it): each ``--min-component-size`` value alone, each ET threshold alone,
and with ``--combined`` each pair of the two. Every variant is scored against the references under both metric
sets (:func:`glioseg.metrics.case_metrics` with the lesion-wise ``--rules``), and the means over
cases are written as ``OUT/postprocess_metrics.csv`` and ``OUT/postprocess_metrics.md``.

Works on any prediction folder (e.g. out-of-fold predictions of a cross-validation); say in the
table's caption whether the cases were seen in training.

Usage::

    python benchmarks/postprocess_metrics.py --pred PRED_DIR --ref ../shared/data/brats2018 \\
        [--min-sizes 100 1000] [--et-thresholds 100 500] [--combined] [--rules brats2023-gli] \\
        [--note "in-sample for 12 of 16 cases"] [--out benchmarks/postprocess_metrics]

Results: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import numpy as np

from glioseg.data.io import read_volume
from glioseg.evaluation import pair_cases
from glioseg.inference.postprocess import PostprocessConfig, postprocess
from glioseg.labels import REGION_NAMES, detect_convention, get_convention, to_internal
from glioseg.metrics import SCORING_RULES, case_metrics

COLUMNS = (
    [f"dice_{r}" for r in REGION_NAMES]
    + [f"hd95_{r}" for r in REGION_NAMES]
    + [f"lesion_dice_{r}" for r in REGION_NAMES]
    + [f"lesion_hd95_{r}" for r in REGION_NAMES]
    + [f"lesion_fp_{r}" for r in REGION_NAMES]
)


def settings(min_sizes: list[int], et_thresholds: list[int], combined: bool) -> list[tuple[int, int]]:
    """``(min_component_size, et_threshold)`` pairs: as written first, then singles, then both."""
    out = [(0, 0)]
    out += [(m, 0) for m in min_sizes if m > 0]
    out += [(0, e) for e in et_thresholds if e > 0]
    if combined:
        out += [(m, e) for m, e in itertools.product(min_sizes, et_thresholds) if m > 0 and e > 0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder of <case>.nii.gz label maps")
    parser.add_argument("--ref", type=Path, required=True, help="reference dataset (any layout)")
    parser.add_argument("--labels", help="label convention of the predictions (default: the references')")
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--et-thresholds", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--combined", action="store_true", help="also every (min size, ET threshold) pair")
    parser.add_argument("--rules", default="brats2023-gli", choices=tuple(SCORING_RULES))
    parser.add_argument("--note", default="", help="caption line, e.g. which cases the model saw in training")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("postprocess_metrics"))
    parser.add_argument("--part", type=int, nargs=2, metavar=("I", "K"), default=(0, 1),
                        help="score only cases i, i+K, i+2K, ... into OUT/part_I.csv (run K parts, then --merge)")
    parser.add_argument("--merge", type=int, metavar="K", help="only merge OUT/part_0..K-1.csv into the tables")
    args = parser.parse_args()

    grid = settings(args.min_sizes, args.et_thresholds, args.combined)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        per_case = []
        for part in range(args.merge):
            with open(args.out / f"part_{part}.csv", newline="") as handle:
                per_case += list(csv.DictReader(handle))
        write_tables(args, grid, per_case)
        return
    pairing = pair_cases(args.pred, args.ref)
    part, parts = args.part
    rows = []
    started = time.perf_counter()
    for pred_path, case in pairing.pairs[part::parts]:
        ref = read_volume(case.label, dtype=None)
        pred = read_volume(pred_path, dtype=None)
        ref_internal = to_internal(ref.data, case.convention, ref.path)
        convention = (
            get_convention(args.labels).name
            if args.labels
            else detect_convention(pred.data, case.convention, pred_path)
        )
        pred_internal = to_internal(pred.data, convention, pred.path)
        for min_size, et_threshold in grid:
            config = PostprocessConfig(et_threshold=et_threshold, min_component_size=min_size)
            processed = postprocess(pred_internal, config)
            metrics = case_metrics(processed, ref_internal, ref.spacing, rules=args.rules)
            rows.append({"case": case.case_id, "min_component_size": min_size, "et_threshold": et_threshold,
                         **{key: metrics[key] for key in COLUMNS}})
        print(f"{case.case_id}: {len(grid)} settings ({time.perf_counter() - started:.0f} s)", flush=True)
    if parts > 1:
        with open(args.out / f"part_{part}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return
    write_tables(args, grid, rows)


def write_tables(args: argparse.Namespace, grid: list[tuple[int, int]], per_case: list[dict]) -> None:
    """Means over cases per setting -> OUT/postprocess_metrics.csv and .md (also printed)."""
    cases = sorted({str(row["case"]) for row in per_case})
    rows = []
    for min_size, et_threshold in grid:
        metrics = [
            r for r in per_case if int(r["min_component_size"]) == min_size and int(r["et_threshold"]) == et_threshold
        ]
        row = {"min_component_size": min_size, "et_threshold": et_threshold, "cases": len(metrics)}
        for key in COLUMNS:
            row[key] = float(np.mean([float(m[key]) for m in metrics]))
        rows.append(row)
    with open(args.out / "postprocess_metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)

    shown = [f"dice_{r}" for r in REGION_NAMES] + [f"hd95_{r}" for r in REGION_NAMES]
    shown += [f"lesion_dice_{r}" for r in REGION_NAMES] + [f"lesion_hd95_{r}" for r in REGION_NAMES]
    shown += [f"lesion_fp_{r}" for r in REGION_NAMES]
    names = {"dice": "Dice", "hd95": "HD95", "lesion_dice": "L-Dice", "lesion_hd95": "L-HD95", "lesion_fp": "L-FP"}
    titles = [f"{names[k.rsplit('_', 1)[0]]} {k.rsplit('_', 1)[1].upper()}" for k in shown]
    lines = [
        f"Post-processing of {len(cases)} predictions ({args.pred.name}) against {args.ref.name}: means over cases. "
        f"Legacy Dice / HD95 (mm, MedPy pooled) and lesion-wise (L-, {args.rules}, HD95 surface-area weighted, "
        "L-FP: false-positive lesions per case)." + (f" {args.note}" if args.note else ""),
        "",
        "| min component | ET threshold | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for row in rows:
        cells = [f"{row[k]:.1f}" if ("hd95" in k or "fp" in k) else f"{row[k]:.4f}" for k in shown]
        lines.append(
            f"| {row['min_component_size'] or 'off'} | {row['et_threshold'] or 'off'} | " + " | ".join(cells) + " |"
        )
    (args.out / "postprocess_metrics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
