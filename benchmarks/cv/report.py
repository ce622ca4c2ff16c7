"""Out-of-fold evaluation of a cross-validated recipe, with a nested choice of post-processing.

Called by ``run.py report``. Reads the out-of-fold label maps ``WORK/pred/raw/<case>.nii.gz``
(each written by the fold model that never saw the case), evaluates them with
``glioseg evaluate``, applies every post-processing candidate of :data:`CANDIDATES` to them in memory,
and picks, for the cases of each fold, the candidate with the best score on the *other* folds'
cases (:func:`nested_choice`). The scores reported for "nested post-processing" are therefore
out-of-fold twice over: neither the weights nor the post-processing applied to a case have
seen it. The candidate that scores best on all cases is what a model trained on this recipe
would ship with (reported, never scored on its own).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REGIONS = ("wt", "tc", "et")

# (name, min_component_size (mm^3 at 1 mm = voxels), max_components, et_threshold (voxels),
#  min_et_component_size, min_core_component_size (voxels))
CANDIDATES: tuple[tuple[str, int, int | None, int, int, int], ...] = tuple(
    (f"cc{size}{'-top1' if top == 1 else ''}_et{et}", size, top, et, 0, 0)
    for size, top in ((0, None), (500, None), (3000, None), (1, 1))
    for et in (0, 200, 500)
) + tuple(  # per-region filters (ET specks -> necrosis, tumor-core specks -> edema) on the two whole-tumor filters
    (f"cc{size}{'-top1' if top == 1 else ''}_et0_ec{ec}_tc{tc}", size, top, 0, ec, tc)
    for size, top in ((500, None), (1, 1))
    for ec in (0, 50, 300, 1000)
    for tc in (0, 300, 2000, 5000)
    if ec or tc
)
# The per-region sizes 1000 (ET) and 5000 (tumor core) were added after recipe A's first nested
# choice, on a grid without them, picked the largest sizes then offered (300 and 2000) for every fold.


def candidate_setting(candidate: tuple[str, int, int | None, int, int, int]):
    """The :class:`glioseg.inference.postprocess.PostprocessConfig` of one of :data:`CANDIDATES`."""
    from glioseg.inference.postprocess import PostprocessConfig

    _, size, top, et, ec, tc = candidate
    return PostprocessConfig(et_threshold=et, min_component_size=size, max_components=top, min_et_component_size=ec, min_core_component_size=tc)


def case_tables(raw: Path, labels: dict[str, Path], cases: list[str], workers: int = 2) -> dict[str, dict[str, dict[str, float]]]:
    """``{candidate: {case: metrics}}``: every candidate applied in memory to each out-of-fold map
    (``labels``: each case's reference label file).

    Metrics are :func:`glioseg.metrics.case_metrics` (legacy, plus BraTS 2023 glioma lesion-wise
    where this glioseg has them), with the reference's voxel spacing; the same numbers
    ``glioseg evaluate`` writes (the raw maps are also scored by ``glioseg evaluate`` itself).
    """
    import inspect

    from glioseg.metrics import case_metrics

    lesion = "rules" in inspect.signature(case_metrics).parameters
    scores = raw.parent.parent / "scores"  # WORK/scores/<case>.json: a case's candidates, scored once
    scores.mkdir(parents=True, exist_ok=True)
    names = {name for name, *_ in CANDIDATES}
    todo = [c for c in cases if not (scores / f"{c}.json").is_file() or not names <= set(json.loads((scores / f"{c}.json").read_text()))]
    jobs = [(raw / f"{case_id}.nii.gz", labels[case_id], lesion, scores / f"{case_id}.json") for case_id in todo]
    if jobs:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            pool.map(_score_candidates, jobs)
    results = [json.loads((scores / f"{c}.json").read_text()) for c in cases]
    return {name: {case_id: result[name] for case_id, result in zip(cases, results)} for name, *_ in CANDIDATES}


def _score_candidates(job: tuple[Path, Path, bool, Path]) -> None:
    """Metrics of every candidate on one case, written to a JSON file; candidates giving the same
    label map are scored once."""
    import hashlib

    from glioseg.data.io import read_volume
    from glioseg.inference.postprocess import postprocess
    from glioseg.labels import to_internal
    from glioseg.metrics import case_metrics

    pred_path, ref_path, lesion, target = job
    pred, ref = read_volume(pred_path, dtype=None), read_volume(ref_path, dtype=None)
    pred_labels, ref_labels = to_internal(pred.data, "brats2018"), to_internal(ref.data, "brats2018")
    kwargs = {"rules": "brats2023-gli"} if lesion else {}
    scored: dict[str, dict[str, float]] = {}
    result = json.loads(target.read_text()) if target.is_file() else {}  # candidates added later are scored alone
    for candidate in CANDIDATES:
        name = candidate[0]
        if name in result:
            continue
        labels = postprocess(pred_labels, candidate_setting(candidate))
        digest = hashlib.sha1(np.ascontiguousarray(labels).tobytes()).hexdigest()
        if digest not in scored:
            scored[digest] = case_metrics(labels, ref_labels, ref.spacing, **kwargs)
        result[name] = scored[digest]
    print(f"{pred_path.name}: {len(CANDIDATES)} candidates, {len(scored)} distinct label maps scored", flush=True)
    target.write_text(json.dumps(result))


FAR_MM = 10.0  # predicted tumour farther than this from the reference tumour counts as "away from the tumour"


def far_voxels(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], far_mm: float = FAR_MM) -> tuple[int, int, int]:
    """``(predicted, reference, far)`` whole-tumour voxel counts: ``far`` are the predicted voxels
    more than ``far_mm`` from every reference tumour voxel (all of them when the reference is empty).

    Args:
        pred: boolean predicted whole tumour, (X, Y, Z).
        ref: boolean reference whole tumour, same shape.
        spacing: voxel size in mm per axis.
    """
    from scipy import ndimage

    if not ref.any():
        return int(pred.sum()), 0, int(pred.sum())
    distance = ndimage.distance_transform_edt(~ref, sampling=spacing)
    return int(pred.sum()), int(ref.sum()), int((pred & (distance > far_mm)).sum())


def _far_voxels_of_case(job: tuple[Path, Path, str]) -> tuple[int, int, int]:
    """:func:`far_voxels` of one out-of-fold map after the post-processing candidate ``name``."""
    from glioseg.data.io import read_volume
    from glioseg.inference.postprocess import postprocess
    from glioseg.labels import to_internal

    pred_path, ref_path, name = job
    candidate = next(c for c in CANDIDATES if c[0] == name)
    pred, ref = read_volume(pred_path, dtype=None), read_volume(ref_path, dtype=None)
    labels = postprocess(to_internal(pred.data, "brats2018"), candidate_setting(candidate))
    return far_voxels(labels > 0, to_internal(ref.data, "brats2018") > 0, ref.spacing)


def score(row: dict[str, float]) -> float:
    """Selection score of one case: mean Dice over the regions, legacy and lesion-wise averaged
    when the evaluation has lesion-wise columns (BraTS 2023+ ranks by those)."""
    legacy = np.mean([row[f"dice_{r}"] for r in REGIONS])
    if all(f"lesion_dice_{r}" in row for r in REGIONS):
        return float((legacy + np.mean([row[f"lesion_dice_{r}"] for r in REGIONS])) / 2)
    return float(legacy)


def nested_choice(tables: dict[str, dict[str, dict[str, float]]], folds: dict[int, list[str]]) -> dict[int, str]:
    """For each fold, the candidate with the best mean score over the cases of the other folds."""
    chosen = {}
    for fold, cases in folds.items():
        others = [c for f, ids in folds.items() if f != fold for c in ids]
        chosen[fold] = max(tables, key=lambda name: (np.mean([score(tables[name][c]) for c in others]), name == "cc0_et0"))
    return chosen


def summarise(rows: dict[str, dict[str, float]], keys: list[str]) -> dict[str, tuple[float, float]]:
    return {k: (float(np.mean([r[k] for r in rows.values()])), float(statistics.median([r[k] for r in rows.values()]))) for k in keys}


def write_report(recipe: Path, data: Path, work: Path, out: Path, k: int) -> None:
    raw = work / "pred" / "raw"
    folds = {}
    for fold in range(k):
        split = json.loads((work / "runs" / f"fold{fold}" / "split.json").read_text())
        folds[fold] = list(split["val"])
    cases = sorted(c for ids in folds.values() for c in ids)
    missing = [c for c in cases if not (raw / f"{c}.nii.gz").is_file()]
    if missing:
        raise SystemExit(f"{raw}: no out-of-fold prediction for {', '.join(missing)}; run `run.py train` for their folds first")

    evaluation = work / "eval" / "raw"
    if not (evaluation / "per_case.csv").is_file():
        print(f"$ glioseg evaluate --pred {raw} --ref {data} -o {evaluation}", flush=True)
        subprocess.run([sys.executable, "-m", "glioseg", "evaluate", "--pred", str(raw), "--ref", str(data), "-o", str(evaluation), "--quiet"], check=True)
    from glioseg.data.discovery import discover

    labels = {case.case_id: case.label for case in discover(data).cases}
    tables = case_tables(raw, labels, cases)
    chosen = nested_choice(tables, folds)
    fold_of = {c: f for f, ids in folds.items() for c in ids}
    nested_name = {c: chosen[fold_of[c]] for c in cases}
    nested = {c: tables[nested_name[c]][c] for c in cases}
    everything = max(tables, key=lambda name: (np.mean([score(tables[name][c]) for c in cases]), name == "cc0_et0"))

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        counts = dict(zip(cases, pool.map(_far_voxels_of_case, [(raw / f"{c}.nii.gz", labels[c], nested_name[c]) for c in cases])))

    keys = [k for k in tables["cc0_et0"][cases[0]] if k.startswith(("dice_", "hd95_", "lesion_dice_", "lesion_hd95_", "lesion_fp_"))]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "per_case.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        far = ["pp_wt_voxels", "ref_wt_voxels", f"pp_wt_voxels_over_{FAR_MM:g}mm_away"]
        writer.writerow(["case", "fold", "postprocessing", *[f"raw_{k}" for k in keys], *[f"pp_{k}" for k in keys], *far])
        for c in cases:
            writer.writerow([c, fold_of[c], nested_name[c], *[f"{tables['cc0_et0'][c][k]:.6g}" for k in keys], *[f"{nested[c][k]:.6g}" for k in keys], *counts[c]])
    timings = []
    for fold in range(k):
        timing_file = work / f"timings-fold{fold}.json"
        if timing_file.is_file():
            timings += [t["total"] for t in json.loads(timing_file.read_text())["cases"].values()]
    train_min = []
    for fold in range(k):
        meta = work / "runs" / f"fold{fold}" / "finished.json"
        if meta.is_file():
            train_min.append(json.loads(meta.read_text())["train_s"] / 60)
    raw_summary, pp_summary = summarise(tables["cc0_et0"], keys), summarise(nested, keys)
    lines = [
        f"# Cross-validation of `{recipe.name}`: out-of-fold scores on {len(cases)} cases ({k} folds)",
        "",
        "Each case predicted by the fold model that never saw it (last epoch), on its original grid,",
        "scored by `glioseg evaluate`. Post-processing: for each fold, the candidate that scores best",
        "on the other folds' out-of-fold predictions (nested choice).",
        "",
        "| metric | raw mean | raw median | post-processed mean | post-processed median |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in keys:
        lines.append(f"| {key} | {raw_summary[key][0]:.4f} | {raw_summary[key][1]:.4f} | {pp_summary[key][0]:.4f} | {pp_summary[key][1]:.4f} |")
    lines += [
        "",
        "Post-processing chosen per fold (nested): " + ", ".join(f"fold {f}: `{chosen[f]}`" for f in sorted(chosen)),
        f"Chosen on all {len(cases)} cases (what the recipe ships with): `{everything}`",
        "",
        f"Training per fold: {', '.join(f'{m:.1f}' for m in train_min)} min (1 CPU thread each).",
    ]
    if timings:
        lines.append(f"Prediction, read -> write: median {statistics.median(timings):.1f} s per case over {len(timings)} cases (1 thread).")
    lines += [
        "",
        "## Per case (raw -> post-processed Dice WT / TC / ET)",
        "",
        f"Whole-tumour voxels after post-processing: predicted / reference, and how many of the predicted lie over {FAR_MM:g} mm",
        "from every reference tumour voxel (false positives away from the tumour).",
        "",
        "| case | fold | post-processing | WT | TC | ET | WT voxels predicted / reference | of them away |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        cells = [f"{tables['cc0_et0'][c][f'dice_{r}']:.3f} -> {nested[c][f'dice_{r}']:.3f}" for r in REGIONS]
        predicted, reference, away = counts[c]
        lines.append(f"| {c} | {fold_of[c]} | `{nested_name[c]}` | {' | '.join(cells)} | {predicted} / {reference} | {away} ({away / max(predicted, 1):.1%}) |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "choice.json").write_text(json.dumps({"nested": {str(f): n for f, n in chosen.items()}, "all_cases": everything, "candidates": [list(c) for c in CANDIDATES]}, indent=2) + "\n")
    print("\n".join(lines[:8 + len(keys)]))
