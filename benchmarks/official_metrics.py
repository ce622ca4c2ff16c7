"""Compare glioseg's BraTS metrics with the challenge organisers' own code on real pairs.

The pairs are real BraTS 2018 reference label maps against perturbed copies of themselves
(eroded, dilated, shifted, speckled: see :func:`variants`) and, with ``--pred``, against a folder
of predictions (e.g. the shipped model's). For every pair and region (WT, TC, ET) it compares:

* glioseg's legacy HD95 (:func:`glioseg.metrics.hd95`) with MedPy's ``hd95``, which the BraTS
  2018-2021 organisers and ``brats-evaluation`` use (tolerance 0.01 mm; the old MONAI-style value
  is listed beside it);
* glioseg's lesion-wise Dice, HD95 and TP/FP/FN under ``--rules brats2023-gli`` with
  ``get_LesionWiseResults(..., "BraTS-GLI")`` of the organisers' BraTS-2023-Metrics repository
  (tolerances 1e-6, 0.01 mm, counts exact);
* with ``--brats2024``, ``brats2024-gli`` with ``metrics_GLI.py`` of BraTS-2024-Metrics (WT, TC and
  ET; glioseg does not reproduce that code's merging of ET lesions across NETC, so ET may differ).

The organisers' code needs cc3d, medpy, pandas and nibabel, which glioseg does not depend on, so
it runs unchanged in another Python (``--official-python``, a virtual environment with
``pip install connected-components-3d medpy nibabel scipy "pandas<2" "numpy<2"``: the 2023 code
uses ``np.Inf`` and ``DataFrame.append``, gone in numpy 2 and pandas 2) as a worker process of
this script. One shim: its ``metric_df.replace(np.inf, 374)`` raises on pandas >= 1.4 (it pins
1.3.4, which has no wheel for this Python) when a lesion touches several predicted components;
the worker then replaces in the numeric columns only, which gives pandas 1.3's values. The script exits 0 with a message
when the official code is absent.

Usage::

    python benchmarks/official_metrics.py --official-python ../i11-ref/venv/bin/python \\
        --brats2023 ../i11-ref/BraTS-2023-Metrics [--brats2024 ../i11-ref/BraTS-2024-Metrics] \\
        [--pred PRED_DIR] [--data-root ../shared/data/brats2018] [--out benchmarks/official_metrics]

It writes ``OUT/comparison.csv`` (one row per pair, region and metric set) and prints the
largest differences. Results: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018"
REGIONS = ("wt", "tc", "et")


# --- the worker: runs in the organisers' environment ----------------------------------------


def worker(jobs_path: Path, out_path: Path) -> None:
    """Run the organisers' code on every job of ``jobs_path``; write their figures as JSON."""
    import importlib.util
    import os

    import pandas as pd
    from medpy.metric.binary import hd95 as medpy_hd95

    replace = pd.DataFrame.replace

    def numeric_replace(self, to_replace=None, value=None, **kwargs):
        # The 2023 code calls metric_df.replace(np.inf, 374) on a frame whose object column holds
        # arrays of component ids; pandas >= 1.4 then compares arrays and raises. Replace in the
        # numeric columns only (the arrays never hold inf): the same values as pandas 1.3.
        try:
            return replace(self, to_replace, value, **kwargs)
        except ValueError:
            out = self.copy()
            for column in out.columns:
                if out[column].dtype != object:
                    out[column] = out[column].replace(to_replace, value)
            return out

    pd.DataFrame.replace = numeric_replace

    jobs = json.loads(jobs_path.read_text())
    modules = {}

    def load(kind: str, root: str, file: str):
        if kind not in modules:
            sys.path.insert(0, root)  # its own surface_distance copy first
            spec = importlib.util.spec_from_file_location(f"official_{kind}", Path(root) / file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.path.pop(0)
            modules[kind] = module
        return modules[kind]

    results = []
    for job in jobs:
        out = {"id": job["id"]}
        pred = np.asarray(nib.load(job["pred"]).dataobj)
        ref_image = nib.load(job["ref"])
        ref, spacing = np.asarray(ref_image.dataobj), ref_image.header.get_zooms()[:3]
        members = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
        for region, values in members.items():
            p, r = np.isin(pred, values), np.isin(ref, values)
            out[f"medpy_hd95_{region}"] = float(medpy_hd95(p, r, spacing)) if p.any() and r.any() else None
        for kind in ("2023", "2024"):
            if job.get(kind):
                started = time.perf_counter()
                if kind == "2023":
                    module = load(kind, job[kind], "metrics.py")
                    table = module.get_LesionWiseResults(job["pred"], job["ref"], "BraTS-GLI")
                else:
                    module = load(kind, job[kind], "metrics_GLI.py")
                    cwd = os.getcwd()
                    with tempfile.TemporaryDirectory() as scratch:  # it writes ./tmp_gt, ./tmp_pred
                        os.chdir(scratch)
                        try:
                            table, _ = module.get_LesionWiseResults(job["pred"], job["ref"], "BraTS-GLI")
                        finally:
                            os.chdir(cwd)
                out[f"seconds_{kind}"] = time.perf_counter() - started
                for _, row in table.iterrows():
                    region = str(row["Labels"]).lower()
                    if region not in REGIONS:
                        continue
                    for name, column in (("dice", "LesionWise_Score_Dice"), ("hd95", "LesionWise_Score_HD95"),
                                         ("tp", "Num_TP"), ("fp", "Num_FP"), ("fn", "Num_FN")):
                        out[f"{kind}_{name}_{region}"] = float(row[column])
                    out[f"{kind}_legacy_hd95_{region}"] = float(row["Legacy_HD95"])
        results.append(out)
        print(f"official: {job['id']}", file=sys.stderr, flush=True)
    out_path.write_text(json.dumps(results))


# --- the pairs ----------------------------------------------------------------------------------


def variants(ref: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Perturbed copies of an internal label map (0 bg, 1 NCR, 2 ED, 3 ET), each with scattered parts.

    * ``eroded``: every class eroded twice (6-neighbour), thin parts break into pieces;
    * ``dilated``: the tumour grown by 2 voxels as edema, ET grown by 1 voxel into the tumour;
    * ``shifted``: moved by (3, -2, 1) voxels;
    * ``speckled``: the reference plus 300 single-voxel specks of random tumour classes within
      40 voxels of the tumour, and 2 % of its own voxels removed.
    """
    rng = np.random.default_rng(seed)
    out = {}
    eroded = np.zeros_like(ref)
    for value in (1, 2, 3):
        eroded[ndimage.binary_erosion(ref == value, iterations=2)] = value
    out["eroded"] = eroded
    dilated = ref.copy()
    dilated[ndimage.binary_dilation(ref > 0, iterations=2) & (ref == 0)] = 2
    dilated[ndimage.binary_dilation(ref == 3) & (ref > 0)] = 3
    out["dilated"] = dilated
    out["shifted"] = np.roll(ref, (3, -2, 1), axis=(0, 1, 2))
    speckled = ref.copy()
    tumour = np.argwhere(ref > 0)
    low, high = np.maximum(tumour.min(0) - 40, 0), np.minimum(tumour.max(0) + 41, ref.shape)
    points = rng.integers(low, high, size=(300, 3))
    speckled[tuple(points.T)] = rng.choice([1, 2, 3], size=300)
    removed = tumour[rng.random(len(tumour)) < 0.02]
    speckled[tuple(removed.T)] = 0
    out["speckled"] = speckled
    return out


def crop_box(pred: np.ndarray, ref: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The box of all tumour voxels of both maps plus ``margin`` voxels (clipped); everything at 0."""
    if margin <= 0:
        return tuple(slice(None) for _ in ref.shape)
    where = np.argwhere((pred > 0) | (ref > 0))
    low, high = np.maximum(where.min(0) - margin, 0), np.minimum(where.max(0) + margin + 1, ref.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-python", type=Path, help="Python with cc3d, medpy, pandas, nibabel")
    parser.add_argument("--brats2023", type=Path, help="checkout of the BraTS-2023-Metrics repository")
    parser.add_argument("--brats2024", type=Path, help="checkout of the BraTS-2024-Metrics repository")
    parser.add_argument("--pred", type=Path, help="also compare these predictions (<case>.nii.gz, BraTS 2018 labels)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases (0: all)")
    parser.add_argument("--only-2024", type=int, default=4, help="run the slow 2024 code on the first N cases' pairs")
    parser.add_argument("--crop", type=int, default=12, metavar="VOXELS",
                        help="hand the official code the pair cropped to the tumours' box plus this margin "
                        "(same figures: every step of it is translation invariant; 0: whole volumes, ~20-60 s a pair)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("official_metrics"))
    parser.add_argument("--start", type=int, default=0, help="skip the first N cases (to split a run)")
    parser.add_argument("--variant-cases", type=int, default=0, help="perturbed copies for only N cases (0: all)")
    parser.add_argument("--kinds", nargs="+", default=["eroded", "dilated", "shifted", "speckled", "shipped"],
                        help="which pairs: perturbed copies and/or 'shipped' (the --pred folder)")
    parser.add_argument(
        "--summarize", nargs="+", type=Path, metavar="CSV", help="only print the summary of comparison.csv files"
    )
    parser.add_argument("--worker", nargs=2, type=Path, metavar=("JOBS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.summarize:
        summarize(args.summarize)
        return
    if not (
        args.official_python
        and args.official_python.exists()
        and args.brats2023
        and (args.brats2023 / "metrics.py").is_file()
    ):
        print("skipped: the organisers' code is absent (pass --official-python and --brats2023)")
        return

    from glioseg.labels import from_internal, to_internal
    from glioseg.metrics import case_metrics, hd95_max_directed, region_masks

    cases = sorted(p.name for p in args.data_root.iterdir() if (p / f"{p.name}_seg.nii.gz").is_file())
    cases = cases[args.start :][: args.cases] if args.cases else cases[args.start :]
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        jobs, ours = [], {}
        for index, case in enumerate(cases):
            image = nib.load(args.data_root / case / f"{case}_seg.nii.gz")
            ref = to_internal(np.asarray(image.dataobj), "brats2018")
            spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
            perturbed = set(args.kinds) - {"shipped"}
            pairs = {}
            if perturbed and (not args.variant_cases or index < args.variant_cases):
                pairs = {k: v for k, v in variants(ref, seed=args.start + index).items() if k in perturbed}
            if "shipped" in args.kinds and args.pred is not None and (args.pred / f"{case}.nii.gz").is_file():
                pairs["shipped"] = to_internal(np.asarray(nib.load(args.pred / f"{case}.nii.gz").dataobj), "brats2018")
            for name, pred in pairs.items():
                pair_id = f"{case}:{name}"
                box = crop_box(pred, ref, args.crop)
                # the organisers' code reads BraTS 2023 labels (ET = 3): write both maps that way
                ref_path, pred_path = scratch / f"{case}_{name}_ref.nii.gz", scratch / f"{case}_{name}.nii.gz"
                nib.save(nib.Nifti1Image(from_internal(ref[box], "brats2023"), image.affine, image.header), ref_path)
                nib.save(nib.Nifti1Image(from_internal(pred[box], "brats2023"), image.affine, image.header), pred_path)
                job = {"id": pair_id, "pred": str(pred_path), "ref": str(ref_path), "2023": str(args.brats2023)}
                if args.brats2024 and index < args.only_2024:
                    job["2024"] = str(args.brats2024)
                jobs.append(job)
                started = time.perf_counter()
                values = {"2023": case_metrics(pred, ref, spacing, rules="brats2023-gli")}
                values["seconds_ours"] = time.perf_counter() - started
                if "2024" in job:
                    values["2024"] = case_metrics(pred, ref, spacing, rules="brats2024-gli")
                p_regions, r_regions = region_masks(pred), region_masks(ref)
                values["max_directed"] = {r: hd95_max_directed(p_regions[r], r_regions[r], spacing) for r in REGIONS}
                ours[pair_id] = values
        jobs_path, results_path = scratch / "jobs.json", scratch / "official.json"
        jobs_path.write_text(json.dumps(jobs))
        subprocess.run([str(args.official_python), __file__, "--worker", str(jobs_path), str(results_path)], check=True)
        official = {row["id"]: row for row in json.loads(results_path.read_text())}

    rows = []
    for pair_id, values in ours.items():
        theirs = official[pair_id]
        for region in REGIONS:
            mine = values["2023"]
            rows.append({
                "pair": pair_id, "region": region, "set": "legacy hd95 (medpy)",
                "glioseg": mine[f"hd95_{region}"], "official": theirs[f"medpy_hd95_{region}"],
                "glioseg_max_directed": values["max_directed"][region],
            })
            for kind in ("2023", "2024"):
                if f"{kind}_dice_{region}" not in theirs:
                    continue
                mine = values[kind]
                for name in ("dice", "hd95", "tp", "fp", "fn"):
                    rows.append({
                        "pair": pair_id, "region": region, "set": f"brats{kind}-gli lesion {name}",
                        "glioseg": mine[f"lesion_{name}_{region}"], "official": theirs[f"{kind}_{name}_{region}"],
                        "glioseg_max_directed": "",
                    })
    for row in rows:
        pair_id = row["pair"]
        row["seconds_glioseg"] = f"{ours[pair_id]['seconds_ours']:.3f}"
        row["seconds_official"] = f"{official[pair_id].get('seconds_2023', float('nan')):.3f}"
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "comparison.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summarize([args.out / "comparison.csv"])


FIELDS = ["pair", "region", "set", "glioseg", "official", "glioseg_max_directed", "seconds_glioseg", "seconds_official"]


def summarize(paths: list[Path]) -> None:
    """Print the largest differences per metric of one or more ``comparison.csv`` files."""
    rows = []
    for path in paths:
        with open(path, newline="") as handle:
            rows += list(csv.DictReader(handle))
    pairs = sorted({row["pair"] for row in rows})
    kinds = sorted({pair.split(":")[1] for pair in pairs})
    counts = ", ".join(f"{kind} {sum(p.endswith(':' + kind) for p in pairs)}" for kind in kinds)
    print(f"{len(pairs)} pairs ({counts}), {len(rows)} comparisons")
    by_set: dict[str, list[float]] = {}
    skipped = 0
    for row in rows:
        if row["official"] in ("", "None"):
            skipped += 1  # MedPy's hd95 raises on an empty mask (glioseg: 0 or 373.13)
            continue
        by_set.setdefault(row["set"], []).append(abs(float(row["glioseg"]) - float(row["official"])))
    for name, differences in by_set.items():
        print(f"  {name:<30} n={len(differences):3d}  max |glioseg - official| = {max(differences):.3g}")
    if skipped:
        print(f"  ({skipped} legacy HD95 comparisons skipped: an empty region, where MedPy raises)")
    legacy = [r for r in rows if r["set"].startswith("legacy") and r["official"] not in ("", "None")]
    old = max(abs(float(r["glioseg_max_directed"]) - float(r["official"])) for r in legacy)
    print(f"  the MONAI-style max-directed HD95 differs from MedPy's by up to {old:.2f} mm on these pairs")
    timings = {}
    for row in rows:
        if row.get("seconds_glioseg"):
            timings[row["pair"]] = (float(row["seconds_glioseg"]), float(row["seconds_official"]))
    ours, theirs = np.array(list(timings.values())).T
    print(f"  seconds per pair (wall, shared core), all 3 regions: glioseg case_metrics median {np.median(ours):.2f}, "
          f"official 2023 on the cropped pair median {np.nanmedian(theirs):.1f}")


if __name__ == "__main__":
    main()
