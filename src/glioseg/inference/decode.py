"""The one decode step: probabilities on the preprocessed grid -> labels -> post-processing -> the original grid.

Validation (:func:`glioseg.training.loop.validate`) and ``glioseg predict``
(:class:`~glioseg.inference.predictor.Predictor`) both decode with :func:`decode`, so the Dice
that picks ``best.pt`` is the Dice of the labels ``predict`` writes, on every recipe (a 2 mm
recipe included):

1. the probabilities are interpolated (trilinear) from the preprocessed grid to the crop at the
   original resolution;
2. labels are decided there (:func:`glioseg.heads.probabilities_to_labels`: argmax, or nested
   region thresholds with ``inference.region_threshold``);
3. the ``postprocess`` section runs on the crop (outside it all is background);
4. the crop is pasted into a background volume of the original shape.

Probabilities given as a tensor are interpolated by PyTorch (``F.interpolate``); as a numpy array (the
runtimes' path, which imports no PyTorch) by :func:`glioseg.data.preprocess.resize_image_numpy`, the
same trilinear interpolation to float rounding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from glioseg.config import Config, PostprocessConfig
from glioseg.data.preprocess import CropInfo, paste_back, resize_image_numpy
from glioseg.heads import probabilities_to_labels
from glioseg.inference.postprocess import postprocess

if TYPE_CHECKING:
    import torch


def to_labels(
    probabilities: torch.Tensor | np.ndarray,
    head: str,
    region_threshold: float,
    postprocessing: PostprocessConfig,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """(K, X, Y, Z) probabilities -> post-processed internal labels (X, Y, Z) ``uint8`` on the same grid, whose
    voxel size (mm) is ``spacing``."""
    if not isinstance(probabilities, np.ndarray):  # a tensor
        probabilities = probabilities.float().cpu().numpy()
    labels = probabilities_to_labels(probabilities, head, region_threshold)
    return postprocess(labels, postprocessing, spacing)


def decode_crop(
    probabilities: torch.Tensor | np.ndarray,
    crop: CropInfo,
    config: Config,
    postprocessing: PostprocessConfig | None = None,
) -> np.ndarray:
    """Steps 1-3 of :func:`decode`: (K, *crop.shape) probabilities -> post-processed internal labels
    (*crop.cropped_shape) ``uint8`` on the crop at the original resolution (outside it all is background)."""
    if isinstance(probabilities, np.ndarray):
        probabilities = resize_image_numpy(probabilities, crop.cropped_shape)
    elif tuple(probabilities.shape[1:]) != tuple(crop.cropped_shape):
        import torch.nn.functional as F

        probabilities = F.interpolate(
            probabilities[None].float(), size=tuple(crop.cropped_shape), mode="trilinear", align_corners=True
        )[0]
    return to_labels(
        probabilities,
        config.model.head,
        config.inference.region_threshold,
        postprocessing or config.postprocess,
        crop.original_spacing,
    )


def decode(
    probabilities: torch.Tensor | np.ndarray,
    crop: CropInfo,
    config: Config,
    postprocessing: PostprocessConfig | None = None,
) -> np.ndarray:
    """(K, *crop.shape) probabilities -> post-processed internal labels (``uint8``) on the original grid.

    Args:
        probabilities: class (``classes`` head) or region (``regions`` head) probabilities on
            the preprocessed grid (a tensor, or a numpy array: interpolated without PyTorch).
        crop: the case's :class:`~glioseg.data.preprocess.CropInfo`.
        config: ``model.head`` and ``inference.region_threshold`` decide the labels.
        postprocessing: the post-processing (default ``config.postprocess``).

    Returns:
        (*crop.original_shape) ``uint8`` internal labels: :func:`decode_crop` pasted into background.
    """
    return paste_back(decode_crop(probabilities, crop, config, postprocessing), crop, fill=0)
