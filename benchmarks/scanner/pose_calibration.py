"""The rotation between ROBEX's atlas and BraTS's pose (``glioseg.prepare.pose.ATLAS_TO_BRATS``).

Registers the T1ce brain of BraTS 2018 training cases (in BraTS's pose: identity direction) to
ROBEX's atlas brain with :func:`glioseg.prepare.pose.register_to_atlas`, and takes the mean of
the rotations projected back onto the rotations (SVD); ``ATLAS_TO_BRATS`` is its transpose.
Each case's angle from that mean says how well one registration recovers BraTS's pose. The four
cases of ``run.py``'s benchmark are left out.

Usage::

    python benchmarks/scanner/pose_calibration.py --out benchmarks/scanner/pose_calibration.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioseg.prepare.pose import atlas_brain, register_to_atlas

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CASES = (
    "Brats18_2013_11_1",
    "Brats18_CBICA_ABM_1",
    "Brats18_TCIA01_201_1",
    "Brats18_TCIA03_265_1",
    "Brats18_CBICA_APR_1",
    "Brats18_TCIA10_639_1",
    "Brats18_2013_23_1",
    "Brats18_CBICA_AME_1",
    "Brats18_TCIA02_606_1",
    "Brats18_CBICA_AQO_1",
)


def angle(rotation: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(rotation)) - 1.0) / 2.0))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "pose_calibration.json")
    args = parser.parse_args()
    atlas = atlas_brain()
    found = {}
    for case in CASES:
        folder = next(p for p in (SHARED / "brats2018" / case, SHARED / "brats2018_extra" / case) if p.is_dir())
        brain = sitk.ReadImage(str(folder / f"{case}_t1ce.nii.gz"), sitk.sitkFloat32)
        started = time.perf_counter()
        rotation, scale, metric = register_to_atlas(brain, atlas)
        found[case] = {
            "rotation": rotation.tolist(),
            "scale": scale,
            "metric": metric,
            "seconds": time.perf_counter() - started,
        }
    u, _, vt = np.linalg.svd(np.mean([np.array(f["rotation"]) for f in found.values()], axis=0))
    mean = u @ vt
    for case, f in found.items():
        f["degrees_from_mean"] = angle(np.array(f["rotation"]) @ mean.T)
        turned = angle(np.array(f["rotation"]))
        print(f"{case}: {turned:.2f} deg, {f['degrees_from_mean']:.2f} from mean, scale {f['scale']:.3f}")
    # for a case in BraTS's pose, the rotation found is the mean: its transpose turns it back to the identity
    print(f"ATLAS_TO_BRATS ({angle(mean):.2f} degrees):\n{np.array2string(mean.T, precision=7, separator=', ')}")
    args.out.write_text(json.dumps({"atlas_to_brats": mean.T.tolist(), "cases": found}, indent=2) + "\n")


if __name__ == "__main__":
    main()
