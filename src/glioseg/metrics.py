"""Segmentation metrics: pure functions per metric, a per-case table, and an accumulator.

Binary metrics take two boolean masks of the same shape (any number of dimensions), the
prediction first: :func:`dice`, :func:`iou`, :func:`sensitivity`, :func:`specificity` and
:func:`hd95` (millimetres, using the voxel spacing). :func:`case_metrics` computes all of them
for the BraTS regions WT, TC and ET of two label maps, plus the voxel accuracy;
:class:`MetricAccumulator` summarises many cases. :func:`paper_iou` is the paper's
training-time IoU, in torch (its accuracy is :func:`accuracy`: argmax agreement per voxel).

Empty masks follow the BraTS 2023 evaluation toolkit (``get_sensitivity_and_specificity`` and
the "full" Dice/HD95 of rachitsaluja/BraTS-2023-Metrics), with the image diagonal for HD95:

====================================  ======  =====  ===========  ===========  ==========
prediction / reference                Dice    IoU    sensitivity  specificity  HD95 (mm)
====================================  ======  =====  ===========  ===========  ==========
both empty                            1       1      1            formula      0
reference empty, prediction not       0       0      0            formula      373.13
prediction empty, reference not       0       0      0 (formula)  formula      373.13
====================================  ======  =====  ===========  ===========  ==========

"formula" is TN / (TN + FP). Sensitivity TP / (TP + FN) is undefined for an empty
reference; as the BraTS 2023 toolkit (``tp / (tp + fn + eps)``, set to 1 when both are empty)
it is 1 when the prediction is empty too and 0 otherwise. Specificity mirrors it on the
complements: when the reference has no negative voxel at all it is 1 if the prediction has
none either, else 0 (the BraTS 2023 toolkit would give 0 in both cases; such a volume never
occurs in brain MRI). 373.13 mm is the diagonal of the 240 x 240 x 155 mm BraTS volume,
sqrt(240^2 + 240^2 + 155^2) (the BraTS 2023 toolkit rounds it to 374).

HD95 follows MedPy's surface definition: the surface of a mask is the mask minus its binary
erosion with the face-connected (6-neighbour in 3D) structure, voxels outside the array
counting as background; distances are Euclidean between voxel centres scaled by the
spacing. HD95 is ``max(P95(d(pred -> ref)), P95(d(ref -> pred)))``, the larger of the two
directed 95th percentiles (numpy's linear interpolation), as MONAI's
``compute_hausdorff_distance(percentile=95)``. MedPy's ``hd95`` instead takes one 95th
percentile of both directions pooled, and the BraTS 2023 toolkit (DeepMind's
surface-distance) weights surface elements by their area, so neither gives exactly these values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from glioseg.labels import NUM_CLASSES, REGION_NAMES, LabelConvention, region_masks, to_internal

logger = logging.getLogger(__name__)

HD95_ONE_EMPTY_MM = 373.13
"""HD95 (mm) when exactly one of prediction and reference is empty: the BraTS image diagonal."""

REGION_METRICS = ("dice", "iou", "sensitivity", "specificity", "hd95")
"""Metrics computed per region by :func:`case_metrics`, keyed ``f"{metric}_{region}"``."""

METRIC_KEYS = tuple(f"{metric}_{region}" for metric in REGION_METRICS for region in REGION_NAMES) + (
    "accuracy",
)
"""The keys of :func:`case_metrics`, in order: ``dice_wt, dice_tc, dice_et, iou_wt, ..., accuracy``."""

STATISTICS = ("mean", "std", "median", "q1", "q3")
"""The statistics :meth:`MetricAccumulator.summary` gives per key."""


# --- pure binary metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class _Confusion:
    """Voxel counts of a prediction against a reference."""

    tp: int
    fp: int
    fn: int
    tn: int


def _check_masks(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.dtype != bool or ref.dtype != bool:
        raise ValueError(
            f"masks must be boolean arrays, got {pred.dtype} and {ref.dtype} "
            "(for label maps use case_metrics or labels.region_masks)"
        )
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred.shape} vs {ref.shape}")


def _confusion(pred: np.ndarray, ref: np.ndarray) -> _Confusion:
    _check_masks(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    return _Confusion(tp=tp, fp=predicted - tp, fn=actual - tp, tn=pred.size - predicted - actual + tp)


def _dice(c: _Confusion) -> float:
    denominator = 2 * c.tp + c.fp + c.fn
    return 1.0 if denominator == 0 else 2 * c.tp / denominator


def _iou(c: _Confusion) -> float:
    denominator = c.tp + c.fp + c.fn
    return 1.0 if denominator == 0 else c.tp / denominator


def _sensitivity(c: _Confusion) -> float:
    if c.tp + c.fn == 0:  # empty reference: perfect only if the prediction is empty too
        return 1.0 if c.fp == 0 else 0.0
    return c.tp / (c.tp + c.fn)


def _specificity(c: _Confusion) -> float:
    if c.tn + c.fp == 0:  # reference has no negatives: perfect only if the prediction has none
        return 1.0 if c.fn == 0 else 0.0
    return c.tn / (c.tn + c.fp)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2 |P & R| / (|P| + |R|)``; 1 when both masks are empty.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _dice(_confusion(pred, ref))


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|P & R| / |P | R|``; 1 when both masks are empty.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _iou(_confusion(pred, ref))


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall) ``TP / (TP + FN)``.

    With an empty reference: 1 if the prediction is empty too, else 0.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _sensitivity(_confusion(pred, ref))


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity ``TN / (TN + FP)``, i.e. :func:`sensitivity` of the complements.

    With a reference that is all foreground: 1 if the prediction is too, else 0.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _specificity(_confusion(pred, ref))


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (ndim,) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm per voxel), got {spacing}")
    return values


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty mask, as slices."""
    return ndimage.find_objects(mask.astype(np.uint8))[0]


def _surface(mask: np.ndarray) -> np.ndarray:
    """The surface voxels of a mask: the mask minus its face-connected erosion (border is background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between mask surfaces, in millimetres.

    ``max(P95 of pred-surface -> ref-surface distances, P95 of ref -> pred)``; see the module
    docstring for the surface definition. 0 when both masks are empty, 373.13 when exactly one is.

    Args:
        pred: boolean prediction mask, shape (X, Y, Z) (any number of dimensions).
        ref: boolean reference mask, same shape.
        spacing: voxel size in mm along each axis, e.g. ``(1.0, 1.0, 1.0)``.

    Returns:
        The distance in mm.
    """
    _check_masks(pred, ref)
    spacing_mm = _check_spacing(spacing, pred.ndim)
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return HD95_ONE_EMPTY_MM
    if np.array_equal(pred, ref):  # same surfaces, every distance 0 (e.g. TC after growing edema)
        return 0.0
    # Cropping to the joint bounding box changes nothing: outside it both masks are background,
    # which is also what the erosion assumes beyond the array, and every surface voxel is inside.
    box = _bounding_box(pred | ref)
    pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
    # One distance transform per surface: the distance (mm) of every voxel of the box to the
    # nearest surface voxel. Its cost is bounded by the box volume; a k-d tree over surface
    # points is faster on real tumours but took about a second per thousand queries against large
    # flat surfaces (an untrained network predicting one class everywhere).
    to_ref_surface = ndimage.distance_transform_edt(~ref_surface, sampling=spacing_mm)
    to_pred_surface = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_mm)
    return float(
        max(np.percentile(to_ref_surface[pred_surface], 95), np.percentile(to_pred_surface[ref_surface], 95))
    )


# --- label maps -------------------------------------------------------------------------------


def accuracy(pred_labels: np.ndarray, ref_labels: np.ndarray) -> float:
    """Voxel accuracy: the fraction of voxels whose labels agree (all classes, background included).

    Args:
        pred_labels: predicted label map, any shape.
        ref_labels: reference label map in the same convention, same shape.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    if pred_labels.size == 0:
        return 1.0
    return 1.0 - int(np.count_nonzero(pred_labels != ref_labels)) / pred_labels.size


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
) -> dict[str, float]:
    """All metrics of one case, per BraTS region, from two label maps.

    Args:
        pred_labels: predicted label map, shape (X, Y, Z).
        ref_labels: reference label map, same shape and convention.
        spacing: voxel size in mm along each axis.
        convention: label convention of both maps (``"brats2018"``, ``"brats2023"``, ``"msd"``
            or a :class:`~glioseg.labels.LabelConvention`); ``None`` for internal labels (0-3).

    Returns:
        ``{key: value}`` for the keys of :data:`METRIC_KEYS`: ``dice_wt``, ``dice_tc``, ``dice_et``,
        ``iou_*``, ``sensitivity_*``, ``specificity_*``, ``hd95_*`` (mm) and ``accuracy``.

    Raises:
        GliosegError: a map holds a value outside ``convention``.
        ValueError: shapes differ, bad spacing, or internal labels outside 0-3.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    spacing_mm = _check_spacing(spacing, pred_labels.ndim)
    # Background is 0 in every convention, so all tumor voxels of both maps, and every voxel
    # with an unknown label, lie inside this box; outside it both maps are background.
    tumor = (pred_labels != 0) | (ref_labels != 0)
    box = _bounding_box(tumor) if tumor.any() else tuple(slice(0, 0) for _ in pred_labels.shape)
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
        values[f"hd95_{region}"] = hd95(pred, ref, spacing_mm)
        if counts.tp + counts.fn == 0 or counts.tp + counts.fp == 0:
            logger.debug(
                "region %s has an empty mask: prediction %d voxels, reference %d voxels",
                region, counts.tp + counts.fp, counts.tp + counts.fn,
            )
    # Outside the box both maps are background, so every disagreeing voxel is inside it.
    total = pred_labels.size
    values["accuracy"] = 1.0 if total == 0 else 1.0 - int(np.count_nonzero(pred_box != ref_box)) / total
    return {key: values[key] for key in METRIC_KEYS}


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
        columns = dict(zip(STATISTICS, (table.mean(axis=0), table.std(axis=0), median, q1, q3)))
        return {
            key: {name: float(column[i]) for name, column in columns.items()} for i, key in enumerate(keys)
        }


# --- the paper's training metrics (torch) ----------------------------------------------------


def paper_iou(probs: torch.Tensor, onehot: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU as segmentation_models' ``IOUScore(threshold=0.5)``, the paper's training metric.

    Probabilities above ``threshold`` count as 1; per channel, intersection and union are
    summed over the batch and the voxels, ``(I + 1e-5) / (U + 1e-5)``; then the mean over
    channels (background included).

    Args:
        probs: (B, C, X, Y, Z) probabilities (softmax or sigmoid of the logits).
        onehot: (B, C, X, Y, Z) 0/1 target (one-hot classes or region masks).
        threshold: binarisation threshold (strictly greater counts as foreground).

    Returns:
        Scalar tensor.
    """
    if probs.shape != onehot.shape:
        raise ValueError(f"probs and onehot shapes differ: {tuple(probs.shape)} vs {tuple(onehot.shape)}")
    smooth = 1e-5
    pred = (probs > threshold).to(probs.dtype)
    target = onehot.to(probs.dtype)
    axes = [0, *range(2, probs.ndim)]
    intersection = (pred * target).sum(dim=axes)
    union = (pred + target).sum(dim=axes) - intersection
    return ((intersection + smooth) / (union + smooth)).mean()
