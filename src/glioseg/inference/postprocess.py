"""Post-processing of predicted label maps (internal convention: 0 bg, 1 NCR, 2 ED, 3 ET).

Pure functions on (X, Y, Z) ``uint8`` label maps; none of them modifies its input.

* :func:`apply_et_threshold` -- the BraTS enhancing-tumor rule: a predicted ET smaller than a
  threshold (voxels) is relabelled necrosis. An empty reference ET scores Dice 1 only with an
  empty predicted ET, so removing a few false-positive ET voxels pays off on the (many) cases
  without enhancing tumor. The cross-validation
  report chooses the threshold (:mod:`glioseg.cv.report`).
* :func:`remove_small_components` -- keep the largest whole-tumor connected component and any
  other component of at least ``min_size`` voxels (or a fraction of the largest); everything else
  becomes background. A piece within ``keep_within`` mm of the largest component counts as part of
  it and stays (a tumour that the prediction splits by a thin gap keeps both pieces).
* :func:`remove_small_region_components` -- per tumor region: enhancing-tumor components that are
  small become necrosis (they stay tumor core), small tumor-core components become edema (they
  stay whole tumor). Small is under a size in voxels or under a fraction of the region's largest
  component; the largest component of each region is always kept, so a small tumor keeps its
  core and ET (no rule deletes a region outright by size except the ET rule above, which is the
  BraTS convention and chosen like any other setting). Under the lesion-wise BraTS 2023+ metrics
  every stray speck of TC or ET inside the edema counts as a whole false-positive lesion; these
  filters remove such specks without touching the whole tumor.
* :func:`postprocess` applies them as set in a :class:`PostprocessConfig` (all off by default).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from glioseg.config.sections import PostprocessConfig
from glioseg.labels import BACKGROUND, EDEMA, ENHANCING, NECROSIS

logger = logging.getLogger(__name__)


def apply_et_threshold(labels: np.ndarray, threshold: int) -> np.ndarray:
    """The BraTS ET rule: if fewer than ``threshold`` voxels are ET, relabel them necrosis.

    Args:
        labels: (X, Y, Z) internal label map.
        threshold: minimum ET size in voxels; 0 leaves the map unchanged.

    Returns:
        A new label map (the input when nothing changes).
    """
    if threshold <= 0:
        return labels
    et = labels == ENHANCING
    count = int(np.count_nonzero(et))
    if count == 0 or count >= threshold:
        return labels
    logger.debug("ET rule: %d ET voxels < %d, relabelled necrosis", count, threshold)
    out = labels.copy()
    out[et] = NECROSIS
    return out


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    return ndimage.generate_binary_structure(3, rank)


def remove_small_components(
    labels: np.ndarray,
    min_size: int,
    *,
    min_fraction: float = 0.0,
    max_components: int | None = None,
    connectivity: int = 26,
    keep_within: float = 0.0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Keep the largest whole-tumor component and the others of at least ``min_size`` voxels and at least
    ``min_fraction`` times the largest; a component within ``keep_within`` mm of the largest is part of it.

    Args:
        labels: (X, Y, Z) internal label map.
        min_size: smallest component kept besides the largest (voxels); 0: no absolute size.
        min_fraction: smallest component kept besides the largest, as a fraction of the largest; 0: none.
        max_components: keep at most this many components, largest first (``None``: no limit).
        connectivity: 6, 18 or 26 neighbours.
        keep_within: a component whose nearest voxel centre lies within this distance (mm) of a voxel centre of
            the largest component is kept whatever its size, and does not count against ``max_components``
            (0: off).
        spacing: voxel size (mm) along the three axes, for ``keep_within``.

    Returns:
        A new label map with the removed components set to background.
    """
    if min_size <= 0 and min_fraction <= 0 and max_components is None:
        return labels
    components, count = ndimage.label(labels != BACKGROUND, structure=_structure(connectivity))
    if count <= 1:
        return labels
    sizes = np.bincount(components.ravel())[1:]
    min_size = max(min_size, min_fraction * sizes.max())
    order = np.argsort(-sizes, kind="stable")  # component index - 1, largest first
    keep = np.zeros(count + 1, dtype=bool)
    keep[order[0] + 1] = True
    if keep_within > 0:  # the pieces near the largest belong to it
        distance = ndimage.distance_transform_edt(components != order[0] + 1, sampling=spacing)
        nearest = ndimage.minimum(distance, components, index=np.arange(1, count + 1))
        keep[1:] |= np.asarray(nearest) <= keep_within
    rank = 1
    for index in order[1:]:
        if keep[index + 1]:
            continue
        if max_components is not None and rank >= max_components:
            break
        if sizes[index] >= min_size:
            keep[index + 1] = True
            rank += 1
    if keep[1:].all():
        return labels
    out = labels.copy()
    out[~keep[components]] = BACKGROUND
    logger.debug("removed %d of %d tumor components", int(count - keep[1:].sum()), count)
    return out


REGION_FILTERS = {"et": ((ENHANCING,), NECROSIS), "tc": ((NECROSIS, ENHANCING), EDEMA)}
"""Region -> (labels that form it, the label its removed small components take)."""


def remove_small_region_components(
    labels: np.ndarray, region: str, min_size: int = 0, *, min_fraction: float = 0.0, connectivity: int = 26
) -> np.ndarray:
    """Relabel the small components of one tumor region; its largest component is always kept.

    ``region="et"``: enhancing-tumor components become necrosis (they stay in the tumor core).
    ``region="tc"``: tumor-core components (necrosis and ET together) become edema (they stay in
    the whole tumor). A component is small when it has fewer than ``min_size`` voxels or fewer
    than ``min_fraction`` times the voxels of the region's largest component. The largest is
    never relabelled, so a small tumor keeps its core and its ET whatever the sizes.

    Args:
        labels: (X, Y, Z) internal label map.
        region: ``"et"`` or ``"tc"``.
        min_size: smallest component kept besides the largest (voxels); 0: no absolute size.
        min_fraction: smallest component kept besides the largest, as a fraction of the largest; 0: none.
        connectivity: 6, 18 or 26 neighbours.

    Returns:
        A new label map (the input when nothing changes).
    """
    if region not in REGION_FILTERS:
        raise ValueError(f"region must be one of {', '.join(REGION_FILTERS)}, got {region!r}")
    if min_size <= 0 and min_fraction <= 0:
        return labels
    members, replacement = REGION_FILTERS[region]
    mask = np.isin(labels, members)
    components, count = ndimage.label(mask, structure=_structure(connectivity))
    if count <= 1:
        return labels
    sizes = np.bincount(components.ravel())[1:]
    small = (sizes < min_size) | (sizes < min_fraction * sizes.max())
    small[int(np.argmax(sizes))] = False  # the largest (the first of equals) stays
    if not small.any():
        return labels
    out = labels.copy()
    out[np.concatenate([[False], small])[components]] = replacement
    logger.debug(
        "%s: %d of %d components small (< %d voxels or < %g of the largest) relabelled %d",
        region,
        int(small.sum()),
        count,
        min_size,
        min_fraction,
        replacement,
    )
    return out


def postprocess(
    labels: np.ndarray, config: PostprocessConfig, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """Apply the steps of ``config`` in this order: whole-tumor components, ET components,
    tumor-core components, the ET rule.

    The steps run on the bounding box of the tumour (every labelled voxel), which holds every
    component: the same result as on the whole volume, a fraction of the work.

    Args:
        labels: (X, Y, Z) internal label map.
        config: the steps to apply.
        spacing: voxel size (mm) of ``labels`` (``keep_within_mm`` is a distance).
    """
    if not config.active:
        return labels
    plane: np.ndarray = np.any(labels, axis=2)
    if not plane.any():
        return labels
    box = tuple(
        slice(int(found[0]), int(found[-1]) + 1)
        for found in (
            np.flatnonzero(plane.any(axis=1)),
            np.flatnonzero(plane.any(axis=0)),
            np.flatnonzero(np.any(labels, axis=(0, 1))),
        )
    )
    inside = labels[box]
    done = _postprocess_steps(inside, config, spacing)
    if done is inside:
        return labels
    out = labels.copy()
    out[box] = done
    return out


def _postprocess_steps(
    labels: np.ndarray, config: PostprocessConfig, spacing: tuple[float, float, float]
) -> np.ndarray:
    """The steps of :func:`postprocess` on ``labels`` as given (the input itself when nothing changes)."""
    if config.min_component_size > 0 or config.min_component_fraction > 0:
        labels = remove_small_components(
            labels,
            config.min_component_size,
            min_fraction=config.min_component_fraction,
            max_components=config.max_components,
            connectivity=config.connectivity,
            keep_within=config.keep_within_mm,
            spacing=spacing,
        )
    labels = remove_small_region_components(
        labels,
        "et",
        config.min_et_component_size,
        min_fraction=config.min_et_component_fraction,
        connectivity=config.connectivity,
    )
    labels = remove_small_region_components(
        labels,
        "tc",
        config.min_core_component_size,
        min_fraction=config.min_core_component_fraction,
        connectivity=config.connectivity,
    )
    return apply_et_threshold(labels, config.et_threshold)

