"""Tests for glioseg.losses: hand-computed values on 2x2x1 volumes, MONAI agreement, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss as MonaiDiceLoss
from monai.losses import FocalLoss as MonaiFocalLoss

from glioseg.errors import GliosegError
from glioseg.heads import HEADS, label_targets
from glioseg.labels import region_masks
from glioseg.losses import (
    LOSS_NAMES,
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    FocalLoss,
    SoftDiceLoss,
    WeightedSumLoss,
    build_loss,
)

SMOOTH = 1e-5  # the losses' Dice smoothing: shifts hand-computed values by at most ~3e-5


# A 2x2x1 volume of internal labels, voxels in C order: 0, 0, 0, 3 (three background, one ET).
CLASS_LABELS = torch.tensor([[[[0], [0]], [[0], [3]]]])


def class_logits() -> torch.Tensor:
    """(1, 4, 2, 2, 1) logits whose softmax is 0.7 on the true class and 0.1 on the others."""
    probs = torch.full((1, 4, 2, 2, 1), 0.1)
    probs[0, 0, 0, 0, 0] = probs[0, 0, 0, 1, 0] = probs[0, 0, 1, 0, 0] = 0.7
    probs[0, 3, 1, 1, 0] = 0.7
    return probs.log()  # softmax(log p) = p when p sums to 1


# A 2x2x1 volume with labels 0, 2, 1, 3: WT = 0,1,1,1; TC = 0,0,1,1; ET = 0,0,0,1.
REGION_LABELS = torch.tensor([[[[0], [2]], [[1], [3]]]])


def regions_from_classes(labels: np.ndarray) -> np.ndarray:
    """(X, Y, Z) internal labels -> (3, X, Y, Z) WT/TC/ET masks, through labels.py's numpy path."""
    return np.stack(list(region_masks(labels).values())).astype(np.uint8)


def region_logits() -> torch.Tensor:
    """(1, 3, 2, 2, 1) logits whose sigmoid is 0.8 inside each region and 0.2 outside."""
    inside = label_targets(REGION_LABELS, "regions")
    return (inside * 2 - 1) * math.log(4.0)  # sigmoid(+-ln 4) = 0.8 / 0.2


# --- targets ---------------------------------------------------------------------------------


def test_label_targets_match_the_label_table() -> None:
    classes = label_targets(REGION_LABELS, "classes")
    regions = label_targets(REGION_LABELS, "regions")
    assert classes.shape == (1, 4, 2, 2, 1) and regions.shape == (1, 3, 2, 2, 1)
    assert classes[0, :, 0, 1, 0].tolist() == [0, 0, 1, 0]  # voxel with label 2 (edema)
    expected = regions_from_classes(REGION_LABELS.numpy()[0])  # numpy path of labels.py
    np.testing.assert_array_equal(regions[0].numpy(), expected)


# --- soft Dice --------------------------------------------------------------------------------


def test_dice_class_head_hand_computed() -> None:
    # Per class: intersection I, sum of probabilities P, reference voxels G -> 1 - 2I / (P + G).
    # bg: I = 3 * 0.7 = 2.1, P = 2.2, G = 3 | NCR, ED: I = 0, P = 0.4, G = 0 | ET: I = 0.7, P = 1.0, G = 1
    with_background = (1 - 4.2 / 5.2 + 1 + 1 + (1 - 1.4 / 2)) / 4
    without_background = (1 + 1 + (1 - 1.4 / 2)) / 3
    loss = SoftDiceLoss(head="classes")
    assert loss(class_logits(), CLASS_LABELS).item() == pytest.approx(with_background, abs=1e-4)
    loss = SoftDiceLoss(head="classes", include_background=False)
    assert loss(class_logits(), CLASS_LABELS).item() == pytest.approx(without_background, abs=1e-4)


def test_dice_batch_pools_samples_per_sample_averages_them() -> None:
    # Sample 2: all four voxels background, predicted 0.7 background / 0.1 elsewhere.
    background = torch.tensor([0.7, 0.1, 0.1, 0.1]).log().view(1, 4, 1, 1, 1).expand(1, 4, 2, 2, 1)
    logits = torch.cat([class_logits(), background])
    labels = torch.cat([CLASS_LABELS, torch.zeros_like(CLASS_LABELS)])
    sample1 = (1 - 4.2 / 5.2 + 1 + 1 + (1 - 1.4 / 2)) / 4
    sample2 = (1 - 5.6 / 6.8 + 1 + 1 + 1) / 4  # bg: I = 2.8, P = 2.8, G = 4
    # pooled: bg I = 4.9, P = 5.0, G = 7 | NCR, ED: empty | ET: I = 0.7, P = 1.4, G = 1
    pooled = (1 - 9.8 / 12 + 1 + 1 + (1 - 1.4 / 2.4)) / 4
    per_sample = SoftDiceLoss(head="classes", batch=False)(logits, labels)
    assert per_sample.item() == pytest.approx((sample1 + sample2) / 2, abs=1e-4)
    assert SoftDiceLoss(head="classes", batch=True)(logits, labels).item() == pytest.approx(pooled, abs=1e-4)


def test_dice_region_head_hand_computed() -> None:
    # WT: I = 2.4, P = 2.6, G = 3 | TC: I = 1.6, P = 2.0, G = 2 | ET: I = 0.8, P = 1.4, G = 1
    expected = ((1 - 4.8 / 5.6) + (1 - 3.2 / 4.0) + (1 - 1.6 / 2.4)) / 3
    loss = SoftDiceLoss(head="regions")(region_logits(), REGION_LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_dice_class_head_agrees_with_monai_one_hot(batch: bool, include_background: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, 7, generator=generator)
    labels = torch.randint(0, 4, (2, 5, 6, 7), generator=generator)
    monai = MonaiDiceLoss(include_background=include_background, to_onehot_y=True, softmax=True, batch=batch)
    ours = SoftDiceLoss(head="classes", include_background=include_background, batch=batch)
    assert ours(logits, labels).item() == pytest.approx(monai(logits, labels[:, None]).item(), abs=1e-6)


@pytest.mark.parametrize("batch", [True, False])
def test_dice_region_head_agrees_with_monai_on_region_masks(batch: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 6, 7, generator=generator)
    labels = torch.randint(0, 4, (2, 5, 6, 7), generator=generator)
    regions = torch.from_numpy(np.stack([regions_from_classes(case) for case in labels.numpy()])).float()
    monai = MonaiDiceLoss(sigmoid=True, batch=batch)
    ours = SoftDiceLoss(head="regions", batch=batch)
    assert ours(logits, labels).item() == pytest.approx(monai(logits, regions).item(), abs=1e-6)


@pytest.mark.parametrize("head", ["classes", "regions"])
def test_dice_of_a_perfect_prediction_is_about_zero(head: str) -> None:
    labels = torch.randint(0, 4, (2, 5, 6, 7), generator=torch.Generator().manual_seed(2))
    logits = label_targets(labels, head) * 40 - 20
    assert SoftDiceLoss(head=head, batch=False)(logits, labels).item() < 1e-4


# --- focal ------------------------------------------------------------------------------------


def test_focal_class_head_hand_computed() -> None:
    # Every voxel puts 0.7 on its true class: -0.25 * 0.3^2 * ln 0.7 per voxel; the mean runs
    # over 4 classes x 4 voxels, as segmentation_models' backend.mean does.
    per_voxel = -0.25 * 0.3**2 * math.log(0.7)
    loss = FocalLoss(head="classes")(class_logits(), CLASS_LABELS)
    assert loss.item() == pytest.approx(per_voxel / 4, rel=1e-5)


def test_focal_region_head_hand_computed() -> None:
    # Every element has p_t = 0.8; 6 positives weigh alpha = 0.25, 6 negatives 1 - alpha = 0.75.
    term = -(0.2**2) * math.log(0.8)
    expected = (6 * 0.25 * term + 6 * 0.75 * term) / 12
    loss = FocalLoss(head="regions")(region_logits(), REGION_LABELS)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def segmentation_models_categorical_focal(
    probs: np.ndarray, onehot: np.ndarray, alpha: float, gamma: float
) -> float:
    """segmentation_models' categorical_focal_loss, transcribed in numpy (clip, then mean of all)."""
    probs = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(np.mean(-onehot * (alpha * (1 - probs) ** gamma * np.log(probs))))


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 0.0), (1.0, 3.0)])
def test_focal_class_head_matches_segmentation_models_definition(alpha: float, gamma: float) -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 5, 6, 7, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 4, (2, 5, 6, 7), generator=generator)
    expected = segmentation_models_categorical_focal(
        torch.softmax(logits, 1).numpy(), label_targets(labels, "classes").numpy(), alpha, gamma
    )
    loss = FocalLoss(head="classes", alpha=alpha, gamma=gamma)(logits, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_class_head_is_monai_unweighted_focal_times_alpha() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 5, 6, 7, generator=generator)
    labels = torch.randint(0, 4, (2, 5, 6, 7), generator=generator)
    monai = MonaiFocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, alpha=None)
    expected = 0.25 * monai(logits, labels[:, None])
    assert FocalLoss(head="classes")(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_region_head_agrees_with_monai_sigmoid_focal() -> None:
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 5, 6, 7, generator=generator) * 3
    labels = torch.randint(0, 4, (2, 5, 6, 7), generator=generator)
    regions = torch.from_numpy(np.stack([regions_from_classes(case) for case in labels.numpy()])).float()
    monai = MonaiFocalLoss(use_softmax=False, gamma=2.0, alpha=0.25)  # alpha positives, 1 - alpha negatives
    expected = monai(logits, regions)
    assert FocalLoss(head="regions")(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_per_class_alpha_weights_each_class() -> None:
    # Only ET voxels count when alpha is (0, 0, 0, 1): one voxel of four, 16 elements in the mean.
    loss = FocalLoss(head="classes", alpha=(0.0, 0.0, 0.0, 1.0))(class_logits(), CLASS_LABELS)
    assert loss.item() == pytest.approx(-(0.3**2) * math.log(0.7) / 16, rel=1e-5)


# --- cross-entropies --------------------------------------------------------------------------


def test_bce_hand_computed() -> None:
    # class head, softmax vs one-hot: 4 elements at p = 0.7 (target 1), 12 at p = 0.1 (target 0)
    expected_class = (4 * -math.log(0.7) + 12 * -math.log(0.9)) / 16
    loss = BinaryCrossEntropyLoss(head="classes")(class_logits(), CLASS_LABELS)
    assert loss.item() == pytest.approx(expected_class, rel=1e-5)
    # region head: all 12 elements have p_t = 0.8
    loss = BinaryCrossEntropyLoss(head="regions")(region_logits(), REGION_LABELS)
    assert loss.item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_cross_entropy_hand_computed() -> None:
    assert CrossEntropyLoss()(class_logits(), CLASS_LABELS).item() == pytest.approx(-math.log(0.7), rel=1e-5)


# --- sums and the factory ---------------------------------------------------------------------


def test_dice_focal_is_the_weighted_sum_of_its_terms() -> None:
    logits, labels = class_logits(), CLASS_LABELS
    dice = SoftDiceLoss(head="classes")(logits, labels)
    focal = FocalLoss(head="classes")(logits, labels)
    paper = build_loss("dice_focal", head="classes")(logits, labels)
    assert paper.item() == pytest.approx((dice + focal).item(), rel=1e-6)
    weighted = build_loss("dice_focal", head="classes", focal_weight=3.0)(logits, labels)
    assert weighted.item() == pytest.approx((dice + 3 * focal).item(), rel=1e-6)
    module = build_loss("dice_focal", head="classes")
    assert isinstance(module, WeightedSumLoss) and module.weights == [1.0, 1.0]


def test_dice_bce_and_dice_ce_add_their_terms() -> None:
    logits, labels = region_logits(), REGION_LABELS
    dice = SoftDiceLoss(head="regions")(logits, labels)
    bce = BinaryCrossEntropyLoss(head="regions")(logits, labels)
    loss = build_loss("dice_bce", head="regions", bce_weight=0.5)(logits, labels)
    assert loss.item() == pytest.approx((dice + 0.5 * bce).item(), rel=1e-6)
    logits, labels = class_logits(), CLASS_LABELS
    expected = SoftDiceLoss(head="classes")(logits, labels) + CrossEntropyLoss()(logits, labels)
    loss = build_loss("dice_ce", head="classes")(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


CLASSES_ONLY = ("ce", "dice_ce")
VALID = [(name, head) for name in LOSS_NAMES for head in HEADS if name not in CLASSES_ONLY or head == "classes"]


@pytest.mark.parametrize("name, head", VALID)
def test_every_loss_gives_finite_gradients_even_for_saturated_logits(name: str, head: str) -> None:
    generator = torch.Generator().manual_seed(5)
    channels = 4 if head == "classes" else 3
    logits = (torch.randn(2, channels, 3, 4, 5, generator=generator) * 60).requires_grad_()
    labels = torch.randint(0, 4, (2, 3, 4, 5), generator=generator)
    loss = build_loss(name, head=head)(logits, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("head", HEADS)
def test_focal_gradients_stay_finite_for_a_fractional_gamma(head: str) -> None:
    # (1 - p)^0.5 has an infinite slope at p = 1, which saturated softmax logits reach exactly.
    channels = 4 if head == "classes" else 3
    logits = (torch.randn(2, channels, 3, 4, 5, generator=torch.Generator().manual_seed(7)) * 200).requires_grad_()
    labels = torch.randint(0, 4, (2, 3, 4, 5), generator=torch.Generator().manual_seed(8))
    FocalLoss(head=head, gamma=0.5)(logits, labels).backward()
    assert torch.isfinite(logits.grad).all()


def test_losses_work_on_2d_inputs() -> None:
    logits = torch.randn(2, 4, 6, 5)
    labels = torch.randint(0, 4, (2, 6, 5))
    assert torch.isfinite(build_loss("dice_focal", head="classes")(logits, labels))


# --- errors -----------------------------------------------------------------------------------


def test_factory_rejects_unknown_names_and_heads_with_a_fix() -> None:
    with pytest.raises(GliosegError, match=r"unknown loss 'dcie'.*dice_focal"):
        build_loss("dcie", head="classes")
    with pytest.raises(GliosegError, match="unknown network head 'class'"):
        build_loss("dice", head="class")
    with pytest.raises(GliosegError, match="dice_bce"):
        build_loss("dice_ce", head="regions")


def test_losses_reject_targets_outside_the_contract() -> None:
    loss = build_loss("dice", head="classes")
    logits = torch.randn(1, 4, 2, 2, 1)
    with pytest.raises(ValueError, match="logits shaped"):
        loss(torch.randn(1, 3, 2, 2, 1), CLASS_LABELS)
    with pytest.raises(ValueError, match="squeeze"):
        loss(logits, CLASS_LABELS[:, None])
    with pytest.raises(ValueError, match="integer label map"):
        loss(logits, CLASS_LABELS.float())
    with pytest.raises(ValueError, match="to_internal"):
        loss(logits, CLASS_LABELS + 1)  # label 4: a BraTS 2018 map passed without conversion
    with pytest.raises(ValueError, match="4 alpha values"):
        FocalLoss(head="classes", alpha=(0.25, 0.25, 0.25))
    with pytest.raises(ValueError, match="include_background"):
        SoftDiceLoss(head="regions", include_background=False)
