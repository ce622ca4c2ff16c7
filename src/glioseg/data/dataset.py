"""Torch datasets over preprocessed cases held in memory.

A case is ``image (C, X, Y, Z) float32`` (background 0) and ``label (X, Y, Z)`` integer in
the internal convention (0 background, 1 NCR, 2 ED, 3 ET; see :mod:`glioseg.labels`).

Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: its generator is
``np.random.default_rng([seed, e, i])``. Nothing random is kept between items, so the same
batches come out of the main process, of ``DataLoader(num_workers=N)`` for any ``N`` and of
a ``DistributedSampler`` split over ranks. Call ``set_epoch(e)`` before iterating epoch ``e``
(like ``DistributedSampler.set_epoch``); with ``persistent_workers=True`` the workers keep the
epoch they started with, so leave persistent workers off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from glioseg.data.augment import AugmentConfig, augment, augment_with_targets
from glioseg.errors import GliosegError
from glioseg.labels import NUM_CLASSES

logger = logging.getLogger(__name__)

MAX_FOREGROUND_VOXELS = 10_000
"""At most this many voxels per class and case are kept as candidate patch centres."""


def _check_cases(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    if len(images) != len(labels):
        raise GliosegError(
            None,
            f"{len(images)} images but {len(labels)} label maps",
            "pass one label map per image, in the same order",
        )
    if not images:
        raise GliosegError(None, "no cases given to the dataset", "pass at least one preprocessed case")
    channels = images[0].shape[0] if images[0].ndim == 4 else None
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        if image.ndim != 4 or label.ndim != 3 or image.shape[1:] != label.shape:
            raise GliosegError(
                None,
                f"case {k}: image {image.shape} and label {label.shape} do not match",
                "images must be (C, X, Y, Z) and labels (X, Y, Z) of the same spatial size",
            )
        if image.shape[0] != channels:
            raise GliosegError(
                None,
                f"case {k} has {image.shape[0]} channels, case 0 has {channels}",
                "stack the same modalities, in the same order, for every case",
            )
        if label.dtype.kind not in "iu" or (label.size and (label.min() < 0 or label.max() >= NUM_CLASSES)):
            raise GliosegError(
                None,
                f"case {k}: label map is not integer in 0-{NUM_CLASSES - 1}",
                "convert label maps to the internal convention with glioseg.labels.to_internal",
            )


def _check_targets(targets: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    if len(targets) != len(labels):
        raise GliosegError(
            None,
            f"{len(targets)} target maps but {len(labels)} label maps",
            "pass one target map per case, in the same order",
        )
    for k, (target, label) in enumerate(zip(targets, labels, strict=True)):
        if target.ndim != 4 or target.shape[1:] != label.shape or target.dtype.kind != "f":
            raise GliosegError(
                None,
                f"case {k}: soft targets {target.shape} ({target.dtype}) do not fit label {label.shape}",
                "targets must be float (K, X, Y, Z) over the label's grid",
            )


def _to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
    )


def foreground_voxels(
    label: np.ndarray, max_voxels: int = MAX_FOREGROUND_VOXELS, seed: int = 0
) -> dict[int, np.ndarray]:
    """Flat indices of each tumor class's voxels, subsampled for memory.

    Args:
        label: ``(X, Y, Z)`` internal label map.
        max_voxels: keep at most this many voxels per class (a seeded random subset).
        seed: seed of the subsampling.

    Returns:
        ``{class: int32 flat indices (sorted)}`` for each class 1-3 present in ``label``.
    """
    if label.size >= 2**31:
        raise GliosegError(None, f"label map of {label.size} voxels is too large", "crop or resample the case")
    rng = np.random.default_rng(seed)
    flat = np.ravel(label)
    voxels = {}
    for value in range(1, NUM_CLASSES):
        index = np.flatnonzero(flat == value)
        if index.size == 0:
            continue
        if index.size > max_voxels:
            index = np.sort(rng.choice(index, size=max_voxels, replace=False))
        voxels[value] = index.astype(np.int32)
    return voxels


class PatchDataset(Dataset):
    """Random, optionally augmented patches for training (nnU-Net-style sampling).

    Each item picks a case uniformly. With probability ``foreground_fraction`` the patch is
    centred on a tumor voxel: a class is chosen uniformly among the tumor classes present in
    the case, then one of its voxels, so small classes (ET, NCR) are seen as often as edema.
    Otherwise the patch is placed uniformly at random. The patch is kept inside the volume
    where the volume is large enough; along a shorter axis the volume is centred in the
    patch and padded with 0 (image and label). Rotation and zoom are applied about the
    patch centre while cropping (see :func:`glioseg.data.augment.augment`).

    Args:
        images: cases, each ``(C, X, Y, Z)`` float32 (kept by reference, not copied).
        labels: label maps, each ``(X, Y, Z)`` integer, internal convention.
        patch_size: ``(x, y, z)``.
        samples_per_epoch: number of items in an epoch.
        foreground_fraction: probability that a patch is centred on tumor.
        augment: augmentation; ``None`` or ``AugmentConfig.none()`` for plain crops.
        seed: base seed; item ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``.
        targets: optional soft targets, one ``(K, X, Y, Z)`` float array per case (e.g. the
            WT/TC/ET fractions of :func:`glioseg.data.preprocess.region_fractions`), cut and
            augmented with the image (:func:`glioseg.data.augment.augment_with_targets`).

    Items are ``(image float32 (C, x, y, z), label int64 (x, y, z))`` tensors, and with
    ``targets`` a third, ``targets float32 (K, x, y, z)``; the image and label are the same
    either way.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: tuple[int, int, int],
        samples_per_epoch: int,
        foreground_fraction: float = 1 / 3,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        targets: Sequence[np.ndarray] | None = None,
    ) -> None:
        _check_cases(images, labels)
        if targets is not None:
            _check_targets(targets, labels)
        if len(patch_size) != 3 or any(int(s) < 1 for s in patch_size):
            raise GliosegError(
                None, f"patch size {tuple(patch_size)} is invalid", "give three positive sizes, e.g. 128 128 128"
            )
        if samples_per_epoch < 1:
            raise GliosegError(None, f"samples_per_epoch={samples_per_epoch}", "use at least 1 sample per epoch")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise GliosegError(
                None, f"foreground_fraction={foreground_fraction} is not in [0, 1]", "use a value in [0, 1]"
            )
        self.images = list(images)
        self.labels = list(labels)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.foreground_fraction = float(foreground_fraction)
        self.augment = AugmentConfig.none() if augment is None else augment
        self.seed = int(seed)
        self.epoch = 0
        self.targets = None if targets is None else list(targets)
        self.foreground = [foreground_voxels(label, seed=self.seed + k) for k, label in enumerate(self.labels)]
        missing = sum(not voxels for voxels in self.foreground)
        if missing and self.foreground_fraction > 0:
            logger.warning(
                "%d of %d cases have no tumor voxels; their patches are placed at random", missing, len(self.labels)
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose items ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def patch_center(self, case: int, rng: np.random.Generator) -> np.ndarray:
        """Draw the centre voxel of a patch of ``case`` (before rotation/zoom).

        Returns:
            ``(3,)`` int64 voxel index; the patch spans ``center - patch_size // 2`` onwards.
        """
        shape = np.array(self.labels[case].shape)
        patch = np.array(self.patch_size)
        half = patch // 2
        voxels = self.foreground[case]
        if voxels and rng.random() < self.foreground_fraction:
            value = list(voxels)[rng.integers(len(voxels))]
            index = voxels[value][rng.integers(voxels[value].size)]
            start = np.array(np.unravel_index(index, shape)) - half
        else:
            start = np.array([rng.integers(0, max(n - p, 0) + 1) for n, p in zip(shape, patch, strict=True)])
        inside = np.clip(start, 0, np.maximum(shape - patch, 0))
        centred = -((patch - shape) // 2)  # the volume centred in a larger patch
        start = np.where(shape >= patch, inside, centred)
        return start + half

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"item {index} out of range for {self.samples_per_epoch} samples per epoch")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        case = int(rng.integers(len(self.images)))
        center = self.patch_center(case, rng)
        if self.targets is None:
            image, label = augment(
                self.images[case], self.labels[case], self.augment, rng, center=center, out_shape=self.patch_size
            )
            return _to_tensors(image, label)
        image, label, targets = augment_with_targets(
            self.images[case],
            self.labels[case],
            self.targets[case],
            self.augment,
            rng,
            center=center,
            out_shape=self.patch_size,
        )
        return (*_to_tensors(image, label), torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)))


class WholeVolumeDataset(Dataset):
    """Whole cases, one item per case (validation, or the paper's 128^3 crops).

    Args:
        images: cases, each ``(C, X, Y, Z)`` float32.
        labels: label maps, each ``(X, Y, Z)`` integer, internal convention.
        augment: augmentation, or ``None`` for the volumes as they are.
        seed: base seed; item ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``.

    Items are ``(image float32 (C, X, Y, Z), label int64 (X, Y, Z))`` tensors of case ``i``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        _check_cases(images, labels)
        self.images = list(images)
        self.labels = list(labels)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation ``__getitem__`` draws."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.images[index], self.labels[index]
        if self.augment is not None and self.augment.enabled:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            image, label = augment(image, label, self.augment, rng)
        return _to_tensors(image, label)
