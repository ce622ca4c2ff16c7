"""Data augmentation for 3D multi-modal MRI patches.

Every random transform is split in two (STYLE.md practice 7, TorchIO's ``RandomGamma`` ->
``Gamma``):

* ``sample_params(rng, num_channels)`` draws the parameters from a ``np.random.Generator``
  and returns a small frozen dataclass (identity values when the transform is skipped);
* ``apply(image, label, params)`` calls a pure, deterministic op.

So a run replays exactly from a seed, and any augmentation can be logged and re-applied.

Arrays follow the package convention: ``image`` is ``(C, X, Y, Z)`` ``float32`` with the
background (outside the brain, and padding) at 0 in every channel; ``label`` is ``(X, Y, Z)``
integer in the internal convention (see :mod:`glioseg.labels`). Spatial ops move image and
label together (image trilinear, label nearest, both sampled at the very same coordinates);
intensity ops change the image only and keep the background at exactly 0, so padding and
background stay indistinguishable as they are at inference. Soft region targets
(:func:`augment_with_targets`) move with the image: the same trilinear sampling and flips, and
no intensity op.

Order in :func:`augment` (as nnU-Net): rotation/scaling (fused with the patch crop), flips,
intensity scale/shift, gamma, Gaussian noise; then modality dropout (off by default), last, so a
dropped channel is exactly the zero channel that stands for an absent scan at prediction time
(:mod:`glioseg.data.modalities`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from glioseg.config.sections import AugmentConfig
from glioseg.data.modalities import drop_modalities

ParamsT = TypeVar("ParamsT")


# --------------------------------------------------------------------------- configuration


# --------------------------------------------------------------------------- deterministic ops


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Voxels that are not background: ``(C, X, Y, Z)`` -> ``(X, Y, Z)`` bool (any channel != 0)."""
    return np.any(image != 0, axis=0)


def crop(
    image: np.ndarray, label: np.ndarray, start: Sequence[int], out_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a box out of image and label, padding with 0 where it leaves the volume.

    Args:
        image: ``(C, X, Y, Z)``.
        label: ``(X, Y, Z)``.
        start: first voxel of the box in each spatial axis (may be negative).
        out_shape: box size ``(x, y, z)``.

    Returns:
        ``(image (C, x, y, z), label (x, y, z))``, new arrays of the input dtypes.
    """
    out_image = np.zeros((image.shape[0], *out_shape), dtype=image.dtype)
    out_label = np.zeros(tuple(out_shape), dtype=label.dtype)
    src, dst = [], []
    for begin, size, n in zip(start, out_shape, label.shape, strict=True):
        lo, hi = max(begin, 0), min(begin + size, n)
        if hi <= lo:
            return out_image, out_label
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    out_image[(slice(None), *dst)] = image[(slice(None), *src)]
    out_label[tuple(dst)] = label[tuple(src)]
    return out_image, out_label


def rotation_matrix(rotation_deg: Sequence[float]) -> np.ndarray:
    """Rotation about array axes 0, 1 and 2 (in that order of application: axis 2 first).

    Args:
        rotation_deg: three angles in degrees.

    Returns:
        ``(3, 3)`` orthonormal matrix acting on voxel coordinates ``(x, y, z)``.
    """
    a, b, c = (math.radians(float(d)) for d in rotation_deg)
    r0 = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    r1 = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    r2 = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return r0 @ r1 @ r2


def affine_crop(
    image: np.ndarray,
    label: np.ndarray,
    center: Sequence[int] | np.ndarray,
    out_shape: Sequence[int],
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a rotated and zoomed box of image and label around ``center``.

    Output voxel ``o`` is read at input coordinate ``center + R^T (o - out_shape // 2) / scale``
    (``R`` from :func:`rotation_matrix`), so voxel ``out_shape // 2`` of the output is input
    voxel ``center``, the content is rotated by ``R`` about it and enlarged by ``scale``.
    The image is interpolated trilinearly, the label by nearest neighbour, at the same
    coordinates; outside the volume both are 0. Only the output box is computed, so a
    64^3 patch costs the same from a 128^3 or a 240^3 volume.

    Without rotation or zoom this is exactly :func:`crop` (no interpolation).

    Args:
        image: ``(C, X, Y, Z)`` float.
        label: ``(X, Y, Z)`` integer.
        center: input voxel that lands at the output's voxel ``out_shape // 2``.
        out_shape: output size ``(x, y, z)``.
        rotation_deg: angles about axes 0, 1, 2 in degrees.
        scale: isotropic zoom factor (> 0).

    Returns:
        ``(image (C, x, y, z) float32, label (x, y, z) of label's dtype)``.
    """
    out_shape = tuple(int(s) for s in out_shape)
    half = np.array([s // 2 for s in out_shape])
    center = np.asarray(center, dtype=np.int64)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if all(float(d) == 0.0 for d in rotation_deg) and scale == 1.0:
        out_image, out_label = crop(image, label, (center - half).tolist(), out_shape)
        return out_image.astype(np.float32, copy=False), out_label

    matrix = rotation_matrix(rotation_deg).T / scale  # output offset -> input offset
    axes = [np.arange(s, dtype=np.float64) - h for s, h in zip(out_shape, half, strict=True)]
    grids = [a.reshape([-1 if k == j else 1 for k in range(3)]) for j, a in enumerate(axes)]
    coords = [
        (matrix[i, 0] * grids[0] + matrix[i, 1] * grids[1] + matrix[i, 2] * grids[2] + center[i]) for i in range(3)
    ]  # three (x, y, z) arrays of input voxel coordinates

    # image: trilinear via grid_sample (input axes X, Y, Z are D, H, W; grid is ordered W, H, D)
    sizes = image.shape[1:]
    normalised = [
        ((2.0 * c + 1.0) / n - 1.0).astype(np.float32) for c, n in zip(coords, sizes, strict=True)
    ]  # align_corners=False
    grid = np.stack(np.broadcast_arrays(*normalised[::-1]), axis=-1)[None]
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    sampled = F.grid_sample(source, torch.from_numpy(grid), mode="bilinear", padding_mode="zeros", align_corners=False)
    out_image = sampled[0].numpy()

    # label: nearest neighbour at the same coordinates
    index = [np.rint(c).astype(np.int64) for c in np.broadcast_arrays(*coords)]
    inside = np.ones(out_shape, dtype=bool)
    for i, n in zip(index, label.shape, strict=True):
        inside &= (i >= 0) & (i < n)
    flat = (index[0][inside] * label.shape[1] + index[1][inside]) * label.shape[2] + index[2][inside]
    out_label = np.zeros(out_shape, dtype=label.dtype)
    out_label[inside] = np.ravel(label)[flat]
    return out_image, out_label


def flip(image: np.ndarray, label: np.ndarray, axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and label along spatial ``axes`` (0, 1, 2 = X, Y, Z).

    Args:
        image: ``(C, X, Y, Z)``.
        label: ``(X, Y, Z)``.
        axes: spatial axes to mirror; empty returns the inputs unchanged.

    Returns:
        ``(image, label)``, contiguous, same shapes and dtypes.
    """
    if not axes:
        return image, label
    axes = tuple(int(a) for a in axes)
    return (
        np.ascontiguousarray(np.flip(image, axis=tuple(a + 1 for a in axes))),
        np.ascontiguousarray(np.flip(label, axis=axes)),
    )


def scale_shift_intensity(image: np.ndarray, scale: Sequence[float], shift: Sequence[float]) -> np.ndarray:
    """Per channel ``x * scale[c] + shift[c] * std_c`` on non-background voxels.

    Args:
        image: ``(C, X, Y, Z)`` float.
        scale: ``C`` multiplicative factors.
        shift: ``C`` additive shifts in units of the channel's standard deviation over the
            non-background voxels (so ``0.1`` means a tenth of the channel's spread).

    Returns:
        ``(C, X, Y, Z)`` float32; background voxels stay 0.
    """
    out = image.astype(np.float32, copy=True)
    mask = foreground_mask(image)
    if not mask.any():
        return out
    for c in range(image.shape[0]):
        values = out[c][mask]
        out[c][mask] = values * np.float32(scale[c]) + np.float32(shift[c] * values.std())
    return out


def gamma_transform(image: np.ndarray, gamma: Sequence[float]) -> np.ndarray:
    """Per channel gamma on the min-max-normalised range, mapped back (nnU-Net's way).

    For channel ``c`` with non-background minimum ``m`` and range ``r``:
    ``x -> ((x - m) / r) ** gamma[c] * r + m``. The minimum and maximum are kept.

    Args:
        image: ``(C, X, Y, Z)`` float.
        gamma: ``C`` positive exponents (1 leaves the channel unchanged).

    Returns:
        ``(C, X, Y, Z)`` float32; background voxels stay 0.
    """
    out = image.astype(np.float32, copy=True)
    mask = foreground_mask(image)
    if not mask.any():
        return out
    for c in range(image.shape[0]):
        if gamma[c] == 1.0:
            continue
        values = out[c][mask]
        low, high = float(values.min()), float(values.max())
        if high <= low:
            continue
        normalised = (values - np.float32(low)) / np.float32(high - low)
        out[c][mask] = np.power(normalised, np.float32(gamma[c])) * np.float32(high - low) + np.float32(low)
    return out


def add_noise(image: np.ndarray, std: float, seed: int) -> np.ndarray:
    """Add zero-mean Gaussian noise to the non-background voxels.

    Args:
        image: ``(C, X, Y, Z)`` float.
        std: noise standard deviation (0 returns a float32 copy).
        seed: seed of the noise field, so the op is deterministic.

    Returns:
        ``(C, X, Y, Z)`` float32; background voxels stay 0.
    """
    out = image.astype(np.float32, copy=True)
    if std == 0:
        return out
    mask = foreground_mask(image)
    noise = np.random.default_rng(seed).standard_normal(out.shape, dtype=np.float32)
    out += noise * np.float32(std) * mask[None]
    return out


# --------------------------------------------------------------------------- random transforms


class RandomTransform(Protocol[ParamsT]):
    """Draws parameters, then applies a deterministic op with them."""

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> ParamsT:
        """Draw the parameters for one sample (identity values when the transform is skipped)."""

    def apply(self, image: np.ndarray, label: np.ndarray, params: ParamsT) -> tuple[np.ndarray, np.ndarray]:
        """Apply the op: ``(C, X, Y, Z), (X, Y, Z)`` -> same shapes."""


@dataclass(frozen=True)
class FlipParams:
    """Spatial axes to mirror (empty: none)."""

    axes: tuple[int, ...] = ()


@dataclass(frozen=True)
class RandomFlip:
    """Mirror each spatial axis independently with probability ``prob``."""

    prob: float = 0.5

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> FlipParams:
        if self.prob == 0:
            return FlipParams()
        return FlipParams(tuple(a for a in range(3) if rng.random() < self.prob))

    def apply(self, image: np.ndarray, label: np.ndarray, params: FlipParams) -> tuple[np.ndarray, np.ndarray]:
        return flip(image, label, params.axes)


@dataclass(frozen=True)
class AffineParams:
    """Rotation angles about axes 0, 1, 2 (degrees) and isotropic zoom."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    @property
    def is_identity(self) -> bool:
        """True when neither rotation nor zoom is applied."""
        return self.scale == 1.0 and all(a == 0.0 for a in self.rotation_deg)


@dataclass(frozen=True)
class RandomAffine:
    """Rotate (``rotate_prob``, angles uniform in +-``max_rotation_deg`` about each axis)
    and zoom (``scale_prob``, factor uniform in ``scale_range``) image and label jointly."""

    rotate_prob: float = 0.2
    max_rotation_deg: float = 15.0
    scale_prob: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> AffineParams:
        rotation = (0.0, 0.0, 0.0)
        scale = 1.0
        if self.rotate_prob > 0 and rng.random() < self.rotate_prob:
            rotation = tuple(float(a) for a in rng.uniform(-self.max_rotation_deg, self.max_rotation_deg, size=3))  # type: ignore[assignment]
        if self.scale_prob > 0 and rng.random() < self.scale_prob:
            scale = float(rng.uniform(*self.scale_range))
        return AffineParams(rotation, scale)

    def apply(self, image: np.ndarray, label: np.ndarray, params: AffineParams) -> tuple[np.ndarray, np.ndarray]:
        """Rotate/zoom about the volume's centre voxel, keeping the shape."""
        if params.is_identity:
            return image, label
        shape = label.shape
        return affine_crop(image, label, [s // 2 for s in shape], shape, params.rotation_deg, params.scale)


@dataclass(frozen=True)
class IntensityParams:
    """Per-channel multiplicative factors and shifts (in channel standard deviations)."""

    scale: tuple[float, ...] = ()
    shift: tuple[float, ...] = ()


@dataclass(frozen=True)
class RandomIntensity:
    """With probability ``prob``, scale each channel by ``U(scale_range)`` and shift it by
    ``U(-shift, shift)`` of its standard deviation."""

    prob: float = 0.15
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.1

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> IntensityParams:
        if self.prob == 0 or rng.random() >= self.prob:
            return IntensityParams()
        scale = rng.uniform(*self.scale_range, size=num_channels)
        shift = rng.uniform(-self.shift, self.shift, size=num_channels)
        return IntensityParams(tuple(float(s) for s in scale), tuple(float(s) for s in shift))

    def apply(self, image: np.ndarray, label: np.ndarray, params: IntensityParams) -> tuple[np.ndarray, np.ndarray]:
        if not params.scale:
            return image, label
        return scale_shift_intensity(image, params.scale, params.shift), label


@dataclass(frozen=True)
class GammaParams:
    """Per-channel gamma exponents (empty: none)."""

    gamma: tuple[float, ...] = ()


@dataclass(frozen=True)
class RandomGamma:
    """With probability ``prob``, a per-channel gamma drawn from ``gamma_range``.

    When the range straddles 1, a fair coin picks ``U(low, 1)`` or ``U(1, high)`` for each
    channel (nnU-Net), so brightening and darkening are equally likely.
    """

    prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> GammaParams:
        if self.prob == 0 or rng.random() >= self.prob:
            return GammaParams()
        low, high = self.gamma_range
        gammas = []
        for _ in range(num_channels):
            if low < 1.0 < high:
                gammas.append(float(rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)))
            else:
                gammas.append(float(rng.uniform(low, high)))
        return GammaParams(tuple(gammas))

    def apply(self, image: np.ndarray, label: np.ndarray, params: GammaParams) -> tuple[np.ndarray, np.ndarray]:
        if not params.gamma:
            return image, label
        return gamma_transform(image, params.gamma), label


@dataclass(frozen=True)
class NoiseParams:
    """Noise standard deviation (0: none) and the seed of the noise field."""

    std: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class RandomNoise:
    """With probability ``prob``, Gaussian noise of standard deviation ``U(0, max_std)``."""

    prob: float = 0.1
    max_std: float = 0.1

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> NoiseParams:
        if self.prob == 0 or rng.random() >= self.prob:
            return NoiseParams()
        return NoiseParams(float(rng.uniform(0.0, self.max_std)), int(rng.integers(2**63 - 1)))

    def apply(self, image: np.ndarray, label: np.ndarray, params: NoiseParams) -> tuple[np.ndarray, np.ndarray]:
        if params.std == 0:
            return image, label
        return add_noise(image, params.std, params.seed), label


def _resample_axis(volume: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``volume`` linearly interpolated to ``size`` samples along ``axis`` (first and last samples kept in place)."""
    n = volume.shape[axis]
    position = np.linspace(0.0, n - 1.0, size)
    below = np.minimum(np.floor(position).astype(np.intp), n - 2)
    weight = (position - below).astype(np.float32)
    shape = [1] * volume.ndim
    shape[axis] = size
    weight = weight.reshape(shape)
    low, high = np.take(volume, below, axis=axis), np.take(volume, below + 1, axis=axis)
    return (low * (1 - weight) + high * weight).astype(np.float32, copy=False)


def simulate_thick_slices(image: np.ndarray, channels: Sequence[bool], axis: int, factor: float) -> np.ndarray:
    """The channels of ``image`` (C, X, Y, Z) marked in ``channels`` as if acquired in slices ``factor`` voxels thick
    along spatial ``axis``: averaged over slabs that thick, sampled every ``factor`` voxels and linearly
    interpolated back to the grid. The other channels are left as they are; returns a new array."""
    from scipy.ndimage import uniform_filter1d

    out = image.astype(np.float32, copy=True)
    n = image.shape[axis + 1]
    if n < 2:
        return out
    samples = max(2, round(n / factor))
    for c in np.flatnonzero(channels):
        slabs = uniform_filter1d(out[c], size=max(1, round(factor)), axis=axis, mode="nearest")
        out[c] = _resample_axis(_resample_axis(slabs, axis, samples), axis, n)
    return out


@dataclass(frozen=True)
class LowResolutionParams:
    """The slice axis, the slab thickness in voxels and the channels made thick-sliced (empty: none)."""

    axis: int = 0
    factor: float = 1.0
    channels: tuple[bool, ...] = ()


@dataclass(frozen=True)
class RandomLowResolution:
    """With probability ``prob``, thick slices along one axis (:func:`simulate_thick_slices`), ``U(1.5, max_factor)``
    voxels thick, for each channel with probability 1/2 (at least one). Nothing is drawn from ``rng`` when ``prob``
    is 0, so presets without it replay as before it existed."""

    prob: float = 0.0
    max_factor: float = 3.0

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> LowResolutionParams:
        if self.prob == 0 or rng.random() >= self.prob:
            return LowResolutionParams()
        axis = int(rng.integers(3))
        factor = float(rng.uniform(1.5, self.max_factor))
        channels = rng.random(num_channels) < 0.5
        if not channels.any():
            channels[int(rng.integers(num_channels))] = True
        return LowResolutionParams(axis, factor, tuple(bool(c) for c in channels))

    def apply(
        self, image: np.ndarray, label: np.ndarray, params: LowResolutionParams
    ) -> tuple[np.ndarray, np.ndarray]:
        if not params.channels:
            return image, label
        return simulate_thick_slices(image, params.channels, params.axis, params.factor), label


@dataclass(frozen=True)
class ModalityDropoutParams:
    """Which channels a sample keeps (empty: all of them)."""

    keep: tuple[bool, ...] = ()


@dataclass(frozen=True)
class RandomModalityDropout:
    """With probability ``prob``, keep a subset of the channels drawn uniformly from the
    ``2^C - 2`` non-empty proper subsets and set the others to 0 (:func:`~glioseg.data.modalities.drop_modalities`).

    Subset ``s`` (1 <= s <= 2^C - 2) keeps channel ``c`` when bit ``c`` of ``s`` is set. Nothing
    is drawn from ``rng`` when ``prob`` is 0, so presets without it replay as before it existed.
    """

    prob: float = 0.0

    def sample_params(self, rng: np.random.Generator, num_channels: int) -> ModalityDropoutParams:
        if self.prob == 0 or num_channels < 2 or rng.random() >= self.prob:
            return ModalityDropoutParams()
        subset = int(rng.integers(1, 2**num_channels - 1))
        return ModalityDropoutParams(tuple(bool(subset >> c & 1) for c in range(num_channels)))

    def apply(
        self, image: np.ndarray, label: np.ndarray, params: ModalityDropoutParams
    ) -> tuple[np.ndarray, np.ndarray]:
        if not params.keep:
            return image, label
        return drop_modalities(image, params.keep), label


# --------------------------------------------------------------------------- the pipeline


def spatial_transform(config: AugmentConfig) -> RandomAffine:
    """The rotation/zoom transform of ``config``."""
    return RandomAffine(config.rotate_prob, config.max_rotation_deg, config.scale_prob, config.scale_range)


def pointwise_transforms(config: AugmentConfig) -> tuple[RandomTransform, ...]:
    """The transforms of ``config`` applied after the spatial one, in order."""
    return (
        RandomFlip(config.flip_prob),
        RandomIntensity(config.intensity_prob, config.intensity_scale_range, config.intensity_shift),
        RandomGamma(config.gamma_prob, config.gamma_range),
        RandomLowResolution(config.lowres_prob, config.lowres_max_factor),
        RandomNoise(config.noise_prob, config.noise_std),
        RandomModalityDropout(config.modality_dropout),
    )


def augment(
    image: np.ndarray,
    label: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    *,
    center: Sequence[int] | np.ndarray | None = None,
    out_shape: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one sample, optionally cutting a patch out of it in the same step.

    The rotation/zoom is fused with the crop (:func:`affine_crop`), so a patch is sampled
    straight from the whole volume: only patch-sized arrays are interpolated and the rotated
    patch is filled with real data rather than padding. Then flips, intensity scale/shift,
    gamma and noise run on the patch. All parameters come from ``rng``, in a fixed order.

    Args:
        image: ``(C, X, Y, Z)`` float.
        label: ``(X, Y, Z)`` integer.
        config: probabilities and ranges.
        rng: the source of all randomness.
        center: input voxel at the patch's voxel ``out_shape // 2`` (default: volume centre).
        out_shape: patch size (default: the volume's shape).

    Returns:
        ``(image (C, *out_shape) float32, label (*out_shape) of label's dtype)``; new arrays,
        the inputs are never modified.
    """
    image, label, _ = _augment(image, label, None, config, rng, center, out_shape)
    return image, label


def augment_with_targets(
    image: np.ndarray,
    label: np.ndarray,
    targets: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    *,
    center: Sequence[int] | np.ndarray | None = None,
    out_shape: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`augment` that also carries soft targets, sampled like the image.

    ``targets`` (``(K, X, Y, Z)`` float, e.g. the WT/TC/ET fractions of
    :func:`glioseg.data.preprocess.region_fractions`) go through the rotation/zoom crop
    (trilinear, 0 outside the volume) and the flips exactly as the image channels do, and
    through no intensity op. The same ``rng`` draws give the same image and label as
    :func:`augment`.

    Returns:
        ``(image (C, *out_shape) float32, label (*out_shape), targets (K, *out_shape) float32)``.
    """
    image, label, out = _augment(image, label, targets, config, rng, center, out_shape)
    assert out is not None
    return image, label, out


def _augment(
    image: np.ndarray,
    label: np.ndarray,
    targets: np.ndarray | None,
    config: AugmentConfig,
    rng: np.random.Generator,
    center: Sequence[int] | np.ndarray | None,
    out_shape: Sequence[int] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    shape = tuple(label.shape) if out_shape is None else tuple(int(s) for s in out_shape)
    if center is None:
        center = [s // 2 for s in label.shape]
    num_channels = image.shape[0]
    affine = spatial_transform(config).sample_params(rng, num_channels)
    stacked = image if targets is None else np.concatenate([image, targets], axis=0, dtype=np.float32)
    stacked, label = affine_crop(stacked, label, center, shape, affine.rotation_deg, affine.scale)
    image, targets = (stacked, None) if targets is None else (stacked[:num_channels], stacked[num_channels:])
    for transform in pointwise_transforms(config):
        params = transform.sample_params(rng, num_channels)
        image, label = transform.apply(image, label, params)
        if targets is not None and isinstance(params, FlipParams) and params.axes:
            targets = np.ascontiguousarray(np.flip(targets, axis=tuple(a + 1 for a in params.axes)))
    return image, label, targets
