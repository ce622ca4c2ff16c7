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

Three definitions of HD95 circulate under one name (:data:`HD95_DEFINITIONS`); glioseg names
the one behind every figure. All measure between mask surfaces, in mm, using the spacing:

* ``"pooled"`` (:func:`hd95`, the legacy HD95 of :func:`case_metrics`): MedPy's ``hd95``, as the
  BraTS 2018-2021 organisers and the ``brats-evaluation`` package. The surface of a mask is the
  mask minus its binary erosion with the face-connected (6-neighbour in 3D) structure, voxels
  outside the array counting as background; distances are Euclidean between voxel centres;
  HD95 is one 95th percentile (numpy's linear interpolation) of both directions pooled.
* ``"max-directed"`` (:func:`hd95_max_directed`): the larger of the two directed 95th
  percentiles over the same surfaces, as MONAI's ``compute_hausdorff_distance(percentile=95)``.
* ``"surface-area"`` (:func:`hd95_surface_area`, the lesion-wise HD95): DeepMind's
  ``surface_distance`` robust Hausdorff distance, surface elements weighted by their area, as
  the BraTS 2023+ organisers' code.

Lesion-wise scores (BraTS 2023+: :func:`lesion_wise`, rule sets in :data:`SCORING_RULES`) score
each reference lesion separately and count false-positive and missed lesions; see
:func:`lesion_wise` for the exact procedure, which follows the organisers' code.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from glioseg.errors import GliosegError
from glioseg.labels import NUM_CLASSES, REGION_NAMES, LabelConvention, region_masks, to_internal

if TYPE_CHECKING:  # the paper's metrics take tensors; the rest (and the CLI's import) needs no torch
    import torch

logger = logging.getLogger(__name__)

HD95_ONE_EMPTY_MM = 373.13
"""HD95 (mm) when exactly one of prediction and reference is empty: the BraTS image diagonal."""

REGION_METRICS = ("dice", "iou", "sensitivity", "specificity", "hd95")
"""Metrics computed per region by :func:`case_metrics`, keyed ``f"{metric}_{region}"``."""

METRIC_KEYS = tuple(f"{metric}_{region}" for metric in REGION_METRICS for region in REGION_NAMES) + (
    "accuracy",
)
"""The keys of :func:`case_metrics`, in order: ``dice_wt, dice_tc, dice_et, iou_wt, ..., accuracy``."""

LESION_METRICS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
"""Lesion-wise metrics per region, keyed ``f"{metric}_{region}"`` (HD95 in mm, the rest counts)."""

LESION_METRIC_KEYS = tuple(f"{metric}_{region}" for metric in LESION_METRICS for region in REGION_NAMES)
"""The keys :func:`case_metrics` adds when given scoring rules: ``lesion_dice_wt, ..., lesion_fn_et``."""

HD95_DEFINITIONS: Mapping[str, str] = MappingProxyType(
    {
        "pooled": "95th percentile of the voxel-surface distances of both directions pooled "
        "(MedPy hd95; BraTS 2018-2021 organisers, brats-evaluation)",
        "max-directed": "larger of the two directed 95th percentiles of the voxel-surface distances "
        "(MONAI compute_hausdorff_distance)",
        "surface-area": "95th percentile of the corner-surface distances weighted by surface area, larger "
        "direction (DeepMind surface_distance; BraTS 2023+ organisers)",
    }
)
"""The HD95 definitions glioseg computes, by name."""

LEGACY_HD95 = "pooled"
"""The HD95 definition of the legacy ``hd95_*`` keys of :func:`case_metrics`."""

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


_KDTREE_MAX_POINTS = 200_000
"""Above this many surface voxels the distance transform is used (k-d trees slow down on huge flat surfaces)."""


def _voxel_surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``pred`` to the surface of ``ref``, and back.

    Both masks must be non-empty. Cropping to the joint bounding box changes nothing: outside it
    both masks are background, which is also what the erosion assumes beyond the array, and
    every surface voxel is inside it.
    """
    box = _bounding_box(pred | ref)
    pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
    pred_points, ref_points = np.count_nonzero(pred_surface), np.count_nonzero(ref_surface)
    volume = pred_surface.size
    if pred_points + ref_points > volume // 50 or max(pred_points, ref_points) > _KDTREE_MAX_POINTS:
        # Compact surfaces: one distance transform per surface, the distance (mm) of every voxel
        # of the box to the nearest surface voxel; its cost is bounded by the box volume.
        to_ref_surface = ndimage.distance_transform_edt(~ref_surface, sampling=spacing_mm)
        to_pred_surface = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_mm)
        return to_ref_surface[pred_surface], to_pred_surface[ref_surface]
    # Few surface voxels in a large box (far scattered specks): exact nearest neighbours from
    # k-d trees over the surface points cost far less than transforms of the whole box.
    pred_xyz, ref_xyz = np.argwhere(pred_surface) * spacing_mm, np.argwhere(ref_surface) * spacing_mm
    return cKDTree(ref_xyz).query(pred_xyz)[0], cKDTree(pred_xyz).query(ref_xyz)[0]


def _empty_hd95(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """HD95 fixed by emptiness or equality (0 or :data:`HD95_ONE_EMPTY_MM`), else ``None``."""
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return HD95_ONE_EMPTY_MM
    if np.array_equal(pred, ref):  # same surfaces, every distance 0 (e.g. TC after growing edema)
        return 0.0
    return None


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance between mask surfaces, in mm (the legacy BraTS HD95).

    One 95th percentile (numpy's linear interpolation) of the surface distances of both
    directions pooled, pred -> ref and ref -> pred: MedPy's ``hd95``, the definition of the BraTS
    2018-2021 organisers' tool and of the ``brats-evaluation`` package (``"pooled"`` in
    :data:`HD95_DEFINITIONS`). Surfaces as in the module docstring. 0 when both masks are empty,
    373.13 when exactly one is (MedPy raises there).

    Args:
        pred: boolean prediction mask, shape (X, Y, Z) (any number of dimensions).
        ref: boolean reference mask, same shape.
        spacing: voxel size in mm along each axis, e.g. ``(1.0, 1.0, 1.0)``.

    Returns:
        The distance in mm.
    """
    _check_masks(pred, ref)
    spacing_mm = _check_spacing(spacing, pred.ndim)
    fixed = _empty_hd95(pred, ref)
    if fixed is not None:
        return fixed
    forward, backward = _voxel_surface_distances(pred, ref, spacing_mm)
    return float(np.percentile(np.concatenate((forward, backward)), 95))


def hd95_max_directed(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """The larger of the two directed 95th-percentile surface distances, in mm (MONAI's HD95).

    ``max(P95(pred -> ref), P95(ref -> pred))`` over the same surfaces as :func:`hd95`, as MONAI's
    ``compute_hausdorff_distance(percentile=95)`` (``"max-directed"`` in :data:`HD95_DEFINITIONS`;
    glioseg's legacy HD95 before it followed the BraTS organisers). Never smaller than
    :func:`hd95`, and much larger when a few scattered components hold most of one surface.
    Empty masks as :func:`hd95`.

    Args:
        pred: boolean prediction mask, shape (X, Y, Z) (any number of dimensions).
        ref: boolean reference mask, same shape.
        spacing: voxel size in mm along each axis.
    """
    _check_masks(pred, ref)
    spacing_mm = _check_spacing(spacing, pred.ndim)
    fixed = _empty_hd95(pred, ref)
    if fixed is not None:
        return fixed
    forward, backward = _voxel_surface_distances(pred, ref, spacing_mm)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


# The 2x2x2 neighbourhood code of a voxel corner: the bit of each of the 8 voxels around it, as
# DeepMind's surface_distance numbers them (its lookup table of surface-element areas is indexed
# by this code).
_CORNER_BITS = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def _surfel_area_table(spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Area (mm^2) of the surface elements of each of the 256 corner codes, for one spacing."""
    from surface_distance.lookup_tables import create_table_neighbour_code_to_surface_area

    return create_table_neighbour_code_to_surface_area(spacing_mm)


def _corner_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every voxel corner of a 3D mask: shape ``mask.shape + 1``.

    Corner ``(i, j, k)`` lies between voxels ``i-1, i`` (and ``j-1, j``, ``k-1, k``); voxels
    outside the array count as background.
    """
    padded = np.pad(mask, 1)
    nx, ny, nz = (n + 1 for n in mask.shape)
    codes = np.zeros((nx, ny, nz), dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                codes |= padded[a : a + nx, b : b + ny, c : c + nz] * _CORNER_BITS[a, b, c]
    return codes


def _area_weighted_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """The smallest distance whose cumulative surface-area fraction reaches ``percent`` %.

    Ties and order as DeepMind's ``compute_robust_hausdorff``: surface elements sorted by
    (distance, area), the first whose normalised cumulative area is >= percent / 100.
    """
    order = np.lexsort((areas, distances))
    sorted_areas = areas[order]
    cumulative = np.cumsum(sorted_areas) / np.sum(sorted_areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[order][min(index, len(distances) - 1)])


def hd95_surface_area(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Surface-area-weighted 95th-percentile Hausdorff distance, in mm (the BraTS 2023+ HD95).

    DeepMind's ``surface_distance`` ``compute_robust_hausdorff(..., 95)``, which the BraTS 2023
    and 2024 organisers' code uses for every HD95 (``"surface-area"`` in
    :data:`HD95_DEFINITIONS`). Unlike :func:`hd95` it measures between voxel *corners*: a corner
    is on the surface when the 8 voxels around it are neither all inside nor all outside the
    mask, and carries the area of the marching-cubes surface through its 2x2x2 neighbourhood.
    Per direction, the distances from one surface's corners to the other surface's nearest
    corner are sorted and the first one at which the cumulated area reaches 95 % is taken (no
    interpolation); the result is the larger direction. A prediction made of many scattered
    specks therefore weighs each speck by its (small) area, not by its corner count, which is
    why it can differ from :func:`hd95` by several mm on such predictions.

    0 when both masks are empty, 373.13 when exactly one is (the organisers' code gives
    infinity there, which their lesion-wise scores replace by 374 or 337).

    Args:
        pred: boolean prediction mask, shape (X, Y, Z) (3D only: the area table is 3D).
        ref: boolean reference mask, same shape.
        spacing: voxel size in mm along each axis.

    Returns:
        The distance in mm.
    """
    _check_masks(pred, ref)
    if pred.ndim != 3:
        raise ValueError(f"hd95_surface_area needs 3D masks, got {pred.ndim} dimensions")
    spacing_mm = _check_spacing(spacing, 3)
    fixed = _empty_hd95(pred, ref)
    if fixed is not None:
        return fixed
    return _hd95_surface_area(ref, pred, spacing_mm)


def _hd95_surface_area(ref: np.ndarray, pred: np.ndarray, spacing_mm: np.ndarray) -> float:
    """:func:`hd95_surface_area` of two non-empty 3D masks (no checks)."""
    box = _bounding_box(pred | ref)
    ref_codes, pred_codes = _corner_codes(ref[box]), _corner_codes(pred[box])
    ref_border = (ref_codes != 0) & (ref_codes != 255)
    pred_border = (pred_codes != 0) & (pred_codes != 255)
    to_ref = ndimage.distance_transform_edt(~ref_border, sampling=spacing_mm)
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=spacing_mm)
    areas = _surfel_area_table(tuple(float(s) for s in spacing_mm))
    ref_to_pred = _area_weighted_percentile(to_pred[ref_border], areas[ref_codes[ref_border]], 95)
    pred_to_ref = _area_weighted_percentile(to_ref[pred_border], areas[pred_codes[pred_border]], 95)
    return max(ref_to_pred, pred_to_ref)


# --- lesion-wise scores (BraTS 2023+) ---------------------------------------------------------

_CONNECT_26 = np.ones((3, 3, 3), dtype=bool)
"""Components: voxels touching by a face, an edge or a corner (cc3d ``connectivity=26``)."""

_DILATE_18 = ndimage.generate_binary_structure(3, 2)
"""Dilation step of the organisers: the 3D cross plus edges (``generate_binary_structure(3, 2)``)."""


_FAR_BOX_RATIO = 4
"""A lesion is scored by :func:`_lesion_hd95_far` when the box of it and its predicted components
is over this many times its own box (and over :data:`_FAR_BOX_MIN_VOXELS`)."""

_FAR_BOX_MIN_VOXELS = 2**18
"""Smallest box (voxels) for which :func:`_lesion_hd95_far` replaces the distance transforms."""


@dataclass(frozen=True)
class _Border:
    """The surface corners of a mask (see :func:`_corner_codes`): their indices in the whole
    array's corner grid, (N, 3) ``int64``, and the surface area each carries (mm^2), (N,)."""

    corners: np.ndarray
    areas: np.ndarray

    @functools.cached_property
    def tree(self) -> cKDTree:
        """k-d tree of the corners in voxel-index units (built once; distances are recomputed in mm)."""
        return cKDTree(self.corners)


def _border(mask: np.ndarray, offset: Sequence[int], areas: np.ndarray) -> _Border:
    """The surface corners of ``mask`` (a crop holding all of its object, placed at ``offset``)."""
    codes = _corner_codes(mask)
    on = (codes != 0) & (codes != 255)
    return _Border(np.argwhere(on) + np.asarray(offset, dtype=np.int64), areas[codes[on]])


def _nearest_mm(points: np.ndarray, targets: _Border, spacing_mm: np.ndarray) -> np.ndarray:
    """Distance (mm) from each corner of ``points`` to the nearest corner of ``targets``.

    The neighbour comes from a k-d tree; the distance is then computed from the integer index
    differences exactly as :func:`scipy.ndimage.distance_transform_edt` computes it (difference
    times spacing, squared, summed over the axes in order, square root), so that both paths of
    :func:`lesion_wise` give the same values.
    """
    if np.all(spacing_mm == spacing_mm[0]):
        _, nearest = targets.tree.query(points)  # isotropic: nearest in index units is nearest in mm
    else:
        _, nearest = cKDTree(targets.corners * spacing_mm).query(points * spacing_mm)
    delta = (targets.corners[nearest] - points).astype(np.float64) * spacing_mm
    squared = delta * delta
    return np.sqrt((squared[:, 0] + squared[:, 1]) + squared[:, 2])


def _lesion_hd95_far(lesion: _Border, predicted: _Border, spacing_mm: np.ndarray) -> float:
    """:func:`_hd95_surface_area` of a lesion and its predicted components from their surface corners.

    Its cost grows with the number of surface corners, not with the box of both: a small lesion
    touched by a component spread over the whole brain (BraTS 2024 merges every predicted
    component whose dilations touch) costs one k-d tree query, where two distance transforms of
    the whole box per lesion took minutes on a case with many lesions.
    """
    ref_to_pred = _area_weighted_percentile(_nearest_mm(lesion.corners, predicted, spacing_mm), lesion.areas, 95)
    return max(ref_to_pred, _far_percentile(predicted, lesion, spacing_mm, 95))


def _far_percentile(points: _Border, lesion: _Border, spacing_mm: np.ndarray, percent: float) -> float:
    """:func:`_area_weighted_percentile` of the distances from ``points``' corners to ``lesion``'s,
    computing the distance of only those corners that can decide it.

    The distance of a corner to the lesion lies between ``low``, its distance to the lesion's box,
    and ``low + diagonal`` of that box. The percentile of the distances therefore lies between the
    percentiles of these bounds (a histogram of ``low`` brackets them without sorting); corners
    whose bounds end below that bracket are counted by their area only, those that start above it
    not at all, and the rest (a shell around the answer) get their exact distance and are sorted.
    """
    corners, areas = points.corners, points.areas
    lo, hi = lesion.corners.min(axis=0), lesion.corners.max(axis=0)
    gap = np.abs(corners - np.clip(corners, lo, hi)) * spacing_mm
    gap *= gap
    low = np.sqrt((gap[:, 0] + gap[:, 1]) + gap[:, 2])
    diagonal = float(np.linalg.norm((hi - lo) * spacing_mm)) * (1 + 1e-9) + 1e-9  # slack for rounding
    total = float(np.sum(areas))
    width = float(np.max(spacing_mm))
    cumulative = np.cumsum(np.bincount((low / width).astype(np.int64), weights=areas))  # bin k: low in about [k, k + 1) widths
    first = int(np.searchsorted(cumulative, percent / 100.0 * total * (1 - 1e-9)))
    last = int(np.searchsorted(cumulative, percent / 100.0 * total * (1 + 1e-9)))
    bottom, top = (first - 1) * width, (last + 2) * width + diagonal  # the percentile lies in [bottom, top] (a bin of slack each side)
    below = low + diagonal < bottom
    shell = ~below & (low <= top)
    distances = _nearest_mm(corners[shell], lesion, spacing_mm)
    shell_areas = areas[shell]
    order = np.lexsort((shell_areas, distances))
    reached = (float(np.sum(areas[below])) + np.cumsum(shell_areas[order])) / total
    index = int(np.searchsorted(reached, percent / 100.0))
    return float(distances[order][min(index, len(distances) - 1)])


@dataclass(frozen=True)
class LesionScores:
    """Lesion-wise scores of one region of one case.

    Attributes:
        dice: sum of the kept lesions' Dice over (kept lesions + false positives); 1 when both
            are 0 (e.g. both masks empty).
        hd95: the same average of HD95 (mm), false positives and misses counting ``miss_hd95_mm``;
            0 when there is nothing to average.
        tp: kept reference lesions touched by at least one predicted component.
        fp: predicted components (or merged predicted lesions) touching no reference lesion.
        fn: kept reference lesions touched by none.
    """

    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int


def _padded_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask grown by ``margin`` voxels, clipped to the array."""
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(_bounding_box(mask), mask.shape)
    )


def _union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def lesion_wise(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    dilation: int,
    min_volume_mm3: float,
    miss_hd95_mm: float = 374.0,
    merge_predictions: bool = False,
) -> LesionScores:
    """Lesion-wise Dice and HD95 of one region, as the BraTS 2023+ organisers' code computes them.

    1. Reference lesions: the 26-connected components of ``ref``, those whose ``dilation``-times
       dilations (3D cross-plus-edges structure) fall into one 26-connected component merged.
    2. Predicted components: the 26-connected components of ``pred``. With
       ``merge_predictions`` (BraTS 2024) they are merged the same way, and merged predicted
       lesions of at most ``min_volume_mm3`` *voxels* are dropped first (the 2024 code counts
       voxels there, mm^3 for the reference).
    3. Each reference lesion is scored against the union of the predicted components that touch
       its dilation: Dice, and :func:`hd95_surface_area` (the organisers' DeepMind HD95); with no
       such component it is a false negative, Dice 0 and HD95 ``miss_hd95_mm``. A predicted
       component may count for several lesions.
    4. Reference lesions of at most ``min_volume_mm3`` mm^3 are left out (touched or not); a
       predicted component that touches no reference lesion, kept or not, is a false positive
       (Dice 0, HD95 ``miss_hd95_mm``).
    5. Dice = sum of kept lesions' Dice / (kept + false positives); HD95 likewise with the false
       positives' ``miss_hd95_mm`` added; nothing to average gives Dice 1 and HD95 0.

    Where the organisers' code surprises (and this function follows it): a small reference
    lesion that is left out still makes the predicted components touching it true positives, so
    a prediction that only hits small lesions scores a perfect 1 / 0; a false positive next to
    a large lesion (within its dilation) is no false positive but lowers that lesion's Dice.
    The organisers compute every step on the whole image (about 17 s per case); here every step
    runs on the bounding box of both masks grown by ``dilation``, which gives the same values.

    Args:
        pred: boolean prediction mask, shape (X, Y, Z).
        ref: boolean reference mask, same shape.
        spacing: voxel size in mm along each axis.
        dilation: dilation steps ``d`` that merge nearby lesions and define "touching" (>= 1).
        min_volume_mm3: reference lesions of at most this volume (mm^3) are left out (``t``).
        miss_hd95_mm: HD95 of a missed lesion or a false positive (374 in 2023, 337 in 2024).
        merge_predictions: merge and filter predicted components too (BraTS 2024).

    Returns:
        :class:`LesionScores` (Dice, HD95 in mm, TP/FP/FN lesion counts).
    """
    _check_masks(pred, ref)
    if pred.ndim != 3:
        raise ValueError(f"lesion-wise scores need 3D masks, got {pred.ndim} dimensions")
    spacing_mm = _check_spacing(spacing, 3)
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1 (scipy dilates until nothing changes at 0), got {dilation}")
    union = pred | ref
    if not union.any():
        return LesionScores(dice=1.0, hd95=0.0, tp=0, fp=0, fn=0)
    box = _padded_box(union, dilation)
    pred, ref = pred[box], ref[box]

    # 1. reference lesions: id of the dilated component, on the reference voxels (the dilation
    # and its components lie in the reference's own box grown by `dilation`)
    dilated_ids = np.zeros(ref.shape, dtype=np.int32)
    num_lesions = 0
    if ref.any():
        near = _padded_box(ref, dilation)
        dilated = ndimage.binary_dilation(ref[near], _DILATE_18, iterations=dilation)
        dilated_ids[near], num_lesions = ndimage.label(dilated, _CONNECT_26)
    lesions = np.where(ref, dilated_ids, 0)
    # 2. predicted components (merged and filtered in 2024)
    components, num_components = ndimage.label(pred, _CONNECT_26)
    if merge_predictions and num_components:
        merged, num_components = ndimage.label(
            ndimage.binary_dilation(pred, _DILATE_18, iterations=dilation), _CONNECT_26
        )
        components = np.where(pred, merged, 0)
        small = np.bincount(components.ravel(), minlength=num_components + 1) <= min_volume_mm3
        small[0] = False
        components[small[components]] = 0
    # 3. the dilation of a lesion is exactly its dilated component (dilation distributes over
    # unions), so "touching" pairs are read off the overlap of the two label maps at once
    overlap = (components > 0) & (dilated_ids > 0)
    pairs = np.unique(dilated_ids[overlap].astype(np.int64) * (num_components + 1) + components[overlap])
    pair_lesion, pair_component = pairs // (num_components + 1), pairs % (num_components + 1)
    present = np.bincount(components.ravel(), minlength=num_components + 1) > 0
    present[pair_component] = False
    present[0] = False
    false_positives = int(np.count_nonzero(present))

    sx, sy, sz = (float(s) for s in spacing_mm)
    voxel_counts = np.bincount(lesions.ravel(), minlength=num_lesions + 1)
    lesion_boxes = ndimage.find_objects(lesions)
    component_boxes = ndimage.find_objects(components)
    dices: list[float] = []
    distances: list[float] = []
    tp = fn = 0
    predicted_borders: dict[tuple[int, ...], _Border] = {}  # per set of touching components (far lesions)
    for lesion in range(1, num_lesions + 1):
        if int(voxel_counts[lesion]) * sx * sy * sz <= min_volume_mm3:  # the organisers' product order
            continue
        touching = pair_component[pair_lesion == lesion]
        if touching.size == 0:
            fn += 1
            dices.append(0.0)
            distances.append(miss_hd95_mm)
            continue
        tp += 1
        sub = _union_box([lesion_boxes[lesion - 1], *(component_boxes[c - 1] for c in touching)])
        lesion_mask = lesions[sub] == lesion
        predicted = np.isin(components[sub], touching)
        intersection = int(np.count_nonzero(lesion_mask & predicted))
        dices.append(2.0 * intersection / (int(np.count_nonzero(predicted)) + int(voxel_counts[lesion])))
        own = lesion_boxes[lesion - 1]
        if lesion_mask.size > max(_FAR_BOX_RATIO * int(np.prod([b.stop - b.start for b in own])), _FAR_BOX_MIN_VOXELS):
            key = tuple(int(c) for c in touching)
            if key not in predicted_borders:
                predicted_box = _bounding_box(predicted)
                predicted_borders[key] = _border(predicted[predicted_box], [sub[a].start + predicted_box[a].start for a in range(3)], _surfel_area_table((sx, sy, sz)))
            lesion_border = _border(lesions[own] == lesion, [b.start for b in own], _surfel_area_table((sx, sy, sz)))
            distances.append(_lesion_hd95_far(lesion_border, predicted_borders[key], spacing_mm))
        else:
            distances.append(_hd95_surface_area(lesion_mask, predicted, spacing_mm))
    count = len(dices) + false_positives
    if count == 0:
        return LesionScores(dice=1.0, hd95=0.0, tp=0, fp=0, fn=0)
    return LesionScores(
        dice=float(np.sum(dices)) / count if dices else 0.0,
        hd95=(float(np.sum(distances)) + false_positives * miss_hd95_mm) / count,
        tp=tp,
        fp=false_positives,
        fn=fn,
    )


@dataclass(frozen=True)
class ScoringRules:
    """A BraTS challenge's lesion-wise scoring rules (``glioseg evaluate --rules NAME``).

    Attributes:
        name: identifier on the command line, e.g. ``"brats2023-gli"``.
        description: where the parameters come from.
        dilation: dilation steps ``d`` (see :func:`lesion_wise`).
        min_volume_mm3: per region (``wt``, ``tc``, ``et``), the volume ``t`` at or below which a
            reference lesion is left out.
        miss_hd95_mm: HD95 of a missed lesion or a false positive.
        merge_predictions: predicted components merged by dilation and filtered (BraTS 2024).
    """

    name: str
    description: str
    dilation: int
    min_volume_mm3: Mapping[str, float]
    miss_hd95_mm: float = 374.0
    merge_predictions: bool = False

    @property
    def hd95_definition(self) -> str:
        """The key in :data:`HD95_DEFINITIONS` of the lesion-wise HD95 (always ``"surface-area"``)."""
        return "surface-area"


def _same(t: float) -> Mapping[str, float]:
    return MappingProxyType({region: t for region in REGION_NAMES})


SCORING_RULES: Mapping[str, ScoringRules] = MappingProxyType(
    {
        "brats2023-gli": ScoringRules("brats2023-gli", "BraTS 2023 adult glioma (GLI): d = 3, t = 50 mm^3", 3, _same(50.0)),
        "brats2023-ssa": ScoringRules("brats2023-ssa", "BraTS 2023 Sub-Saharan Africa glioma (SSA): d = 3, t = 50 mm^3", 3, _same(50.0)),
        "brats2023-ped": ScoringRules("brats2023-ped", "BraTS 2023 paediatric tumours (PED): d = 3, t = 50 mm^3", 3, _same(50.0)),
        "brats2023-men": ScoringRules("brats2023-men", "BraTS 2023 meningioma (MEN): d = 1, t = 50 mm^3", 1, _same(50.0)),
        "brats2023-met": ScoringRules("brats2023-met", "BraTS 2023 brain metastases (MET): d = 1, t = 2 mm^3", 1, _same(2.0)),
        "brats2024-gli": ScoringRules(
            "brats2024-gli",
            "BraTS 2024 post-treatment glioma (GLI): d = 3, t = 20 mm^3 (ET 10), predicted lesions merged "
            "by dilation and those of <= t voxels dropped, misses and false positives HD95 337 mm; "
            "the 2024 merging of ET lesions that touch one NETC or cavity component is not reproduced",
            3,
            MappingProxyType({"wt": 20.0, "tc": 20.0, "et": 10.0}),
            miss_hd95_mm=337.0,
            merge_predictions=True,
        ),
    }
)
"""The lesion-wise rule sets of the BraTS organisers' metrics code (BraTS-2023-Metrics, BraTS-2024-Metrics)."""


def get_rules(name: str) -> ScoringRules:
    """Look a rule set up by name, with an error that lists the known ones."""
    try:
        return SCORING_RULES[name]
    except KeyError:
        raise GliosegError(None, f"unknown scoring rules '{name}'", f"use one of {', '.join(SCORING_RULES)}") from None


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
