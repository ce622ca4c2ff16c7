"""The per-case table of every metric (:func:`case_metrics`) and the accumulator over cases
(:class:`MetricAccumulator`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from glioseg.labels import NUM_CLASSES, REGION_NAMES, LabelConvention, region_masks, to_internal
from glioseg.metrics.distance import _bounding_box, _check_spacing, hd95
from glioseg.metrics.lesionwise import LESION_METRIC_KEYS, ScoringRules, _padded_box, get_rules, lesion_wise
from glioseg.metrics.overlap import _confusion, _dice, _iou, _sensitivity, _specificity

logger = logging.getLogger(__name__)

REGION_METRICS = ("dice", "iou", "sensitivity", "specificity", "hd95")
"""Metrics computed per region by :func:`case_metrics`, keyed ``f"{metric}_{region}"``."""

METRIC_KEYS = (*(f"{metric}_{region}" for metric in REGION_METRICS for region in REGION_NAMES), "accuracy")
"""The keys of :func:`case_metrics`, in order: ``dice_wt, dice_tc, dice_et, iou_wt, ..., accuracy``."""

STATISTICS = ("mean", "std", "median", "q1", "q3")
"""The statistics :meth:`MetricAccumulator.summary` gives per key."""

def _internal_labels(labels: np.ndarray, convention: LabelConvention | str | None) -> np.ndarray:
    if convention is not None:
        return to_internal(labels, convention)
    unknown = sorted(set(np.unique(labels).tolist()) - set(range(NUM_CLASSES)))
    if unknown:
        raise ValueError(
            f"internal label map has value(s) {unknown} outside 0-{NUM_CLASSES - 1}; "
            "pass the label convention of the maps (e.g. convention='brats2018')"
        )
    return labels


def case_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float],
    convention: LabelConvention | str | None = None,
    rules: ScoringRules | str | None = None,
) -> dict[str, float]:
    """All metrics of one case, per BraTS region, from two label maps.

    Args:
        pred_labels: predicted label map, shape (X, Y, Z).
        ref_labels: reference label map, same shape and convention.
        spacing: voxel size in mm along each axis.
        convention: label convention of both maps (``"brats2018"``, ``"brats2023"``, ``"msd"``
            or a :class:`~glioseg.labels.LabelConvention`); ``None`` for internal labels (0-3).
        rules: lesion-wise scoring rules (a :class:`ScoringRules` or a name of
            :data:`SCORING_RULES`), or ``None`` for the legacy metrics only.

    Returns:
        ``{key: value}`` for the keys of :data:`METRIC_KEYS`: ``dice_wt``, ``dice_tc``, ``dice_et``,
        ``iou_*``, ``sensitivity_*``, ``specificity_*``, ``hd95_*`` (mm, the ``"pooled"``
        definition) and ``accuracy``; with ``rules``, then :data:`LESION_METRIC_KEYS`.

    Raises:
        GliosegError: a map holds a value outside ``convention``, or unknown rules.
        ValueError: shapes differ, bad spacing, or internal labels outside 0-3.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    spacing_mm = _check_spacing(spacing, pred_labels.ndim)
    rules = get_rules(rules) if isinstance(rules, str) else rules
    # Background is 0 in every convention, so all tumor voxels of both maps, and every voxel
    # with an unknown label, lie inside this box; outside it both maps are background. The
    # lesion-wise dilation needs a margin around it.
    tumor = (pred_labels != 0) | (ref_labels != 0)
    if tumor.any():
        box = _padded_box(tumor, rules.dilation) if rules is not None else _bounding_box(tumor)
    else:
        box = tuple(slice(0, 0) for _ in pred_labels.shape)
    pred_box = _internal_labels(pred_labels[box], convention)
    ref_box = _internal_labels(ref_labels[box], convention)
    background_outside = pred_labels.size - pred_box.size

    pred_regions, ref_regions = region_masks(pred_box), region_masks(ref_box)
    values: dict[str, float] = {}
    for region in REGION_NAMES:
        pred, ref = pred_regions[region], ref_regions[region]
        inside = _confusion(pred, ref)
        counts = replace(inside, tn=inside.tn + background_outside)
        values[f"dice_{region}"] = _dice(counts)
        values[f"iou_{region}"] = _iou(counts)
        values[f"sensitivity_{region}"] = _sensitivity(counts)
        values[f"specificity_{region}"] = _specificity(counts)
        values[f"hd95_{region}"] = hd95(pred, ref, spacing_mm)  # type: ignore[arg-type]
        if counts.tp + counts.fn == 0 or counts.tp + counts.fp == 0:
            logger.debug(
                "region %s has an empty mask: prediction %d voxels, reference %d voxels",
                region, counts.tp + counts.fp, counts.tp + counts.fn,
            )
        if rules is not None:
            scores = lesion_wise(
                pred, ref, spacing_mm, dilation=rules.dilation, min_volume_mm3=rules.min_volume_mm3[region],  # type: ignore[arg-type]
                miss_hd95_mm=rules.miss_hd95_mm, merge_predictions=rules.merge_predictions,
            )
            for name in ("dice", "hd95", "tp", "fp", "fn"):
                values[f"lesion_{name}_{region}"] = getattr(scores, name)
    # Outside the box both maps are background, so every disagreeing voxel is inside it.
    total = pred_labels.size
    values["accuracy"] = 1.0 if total == 0 else 1.0 - int(np.count_nonzero(pred_box != ref_box)) / total
    keys = METRIC_KEYS + (LESION_METRIC_KEYS if rules is not None else ())
    return {key: values[key] for key in keys}


class MetricAccumulator:
    """Collects per-case metric dicts and summarises them per key.

    Example::

        accumulator = MetricAccumulator()
        for case_id, pred, ref in cases:
            accumulator.add(case_id, case_metrics(pred, ref, spacing))
        accumulator.summary()["dice_wt"]["mean"]
    """

    def __init__(self) -> None:
        self._cases: dict[str, dict[str, float]] = {}

    def add(self, case_id: str, metrics: Mapping[str, float]) -> None:
        """Record one case; every case must have the same keys, and ids must be unique."""
        if case_id in self._cases:
            raise ValueError(f"case '{case_id}' was already added")
        if self._cases:
            expected = set(next(iter(self._cases.values())))
            if set(metrics) != expected:
                raise ValueError(
                    f"case '{case_id}' has keys {sorted(metrics)}, the others have {sorted(expected)}"
                )
        self._cases[case_id] = {key: float(value) for key, value in metrics.items()}

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def per_case(self) -> dict[str, dict[str, float]]:
        """``{case_id: {key: value}}`` in the order the cases were added (a copy)."""
        return {case_id: dict(metrics) for case_id, metrics in self._cases.items()}

    def summary(self) -> dict[str, dict[str, float]]:
        """Statistics over the cases, per key.

        Returns:
            ``{key: {"mean", "std", "median", "q1", "q3": value}}``; ``std`` is the population
            standard deviation (ddof=0), ``q1``/``q3`` the 25th/75th percentiles (linear).

        Raises:
            ValueError: no case was added.
        """
        if not self._cases:
            raise ValueError("no case was added to the accumulator")
        keys = next(iter(self._cases.values()))
        table = np.array([[metrics[key] for key in keys] for metrics in self._cases.values()])
        q1, median, q3 = np.percentile(table, [25, 50, 75], axis=0)
        columns = dict(zip(STATISTICS, (table.mean(axis=0), table.std(axis=0), median, q1, q3), strict=True))
        return {
            key: {name: float(column[i]) for name, column in columns.items()} for i, key in enumerate(keys)
        }
