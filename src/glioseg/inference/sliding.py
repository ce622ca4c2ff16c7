"""Sliding-window inference over whole volumes (MONAI's, with Gaussian blending) and its settings.

Validation during training and ``glioseg predict`` both run :func:`sliding_window_probabilities`
with the ``inference`` section of the preset (:class:`InferenceConfig`): windows of
probabilities (not logits) are blended, then :func:`glioseg.heads.probabilities_to_labels`
decides the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from glioseg.heads import to_probabilities

BLENDS = ("gaussian", "constant")


@dataclass(frozen=True)
class InferenceConfig:
    """How whole volumes are segmented, in validation and prediction (the ``inference`` section).

    The window is the training patch size (``train.patch_size``) unless the predictor is given another.

    Attributes:
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        sw_batch_size: windows per forward pass (speed and memory only).
        blend: ``gaussian`` (nnU-Net) or ``constant`` weighting of overlapping windows.
        mirror: average over the 8 axis flips (test-time augmentation; 8 times slower).
        region_threshold: ``regions`` head: a region is present where its probability exceeds this.

    Raises:
        ValueError: a value out of its range.
    """

    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: str = "gaussian"
    mirror: bool = False
    region_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap {self.overlap} is outside [0, 1); give an overlap such as 0.5")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size {self.sw_batch_size} must be at least 1")
        if self.blend not in BLENDS:
            raise ValueError(f"unknown blend {self.blend!r}; choose one of {', '.join(BLENDS)}")
        if not 0 < self.region_threshold < 1:
            raise ValueError(f"region_threshold {self.region_threshold} is outside (0, 1)")


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
        head: ``classes`` or ``regions`` (see :mod:`glioseg.heads`).
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

    kwargs: dict[str, Any] = dict(roi_size=tuple(patch_size), sw_batch_size=sw_batch_size, predictor=predict, overlap=overlap, mode=blend)
    probs: torch.Tensor = sliding_window_inference(image, **kwargs)  # type: ignore[assignment]  # one tensor for a tensor predictor
    if mirror:
        flips = [(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        for axes in flips:
            probs = probs + torch.flip(sliding_window_inference(torch.flip(image, axes), **kwargs), axes)  # type: ignore[arg-type]
        probs = probs / (len(flips) + 1)
    return probs.as_tensor() if hasattr(probs, "as_tensor") else probs
