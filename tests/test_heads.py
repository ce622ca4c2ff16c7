"""The heads: channels, activation, targets and the one probabilities-to-labels rule, by hand."""

import warnings

import numpy as np
import pytest
import torch

from glioseg.heads import (
    HEADS,
    channel_names,
    head_channels,
    label_targets,
    probabilities_to_labels,
    probabilities_to_logits,
    to_probabilities,
)

LABELS = torch.tensor([[[0, 1], [2, 3]]], dtype=torch.uint8)[..., None]  # (1, 2, 2, 1): bg, NCR, ED, ET


def test_channels_and_names_come_from_the_label_table():
    assert head_channels("classes") == 4 and channel_names("classes") == (
        "background",
        "necrosis",
        "edema",
        "enhancing",
    )
    assert head_channels("regions") == 3 and channel_names("regions") == ("wt", "tc", "et")
    with pytest.raises(ValueError, match="classes, regions"):
        head_channels("labels")


def test_region_targets_by_hand():
    regions = label_targets(LABELS, "regions")[0, :, :, :, 0]  # (3, 2, 2)
    # WT = NCR, ED, ET; TC = NCR, ET; ET = ET
    assert regions[0].tolist() == [[0, 1], [1, 1]]
    assert regions[1].tolist() == [[0, 1], [0, 1]]
    assert regions[2].tolist() == [[0, 0], [0, 1]]
    assert label_targets(LABELS, "classes")[0, :, 1, 0, 0].tolist() == [0, 0, 1, 0]


@pytest.mark.parametrize("head", HEADS)
def test_targets_turn_back_into_the_labels_numpy_and_torch(head):
    target = label_targets(LABELS, head)  # exact 0/1 probabilities
    torch_labels = probabilities_to_labels(target, head, axis=1)
    numpy_labels = probabilities_to_labels(target[0].numpy(), head)
    assert torch_labels.dtype == torch.uint8 and numpy_labels.dtype == np.uint8
    np.testing.assert_array_equal(torch_labels.numpy(), LABELS.numpy())
    np.testing.assert_array_equal(numpy_labels, LABELS.numpy()[0])


def test_region_rule_is_nested_and_uses_the_threshold():
    # one voxel per column: (WT, TC, ET) probabilities
    p = np.array([[0.6, 0.6, 0.4, 0.9, 0.55], [0.2, 0.7, 0.9, 0.9, 0.1], [0.1, 0.1, 0.8, 0.2, 0.1]])[:, :, None, None]
    assert probabilities_to_labels(p, "regions")[:, 0, 0].tolist() == [2, 1, 3, 1, 2]  # ET inside TC inside WT wins
    assert probabilities_to_labels(p, "regions", threshold=0.58)[:, 0, 0].tolist() == [2, 1, 3, 1, 0]


@pytest.mark.parametrize("head", HEADS)
def test_probabilities_to_logits_inverts_the_activation(head):
    logits = torch.randn(2, head_channels(head), 3, 4, 5)
    probs = to_probabilities(logits, head)
    torch.testing.assert_close(
        to_probabilities(probabilities_to_logits(probs, head), head), probs, atol=1e-5, rtol=1e-5
    )
    saturated = probabilities_to_logits(torch.tensor([[0.0, 1.0, 0.0]])[..., None], "regions")
    assert torch.isfinite(saturated).all()


@pytest.mark.parametrize("head", HEADS)
def test_numpy_activation_equals_torch_and_by_hand(head):
    logits = (torch.randn(2, head_channels(head), 5, 6, 7, generator=torch.Generator().manual_seed(0)) * 8).numpy()
    logits[0, :, 0, 0, 0] = [30.0, -30.0, 0.0, 5.0][: head_channels(head)]  # far from 0: softmax must not overflow
    ours = to_probabilities(logits, head)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, to_probabilities(torch.from_numpy(logits), head).numpy(), rtol=0, atol=1e-6)
    x = logits[1, :, 2, 3, 4].astype(np.float64)
    by_hand = np.exp(x) / np.exp(x).sum() if head == "classes" else 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(ours[1, :, 2, 3, 4], by_hand, rtol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_numpy_activation_of_extreme_logits_is_exact_and_silent(head):
    """A runtime's logit far below 0 (seen on a case given zero channels for absent modalities) gives probability 0
    without a warning: before, numpy's `RuntimeWarning: overflow encountered in exp` and its source line went to
    stderr for every such case of a successful `glioseg predict`."""
    logits = np.zeros((1, head_channels(head), 2, 1, 1), dtype=np.float32)
    logits[0, :, 0] = -1000.0
    logits[0, 0, 1] = 1000.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = to_probabilities(logits, head)
    np.testing.assert_allclose(ours, to_probabilities(torch.from_numpy(logits), head).numpy(), rtol=0, atol=1e-6)
    assert np.isfinite(ours).all()
