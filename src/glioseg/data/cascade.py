"""The input of a cascade stage (nnU-Net's cascade, on a crop): the case at 1 mm around an earlier stage's tumour.

A cascade stage (``preprocess.cascade_margin`` set, native grid) sees

* the case's modalities, preprocessed as any native-grid recipe (brain crop, z-score inside the brain),
* plus the earlier stage's label map (the *prior*) as three 0/1 channels WT, TC, ET,

cropped to the prior's tumour box widened by ``cascade_margin`` mm on each side, within the brain crop.
Its targets are the hard 1 mm labels of that crop. A case whose prior holds no tumour has no crop
(:func:`cascade_input` returns ``None``): the earlier stage's result stands for it.

:func:`paste` puts the cascade stage's labels of the crop into the earlier stage's label map; outside the
crop the earlier stage's labels stand.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glioseg.data.discovery import Case, LoadedCase
from glioseg.data.preprocess import CropInfo, PreprocessConfig, PreprocessedCase, preprocess_loaded
from glioseg.errors import GliosegError

Box = tuple[tuple[int, int], ...]


def prior_channels(prior: np.ndarray) -> np.ndarray:
    """(X, Y, Z) internal labels -> (3, X, Y, Z) float32 0/1 channels WT (1-3), TC (1, 3), ET (3)."""
    from glioseg.labels import region_masks

    return np.stack(list(region_masks(prior).values())).astype(np.float32)


def cascade_box(prior: np.ndarray, spacing: Sequence[float], margin_mm: float, within: Box) -> Box | None:
    """The crop of a cascade stage: the prior's tumour box widened by ``margin_mm`` per side, clipped to ``within``.

    Args:
        prior: (X, Y, Z) internal labels on the case's grid.
        spacing: voxel size (mm) of that grid.
        margin_mm: widening on each side, in mm (``ceil(margin_mm / spacing)`` voxels per axis).
        within: half-open box the crop must stay in (the brain crop).

    Returns:
        Half-open ``((x0, x1), (y0, y1), (z0, z1))`` in the grid's voxels, or ``None`` when the prior
        holds no tumour (or none of its box lies within ``within``).
    """
    tumour = prior > 0
    if not tumour.any():
        return None
    box = []
    for axis, (size, (lo, hi)) in enumerate(zip(spacing, within, strict=True)):
        other = tuple(a for a in range(3) if a != axis)
        found = np.flatnonzero(tumour.any(axis=other))
        margin = math.ceil(float(margin_mm) / float(size) - 1e-9)
        start, stop = max(int(found[0]) - margin, lo), min(int(found[-1]) + 1 + margin, hi)
        if start >= stop:
            return None
        box.append((start, stop))
    return tuple(box)


def cascade_input(pre: PreprocessedCase, prior: np.ndarray, margin_mm: float) -> PreprocessedCase | None:
    """Cut a native-grid preprocessed case to the cascade crop and append the prior's region channels.

    Args:
        pre: the case preprocessed on its native grid (a brain crop, no resampling).
        prior: (*pre.crop.original_shape) internal labels of the earlier stage.
        margin_mm: see :func:`cascade_box`.

    Returns:
        The case on the crop: image ``(C + 3, *crop)`` (the modalities, then WT, TC, ET of the prior),
        label cut alike, ``crop.box`` in original voxels; ``None`` when the prior holds no tumour.

    Raises:
        GliosegError: ``pre`` was resampled, or the prior is not on the case's grid.
    """
    crop = pre.crop
    if tuple(crop.shape) != tuple(crop.cropped_shape):
        raise GliosegError(
            None, "a cascade stage needs the case on its native grid", "set preprocess.target_spacing=null"
        )
    if tuple(prior.shape) != tuple(crop.original_shape):
        raise GliosegError(
            None,
            f"the prior label map {tuple(prior.shape)} is not on the case's grid {tuple(crop.original_shape)}",
            "give the earlier stage's prediction of this very case",
        )
    box = cascade_box(prior, crop.original_spacing, margin_mm, crop.box)
    if box is None:
        return None
    local = tuple(slice(a - base, b - base) for (a, b), (base, _) in zip(box, crop.box, strict=True))
    absolute = tuple(slice(a, b) for a, b in box)
    image = np.concatenate([pre.image[(slice(None), *local)], prior_channels(prior[absolute])]).astype(
        np.float32, copy=False
    )
    label = None if pre.label is None else np.ascontiguousarray(pre.label[local])
    shape = tuple(b - a for a, b in box)
    cropped = CropInfo(
        original_shape=crop.original_shape,
        box=box,
        cropped_shape=shape,  # type: ignore[arg-type]
        shape=shape,  # type: ignore[arg-type]
        original_spacing=crop.original_spacing,
        spacing=crop.original_spacing,
        affine=crop.affine,
    )
    fraction = float("nan") if label is None else float(np.count_nonzero(label)) / max(label.size, 1)
    return dataclasses.replace(
        pre, image=image, label=label, crop=cropped, tumor_fraction=fraction, regions=None, reference=None
    )


def preprocess_cascade(loaded: LoadedCase, prior: np.ndarray, config: PreprocessConfig) -> PreprocessedCase | None:
    """:func:`~glioseg.data.preprocess.preprocess_loaded`, then :func:`cascade_input` (``None``: an empty prior)."""
    if config.cascade_margin is None:
        raise GliosegError(None, "the preset is not a cascade stage", "set preprocess.cascade_margin (mm)")
    return cascade_input(preprocess_loaded(loaded, config), prior, config.cascade_margin)


def paste(stage1: np.ndarray, stage2: np.ndarray, box: Box) -> np.ndarray:
    """The earlier stage's labels with the crop ``box`` replaced by the cascade stage's ``stage2`` (its shape)."""
    out = np.array(stage1, copy=True)
    out[tuple(slice(a, b) for a, b in box)] = stage2
    return out


def read_prior(path: Path, case: Case, shape: Sequence[int], affine: np.ndarray, stage: str) -> np.ndarray:
    """Read an earlier stage's label map of ``case`` (in the case's label convention) as internal labels.

    Raises:
        GliosegError: the file is missing or unreadable, or lies on another grid than the case.
    """
    from glioseg.data.io import AFFINE_TOLERANCE, read_volume
    from glioseg.labels import to_internal

    fix = f"predict stage {stage}'s held-out cases again (`glioseg cv train` with the same work folder and recipe)"
    if not path.is_file():
        raise GliosegError(
            path,
            f"is missing: the cascade stage needs stage {stage}'s out-of-fold label map of case {case.case_id}",
            f"train every fold of stage {stage} first (`glioseg cv train` of every fold), so that each case has one",
        )
    volume = read_volume(path, dtype=None)
    if tuple(volume.data.shape) != tuple(shape) or not np.allclose(volume.affine, affine, atol=AFFINE_TOLERANCE):
        raise GliosegError(
            path,
            f"is on another grid ({tuple(volume.data.shape)}) than case {case.case_id} ({tuple(shape)})",
            fix,
        )
    return to_internal(np.asarray(volume.data), case.convention, path, fix)
