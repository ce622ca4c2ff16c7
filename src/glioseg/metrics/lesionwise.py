"""Lesion-wise scores (BraTS 2023+): :func:`lesion_wise` and the organisers' rule sets
(:data:`SCORING_RULES`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from glioseg.errors import GliosegError
from glioseg.labels import REGION_NAMES
from glioseg.metrics.distance import (
    _area_weighted_percentile,
    _bounding_box,
    _check_spacing,
    _corner_codes,
    _hd95_surface_area,
    _surfel_area_table,
)
from glioseg.metrics.overlap import _check_masks

LESION_METRICS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
"""Lesion-wise metrics per region, keyed ``f"{metric}_{region}"`` (HD95 in mm, the rest counts)."""

LESION_METRIC_KEYS = tuple(f"{metric}_{region}" for metric in LESION_METRICS for region in REGION_NAMES)
"""The keys :func:`case_metrics` adds when given scoring rules: ``lesion_dice_wt, ..., lesion_fn_et``."""

LESIONWISE_HD95 = "surface-area"
"""The key in :data:`~glioseg.metrics.distance.HD95_DEFINITIONS` of the lesion-wise HD95."""

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
    cumulative = np.cumsum(
        np.bincount((low / width).astype(np.int64), weights=areas)
    )  # bin k: low in about [k, k + 1) widths
    first = int(np.searchsorted(cumulative, percent / 100.0 * total * (1 - 1e-9)))
    last = int(np.searchsorted(cumulative, percent / 100.0 * total * (1 + 1e-9)))
    bottom, top = (
        (first - 1) * width,
        (last + 2) * width + diagonal,
    )  # the percentile lies in [bottom, top] (a bin of slack each side)
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
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(_bounding_box(mask), mask.shape, strict=True)
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
                predicted_borders[key] = _border(
                    predicted[predicted_box],
                    [sub[a].start + predicted_box[a].start for a in range(3)],
                    _surfel_area_table((sx, sy, sz)),
                )
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


def _same(t: float) -> Mapping[str, float]:
    return MappingProxyType({region: t for region in REGION_NAMES})


SCORING_RULES: Mapping[str, ScoringRules] = MappingProxyType(
    {
        "brats2023-gli": ScoringRules(
            "brats2023-gli", "BraTS 2023 adult glioma (GLI): d = 3, t = 50 mm^3", 3, _same(50.0)
        ),
        "brats2023-ssa": ScoringRules(
            "brats2023-ssa", "BraTS 2023 Sub-Saharan Africa glioma (SSA): d = 3, t = 50 mm^3", 3, _same(50.0)
        ),
        "brats2023-ped": ScoringRules(
            "brats2023-ped", "BraTS 2023 paediatric tumours (PED): d = 3, t = 50 mm^3", 3, _same(50.0)
        ),
        "brats2023-men": ScoringRules(
            "brats2023-men", "BraTS 2023 meningioma (MEN): d = 1, t = 50 mm^3", 1, _same(50.0)
        ),
        "brats2023-met": ScoringRules(
            "brats2023-met", "BraTS 2023 brain metastases (MET): d = 1, t = 2 mm^3", 1, _same(2.0)
        ),
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
