"""glioseg's sliding window against MONAI's ``sliding_window_inference``, which it replaces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from glioseg.inference.sliding import blend_windows, gaussian_weights, window_starts


def test_window_starts_by_hand() -> None:
    assert window_starts(64, 64, 0.5) == [0]  # one window fills the axis
    assert window_starts(72, 64, 0.5) == [0, 8]  # step 32, the second window moved back to end at 72
    assert window_starts(130, 64, 0.5) == [0, 32, 64, 66]
    assert window_starts(100, 64, 0.0) == [0, 36]
    assert window_starts(5, 4, 0.99) == [0, 1]  # a step of 0 becomes 1


def test_gaussian_weights_by_hand() -> None:
    weights = gaussian_weights((8, 8, 8))  # sigma 1 voxel, centre between voxels 3 and 4
    assert weights.shape == (8, 8, 8)
    assert float(weights[3, 4, 3]) == pytest.approx(math.exp(-0.125) ** 3, rel=1e-6)
    assert float(weights[0, 0, 0]) == pytest.approx(1e-3)  # exp(-6.125)^3 is clamped to the floor
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.permute(2, 0, 1))


@pytest.mark.parametrize(
    "shape, window, overlap, batch, blend",
    [
        ((1, 2, 33, 34, 35), (16, 16, 16), 0.5, 4, "gaussian"),
        ((2, 2, 33, 20, 17), (16, 12, 16), 0.25, 3, "gaussian"),
        ((1, 2, 10, 40, 7), (16, 16, 16), 0.5, 1, "gaussian"),  # smaller than the window: padded
        ((1, 2, 16, 16, 16), (16, 16, 16), 0.5, 2, "constant"),  # exactly one window
        ((1, 2, 30, 31, 29), (12, 12, 12), 0.0, 5, "constant"),
    ],
)
def test_blend_windows_equals_monai(shape, window, overlap, batch, blend) -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 3, padding=1)  # its zero padding makes each window's border differ
    image = torch.randn(shape)
    with torch.no_grad():
        ours = blend_windows(net, image, window, overlap=overlap, sw_batch_size=batch, blend=blend)
        monai = sliding_window_inference(image, window, batch, net, overlap=overlap, mode=blend)
    assert ours.shape == monai.shape == (shape[0], 3, *shape[2:])
    assert torch.allclose(ours, torch.as_tensor(monai), atol=1e-6, rtol=0)


# --- the numpy sliding window (the runtimes' path, no PyTorch) against the torch one -----------------------------


def test_gaussian_weights_numpy_equal_torch_on_odd_windows() -> None:
    from glioseg.inference.sliding import gaussian_weights_numpy

    for window in ((8, 8, 8), (7, 12, 5), (64, 64, 64), (1, 3, 2)):
        ours = gaussian_weights_numpy(window)
        assert ours.dtype == np.float32 and ours.shape == window
        np.testing.assert_allclose(ours, gaussian_weights(window).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("head", ["regions", "classes"])
@pytest.mark.parametrize(
    "shape, window, overlap, batch, blend, mirror",
    [
        ((1, 2, 33, 34, 35), (16, 16, 16), 0.5, 4, "gaussian", False),
        ((2, 2, 33, 20, 17), (16, 12, 16), 0.25, 3, "gaussian", True),
        ((1, 2, 10, 40, 7), (16, 16, 16), 0.5, 1, "gaussian", False),  # smaller than the window: padded
        ((1, 2, 30, 31, 29), (12, 12, 12), 0.0, 5, "constant", True),
    ],
)
def test_sliding_window_numpy_equals_torch(head, shape, window, overlap, batch, blend, mirror) -> None:
    from glioseg.inference.sliding import sliding_window_probabilities, sliding_window_probabilities_numpy

    torch.manual_seed(0)
    channels = 4 if head == "classes" else 3
    net = torch.nn.Conv3d(2, channels, 3, padding=1)  # its zero padding makes each window's border differ
    image = torch.randn(shape) * 3

    def on_arrays(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    settings = {"head": head, "patch_size": window, "overlap": overlap, "sw_batch_size": batch, "blend": blend}
    with torch.no_grad():
        reference = sliding_window_probabilities(net, image, mirror=mirror, **settings).numpy()
    ours = sliding_window_probabilities_numpy(on_arrays, image.numpy(), mirror=mirror, **settings)
    assert ours.dtype == np.float32 and ours.shape == reference.shape == (shape[0], channels, *shape[2:])
    assert float(np.abs(ours - reference).max()) <= 2e-6
