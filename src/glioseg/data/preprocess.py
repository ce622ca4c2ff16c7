"""Preprocessing presets and the inverse mapping back to the patient's grid.

Two recipes:

* ``paper`` -- exactly the report's recipe (section IV and its origin tutorial): FLAIR, T1ce, T2
  stacked; min-max to [0, 1] per volume and modality (not per axial slice, as the tutorial did
  by accident); the fixed crop ``[56:184, 56:184, 13:141]`` to 128^3; labels 4 -> 3 (the internal
  convention), one-hot over 4 classes when loaded; a case is kept only if more than 1% of the
  crop is tumor.
* ``default`` / ``cpu`` -- ours: all four modalities; crop to the brain's bounding box; z-score
  each modality inside the brain (zero outside); optional resampling to a target spacing
  (``default`` keeps the native 1 mm, ``cpu`` uses 2 mm). Everything needed to paste a
  prediction back onto the original grid is recorded (:class:`CropInfo`).

The on-disk cache of preprocessed cases is :mod:`glioseg.data.cache`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from glioseg.config.sections import CACHE_FORMAT, LATER_DEFAULTS, PREPROCESS_RANGES, PreprocessConfig  # noqa: F401  (re-exported: defined with the settings)
from glioseg.data.discovery import Case, LoadedCase, load_case
from glioseg.errors import GliosegError

logger = logging.getLogger(__name__)


MAX_RESAMPLED_DIM = 1024
"""Largest size along an axis of a resampled crop (a 240 mm head at 0.25 mm is 960)."""

MAX_RESAMPLED_VOXELS = 2**27
"""Largest number of voxels of a resampled crop (about 2 GiB for 4 float32 channels)."""


@dataclass(frozen=True)
class CropInfo:
    """What is needed to map a preprocessed array back onto the original image grid.

    Attributes:
        original_shape: (X, Y, Z) of the source images.
        box: ((x0, x1), (y0, y1), (z0, z1)) of the crop in original voxels (half-open).
        cropped_shape: shape of the crop before resampling.
        shape: shape after resampling (equals ``cropped_shape`` without resampling).
        original_spacing: source voxel size (mm).
        spacing: voxel size of the preprocessed array (mm).
        affine: the source affine (4x4, as nested lists).
    """

    original_shape: tuple[int, int, int]
    box: tuple[tuple[int, int], ...]
    cropped_shape: tuple[int, int, int]
    shape: tuple[int, int, int]
    original_spacing: tuple[float, float, float]
    spacing: tuple[float, float, float]
    affine: tuple[tuple[float, ...], ...]

    @classmethod
    def from_dict(cls, data: dict) -> CropInfo:
        return cls(
            original_shape=tuple(data["original_shape"]),
            box=tuple(tuple(b) for b in data["box"]),
            cropped_shape=tuple(data["cropped_shape"]),
            shape=tuple(data["shape"]),
            original_spacing=tuple(data["original_spacing"]),
            spacing=tuple(data["spacing"]),
            affine=tuple(tuple(r) for r in data["affine"]),
        )


@dataclass(frozen=True)
class PreprocessedCase:
    """A case ready for training or inference.

    Attributes:
        case_id: its identifier.
        image: (C, X, Y, Z) float32.
        label: (X, Y, Z) uint8 internal labels, or ``None``.
        crop: how to go back to the original grid.
        kept: ``False`` when the preset dropped it (too little tumor).
        tumor_fraction: share of tumor voxels in the preprocessed label (``nan`` without label).
        regions: ``(3, X, Y, Z)`` float32 WT/TC/ET fractions (:func:`region_fractions`), with
            ``soft_targets`` and a label; otherwise ``None``.
        reference: (*crop.cropped_shape) uint8 internal labels of the crop at the original
            resolution, kept when the recipe resamples (``label`` is then on another grid);
            ``None`` otherwise (``label`` is that crop). Validation scores the decoded labels
            against it (:meth:`reference_on_crop`), as ``glioseg evaluate`` scores ``predict``'s.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    crop: CropInfo
    kept: bool = True
    tumor_fraction: float = float("nan")
    regions: np.ndarray | None = None
    reference: np.ndarray | None = None

    def reference_on_crop(self) -> np.ndarray | None:
        """The reference labels of the crop at the original resolution (*crop.cropped_shape):
        :attr:`reference`, or :attr:`label` when the recipe does not resample.

        Outside the crop box the decoded labels are background; so is the reference for a
        ``brain`` crop (its box holds every tumor voxel), so the Dice on the crop is the Dice on
        the whole scan. (A ``fixed`` crop may cut tumor off; those voxels are not scored.)
        """
        if self.reference is not None:
            return self.reference
        if self.label is None:
            return None
        label = self.label.astype(np.uint8, copy=False)
        if tuple(label.shape) != tuple(self.crop.cropped_shape):  # a resampled entry cached before references were kept
            label = resize_labels(label, self.crop.cropped_shape)  # nearest neighbour: close, not exact
        return label


def background_values(image: np.ndarray) -> np.ndarray:
    """The background intensity of each channel: 0 or the channel's minimum, whichever more voxels hold.

    Skull-stripped scans are 0 outside the head, but some converters and scanners write a
    constant offset instead (the background is then the minimum); already-normalised scans may
    hold negative values inside the brain and 0 outside. Neither rule alone covers both.

    Args:
        image: (C, X, Y, Z).

    Returns:
        (C,) float64.
    """
    values = []
    for channel in image:
        low = channel.min()
        values.append(float(low) if np.count_nonzero(channel == low) > np.count_nonzero(channel == 0) else 0.0)
    return np.array(values, dtype=np.float64)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: voxels that differ from the background (:func:`background_values`) in any channel.

    Args:
        image: (C, X, Y, Z).
    """
    return _mask_from_background(image, background_values(image).astype(image.dtype))


def _mask_from_background(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``np.any(image != background[:, None, None, None], axis=0)``, one channel at a time (no (C, X, Y, Z)
    temporary)."""
    mask = np.not_equal(image[0], background[0])
    scratch = np.empty_like(mask)
    for channel, value in zip(image[1:], background[1:], strict=True):
        mask |= np.not_equal(channel, value, out=scratch)
    return mask


def brain_box(image: np.ndarray, label: np.ndarray | None = None, margin: int = 0) -> tuple[tuple[int, int], ...]:
    """Half-open bounding box of the brain (:func:`brain_mask`) and of the labelled voxels.

    Args:
        image: (C, X, Y, Z).
        label: optional (X, Y, Z); labelled voxels are always inside the box.
        margin: voxels added on each side, clipped to the volume.
    """
    mask = brain_mask(image)
    if label is not None:
        mask |= label > 0
    return _box_of(mask, margin)


def _box_of(mask: np.ndarray, margin: int = 0) -> tuple[tuple[int, int], ...]:
    """Half-open bounding box of the true voxels of ``mask``, widened by ``margin`` (the whole volume if none)."""
    plane: np.ndarray = np.any(
        mask, axis=2
    )  # (X, Y): one pass over the volume; the three axes' extents from projections
    if not plane.any():
        return tuple((0, s) for s in mask.shape)
    extents = [
        np.flatnonzero(plane.any(axis=1)),
        np.flatnonzero(plane.any(axis=0)),
        np.flatnonzero(np.any(mask, axis=(0, 1))),
    ]
    return tuple(
        (max(int(found[0]) - margin, 0), min(int(found[-1]) + 1 + margin, size))
        for found, size in zip(extents, mask.shape, strict=True)
    )


def _cropped_brain_mask(
    image: np.ndarray, cropped_full_mask: np.ndarray | None, full_background: np.ndarray | None
) -> np.ndarray:
    """:func:`brain_mask` of the cropped ``image``; the whole volume's mask, cropped, when the crop has
    the whole volume's background values (the usual case), since the mask is then the same."""
    background = background_values(image).astype(image.dtype)
    if cropped_full_mask is not None and full_background is not None and np.array_equal(background, full_background):
        return np.ascontiguousarray(cropped_full_mask)
    return _mask_from_background(image, background)


def _slices(box: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in box)


def minmax_scale(volume: np.ndarray) -> np.ndarray:
    """Scale one volume to [0, 1] over all its voxels (sklearn's MinMaxScaler on the flattened volume).

    Computed in float64, so that neither ``hi - lo`` nor tiny ranges overflow or underflow.
    """
    lo, hi = float(volume.min()), float(volume.max())
    if hi <= lo:
        return np.zeros_like(volume, dtype=np.float32)
    return ((volume.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)


def zscore_in_mask(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score ``volume`` with the mean and std of voxels in ``mask``; zero outside the mask.

    The statistics and the scaling are computed in float64: in float32 the squares of
    intensities above about 1e19 overflow (std = inf, every voxel 0) and those of intensities
    below about 1e-19 underflow (std = 0). A mask with no spread gives zeros.
    """
    out = np.empty(volume.shape, dtype=np.float32)
    _zscore_into(out, volume, mask)
    return out


ZSCORE_SLAB_VOXELS = 1 << 18
"""Voxels :func:`_zscore_into` converts to float64 at a time (2 MiB: stays in cache, no fresh pages per call)."""


def _zscore_into(out: np.ndarray, volume: np.ndarray, mask: np.ndarray, outside: np.ndarray | None = None) -> None:
    """:func:`zscore_in_mask` written into the float32 array ``out`` (``outside``: ``~mask``, if at hand).

    The float64 arithmetic is that of ``((volume.astype(float64) - mean) / std).astype(float32)``,
    element by element, done in slabs of the first axis through one small float64 buffer.
    """
    values = volume[mask].astype(np.float64)
    if values.size == 0:
        out[...] = 0
        return
    mean, std = float(values.mean()), float(values.std())
    if not std > 0:
        out[...] = 0
        return
    axis = volume.ndim - 1 if volume.strides[0] < volume.strides[-1] else 0  # slabs along the slowest axis in memory
    plane = max(int(np.prod(volume.shape)) // max(volume.shape[axis], 1), 1)
    rows = max(ZSCORE_SLAB_VOXELS // plane, 1)
    slab_shape = list(volume.shape)
    for start in range(0, volume.shape[axis], rows):
        stop = min(start + rows, volume.shape[axis])
        where = (slice(None),) * axis + (slice(start, stop),)
        slab_shape[axis] = stop - start
        slab = np.empty(slab_shape, dtype=np.float64)
        np.copyto(slab, volume[where], casting="unsafe")
        np.subtract(slab, mean, out=slab)
        np.divide(slab, std, out=slab)
        np.copyto(out[where], slab, casting="unsafe")
    out[~mask if outside is None else outside] = 0


def resample_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """Grid size after resampling from ``spacing`` to ``target`` spacing (at least 1 voxel)."""
    x, y, z = (max(int(round(n * s / t)), 1) for n, s, t in zip(shape, spacing, target, strict=True))
    return x, y, z


FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""A Gaussian's full width at half maximum over its sigma (2.355)."""


def antialias_sigmas(spacing: Sequence[float], target: Sequence[float]) -> tuple[float, ...]:
    """Gaussian sigma (source voxels) per axis before resampling from ``spacing`` to ``target``.

    A source voxel is taken to see a full width at half maximum of one voxel; the smoothing widens
    that to ``factor = target / spacing`` voxels: sigma = ``sqrt(factor**2 - 1) / 2.355`` (0.735
    for 1 -> 2 mm, which leaves 0.14 of a pattern at the source grid's Nyquist frequency where
    trilinear sampling alone leaves up to all of it); 0 where the grid is not made coarser.
    """
    return tuple(math.sqrt(max((t / s) ** 2 - 1.0, 0.0)) / FWHM_PER_SIGMA for s, t in zip(spacing, target, strict=True))


def antialias_in_mask(image: np.ndarray, sigmas: Sequence[float], mask: np.ndarray | None) -> np.ndarray:
    """Smooth each channel of (C, X, Y, Z) ``image`` with a Gaussian of ``sigmas`` (voxels per axis).

    With ``mask``, the smoothing is normalised inside it (``G(image * mask) / G(mask)``, 0 outside):
    the background's zeros are not blurred into the brain's edge, where they would pull the edge
    voxels dark. Returns float32; ``image`` itself when every sigma is 0.
    """
    from scipy import ndimage

    if not any(sigma > 0 for sigma in sigmas):
        return image
    out = np.empty(image.shape, dtype=np.float32)
    weight = None
    if mask is not None:
        weight = ndimage.gaussian_filter(mask.astype(np.float32), sigmas)
        np.maximum(weight, np.float32(1e-6), out=weight)
    for c in range(image.shape[0]):
        channel = image[c].astype(np.float32, copy=True)
        if mask is None:
            out[c] = ndimage.gaussian_filter(channel, sigmas)
            continue
        channel[~mask] = 0
        smooth = ndimage.gaussian_filter(channel, sigmas)
        smooth /= weight
        smooth[~mask] = 0
        out[c] = smooth
    return out


def resize_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resize of (C, X, Y, Z) to (C, *shape), corners aligned."""
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    return F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=True)[0].numpy()


Resize = Callable[[np.ndarray, Sequence[int]], np.ndarray]
"""A trilinear resize of (C, X, Y, Z) to (C, *shape): :func:`resize_image` or :func:`resize_image_numpy`."""


def linear_indices_weights(size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear interpolation (corners aligned) from ``size`` to ``out_size``
    samples, as PyTorch computes them (``compute_indices_weights_linear``, in float32).

    Returns:
        ``(i0, i1, w0, w1)``: output sample ``j`` is ``w0[j] * v[i0[j]] + w1[j] * v[i1[j]]``.
    """
    scale = np.float32(size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0)
    source = scale * np.arange(out_size, dtype=np.float32)
    i0 = source.astype(np.int64)  # truncation, as C++'s cast (source >= 0)
    w1 = np.clip(source - i0.astype(np.float32), np.float32(0), np.float32(1))
    w0 = np.float32(1) - w1
    i1 = i0 + (i0 < size - 1)
    return i0, i1, w0, w1


def _interpolate_axis(array: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """Linear interpolation (corners aligned) of float32 ``array`` along ``axis`` to ``out_size`` samples:
    ``w0 * array[i0] + w1 * array[i1]`` along it, the two neighbours gathered (one thread, no temporary
    beyond the two gathers)."""
    i0, i1, w0, w1 = linear_indices_weights(array.shape[axis], out_size)
    along = (-1,) + (1,) * (array.ndim - axis - 1)  # the weights' shape, broadcast along ``axis``
    low = np.take(array, i0, axis=axis)
    low *= w0.reshape(along)
    high = np.take(array, i1, axis=axis)
    high *= w1.reshape(along)
    low += high
    return low


def resize_image_numpy(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """:func:`resize_image` without PyTorch: trilinear resize of (C, X, Y, Z) to (C, *shape), corners aligned,
    float32.

    Separable: linear interpolation along Z, then Y, then X (the order of the nested sums of PyTorch's
    ``F.interpolate(mode="trilinear")`` on the CPU), with its float32 source indices and weights
    (:func:`linear_indices_weights`), the two neighbours along each axis gathered and weighted. The
    result equals PyTorch's to float rounding
    (``tests/data/test_preprocess.py`` compares them).
    """
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    out = np.ascontiguousarray(image, dtype=np.float32)
    for axis in (3, 2, 1):
        if out.shape[axis] != int(shape[axis - 1]):
            out = _interpolate_axis(out, axis, int(shape[axis - 1]))
    return out


def resize_labels(label: np.ndarray, shape: Sequence[int], num_classes: int = 4) -> np.ndarray:
    """Resize a label map by linear interpolation of its one-hot encoding and argmax (smoother than nearest)."""
    if tuple(label.shape) == tuple(shape):
        return label
    onehot = (label[None] == np.arange(num_classes).reshape(-1, 1, 1, 1)).astype(np.float32)
    return np.argmax(resize_image(onehot, shape), axis=0).astype(np.uint8)


def footprint_weights(ratio: float) -> np.ndarray:
    """1-D weights of the source voxels under a box ``ratio`` source voxels wide, centred on a voxel.

    Source voxel ``j`` spans ``[j - 0.5, j + 0.5]``; its weight is its overlap with
    ``[-ratio / 2, ratio / 2]``, normalised to sum 1. A 2 mm voxel over 1 mm voxels
    (``ratio=2``) weighs ``[0.25, 0.5, 0.25]``; ``ratio <= 1`` gives ``[1]``.
    """
    half = max(float(ratio), 1.0) / 2
    reach = math.ceil(half - 0.5)
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    weights = np.clip(np.minimum(offsets + 0.5, half) - np.maximum(offsets - 0.5, -half), 0.0, None)
    return weights / weights.sum()


def region_fractions(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Share of each output voxel's footprint that lies in WT, TC and ET (soft region targets).

    Each region's 0/1 mask is averaged over the footprint of an output voxel
    (:func:`footprint_weights`, separably per axis, with ``ratio = input size / output size``)
    and then sampled at the output voxels' centres exactly as :func:`resize_image` samples the
    image (trilinear, corners aligned), so target and image stay voxel for voxel together.

    Args:
        label: ``(X, Y, Z)`` internal labels on the source grid.
        shape: the output grid's size.

    Returns:
        ``(3, *shape)`` float32 in [0, 1], channels in :data:`glioseg.labels.REGIONS` order.
    """
    from scipy.ndimage import correlate1d

    from glioseg.labels import region_masks

    masks = np.stack(list(region_masks(label).values())).astype(np.float32)
    for axis, (n, m) in enumerate(zip(label.shape, shape, strict=True)):
        weights = footprint_weights(n / m)
        if weights.size > 1:
            masks = correlate1d(masks, weights, axis=axis + 1, mode="nearest")
    return np.clip(resize_image(masks, shape), 0.0, 1.0).astype(np.float32, copy=False)


def preprocess_loaded(
    loaded: LoadedCase, config: PreprocessConfig, *, resize: Resize = resize_image
) -> PreprocessedCase:
    """Apply a recipe to a case already read from disk (``resize``: how the image is resampled, PyTorch's
    trilinear by default; :func:`resize_image_numpy` where PyTorch is not to be imported)."""
    image, label = loaded.image, loaded.label
    full_mask: np.ndarray | None = None  # the brain mask of the whole volume, cropped with it
    full_background: np.ndarray | None = None
    if config.crop == "fixed":
        box = tuple(config.fixed_crop)
        for (a, b), n in zip(box, loaded.shape, strict=True):
            if a < 0 or b > n:
                raise GliosegError(
                    loaded.case.reference_image,
                    f"image shape {loaded.shape} is too small for the paper's fixed crop {list(box)}",
                    "the paper preset expects BraTS 240x240x155 images; use the default preset",
                )
    else:
        full_background = background_values(image).astype(image.dtype)
        full_mask = _mask_from_background(image, full_background)
        box = _box_of(full_mask if label is None else full_mask | (label > 0), config.margin)
    image = image[(slice(None), *_slices(box))]
    full_mask = full_mask[_slices(box)] if full_mask is not None else None
    label = None if label is None else label[_slices(box)]
    brain: np.ndarray | None = None
    if config.normalization == "minmax":
        # the paper scales each modality over the whole volume, before cropping
        full = loaded.image
        image = np.stack([minmax_scale(full[c])[_slices(box)] for c in range(full.shape[0])])
    else:
        brain = _cropped_brain_mask(image, full_mask, full_background)
        outside = ~brain
        normalised = np.empty(image.shape, dtype=np.float32)
        for c in range(image.shape[0]):
            _zscore_into(normalised[c], image[c], brain, outside)
        image = normalised
    for channel, modality in zip(image, loaded.modalities, strict=True):
        if not np.all(np.isfinite(channel)):
            path = loaded.case.images.get(modality, loaded.case.reference_image)
            raise GliosegError(
                path,
                f"{modality} intensities cannot be normalised in float32 (the result is not finite)",
                "rescale the image (e.g. divide it by a constant) and re-export it",
            )
    cropped_shape = tuple(image.shape[1:])
    spacing = loaded.spacing
    source_label = label
    if config.target_spacing is not None:
        shape = resample_shape(cropped_shape, spacing, config.target_spacing)
        if max(shape) > MAX_RESAMPLED_DIM or math.prod(shape) > MAX_RESAMPLED_VOXELS:
            raise GliosegError(
                loaded.case.reference_image,
                f"voxel size {' x '.join(f'{s:g}' for s in spacing)} mm from the header is implausible for a brain "
                "MRI: "
                f"resampling to {' x '.join(f'{s:g}' for s in config.target_spacing)} mm would need a "
                f"{' x '.join(map(str, shape))} grid",
                "correct the voxel size (pixdim and affine) in the image header",
            )
        if config.antialias:
            image = antialias_in_mask(image, antialias_sigmas(spacing, config.target_spacing), brain)
        image = resize(image, shape)
        label = None if label is None else resize_labels(label, shape)
        spacing = tuple(float(n * s / m) for n, s, m in zip(cropped_shape, loaded.spacing, shape, strict=True))  # type: ignore[assignment]
    crop = CropInfo(
        original_shape=loaded.shape,
        box=box,
        cropped_shape=cropped_shape,
        shape=tuple(image.shape[1:]),
        original_spacing=loaded.spacing,
        spacing=spacing,
        affine=tuple(tuple(float(v) for v in row) for row in loaded.affine),
    )
    tumor_fraction = float("nan") if label is None else float(np.count_nonzero(label)) / label.size
    kept = label is None or tumor_fraction > config.min_tumor_fraction
    regions = (
        region_fractions(source_label, crop.shape)
        if config.soft_targets and source_label is not None and kept
        else None
    )
    reference = None  # the labels of the crop at the original resolution, when label is on another grid
    if source_label is not None and crop.shape != crop.cropped_shape:
        reference = source_label.astype(np.uint8, copy=False)
    return PreprocessedCase(
        loaded.case.case_id, image.astype(np.float32, copy=False), label, crop, kept, tumor_fraction, regions, reference
    )


def preprocess_case(case: Case, config: PreprocessConfig, *, with_label: bool = True) -> PreprocessedCase:
    """Read one case from disk and apply a recipe."""
    return preprocess_loaded(load_case(case, config.modalities, with_label=with_label), config)


def paste_back(array: np.ndarray, crop: CropInfo, fill: float = 0) -> np.ndarray:
    """Paste a (..., *crop.cropped_shape) array into a (..., *crop.original_shape) array filled with ``fill``."""
    out = np.full((*array.shape[:-3], *crop.original_shape), fill, dtype=array.dtype)
    out[(..., *_slices(crop.box))] = array  # type: ignore[index]
    return out


def invert_probabilities(
    probabilities: np.ndarray, crop: CropInfo, *, background: bool = True, resize: Resize = resize_image
) -> np.ndarray:
    """Map probabilities from the preprocessed grid back to the original grid.

    Args:
        probabilities: (K, *crop.shape); class probabilities with class 0 the background, or
            region probabilities (WT, TC, ET) with ``background=False``.
        crop: the case's :class:`CropInfo`.
        background: channel 0 is the background class.
        resize: the trilinear resize (PyTorch's, or :func:`resize_image_numpy`).

    Returns:
        (K, *crop.original_shape) float32. Outside the crop the background has probability 1
        and every other channel 0 (all channels 0 with ``background=False``).
    """
    probabilities = resize(probabilities.astype(np.float32, copy=False), crop.cropped_shape)
    out = np.zeros((probabilities.shape[0], *crop.original_shape), dtype=np.float32)
    if background:
        out[0] = 1.0
    out[(slice(None), *_slices(crop.box))] = probabilities
    return out

