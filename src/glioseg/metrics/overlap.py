"""Overlap metrics of two boolean masks (Dice, IoU, sensitivity, specificity), the voxel accuracy
of two label maps, and the paper's training-time IoU (torch).

Empty masks follow the BraTS 2023 evaluation toolkit; the table is in :mod:`glioseg.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the paper's metrics take tensors; the rest (and the CLI's import) needs no torch
    import torch

# --- pure binary metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class _Confusion:
    """Voxel counts of a prediction against a reference."""

    tp: int
    fp: int
    fn: int
    tn: int


def _check_masks(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.dtype != bool or ref.dtype != bool:
        raise ValueError(
            f"masks must be boolean arrays, got {pred.dtype} and {ref.dtype} "
            "(for label maps use case_metrics or labels.region_masks)"
        )
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred.shape} vs {ref.shape}")


def _confusion(pred: np.ndarray, ref: np.ndarray) -> _Confusion:
    _check_masks(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    return _Confusion(tp=tp, fp=predicted - tp, fn=actual - tp, tn=pred.size - predicted - actual + tp)


def _dice(c: _Confusion) -> float:
    denominator = 2 * c.tp + c.fp + c.fn
    return 1.0 if denominator == 0 else 2 * c.tp / denominator


def _iou(c: _Confusion) -> float:
    denominator = c.tp + c.fp + c.fn
    return 1.0 if denominator == 0 else c.tp / denominator


def _sensitivity(c: _Confusion) -> float:
    if c.tp + c.fn == 0:  # empty reference: perfect only if the prediction is empty too
        return 1.0 if c.fp == 0 else 0.0
    return c.tp / (c.tp + c.fn)


def _specificity(c: _Confusion) -> float:
    if c.tn + c.fp == 0:  # reference has no negatives: perfect only if the prediction has none
        return 1.0 if c.fn == 0 else 0.0
    return c.tn / (c.tn + c.fp)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2 |P & R| / (|P| + |R|)``; 1 when both masks are empty.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _dice(_confusion(pred, ref))


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|P & R| / |P | R|``; 1 when both masks are empty.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _iou(_confusion(pred, ref))


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall) ``TP / (TP + FN)``.

    With an empty reference: 1 if the prediction is empty too, else 0.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _sensitivity(_confusion(pred, ref))


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity ``TN / (TN + FP)``, i.e. :func:`sensitivity` of the complements.

    With a reference that is all foreground: 1 if the prediction is too, else 0.

    Args:
        pred: boolean prediction mask, any shape.
        ref: boolean reference mask, same shape.
    """
    return _specificity(_confusion(pred, ref))

# --- label maps -------------------------------------------------------------------------------

def accuracy(pred_labels: np.ndarray, ref_labels: np.ndarray) -> float:
    """Voxel accuracy: the fraction of voxels whose labels agree (all classes, background included).

    Args:
        pred_labels: predicted label map, any shape.
        ref_labels: reference label map in the same convention, same shape.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    if pred_labels.size == 0:
        return 1.0
    return 1.0 - int(np.count_nonzero(pred_labels != ref_labels)) / pred_labels.size

# --- the paper's training metrics (torch) ----------------------------------------------------


def paper_iou(probs: torch.Tensor, onehot: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU as segmentation_models' ``IOUScore(threshold=0.5)``, the paper's training metric.

    Probabilities above ``threshold`` count as 1; per channel, intersection and union are
    summed over the batch and the voxels, ``(I + 1e-5) / (U + 1e-5)``; then the mean over
    channels (background included).

    Args:
        probs: (B, C, X, Y, Z) probabilities (softmax or sigmoid of the logits).
        onehot: (B, C, X, Y, Z) 0/1 target (one-hot classes or region masks).
        threshold: binarisation threshold (strictly greater counts as foreground).

    Returns:
        Scalar tensor.
    """
    if probs.shape != onehot.shape:
        raise ValueError(f"probs and onehot shapes differ: {tuple(probs.shape)} vs {tuple(onehot.shape)}")
    smooth = 1e-5
    pred = (probs > threshold).to(probs.dtype)
    target = onehot.to(probs.dtype)
    axes = [0, *range(2, probs.ndim)]
    intersection = (pred * target).sum(dim=axes)
    union = (pred + target).sum(dim=axes) - intersection
    return ((intersection + smooth) / (union + smooth)).mean()
