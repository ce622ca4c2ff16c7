"""What a network's output channels mean: the two heads, their activation, targets and labels.

A network returns logits ``(N, K, X, Y, Z)``; everything that gives those channels a meaning
lives here, next to the label table it is a fact of (:mod:`glioseg.labels`):

==========  ==================================  ==========  =========================================
head        channels (K)                        activation  probabilities -> internal labels
==========  ==================================  ==========  =========================================
``classes`` 4: background, NCR, ED, ET           softmax     argmax over the 4 classes
``regions`` 3: WT, TC, ET (nested regions)       sigmoid     each region where p > threshold, nested
==========  ==================================  ==========  =========================================

Training targets (:func:`label_targets`) are built from the same table: one-hot classes or the
WT/TC/ET masks of :data:`glioseg.labels.REGIONS`. Validation and prediction both turn
probabilities into labels with :func:`probabilities_to_labels`, so the checkpoint is chosen by
the labels that ``glioseg predict`` writes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeGuard, TypeVar

import numpy as np

from glioseg.config.sections import HEADS  # re-exported: the choice list lives with the model settings
from glioseg.labels import BACKGROUND, CLASS_NAMES, EDEMA, ENHANCING, NECROSIS, NUM_CLASSES, REGION_NAMES, REGIONS

if TYPE_CHECKING:
    import torch

_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before they are turned back into logits

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


def is_tensor(value: object) -> TypeGuard[torch.Tensor]:
    """Whether ``value`` is a torch tensor, without importing PyTorch (no tensor exists before it is imported)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)



def check_head(head: str) -> None:
    """Raise ``ValueError`` (listing the heads) if ``head`` is not one of :data:`HEADS`."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")


def head_channels(head: str) -> int:
    """Number of output channels of ``head``: :data:`~glioseg.labels.NUM_CLASSES` or one per region.

    Raises:
        ValueError: if ``head`` is not one of :data:`HEADS`.
    """
    check_head(head)
    return NUM_CLASSES if head == "classes" else len(REGION_NAMES)


def channel_names(head: str) -> tuple[str, ...]:
    """Names of the output channels: the 4 classes (background first) or ``wt``, ``tc``, ``et``."""
    check_head(head)
    return CLASS_NAMES if head == "classes" else REGION_NAMES


def has_background_channel(head: str) -> bool:
    """Whether channel 0 is the background class (``classes``); regions have no background channel."""
    check_head(head)
    return head == "classes"


def to_probabilities(logits: ArrayT, head: str) -> ArrayT:
    """Logits ``(N, K, ...)`` -> probabilities: softmax over classes, or independent sigmoids over regions.

    A tensor goes through ``torch.softmax``/``torch.sigmoid``; a numpy array (the runtimes' path, no PyTorch)
    through the same arithmetic in numpy, in the array's dtype: ``exp(x - max) / sum`` over the channels,
    ``1 / (1 + exp(-x))`` (equal to torch's to float rounding; ``tests/test_heads.py`` compares them).
    """
    check_head(head)
    if isinstance(logits, np.ndarray):
        if head == "classes":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return np.divide(shifted, shifted.sum(axis=1, keepdims=True), out=shifted)
        out = np.negative(logits)
        with np.errstate(over="ignore"):  # exp(-x) of a logit below about -88 is inf, and 1 / (1 + inf) the exact 0
            np.exp(out, out=out)
        out += 1
        return np.reciprocal(out, out=out)
    import torch

    return torch.softmax(logits, dim=1) if head == "classes" else torch.sigmoid(logits)


def probabilities_to_logits(probabilities: torch.Tensor, head: str) -> torch.Tensor:
    """The inverse of :func:`to_probabilities`, for losses of blended probabilities.

    ``classes``: ``log p`` (softmax of it gives ``p`` back); ``regions``: ``log(p / (1 - p))``.
    Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` first, so the logits are finite.

    Args:
        probabilities: ``(N, K, ...)`` probabilities of ``head``.
        head: ``classes`` or ``regions``.

    Returns:
        ``(N, K, ...)`` float logits.
    """
    import torch

    check_head(head)
    p = probabilities.float().clamp(_EPS, 1 - _EPS)
    return torch.log(p) if head == "classes" else torch.log(p) - torch.log1p(-p)


def check_labels(labels: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``labels`` is an integer tensor of internal class values 0-3."""
    import torch

    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer label map, got dtype {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"labels must hold internal class values 0-{NUM_CLASSES - 1}; "
            "convert source label maps with glioseg.labels.to_internal first"
        )


def label_targets(labels: torch.Tensor, head: str) -> torch.Tensor:
    """Turn an internal label map into the float target of a head.

    Args:
        labels: ``(B, X, Y, Z)`` integer label map, internal convention (values 0-3).
        head: ``"classes"`` for one-hot classes, ``"regions"`` for WT/TC/ET masks.

    Returns:
        ``(B, 4, X, Y, Z)`` one-hot classes (background first) for the ``classes`` head, or
        ``(B, 3, X, Y, Z)`` region masks (WT, TC, ET) for the ``regions`` head, as float32 0/1.

    Raises:
        ValueError: if ``labels`` is not an integer tensor with values 0-3, or the head is unknown.
    """
    import torch
    import torch.nn.functional as F

    check_labels(labels)
    check_head(head)
    classes = F.one_hot(labels.long(), NUM_CLASSES).movedim(-1, 1).float()
    if head == "classes":
        return classes
    # Classes are exclusive, so the sum of a region's member channels is 0 or 1.
    return torch.stack([classes[:, list(members)].sum(dim=1) for members in REGIONS.values()], dim=1)


def probabilities_to_labels(probabilities: ArrayT, head: str, threshold: float = 0.5, *, axis: int = 0) -> ArrayT:
    """Probabilities -> internal label map (``uint8``), the one rule of validation and prediction.

    ``classes``: argmax over the 4 classes (``threshold`` unused). ``regions``: WT, TC and ET
    where their probability exceeds ``threshold``, nested: ET wins inside TC, TC (as
    necrosis) wins inside WT, the rest of WT is edema.

    Args:
        probabilities: ``(K, X, Y, Z)`` (or with the channel axis at ``axis``, e.g. ``(B, K, ...)``
            with ``axis=1``), a numpy array or a torch tensor.
        head: ``classes`` or ``regions``.
        threshold: region threshold (``regions`` head).
        axis: the channel axis.

    Returns:
        The label map without the channel axis, of the input's kind (a tensor stays on its device).
    """
    check_head(head)
    if isinstance(probabilities, np.ndarray):
        if head == "classes":
            return np.argmax(probabilities, axis=axis).astype(np.uint8)
        wt, tc, et = (np.take(probabilities, i, axis=axis) > threshold for i in range(3))
        labels = np.full(wt.shape, BACKGROUND, dtype=np.uint8)
    else:  # a tensor
        import torch

        if head == "classes":
            return probabilities.argmax(dim=axis).to(torch.uint8)
        wt, tc, et = (probabilities.select(axis, i) > threshold for i in range(3))
        labels = torch.full_like(wt, BACKGROUND, dtype=torch.uint8)
    labels[wt] = EDEMA
    labels[tc] = NECROSIS
    labels[et] = ENHANCING
    return labels
