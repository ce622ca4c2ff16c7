# Per case: D-long out-of-fold label maps post-processed by largest-tumour-only-et5%-tc10% and by tumour-10%-et5%-tc10% (session 12).
import glob, os
import nibabel as nib, numpy as np
from glioseg.labels import to_internal, region_masks, get_convention
from glioseg.inference.postprocess import postprocess, PostprocessConfig
conv = get_convention("brats2018")
A = PostprocessConfig(min_component_size=1, max_components=1, min_et_component_fraction=0.05, min_core_component_fraction=0.1)
B = PostprocessConfig(min_component_fraction=0.1, min_et_component_fraction=0.05, min_core_component_fraction=0.1)
def dice(p, r):
    s = p.sum() + r.sum()
    return 1.0 if s == 0 else 2 * (p & r).sum() / s
rows = []
for f in sorted(glob.glob("/work/glioseg-runs/recipe_d_24/recipe_d_long/pred/*.nii.gz")):
    cid = os.path.basename(f)[:-7]
    ref_path = glob.glob(f"/work/shared/data/brats2018*/{cid}/{cid}_seg.nii.gz")[0]
    ref = region_masks(np.asarray(nib.load(ref_path).dataobj).astype(np.uint8), conv)
    pred = to_internal(np.asarray(nib.load(f).dataobj).astype(np.uint8), conv)
    out = []
    for cfg in (A, B):
        m = region_masks(postprocess(pred, cfg))
        out.append([dice(m[k], ref[k]) for k in ("wt", "tc", "et")])
    rows.append((cid, out))
a = np.array([r[1][0] for r in rows]); b = np.array([r[1][1] for r in rows])
print("largest-only mean", a.mean(0).round(4), "tumour-10% mean", b.mean(0).round(4))
for cid, (x, y) in rows:
    if not np.allclose(x, y):
        print(cid, np.round(x, 3), np.round(y, 3))
