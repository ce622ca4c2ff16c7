"""Sliding-window inference over whole volumes (MONAI's, with Gaussian blending) and head activations."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from glioseg.labels import classes_from_regions


def to_probabilities(logits: torch.Tensor, head: str) -> torch.Tensor:
    """Logits (N, K, ...) -> probabilities: softmax over classes, or independent sigmoids over regions."""
    return torch.softmax(logits, dim=1) if head == "classes" else torch.sigmoid(logits)


def probabilities_to_labels(probabilities: np.ndarray, head: str, threshold: float = 0.5) -> np.ndarray:
    """Probabilities (K, X, Y, Z) -> internal label map (X, Y, Z) uint8.

    ``classes``: argmax over the 4 classes. ``regions``: WT/TC/ET thresholded and nested
    (see :func:`glioseg.labels.classes_from_regions`).
    """
    if head == "classes":
        return np.argmax(probabilities, axis=0).astype(np.uint8)
    return classes_from_regions(probabilities > threshold)


@torch.no_grad()
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
        head: ``classes`` or ``regions``.
        patch_size: window size; a volume smaller than it is padded by MONAI and cropped back.
        overlap: fraction of overlap between windows.
        sw_batch_size: windows per forward pass.
        mirror: average over the 8 axis flips (test-time augmentation).
        blend: ``gaussian`` (nnU-Net) or ``constant``.

    Returns:
        (N, K, X, Y, Z) probabilities on the image's device.
    """
    def predict(x: torch.Tensor) -> torch.Tensor:
        return to_probabilities(model(x), head)

    kwargs = dict(roi_size=tuple(patch_size), sw_batch_size=sw_batch_size, predictor=predict, overlap=overlap, mode=blend)
    probs = sliding_window_inference(image, **kwargs)
    if mirror:
        flips = [(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        for axes in flips:
            probs = probs + torch.flip(sliding_window_inference(torch.flip(image, axes), **kwargs), axes)
        probs = probs / (len(flips) + 1)
    return probs.as_tensor() if hasattr(probs, "as_tensor") else probs
