"""Sliding-window inference over whole volumes (Gaussian blending) and its settings.

Validation during training and ``glioseg predict`` both run :func:`sliding_window_probabilities`
with the ``inference`` section of the preset (:class:`InferenceConfig`): windows of
probabilities (not logits) are blended, then :func:`glioseg.heads.probabilities_to_labels`
decides the labels.

The windows, their Gaussian weights and the blending are those of MONAI's
``sliding_window_inference`` (same window positions, ``sigma_scale`` 0.125, weights clamped
at 1e-3, volumes smaller than a window padded symmetrically with zeros), written out here so
that predicting does not import MONAI (about 1 s per process on an idle 2-core machine, several
under load); ``tests/inference/test_sliding.py`` checks that both give the same probabilities.

The ``*_numpy`` functions are the same sliding window on numpy arrays, for networks run by a runtime
(:mod:`glioseg.inference.backends`): with them a prediction on ONNX Runtime or OpenVINO imports no
PyTorch. They do the same arithmetic in the same order (float32), so their probabilities equal the
torch functions' to float rounding (``tests/inference/test_sliding.py`` compares them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from glioseg.config.sections import BLENDS, InferenceConfig  # noqa: F401  (re-exported: defined with the settings)
from glioseg.heads import to_probabilities

if TYPE_CHECKING:
    import torch
    from torch import nn

MIRROR_AXES = ((2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
"""The 7 flips (besides none) of ``mirror``, as axes of (N, C, X, Y, Z)."""


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of ``size`` voxels (``size >= window``), as MONAI places them.

    The step is ``int(window * (1 - overlap))`` (at least 1; a whole window when ``size == window``);
    the last window is moved back to end at the volume's edge.
    """
    step = window if window == size else max(int(window * (1 - overlap)), 1)
    count = next((d for d in range(math.ceil(size / step)) if d * step + window >= size), 0) + 1
    return [min(d * step, size - window) for d in range(count)]


def window_layout(
    shape: Sequence[int], window: Sequence[int], overlap: float
) -> tuple[tuple[int, ...], list[tuple[int, int]], tuple[int, ...], list[tuple[slice, ...]]]:
    """Where the windows of a (X, Y, Z) volume lie, for :func:`blend_windows` and :func:`blend_windows_numpy`.

    Returns:
        ``(window, pads, size, boxes)``: the window as ints; per axis the zero-padding (before,
        after) of an axis shorter than the window (the extra voxel after); the padded size; and each
        window's box in the padded volume.
    """
    window = tuple(int(n) for n in window)
    pads = [(max(w - n, 0) // 2, max(w - n, 0) - max(w - n, 0) // 2) for w, n in zip(window, shape, strict=True)]
    size = tuple(int(n) + a + b for n, (a, b) in zip(shape, pads, strict=True))
    starts = itertools.product(*(window_starts(n, w, overlap) for n, w in zip(size, window, strict=True)))
    boxes = [tuple(slice(s, s + w) for s, w in zip(corner, window, strict=True)) for corner in starts]
    return window, pads, size, boxes


def gaussian_weights(window: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """(X, Y, Z) float32 blending weights: a Gaussian with sigma ``sigma_scale * window`` per axis,
    peak 1 at the window's centre, clamped below at 1e-3 (MONAI's ``compute_importance_map``)."""
    import torch

    weights: torch.Tensor | None = None
    for axis, n in enumerate(window):
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * (n * sigma_scale) ** 2))
        weights = x if weights is None else weights.unsqueeze(-1) * x[(None,) * axis]
    assert weights is not None
    return torch.clamp_(weights, min=max(float(weights.min()), 1e-3))


def blend_windows(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    blend: str = "gaussian",
) -> torch.Tensor:
    """Run ``predict`` on overlapping windows of ``image`` and blend its outputs into one volume.

    Args:
        predict: (B, C, *window) -> (B, K, *window), a new tensor (it is weighted in place); its
            input is one buffer refilled for every batch.
        image: (N, C, X, Y, Z); an axis shorter than the window is zero-padded on both sides
            (the extra voxel after) and cropped back.
        window: window size.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        sw_batch_size: windows per call of ``predict``.
        blend: ``gaussian`` or ``constant`` weights.

    Returns:
        (N, K, X, Y, Z): sum of weighted outputs over sum of weights, per voxel.
    """
    import torch

    window, pads, size, boxes = window_layout(image.shape[2:], window, overlap)
    if any(a or b for a, b in pads):
        image = torch.nn.functional.pad(image, [v for pair in reversed(pads) for v in pair])
    weights = (gaussian_weights(window) if blend == "gaussian" else torch.ones(window)).to(image.device, image.dtype)
    output: torch.Tensor | None = None
    count = torch.zeros((1, 1, *size), dtype=image.dtype, device=image.device)
    for box in boxes:
        count[(slice(None), slice(None), *box)] += weights
    jobs: list[tuple[int, tuple[slice, ...]]] = [(n, box) for n in range(image.shape[0]) for box in boxes]
    windows = torch.empty(
        (min(sw_batch_size, len(jobs)), image.shape[1], *window), dtype=image.dtype, device=image.device
    )
    for first in range(0, len(jobs), sw_batch_size):
        batch = jobs[first:first + sw_batch_size]
        for slot, (n, box) in enumerate(batch):  # one batch buffer, filled in place (no new tensor per batch)
            windows[slot].copy_(image[n][(slice(None), *box)])
        out = predict(windows[: len(batch)])
        if output is None:
            output = torch.zeros((image.shape[0], out.shape[1], *size), dtype=image.dtype, device=image.device)
        out = out.to(image.dtype).mul_(weights)  # predict's output is weighted in place
        for (n, box), piece in zip(batch, out, strict=True):
            output[n][(slice(None), *box)] += piece  # a view: adds into output
    assert output is not None  # at least one window
    output = output.div_(count)
    return output[(slice(None), slice(None), *(slice(a, n - b) for (a, b), n in zip(pads, size, strict=True)))]


def sliding_window_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    *,
    head: str,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    mirror: bool = False,
    blend: str = "gaussian",
) -> torch.Tensor:
    """Predict probabilities over a whole volume.

    Args:
        model: network returning logits.
        image: (N, C, X, Y, Z) on the model's device.
        head: ``classes`` or ``regions`` (see :mod:`glioseg.heads`).
        patch_size: window size; a volume smaller than it is padded by MONAI and cropped back.
        overlap: fraction of overlap between windows.
        sw_batch_size: windows per forward pass.
        mirror: average over the 8 axis flips (test-time augmentation).
        blend: ``gaussian`` (nnU-Net) or ``constant``.

    Returns:
        (N, K, X, Y, Z) probabilities on the image's device.
    """

    import torch

    def predict(x: torch.Tensor) -> torch.Tensor:
        return to_probabilities(model(x), head)

    def run(x: torch.Tensor) -> torch.Tensor:
        return blend_windows(predict, x, patch_size, overlap=overlap, sw_batch_size=sw_batch_size, blend=blend)

    with torch.no_grad():
        probs = run(image)
        if mirror:
            for axes in MIRROR_AXES:
                probs = probs + torch.flip(run(torch.flip(image, axes)), axes)
            probs = probs / (len(MIRROR_AXES) + 1)
    return probs


def gaussian_weights_numpy(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """:func:`gaussian_weights` as a float32 numpy array, computed in float32 in the same order."""
    weights: np.ndarray | None = None
    for axis, n in enumerate(window):
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)
        x = np.exp(x**2 / np.float32(-2 * (n * sigma_scale) ** 2))
        weights = x if weights is None else weights[..., None] * x[(None,) * axis]
    assert weights is not None
    return np.maximum(weights, np.float32(max(float(weights.min()), 1e-3)))


def blend_windows_numpy(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    window: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    blend: str = "gaussian",
) -> np.ndarray:
    """:func:`blend_windows` on numpy arrays: the same windows, weights and blending, without PyTorch.

    Args:
        predict: (B, C, *window) -> (B, K, *window) float32, a new array (it is weighted in place).
        image: (N, C, X, Y, Z) float32.
        window, overlap, sw_batch_size, blend: as for :func:`blend_windows`.

    Returns:
        (N, K, X, Y, Z) float32.
    """
    window, pads, size, boxes = window_layout(image.shape[2:], window, overlap)
    if any(a or b for a, b in pads):
        image = np.pad(image, [(0, 0), (0, 0), *pads])
    weights = (gaussian_weights_numpy(window) if blend == "gaussian" else np.ones(window, np.float32)).astype(
        image.dtype, copy=False
    )
    output: np.ndarray | None = None
    count = np.zeros((1, 1, *size), dtype=image.dtype)
    for box in boxes:
        count[(slice(None), slice(None), *box)] += weights
    jobs: list[tuple[int, tuple[slice, ...]]] = [(n, box) for n in range(image.shape[0]) for box in boxes]
    windows = np.empty((min(sw_batch_size, len(jobs)), image.shape[1], *window), dtype=image.dtype)
    for first in range(0, len(jobs), sw_batch_size):
        batch = jobs[first:first + sw_batch_size]
        for slot, (n, box) in enumerate(batch):
            windows[slot] = image[n][(slice(None), *box)]
        out = predict(windows[: len(batch)]).astype(image.dtype, copy=False)
        if output is None:
            output = np.zeros((image.shape[0], out.shape[1], *size), dtype=image.dtype)
        out *= weights
        for (n, box), piece in zip(batch, out, strict=True):
            output[n][(slice(None), *box)] += piece
    assert output is not None  # at least one window
    output /= count
    return output[(slice(None), slice(None), *(slice(a, n - b) for (a, b), n in zip(pads, size, strict=True)))]


def sliding_window_probabilities_numpy(
    network: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    head: str,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    mirror: bool = False,
    blend: str = "gaussian",
) -> np.ndarray:
    """:func:`sliding_window_probabilities` for a network on numpy arrays (a runtime's), without PyTorch.

    Args:
        network: (B, C, *window) float32 -> (B, K, *window) logits.
        image: (N, C, X, Y, Z) float32.
        head, patch_size, overlap, sw_batch_size, mirror, blend: as for :func:`sliding_window_probabilities`.

    Returns:
        (N, K, X, Y, Z) float32 probabilities.
    """

    def predict(x: np.ndarray) -> np.ndarray:
        return to_probabilities(np.asarray(network(x), dtype=np.float32), head)

    def run(x: np.ndarray) -> np.ndarray:
        return blend_windows_numpy(predict, x, patch_size, overlap=overlap, sw_batch_size=sw_batch_size, blend=blend)

    probs = run(image)
    if mirror:
        for axes in MIRROR_AXES:
            probs = probs + np.flip(run(np.flip(image, axes)), axes)
        probs = probs / (len(MIRROR_AXES) + 1)
    return probs
