"""Per case: D-long's out-of-fold label maps post-processed by the shipped `largest-tumour-only-et5%-tc10%` and by
`tumour-10%-et5%-tc10%` (the relative whole-tumour rule), legacy Dice against the reference (session 12).

    python benchmarks/cv/recipe_d_long_relative_pp/compare.py > benchmarks/cv/recipe_d_long_relative_pp/compare.txt
"""

import glob
import os

import nibabel as nib
import numpy as np

from glioseg.inference.postprocess import PostprocessConfig, postprocess
from glioseg.labels import get_convention, region_masks, to_internal

PRED = "/work/glioseg-runs/recipe_d_24/recipe_d_long/pred"
DATA = "/work/shared/data"
SHIPPED = PostprocessConfig(
    min_component_size=1, max_components=1, min_et_component_fraction=0.05, min_core_component_fraction=0.1
)
RELATIVE = PostprocessConfig(
    min_component_fraction=0.1, min_et_component_fraction=0.05, min_core_component_fraction=0.1
)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = pred.sum() + ref.sum()
    return 1.0 if total == 0 else float(2 * (pred & ref).sum() / total)


def main() -> None:
    convention = get_convention("brats2018")
    rows = []
    for path in sorted(glob.glob(f"{PRED}/*.nii.gz")):
        cid = os.path.basename(path)[: -len(".nii.gz")]
        seg = glob.glob(f"{DATA}/brats2018*/{cid}/{cid}_seg.nii.gz")[0]
        ref = region_masks(np.asarray(nib.load(seg).dataobj).astype(np.uint8), convention)
        pred = to_internal(np.asarray(nib.load(path).dataobj).astype(np.uint8), convention)
        scores = []
        for config in (SHIPPED, RELATIVE):
            masks = region_masks(postprocess(pred, config))
            scores.append([dice(masks[k], ref[k]) for k in ("wt", "tc", "et")])
        rows.append((cid, scores))
    shipped = np.array([s[0] for _, s in rows])
    relative = np.array([s[1] for _, s in rows])
    print("largest-only mean", shipped.mean(0).round(4), "tumour-10% mean", relative.mean(0).round(4))
    for cid, (a, b) in rows:
        if not np.allclose(a, b):
            print(cid, np.round(a, 3), np.round(b, 3))


if __name__ == "__main__":
    main()
