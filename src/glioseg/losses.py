"""Segmentation losses for the ``classes`` head (softmax) and the ``regions`` head (sigmoid).

Every loss here is called the same way::

    loss = build_loss("dice_focal", head="classes")
    value = loss(logits, labels)

* ``logits``: (B, C, X, Y, Z) float network output, before any activation (networks return
  logits; the loss applies softmax or sigmoid). C is 4 for the ``classes`` head (internal
  classes, background first) and 3 for the ``regions`` head (WT, TC, ET, as ``labels.REGIONS``).
* ``labels``: (B, X, Y, Z) integer label map in the internal convention (0 bg, 1 NCR, 2 ED,
  3 ET). The loss builds its own target from it, one-hot classes or WT/TC/ET region masks
  (:func:`glioseg.heads.label_targets`), so callers pass the same label map whatever the head.
  Or, for the ``regions`` head, soft targets: (B, 3, X, Y, Z) float in [0, 1], shaped like
  the logits (e.g. the share of each voxel in WT/TC/ET,
  :func:`glioseg.data.preprocess.region_fractions`); Dice, focal and BCE take them as they are.

Any number of spatial dimensions works (tests use tiny 2x2x1 volumes).

The paper trains with segmentation_models' ``DiceLoss() + 1 * CategoricalFocalLoss()``;
:func:`build_loss` names that ``"dice_focal"`` and keeps its definitions:

* soft Dice: ``1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s)`` per channel, ``s = 1e-5``,
  sums over the batch and the voxels (``batch=True``, segmentation_models' ``per_image=False``)
  or per sample (``batch=False``), then the mean over channels (and samples);
* categorical focal loss: ``-alpha * (1 - p_c)^gamma * log(p_c)`` for the true class c,
  averaged over batch, voxels *and classes*, exactly as segmentation_models' ``backend.mean``
  does. The value is therefore the per-voxel sum over classes divided by C (4): a factor
  that matters when it is added to Dice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss as MonaiDiceLoss
from torch import nn

from glioseg.config.sections import LOSS_NAMES
from glioseg.errors import GliosegError
from glioseg.heads import HEADS, check_labels, head_channels, label_targets

_KERAS_EPSILON = 1e-7  # segmentation_models / Keras clip probabilities to [eps, 1 - eps]


def _targets(logits: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """The float target of ``head`` for ``labels``: a label map's masks, or soft targets as given."""
    if labels.is_floating_point() and labels.ndim == logits.ndim:
        if head != "regions" or tuple(labels.shape) != tuple(logits.shape):
            raise ValueError(
                f"soft targets need the regions head and the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)} for the {head} head"
            )
        return labels.float()
    _check_inputs(logits, labels, head)
    return label_targets(labels, head)


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor, head: str) -> None:
    channels = head_channels(head)
    if logits.ndim < 3 or logits.shape[1] != channels:
        raise ValueError(
            f"the {head} head needs logits shaped (B, {channels}, *spatial), got {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels must be shaped (B, *spatial) = {expected} like the logits without their channel "
            f"axis, got {tuple(labels.shape)} (squeeze a singleton channel axis first)"
        )


class SoftDiceLoss(nn.Module):
    """Soft Dice loss on softmax (``classes`` head) or sigmoid (``regions`` head) probabilities.

    ``1 - (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)`` per channel, mean over channels.
    Computed by MONAI's ``DiceLoss`` on the target from :func:`glioseg.heads.label_targets`.

    Args:
        head: ``"classes"`` or ``"regions"``.
        include_background: keep the background channel of the ``classes`` head in the mean.
            The ``regions`` head has no background channel; ``False`` is an error there.
        batch: sum over the batch and the voxels before the ratio (one Dice per channel, as
            segmentation_models with ``per_image=False``, the paper's setting); ``False``
            gives one Dice per sample and channel, then the mean.
        smooth: added to numerator and denominator; an absent class predicted absent scores 0 loss.
    """

    def __init__(
        self, *, head: str, include_background: bool = True, batch: bool = True, smooth: float = 1e-5
    ) -> None:
        super().__init__()
        head_channels(head)
        if head == "regions" and not include_background:
            raise ValueError("include_background=False needs the 'classes' head; regions are all tumor")
        self.head = head
        self.dice = MonaiDiceLoss(
            include_background=include_background,
            softmax=head == "classes",
            sigmoid=head == "regions",
            batch=batch,
            smooth_nr=smooth,
            smooth_dr=smooth,
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of (B, C, X, Y, Z) logits against a (B, X, Y, Z) internal label map; a scalar."""
        return self.dice(logits, _targets(logits, labels, self.head))


class FocalLoss(nn.Module):
    """Focal loss, as segmentation_models' ``CategoricalFocalLoss`` / ``BinaryFocalLoss``.

    Class head (softmax, categorical)::

        FL = mean over (b, c, voxel) of  -alpha_c * y_c * (1 - p_c)^gamma * log(p_c)

    i.e. the per-voxel sum over classes averaged over voxels, divided by C.
    Region head (sigmoid per channel, binary)::

        FL = mean over (b, c, voxel) of  -alpha_c * y * (1 - p)^gamma * log(p)
                                          - (1 - alpha_c) * (1 - y) * p^gamma * log(1 - p)

    Written out rather than taken from MONAI, whose ``alpha`` means something else: a scalar
    weights the softmax background by ``1 - alpha``, and a per-class sequence leaves the
    sigmoid negatives unweighted. The tests check it against MONAI where the two coincide.

    Args:
        head: ``"classes"`` or ``"regions"``.
        alpha: weight of each class (``classes`` head) or of the positives of each region
            (``regions`` head); one value for all channels, or one per channel.
        gamma: focusing exponent; 0 gives alpha-weighted cross-entropy.
    """

    def __init__(self, *, head: str, alpha: float | Sequence[float] = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        channels = head_channels(head)
        alphas = [float(alpha)] * channels if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
        if len(alphas) != channels:
            raise ValueError(f"the {head} head needs {channels} alpha values, got {len(alphas)}")
        self.head = head
        self.gamma = gamma
        self.register_buffer("alpha", torch.tensor(alphas), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of (B, C, X, Y, Z) logits against a (B, X, Y, Z) internal label map; a scalar."""
        target = _targets(logits, labels, self.head)
        logits = logits.float()
        alpha = self.alpha.view(1, -1, *([1] * (logits.ndim - 2)))  # type: ignore[operator]
        if self.head == "classes":
            log_p = torch.log_softmax(logits, dim=1)
            # 1 - p floored at eps as segmentation_models does: (1 - p)^gamma stays differentiable
            # at p = 1 for gamma < 1
            not_p = (1 - log_p.exp()).clamp_min(_KERAS_EPSILON)
            loss = -alpha * target * not_p**self.gamma * log_p
        else:
            log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
            # p^gamma as exp(gamma log p): no 0^gamma in the graph for saturated logits
            positives = -alpha * target * torch.exp(self.gamma * log_not_p) * log_p
            negatives = -(1 - alpha) * (1 - target) * torch.exp(self.gamma * log_p) * log_not_p
            loss = positives + negatives
        return loss.mean()


class BinaryCrossEntropyLoss(nn.Module):
    """Binary cross-entropy averaged over batch, channels and voxels (the paper's Table II).

    Region head: BCE of the sigmoid of each channel against its WT/TC/ET mask, computed from
    logits. Class head: as Keras' ``binary_crossentropy`` on the softmax output against the
    one-hot classes, with the probabilities clipped to [1e-7, 1 - 1e-7] before the log.

    Args:
        head: ``"classes"`` or ``"regions"``.
    """

    def __init__(self, *, head: str) -> None:
        super().__init__()
        head_channels(head)
        self.head = head

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of (B, C, X, Y, Z) logits against a (B, X, Y, Z) internal label map; a scalar."""
        target = _targets(logits, labels, self.head)
        if self.head == "regions":
            return F.binary_cross_entropy_with_logits(logits.float(), target)
        probs = torch.softmax(logits.float(), dim=1).clamp(_KERAS_EPSILON, 1 - _KERAS_EPSILON)
        return F.binary_cross_entropy(probs, target)


class CrossEntropyLoss(nn.Module):
    """Categorical cross-entropy of the ``classes`` head's softmax, averaged over batch and voxels."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of (B, 4, X, Y, Z) logits against a (B, X, Y, Z) internal label map; a scalar."""
        _check_inputs(logits, labels, "classes")
        check_labels(labels)
        return F.cross_entropy(logits.float(), labels.long())


class WeightedSumLoss(nn.Module):
    """``sum_i weight_i * loss_i(logits, labels)``, e.g. the paper's Dice + 1 x focal.

    Args:
        terms: (weight, loss) pairs; every loss takes ``(logits, labels)``.
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a weighted sum needs at least one loss")
        self.weights = [float(weight) for weight, _ in terms]
        self.terms = nn.ModuleList(loss for _, loss in terms)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the terms for (B, C, X, Y, Z) logits and (B, X, Y, Z) labels; a scalar."""
        total = self.weights[0] * self.terms[0](logits, labels)
        for weight, term in zip(self.weights[1:], self.terms[1:], strict=True):
            total = total + weight * term(logits, labels)
        return total


def build_loss(
    name: str,
    *,
    head: str,
    include_background: bool = True,
    batch_dice: bool = True,
    dice_smooth: float = 1e-5,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    focal_weight: float = 1.0,
    bce_weight: float = 1.0,
    ce_weight: float = 1.0,
) -> nn.Module:
    """Build a loss by name.

    ==============  ====================================  ================
    name            loss                                  heads
    ==============  ====================================  ================
    ``dice``        :class:`SoftDiceLoss`                 classes, regions
    ``focal``       :class:`FocalLoss`                    classes, regions
    ``dice_focal``  Dice + focal_weight x focal (paper)   classes, regions
    ``bce``         :class:`BinaryCrossEntropyLoss`       classes, regions
    ``dice_bce``    Dice + bce_weight x BCE               classes, regions
    ``ce``          :class:`CrossEntropyLoss`             classes
    ``dice_ce``     Dice + ce_weight x CE                 classes
    ==============  ====================================  ================

    Args:
        name: one of :data:`LOSS_NAMES`.
        head: ``"classes"`` (4 softmax channels) or ``"regions"`` (3 sigmoid channels WT/TC/ET).
        include_background: Dice over the ``classes`` head's background channel too.
        batch_dice: one Dice over the whole batch (paper) rather than one per sample.
        dice_smooth: added to the soft Dice's numerator and denominator.
        focal_alpha: focal class weight (segmentation_models' default 0.25).
        focal_gamma: focal exponent (default 2).
        focal_weight: weight of the focal term in ``dice_focal`` (paper: 1).
        bce_weight: weight of the BCE term in ``dice_bce``.
        ce_weight: weight of the cross-entropy term in ``dice_ce``.

    Returns:
        A module called as ``loss(logits (B, C, X, Y, Z), labels (B, X, Y, Z))`` -> scalar.

    Raises:
        GliosegError: unknown name or head, or a loss that the head cannot use.
    """
    if head not in HEADS:
        raise GliosegError(None, f"unknown network head '{head}'", f"use one of {', '.join(HEADS)}")
    if name not in LOSS_NAMES:
        raise GliosegError(None, f"unknown loss '{name}'", f"use one of {', '.join(LOSS_NAMES)}")
    if name in ("ce", "dice_ce") and head != "classes":
        raise GliosegError(
            None,
            f"loss '{name}' needs the 'classes' head (softmax over classes)",
            "use 'bce' or 'dice_bce' with the 'regions' head",
        )

    def dice() -> nn.Module:
        return SoftDiceLoss(head=head, include_background=include_background, batch=batch_dice, smooth=dice_smooth)

    def focal() -> nn.Module:
        return FocalLoss(head=head, alpha=focal_alpha, gamma=focal_gamma)

    if name == "dice":
        return dice()
    if name == "focal":
        return focal()
    if name == "dice_focal":
        return WeightedSumLoss([(1.0, dice()), (focal_weight, focal())])
    if name == "bce":
        return BinaryCrossEntropyLoss(head=head)
    if name == "dice_bce":
        return WeightedSumLoss([(1.0, dice()), (bce_weight, BinaryCrossEntropyLoss(head=head))])
    if name == "ce":
        return CrossEntropyLoss()
    return WeightedSumLoss([(1.0, dice()), (ce_weight, CrossEntropyLoss())])  # dice_ce
