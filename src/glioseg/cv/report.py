"""``glioseg cv report``: out-of-fold scores and a nested choice of post-processing.

Every case's label map in ``WORK/<stage>/pred`` was written by the fold model that never saw the
case. Each post-processing candidate (a :class:`~glioseg.inference.postprocess.PostprocessConfig`
from a candidates file) is applied to it in memory and scored against the reference with the
official BraTS rules (legacy, and lesion-wise with the rule set that matches the data). For the
cases of fold k, the candidate applied is the one with the best mean score on the *other*
folds' cases (:func:`nested_choice`), so neither the weights nor the post-processing applied to
a case have seen it. The candidate best on all cases is what a packed model ships with; it is
reported, never scored on those cases as if it were out-of-fold.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from glioseg.cv.workdir import WorkFolder
from glioseg.errors import GliosegError
from glioseg.files import write_json, write_text
from glioseg.inference.postprocess import PostprocessConfig

logger = logging.getLogger(__name__)

REGIONS = ("wt", "tc", "et")
NONE = "none"
FAR_MM = 10.0
"""Predicted tumour farther than this from every reference tumour voxel counts as away from the tumour."""
MARGIN = 16
"""Voxels kept around the union of prediction and reference when scoring (every reported metric is unchanged by the
crop)."""
REPORTED_PREFIXES = ("dice_", "iou_", "sensitivity_", "hd95_", "lesion_")
"""Metrics in the report: those that do not depend on how much background the volume holds (not specificity, not
accuracy)."""


def default_candidates_file() -> Path:
    """The shipped candidate grid (``glioseg/configs/postprocess_candidates.yaml``)."""
    return Path(str(resources.files("glioseg") / "configs" / "postprocess_candidates.yaml"))


def load_candidates(path: Path | None = None) -> dict[str, PostprocessConfig]:
    """Named post-processing settings from a YAML file, with one that changes nothing (``none``
    unless the file names one).

    The file holds ``candidates:`` (name -> postprocess section) and/or ``grid:`` (postprocess
    key -> list of values; every combination becomes a candidate named ``key=value,...``).

    Raises:
        GliosegError: unreadable YAML, unknown keys or values outside their ranges (one line naming the candidate).
    """
    from glioseg.config import config_from_dict

    path = path or default_candidates_file()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GliosegError(
            path, f"cannot read the candidates ({exc})", "give a YAML file with candidates: or grid:"
        ) from None
    if not isinstance(data, dict) or not set(data) <= {"candidates", "grid"} or not data:
        raise GliosegError(
            path, "is not a mapping with candidates: and/or grid:", "see glioseg/configs/postprocess_candidates.yaml"
        )
    named = data.get("candidates") or {}
    if not isinstance(named, dict):
        raise GliosegError(
            path,
            "candidates: is not a mapping of name -> postprocess settings",
            "write e.g. candidates: {big: {min_component_size: 500}}",
        )
    entries: dict[str, Any] = {}
    for name, section in named.items():
        if not isinstance(name, str):
            raise GliosegError(
                path,
                f"candidate name {name!r} is not text (YAML reads off, no, yes and numbers as values)",
                "quote the name",
            )
        entries[name] = section or {}
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(values, list) and values for values in grid.values()):
        raise GliosegError(
            path, "grid: is not a mapping of key -> list of values", "write e.g. grid: {min_component_size: [0, 500]}"
        )
    for values in itertools.product(*grid.values()) if grid else ():
        section = dict(zip(grid, values, strict=True))
        entries[",".join(f"{k}={v}" for k, v in section.items())] = section
    candidates: dict[str, PostprocessConfig] = {}
    for name, section in entries.items():
        if not isinstance(section, dict):
            raise GliosegError(
                path,
                f"candidate {name}: {section!r} is not a mapping of postprocess settings",
                "write name: {min_component_size: 500}",
            )
        try:
            setting = config_from_dict({"postprocess": section}, f"{path} candidate {name}").postprocess
        except GliosegError as exc:  # a value out of range names its key only: add the file and the candidate
            raise exc.located(path, f"candidate {name}") from None
        if setting not in candidates.values():  # a setting listed twice counts once, by its first name
            candidates[name] = setting
    if all(setting.active for setting in candidates.values()):
        candidates = {NONE: PostprocessConfig(), **candidates}
    return candidates


def setting_key(setting: PostprocessConfig) -> str:
    return json.dumps(dataclasses.asdict(setting), sort_keys=True)


# --- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreJob:
    case_id: str
    pred: Path
    ref: Path
    convention: str
    rules: str
    settings: tuple[PostprocessConfig, ...]
    cache: Path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def score_case(job: ScoreJob) -> dict[str, dict[str, float]]:
    """``{setting_key: metrics}`` of every setting on one case; cached in ``job.cache`` (rescored
    only for new settings, a changed prediction or a changed reference). Label maps that come out alike are scored
    once."""
    from glioseg.data.io import read_volume
    from glioseg.inference.postprocess import postprocess
    from glioseg.labels import to_internal
    from glioseg.metrics import case_metrics

    digest, ref_digest = _sha(job.pred), _sha(job.ref)
    cached: dict[str, Any] = {}
    if job.cache.is_file():
        try:
            cached = json.loads(job.cache.read_text())
        except (OSError, ValueError):
            cached = {}
        if (cached.get("prediction_sha256"), cached.get("reference_sha256"), cached.get("rules")) != (
            digest,
            ref_digest,
            job.rules,
        ):
            cached = {}
    scores: dict[str, dict[str, float]] = dict(cached.get("scores", {}))
    todo = [s for s in job.settings if setting_key(s) not in scores]
    if todo:
        pred, ref = read_volume(job.pred, dtype=None), read_volume(job.ref, dtype=None)
        if pred.data.shape != ref.data.shape:
            raise GliosegError(
                job.pred,
                f"shape {pred.data.shape} differs from the reference's {ref.data.shape}",
                "predict the case again with `glioseg cv train`",
            )
        pred_labels = to_internal(pred.data, job.convention, job.pred)
        ref_labels = to_internal(ref.data, job.convention, job.ref)
        box = _box(pred_labels > 0, ref_labels > 0)
        pred_labels, ref_labels = pred_labels[box], ref_labels[box]
        by_map: dict[str, dict[str, float]] = {}
        for setting in todo:
            labels = postprocess(pred_labels, setting, ref.spacing)
            map_digest = hashlib.sha1(np.ascontiguousarray(labels).tobytes()).hexdigest()
            if map_digest not in by_map:
                metrics = case_metrics(labels, ref_labels, ref.spacing, rules=job.rules)
                predicted, reference, far = far_voxels(labels > 0, ref_labels > 0, ref.spacing)
                by_map[map_digest] = {
                    **{k: float(v) for k, v in metrics.items() if k.startswith(REPORTED_PREFIXES)},
                    "wt_voxels": predicted,
                    "ref_wt_voxels": reference,
                    "wt_voxels_far": far,
                }
            scores[setting_key(setting)] = by_map[map_digest]
        write_json(
            job.cache,
            {"prediction_sha256": digest, "reference_sha256": ref_digest, "rules": job.rules, "scores": scores},
        )
        logger.info("%s: %d settings, %d distinct label maps scored", job.case_id, len(todo), len(by_map))
    return {key: scores[key] for key in map(setting_key, job.settings)}


def far_voxels(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], far_mm: float = FAR_MM
) -> tuple[int, int, int]:
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


def _box(*masks: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the masks' union, grown by :data:`MARGIN` (the whole volume if all are empty)."""
    union = np.logical_or.reduce(masks)
    if not union.any():
        return tuple(slice(0, n) for n in union.shape)
    box = []
    for axis in range(union.ndim):
        along = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(0, int(along[0]) - MARGIN), min(union.shape[axis], int(along[-1]) + 1 + MARGIN)))
    return tuple(box)


def score(row: Mapping[str, float]) -> float:
    """A case's selection score: mean Dice over WT, TC, ET; with lesion-wise columns, legacy and
    lesion-wise averaged (BraTS 2023+ ranks by lesion-wise)."""
    legacy = float(np.mean([row[f"dice_{r}"] for r in REGIONS]))
    if all(f"lesion_dice_{r}" in row for r in REGIONS):
        return (legacy + float(np.mean([row[f"lesion_dice_{r}"] for r in REGIONS]))) / 2
    return legacy


def best_candidate(
    tables: Mapping[str, Mapping[str, Mapping[str, float]]], cases: Sequence[str], inactive: Sequence[str]
) -> str:
    """The candidate with the best mean :func:`score` over ``cases``; ties go to a candidate that
    changes nothing (``inactive``), then to the first in the file."""
    return max(tables, key=lambda name: (float(np.mean([score(tables[name][c]) for c in cases])), name in inactive))


def nested_choice(
    tables: Mapping[str, Mapping[str, Mapping[str, float]]],
    folds: Mapping[int, Sequence[str]],
    inactive: Sequence[str] = (NONE,),
) -> dict[int, str]:
    """For each fold, the candidate best on the cases of the *other* folds.

    Args:
        tables: candidate -> case -> metrics.
        folds: fold -> its held-out cases.
        inactive: candidates that change nothing (preferred in ties).
    """
    return {
        fold: best_candidate(tables, [c for f, ids in folds.items() if f != fold for c in ids], inactive)
        for fold in folds
    }


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CvReport:
    """What :func:`write_cv_report` found (also written into the output folder)."""

    stage: str
    cases: list[str]
    fold_of: dict[str, int]
    nested: dict[int, str]
    all_cases: str
    raw: dict[str, dict[str, float]]
    postprocessed: dict[str, dict[str, float]]
    keys: list[str]
    rules: str
    primary: str
    reason: str
    candidates: dict[str, PostprocessConfig]
    candidates_source: str
    files: list[Path]


def write_cv_report(
    work: WorkFolder,
    out: Path,
    *,
    stage: str | None = None,
    candidates_file: Path | None = None,
    rules: str | None = None,
    workers: int = 2,
) -> CvReport:
    """Score the out-of-fold predictions of ``stage`` and write the report into ``out``.

    Writes ``per_case.csv``, ``summary.md``, ``summary.csv``, ``choice.json`` and
    ``dice_per_case.png`` into ``out`` (each atomically), and ``choice.json`` and
    ``summary.json`` into ``WORK/<stage>/`` for ``cv pack``.

    Raises:
        GliosegError: a fold without its out-of-fold predictions, a bad candidates file, or an
            output that would land on an input.
    """
    from glioseg.evaluation import default_rules
    from glioseg.files import check_outputs_apart
    from glioseg.metrics import get_rules
    from glioseg.parallel import map_cases

    stage = work.last_stage(stage)
    candidates = load_candidates(candidates_file)
    folds = {fold: list(split["val"]) for fold, split in enumerate(work.splits())}
    fold_of = {c: f for f, ids in folds.items() for c in ids}
    pred_dir = work.pred_dir(stage)
    missing = sorted(c for c in fold_of if not (pred_dir / f"{c}.nii.gz").is_file())
    if missing:
        without = sorted({fold_of[c] for c in missing})
        raise GliosegError(
            pred_dir,
            f"no out-of-fold prediction of {len(missing)} case(s) ({', '.join(missing[:3])}; folds "
            f"{', '.join(map(str, without))})",
            "run `glioseg cv train` for those folds first",
        )
    cases = {case.case_id: case for case in work.cases()}
    if rules is None:
        rules, primary, reason = default_rules(list(cases.values()))
    else:
        get_rules(rules)
        primary, reason = "lesion-wise", f"rule set {rules} chosen"
    outputs = [out / name for name in ("per_case.csv", "summary.md", "summary.csv", "choice.json", "dice_per_case.png")]
    check_outputs_apart(
        [out, *outputs], [*(c.label for c in cases.values() if c.label), *(pred_dir / f"{c}.nii.gz" for c in cases)]
    )

    settings = tuple(candidates.values())
    labels = {
        c: case.label for c, case in cases.items() if case.label is not None
    }  # find_cases keeps labelled cases only
    scores = work.stage_dir(stage) / "scores"
    jobs = [
        ScoreJob(c, pred_dir / f"{c}.nii.gz", labels[c], cases[c].convention, rules, settings, scores / f"{c}.json")
        for c in sorted(cases)
    ]
    results = list(map_cases(score_case, jobs, workers=workers, desc="score", progress=False))
    tables = {
        name: {job.case_id: result[setting_key(setting)] for job, result in zip(jobs, results, strict=True)}
        for name, setting in candidates.items()
    }
    inactive = [name for name, setting in candidates.items() if not setting.active]
    nested = nested_choice(tables, folds, inactive)
    ids = sorted(cases)
    everything = best_candidate(tables, ids, inactive)
    raw = {c: tables[inactive[0]][c] for c in ids}
    post = {c: tables[nested[fold_of[c]]][c] for c in ids}
    keys = sorted((k for k in raw[ids[0]] if k.startswith(REPORTED_PREFIXES)), key=_metric_order)

    source = (
        str(candidates_file) if candidates_file else "glioseg/configs/postprocess_candidates.yaml (the default grid)"
    )
    report = CvReport(
        stage, ids, fold_of, nested, everything, raw, post, keys, rules, primary, reason, candidates, source, outputs
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text(outputs[0], _per_case_csv(report))
    summary = _summary(raw, post, keys)
    train_min = _train_minutes(work, stage)
    timings = _predict_seconds(work, stage)
    write_text(outputs[1], _summary_markdown(work, report, summary, train_min, timings))
    write_text(outputs[2], _summary_csv(summary, keys))
    choice = {
        "stage": stage,
        "nested": {str(f): n for f, n in nested.items()},
        "all_cases": everything,
        "all_cases_setting": dataclasses.asdict(candidates[everything]),
        "candidates_file": source,
        "candidates": {name: dataclasses.asdict(s) for name, s in candidates.items()},
        "rules": rules,
    }
    write_json(outputs[3], choice)
    _figure(report, outputs[4])
    write_json(work.stage_dir(stage) / "choice.json", choice)
    write_json(
        work.stage_dir(stage) / "summary.json",
        {
            "cases": ids,
            "rules": rules,
            "raw": {k: v[0] for k, v in summary["raw"].items()},
            "postprocessed": {k: v[0] for k, v in summary["post"].items()},
            "train_minutes": train_min,
            "predict_seconds_median": statistics.median(timings) if timings else None,
        },
    )
    return report


FAMILIES = ("dice", "iou", "sensitivity", "hd95", "lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")


def _metric_order(key: str) -> tuple[int, int, str]:
    """Metrics in the report's order: by family (:data:`FAMILIES`), then WT, TC, ET."""
    family, _, region = key.rpartition("_")
    return (
        FAMILIES.index(family) if family in FAMILIES else len(FAMILIES),
        REGIONS.index(region) if region in REGIONS else 3,
        key,
    )


def _summary(
    raw: Mapping[str, Mapping[str, float]], post: Mapping[str, Mapping[str, float]], keys: Sequence[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    def stats(rows: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, float]]:
        return {
            k: (float(np.mean([r[k] for r in rows.values()])), float(statistics.median([r[k] for r in rows.values()])))
            for k in keys
        }

    return {"raw": stats(raw), "post": stats(post)}


def _per_case_csv(report: CvReport) -> str:
    raw, post, keys = report.raw, report.postprocessed, report.keys
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    far = ["pp_wt_voxels", "ref_wt_voxels", f"pp_wt_voxels_over_{FAR_MM:g}mm_away"]
    writer.writerow(["case", "fold", "postprocessing", *[f"raw_{k}" for k in keys], *[f"pp_{k}" for k in keys], *far])
    for c in report.cases:
        fold = report.fold_of[c]
        scores = [*[f"{raw[c][k]:.6g}" for k in keys], *[f"{post[c][k]:.6g}" for k in keys]]
        writer.writerow(
            [
                c,
                fold,
                report.nested[fold],
                *scores,
                *(post[c][k] for k in ("wt_voxels", "ref_wt_voxels", "wt_voxels_far")),
            ]
        )
    return handle.getvalue()


def _summary_csv(summary: Mapping[str, Mapping[str, tuple[float, float]]], keys: Sequence[str]) -> str:
    lines = ["metric,raw_mean,raw_median,postprocessed_mean,postprocessed_median"]
    lines += [
        f"{k},{summary['raw'][k][0]:.6g},{summary['raw'][k][1]:.6g},{summary['post'][k][0]:.6g},{summary['post'][k][1]:.6g}"
        for k in keys
    ]
    return "\n".join(lines) + "\n"


def _train_minutes(work: WorkFolder, stage: str) -> list[float]:
    from glioseg.cv.train import FINISHED

    minutes = []
    for fold in range(work.folds):
        meta = work.run_dir(stage, fold) / FINISHED
        if meta.is_file():
            minutes.append(json.loads(meta.read_text())["train_s"] / 60)
    return minutes


def _predict_seconds(work: WorkFolder, stage: str) -> list[float]:
    seconds = []
    for fold in range(work.folds):
        path = work.stage_dir(stage) / f"timings-fold{fold}.json"
        if path.is_file():
            seconds += [t["total"] for t in json.loads(path.read_text())["cases"].values()]
    return seconds


def _summary_markdown(
    work: WorkFolder,
    report: CvReport,
    summary: Mapping[str, Mapping[str, tuple[float, float]]],
    train_min: list[float],
    timings: list[float],
) -> str:
    stage, ids, fold_of, nested, everything = (
        report.stage,
        report.cases,
        report.fold_of,
        report.nested,
        report.all_cases,
    )
    raw, post, keys, rules = report.raw, report.postprocessed, report.keys, report.rules
    stages = work.stage_names[: work.stage_names.index(stage) + 1]
    lines = [
        f"# Cross-validation of `{stage}`: out-of-fold scores on {len(ids)} cases ({work.folds} folds)",
        "",
        "How each number was made:",
        "",
        f"- Stages trained in order: {' -> '.join(f'`{s}`' for s in stages)} (each fold of a later stage starts from "
        "the same fold of the stage before).",
        "- Every case is predicted by the fold model that never saw it (its last epoch: no checkpoint chosen on "
        "held-out cases), on its original grid.",
        f"- Scored with the official BraTS rules: legacy Dice / HD95 and lesion-wise `{rules}` ({report.primary} "
        f"first: {report.reason}).",
        "- Raw: no post-processing. Post-processed (nested): the cases of fold k get the candidate of "
        f"`{report.candidates_source}` ({len(report.candidates)} candidates)",
        "  with the best mean score on the other folds' cases (score: mean Dice over WT/TC/ET, averaged with the "
        "lesion-wise mean Dice), so no case takes part in choosing what is applied to it.",
        f"- `{everything}`, the candidate best on all {len(ids)} cases, is what `glioseg cv pack` ships; its score on "
        "these cases is not out-of-fold and is not reported.",
        "",
        "| metric | raw mean | raw median | post-processed mean | post-processed median |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {summary['raw'][k][0]:.4f} | {summary['raw'][k][1]:.4f} | {summary['post'][k][0]:.4f} | "
        f"{summary['post'][k][1]:.4f} |"
        for k in keys
    ]
    lines += [
        "",
        "Post-processing chosen per fold (nested): " + ", ".join(f"fold {f}: `{nested[f]}`" for f in sorted(nested)),
        f"Chosen on all {len(ids)} cases (what the recipe ships with): `{everything}`",
        "",
    ]
    if train_min:
        lines.append(f"Training per fold: {', '.join(f'{m:.1f}' for m in train_min)} min.")
    if timings:
        lines.append(
            f"Prediction, read -> write: median {statistics.median(timings):.1f} s per case over {len(timings)} cases."
        )
    lines += [
        "",
        "## Per case (raw -> post-processed Dice WT / TC / ET)",
        "",
        "Whole-tumour voxels after post-processing: predicted / reference, and how many of the predicted lie over "
        f"{FAR_MM:g} mm",
        "from every reference tumour voxel (false positives away from the tumour).",
        "",
        "| case | fold | post-processing | WT | TC | ET | WT voxels predicted / reference | of them away |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in ids:
        cells = [f"{raw[c][f'dice_{r}']:.3f} -> {post[c][f'dice_{r}']:.3f}" for r in REGIONS]
        predicted, reference, away = (
            int(post[c]["wt_voxels"]),
            int(post[c]["ref_wt_voxels"]),
            int(post[c]["wt_voxels_far"]),
        )
        lines.append(
            f"| {c} | {fold_of[c]} | `{nested[fold_of[c]]}` | {' | '.join(cells)} | {predicted} / {reference} | {away} "
            f"({away / max(predicted, 1):.1%}) |"
        )
    return "\n".join(lines) + "\n"


def _figure(report: CvReport, path: Path) -> None:
    """Each case's Dice per region, raw and post-processed, cases in order of their raw WT Dice."""
    from matplotlib.figure import Figure

    from glioseg.reporting.figures import save_figure

    ids, raw, post, fold_of = report.cases, report.raw, report.postprocessed, report.fold_of
    title = f"{report.stage}: out-of-fold Dice per case, raw and post-processed (nested)"

    order = sorted(ids, key=lambda c: raw[c]["dice_wt"])
    figure = Figure(figsize=(max(6.0, 0.35 * len(ids) + 2), 7.5))
    axes = figure.subplots(3, 1, sharex=True)
    x = np.arange(len(order))
    for ax, region in zip(axes, REGIONS, strict=True):
        before = [raw[c][f"dice_{region}"] for c in order]
        after = [post[c][f"dice_{region}"] for c in order]
        ax.vlines(x, before, after, color="0.6", linewidth=1)
        ax.scatter(x, before, facecolors="none", edgecolors="tab:blue", label="raw")
        ax.scatter(x, after, color="tab:orange", s=14, label="post-processed (nested)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel(f"Dice {region.upper()}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xticks(x, [f"{c} (f{fold_of[c]})" for c in order], rotation=90, fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
