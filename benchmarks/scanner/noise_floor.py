"""The noise floor of the scanner benchmark's 0.03 bar: how far a model's Dice moves when a BraTS-ready case is
merely shifted by half a voxel (or turned by a few degrees) and resampled once, with nothing else changed.

For each case: the BraTS-ready case is predicted as it is, and again after a rigid motion about the brain's
centre (``--motion shift``: 0.5 mm along each axis; ``--motion rot3``: 3 degrees about a random axis, seed 7),
every modality resampled linearly and set to 0 outside the brain (any modality non-zero) moved by nearest
neighbour (so no edge voxel blends brain and background: the shell that session 15 removed from ``prepare``),
the reference labels moved by nearest neighbour. ``--smooth SIGMA`` also smooths the images of both runs
inside the brain before predicting (an inference-time anti-aliasing check). Each case is predicted with its
``--model CASE=PACK`` (the fold model that never saw it), or the shipped model, and ``--predict-option``
(e.g. ``--mirror``) in every ``glioseg predict``.

Usage::

    python benchmarks/scanner/noise_floor.py --data ../shared/data/brats2018 ../shared/data/brats2018_extra \\
        --cases Brats18_CBICA_AOZ_1 ... --model Brats18_CBICA_AOZ_1=FOLD1_PACK ... --motion shift \\
        --work /tmp/floor --out benchmarks/scanner/noise_floor --name recipe_d_bn_shift

Writes ``NAME.json`` and ``NAME.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioseg.data.preprocess import antialias_in_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MODALITIES, REGIONS, about, affine_transform, axis_rotation, brain_centre, dice


def motion(kind: str, rng: np.random.Generator) -> np.ndarray:
    out = np.eye(4)
    if kind == "shift":
        out[:3, 3] = 0.5
    else:
        axis = rng.normal(size=3)
        out[:3, :3] = axis_rotation(axis / np.linalg.norm(axis), float(kind[3:]))
    return out


def write_case(case: Path, out: Path, transform: sitk.Transform | None, sigma: float) -> None:
    """The case (moved by ``transform`` when given) written to ``out``; smoothed inside the brain if ``sigma``."""
    cid = case.name
    out.mkdir(parents=True, exist_ok=True)
    seg = sitk.ReadImage(str(case / f"{cid}_seg.nii.gz"), sitk.sitkUInt8)
    images = {m: sitk.ReadImage(str(case / f"{cid}_{m}.nii.gz"), sitk.sitkFloat32) for m in MODALITIES}
    union = np.zeros(sitk.GetArrayFromImage(seg).shape, dtype=bool)  # the brain as glioseg finds it: any non-zero
    for image in images.values():
        union |= sitk.GetArrayFromImage(image) != 0
    brain = sitk.GetImageFromArray(union.astype(np.uint8))
    brain.CopyInformation(seg)
    if transform is not None:
        brain = sitk.Resample(brain, seg, transform, sitk.sitkNearestNeighbor, 0)
        seg = sitk.Resample(seg, seg, transform, sitk.sitkNearestNeighbor, 0)
    mask = sitk.GetArrayFromImage(brain) > 0
    for m, image in images.items():
        placed = image if transform is None else sitk.Resample(image, seg, transform, sitk.sitkLinear, 0.0)
        array = sitk.GetArrayFromImage(placed) * mask
        if sigma:  # normalised inside the brain, as preprocess.antialias smooths
            array = antialias_in_mask(array[None], (sigma,) * 3, mask)[0]
        written = sitk.GetImageFromArray(array.astype(np.float32))
        written.CopyInformation(seg)
        sitk.WriteImage(written, str(out / f"{cid}_{m}.nii.gz"))
    sitk.WriteImage(seg, str(out / f"{cid}_seg.nii.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument(
        "--model", action="append", default=[], metavar="CASE=PACK[,PACK...]",
        help="the model(s) that predict CASE (several, comma-separated: an ensemble); default: the shipped model",
    )
    parser.add_argument("--motion", default="shift", help="shift (0.5 mm each axis) or rotN (N degrees)")
    parser.add_argument("--smooth", type=float, default=0.0, help="Gaussian sigma (voxels) inside the brain")
    parser.add_argument("--work", type=Path, default=Path("/tmp/glioseg-floor"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "noise_floor")
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--predict-option", action="append", default=[], metavar="OPTION",
        help="added to every glioseg predict, ready and moved runs alike, e.g. --predict-option=--mirror",
    )
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.model)
    folders = {c: next(d / c for d in args.data if (d / c).is_dir()) for c in args.cases}
    rng = np.random.default_rng(7)
    groups: dict[str, list[str]] = defaultdict(list)  # model -> cases
    for cid in args.cases:
        case = folders[cid]
        centre = brain_centre(sitk.ReadImage(str(case / f"{cid}_t1ce.nii.gz")))
        moved = affine_transform(np.linalg.inv(about(motion(args.motion, rng), centre)))
        model = models.get(cid, "shipped")
        write_case(case, args.work / "ready" / model.replace("/", "_") / cid, None, args.smooth)
        write_case(case, args.work / "moved" / model.replace("/", "_") / cid, moved, args.smooth)
        groups[model].append(cid)
    scores: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for run in ("ready", "moved"):
        for model, cases in groups.items():
            folder = args.work / run / model.replace("/", "_")
            predicted = args.work / f"{run}_pred" / model.replace("/", "_")
            command = [
                sys.executable, "-m", "glioseg", "predict", str(folder), "-o", str(predicted), "--quiet",
                *args.predict_option,
            ]
            subprocess.run(command + ([] if model == "shipped" else ["--model", *model.split(",")]), check=True)
            for cid in cases:
                label = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted / f"{cid}.nii.gz")))
                truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / cid / f"{cid}_seg.nii.gz")))
                scores[cid][run] = {k: float(dice(np.isin(label, v), np.isin(truth, v))) for k, v in REGIONS.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "motion": args.motion, "smooth": args.smooth, "models": models, "predict_options": args.predict_option,
        "scores": scores,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# Noise floor ({args.name}): motion `{args.motion}`, smoothing sigma {args.smooth:g}",
        "",
        *([f"Every `glioseg predict` with `{' '.join(args.predict_option)}`.", ""] if args.predict_option else []),
        "| case | model | Dice WT / TC / ET, ready | moved and resampled | moved - ready | within 0.03 |",
        "|---|---|---|---|---|---|",
    ]
    within = 0
    for cid in args.cases:
        a, b = scores[cid]["ready"], scores[cid]["moved"]
        gap = {k: b[k] - a[k] for k in a}
        ok = all(abs(v) <= 0.03 for v in gap.values())
        within += ok
        names = " + ".join(Path(m).name for m in models.get(cid, "shipped").split(","))
        lines.append(
            f"| {cid} | {names} | {' / '.join(f'{a[k]:.3f}' for k in a)} | "
            f"{' / '.join(f'{b[k]:.3f}' for k in b)} | {' / '.join(f'{gap[k]:+.3f}' for k in gap)} | "
            f"{'yes' if ok else '**no**'} |"
        )
    lines += ["", f"Within 0.03 in every region: {within} of {len(args.cases)} cases.", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
