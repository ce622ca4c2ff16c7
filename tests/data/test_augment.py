import dataclasses

import numpy as np
import pytest

from glioseg.data.augment import (
    AffineParams,
    AugmentConfig,
    GammaParams,
    RandomAffine,
    RandomFlip,
    RandomGamma,
    RandomIntensity,
    RandomNoise,
    add_noise,
    affine_crop,
    augment,
    crop,
    flip,
    gamma_transform,
    scale_shift_intensity,
)
from glioseg.errors import GliosegError

SHAPE = (33, 34, 35)


def cube_case(shape=SHAPE, corner=(6, 20, 9), size=7, value=3):
    """Two-channel image with a bright cube exactly where the label holds ``value``."""
    rng = np.random.default_rng(0)
    image = np.zeros((2, *shape), dtype=np.float32)
    image[:, 2:-2, 2:-2, 2:-2] = rng.uniform(0.0, 0.2, size=(2, *(s - 4 for s in shape)))
    label = np.zeros(shape, dtype=np.uint8)
    box = tuple(slice(c, c + size) for c in corner)
    image[(slice(None), *box)] = 10.0
    label[box] = value
    return image, label


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2)])
def test_flip_keeps_alignment_and_moves_the_cube(axes):
    image, label = cube_case()
    out_image, out_label = flip(image, label, axes)
    assert np.array_equal(out_image[0] > 5, out_label == 3)
    assert np.array_equal(out_label, np.flip(label, axes))
    assert not np.array_equal(out_label, label)
    assert out_image.flags.c_contiguous and out_label.dtype == np.uint8


@pytest.mark.parametrize(
    "rotation, scale", [((15.0, -10.0, 7.0), 1.0), ((0.0, 0.0, 12.0), 1.15), ((-15.0, 15.0, 0.0), 0.85)]
)
def test_rotation_and_scaling_keep_image_label_alignment(rotation, scale):
    image, label = cube_case(corner=(10, 12, 11), size=9)
    out_image, out_label = RandomAffine().apply(image, label, AffineParams(rotation, scale))
    assert out_image.shape == image.shape and out_label.shape == label.shape
    bright, tumor = out_image[0] > 5, out_label == 3
    assert dice(bright, tumor) > 0.9
    assert out_image[1][tumor].mean() > 8.0
    assert not np.array_equal(out_label, label)
    expected = label.sum() / 3 * scale**3
    assert abs(tumor.sum() - expected) / expected < 0.15  # zooming changes the volume by scale^3


def test_rotation_by_90_degrees_is_an_exact_permutation():
    image, label = cube_case(shape=(33, 33, 33))
    out_image, out_label = affine_crop(image, label, (16, 16, 16), (33, 33, 33), (90.0, 0.0, 0.0), 1.0)
    expected = np.rot90(label, k=1, axes=(1, 2))
    assert np.array_equal(out_label, expected)
    np.testing.assert_allclose(out_image, np.rot90(image, k=1, axes=(2, 3)), atol=1e-4)


def test_zero_rotation_and_unit_scale_is_identity():
    image, label = cube_case()
    out_image, out_label = RandomAffine().apply(image, label, AffineParams((0.0, 0.0, 0.0), 1.0))
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)
    # through the interpolating path, a vanishing rotation is the identity up to rounding
    out_image, out_label = affine_crop(image, label, [s // 2 for s in SHAPE], SHAPE, (1e-9, 0.0, 0.0), 1.0)
    np.testing.assert_allclose(out_image, image, atol=1e-4)
    assert np.array_equal(out_label, label)


def test_affine_crop_without_transform_is_a_crop_with_zero_padding():
    image, label = cube_case()
    out_image, out_label = affine_crop(image, label, (2, 30, 17), (8, 8, 40))
    ref_image, ref_label = crop(image, label, (-2, 26, -3), (8, 8, 40))
    assert np.array_equal(out_image, ref_image) and np.array_equal(out_label, ref_label)
    assert np.array_equal(out_image[:, 2:, :8, 3:38], image[:, :6, 26:34, :])
    assert not out_image[:, :2].any() and not out_label[:, 8:].any() and not out_image[..., 38:].any()


def test_rotated_crop_center_voxel_is_the_requested_voxel():
    image, label = cube_case()
    label[5, 6, 7] = 2
    _, out_label = affine_crop(image, label, (5, 6, 7), (16, 15, 16), (14.0, -9.0, 3.0), 1.1)
    assert out_label[8, 7, 8] == 2


def test_gamma_hand_checked():
    image = np.array([0.0, 1.0, 2.0, 3.0, 5.0], dtype=np.float32).reshape(1, 5, 1, 1)
    out = gamma_transform(image, [2.0])
    # foreground min 1, range 4: x -> ((x - 1) / 4) ** 2 * 4 + 1; background 0 stays 0
    np.testing.assert_allclose(out.ravel(), [0.0, 1.0, 1.25, 2.0, 5.0], rtol=1e-6)
    out = gamma_transform(image, [0.5])
    np.testing.assert_allclose(out.ravel(), [0.0, 1.0, 3.0, 1.0 + 4 * np.sqrt(0.5), 5.0], rtol=1e-6)
    assert np.array_equal(gamma_transform(image, [1.0]), image)


def test_gamma_is_per_channel_and_keeps_background():
    image = np.zeros((2, 4, 4, 4), dtype=np.float32)
    image[:, 1:3, 1:3, 1:3] = np.linspace(-1.0, 2.0, 8).reshape(2, 2, 2)
    out = gamma_transform(image, [1.0, 1.5])
    assert np.array_equal(out[0], image[0])
    assert not np.allclose(out[1], image[1])
    assert (
        out[:, 0].max() == 0
        and out[1].max() == pytest.approx(2.0)
        and out[1][image[1] != 0].min() == pytest.approx(-1.0)
    )


def test_scale_shift_hand_checked():
    image = np.array([0.0, 1.0, 3.0], dtype=np.float32).reshape(1, 3, 1, 1)
    out = scale_shift_intensity(image, [2.0], [0.5])  # std of {1, 3} is 1
    np.testing.assert_allclose(out.ravel(), [0.0, 2.5, 6.5])


def test_noise_is_seeded_and_spares_background():
    image, _ = cube_case()
    a, b, c = add_noise(image, 0.1, 1), add_noise(image, 0.1, 1), add_noise(image, 0.1, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    background = ~np.any(image != 0, axis=0)
    assert not a[:, background].any()
    assert 0.08 < (a - image)[:, ~background].std() < 0.12


def test_random_transforms_skip_when_probability_is_zero():
    rng = np.random.default_rng(0)
    assert RandomFlip(0.0).sample_params(rng, 2).axes == ()
    assert RandomAffine(0.0, 15.0, 0.0).sample_params(rng, 2).is_identity
    assert RandomIntensity(0.0).sample_params(rng, 2).scale == ()
    assert RandomGamma(0.0).sample_params(rng, 2) == GammaParams()
    assert RandomNoise(0.0).sample_params(rng, 2).std == 0.0


def test_sampled_parameters_respect_ranges():
    rng = np.random.default_rng(0)
    gammas = np.array([RandomGamma(1.0, (0.7, 1.5)).sample_params(rng, 4).gamma for _ in range(200)])
    assert gammas.min() >= 0.7 and gammas.max() <= 1.5
    assert 0.4 < (gammas < 1).mean() < 0.6  # darkening and brightening equally likely
    params = [RandomAffine(1.0, 15.0, 1.0, (0.85, 1.15)).sample_params(rng, 4) for _ in range(100)]
    assert all(abs(a) <= 15 for p in params for a in p.rotation_deg)
    assert all(0.85 <= p.scale <= 1.15 for p in params)
    flips = np.array([[a in RandomFlip(0.5).sample_params(rng, 4).axes for a in range(3)] for _ in range(400)])
    assert np.all(np.abs(flips.mean(axis=0) - 0.5) < 0.1)


FULL = AugmentConfig(flip_prob=0.5, rotate_prob=1.0, scale_prob=1.0, intensity_prob=1.0, gamma_prob=1.0, noise_prob=1.0)


def test_augment_replays_from_seed_and_keeps_inputs():
    image, label = cube_case()
    image_copy, label_copy = image.copy(), label.copy()
    a = augment(image, label, FULL, np.random.default_rng(7), center=(16, 17, 17), out_shape=(16, 16, 16))
    b = augment(image, label, FULL, np.random.default_rng(7), center=(16, 17, 17), out_shape=(16, 16, 16))
    c = augment(image, label, FULL, np.random.default_rng(8), center=(16, 17, 17), out_shape=(16, 16, 16))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (2, 16, 16, 16) and a[0].dtype == np.float32 and a[1].dtype == np.uint8
    assert np.array_equal(image, image_copy) and np.array_equal(label, label_copy)


def test_augment_with_none_config_is_identity():
    image, label = cube_case()
    out_image, out_label = augment(image, label, AugmentConfig.none(), np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)
    assert not AugmentConfig.none().enabled and AugmentConfig().enabled


def test_augment_keeps_labels_on_the_bright_cube():
    image, label = cube_case(corner=(10, 12, 11), size=9)
    config = dataclasses.replace(FULL, intensity_prob=0.0, gamma_prob=0.0, noise_prob=0.0)
    for seed in range(4):
        out_image, out_label = augment(image, label, config, np.random.default_rng(seed))
        assert dice(out_image[0] > 5, out_label == 3) > 0.9


@pytest.mark.parametrize(
    "field, value", [("flip_prob", 1.5), ("noise_prob", -0.1), ("scale_range", (1.2, 0.8)), ("gamma_range", (0.0, 1.5))]
)
def test_invalid_config_raises(field, value):
    with pytest.raises(GliosegError):
        AugmentConfig(**{field: value})


# --- thick slices (low-resolution simulation) ------------------------------------------------------------


def test_thick_slices_hand_checked():
    """Slabs 2 voxels thick along axis 1 of a 1-voxel stripe pattern 0 4 0 4 0 4 0 4: each slab averages a 0 and a 4
    (the first, whose neighbour lies outside, repeats the edge: 0), so the slabs read 0 2 2 2 2 2 2 2, sampled at 4
    of them (0, 2, 2, 2) and back at 8: 0, 6/7, 12/7, then 2 on; a ramp survives (averaging and linear interpolation
    keep linear functions); the other channel and the other axes are untouched."""
    from glioseg.data.augment import simulate_thick_slices

    stripes = np.zeros((2, 3, 8, 3), np.float32)
    stripes[:, :, 1::2, :] = 4.0
    out = simulate_thick_slices(stripes, (True, False), axis=1, factor=2.0)
    assert out.shape == stripes.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], stripes[1])
    expected = np.array([0, 6 / 7, 12 / 7, 2, 2, 2, 2, 2], np.float32)
    np.testing.assert_allclose(out[0], np.broadcast_to(expected[None, :, None], (3, 8, 3)), atol=1e-6)
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[None, None, None, :], (1, 2, 2, 12)).copy()
    thick = simulate_thick_slices(ramp, (True,), axis=2, factor=3.0)
    # samples at 0, 11/3, 22/3, 11; between the two inner ones (voxels 4-7) the ramp comes back exactly
    np.testing.assert_allclose(thick[0, :, :, 4:8], ramp[0, :, :, 4:8], atol=1e-5)
    assert not np.array_equal(thick, ramp)  # the edges feel the slab (a real change, not a no-op)


def test_thick_slices_are_drawn_only_when_asked_and_keep_the_label():
    from glioseg.data.augment import LowResolutionParams, RandomLowResolution

    rng = np.random.default_rng(0)
    assert RandomLowResolution(0.0).sample_params(rng, 4) == LowResolutionParams()
    assert rng.random() == np.random.default_rng(0).random()  # prob 0 drew nothing: old presets replay as before
    params = [RandomLowResolution(1.0, 3.0).sample_params(rng, 4) for _ in range(300)]
    assert all(1.5 <= p.factor <= 3.0 and any(p.channels) and p.axis in (0, 1, 2) for p in params)
    assert {p.axis for p in params} == {0, 1, 2}
    assert 0.45 < np.mean([c for p in params for c in p.channels]) < 0.65  # 1/2 each, at least one
    image, label = cube_case()
    config = dataclasses.replace(AugmentConfig.none(), lowres_prob=1.0)
    assert config.enabled
    out_image, out_label = augment(image, label, config, np.random.default_rng(3))
    assert np.array_equal(out_label, label) and not np.array_equal(out_image, image)
    with pytest.raises(GliosegError):
        AugmentConfig(lowres_max_factor=1.0)
