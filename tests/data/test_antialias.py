"""``preprocess.antialias``: Gaussian smoothing inside the brain before resampling to a coarser grid."""

from dataclasses import replace

import numpy as np

from glioseg.config import load_config
from glioseg.data.discovery import LoadedCase
from glioseg.data.preprocess import antialias_in_mask, antialias_sigmas, preprocess_loaded, resize_image

DEFAULT = load_config("default").preprocess


def test_sigmas_widen_a_voxel_to_the_target_size():
    # sqrt(2**2 - 1) / 2.355 = 0.7355 for 1 -> 2 mm; a 3 mm axis is not made coarser by a 2 mm target
    np.testing.assert_allclose(antialias_sigmas((1.0, 0.5, 3.0), (2.0, 2.0, 2.0)), (0.73553, 1.64469, 0.0), atol=1e-4)
    assert antialias_sigmas((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == (0.0, 0.0, 0.0)


def test_smoothing_inside_the_mask_keeps_a_constant_brain_constant_to_its_edge():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[5:15, 4:16, 6:14] = True
    image = np.where(mask, 7.0, 0.0).astype(np.float32)[None]
    out = antialias_in_mask(image, (1.0, 1.0, 1.0), mask)
    np.testing.assert_allclose(out[0][mask], 7.0, rtol=1e-5)
    assert not out[0][~mask].any()
    # without the mask the background's zeros darken the edge: what the normalisation prevents
    plain = antialias_in_mask(image, (1.0, 1.0, 1.0), None)
    assert plain[0][5, 10, 10] < 6.0


def test_zero_sigmas_return_the_image_itself():
    image = np.random.default_rng(0).random((1, 4, 4, 4), dtype=np.float32)
    assert antialias_in_mask(image, (0.0, 0.0, 0.0), None) is image


def test_a_pattern_the_coarse_grid_cannot_hold_is_smoothed_away_first():
    """An alternating +1 / -1 pattern along x (the 1 mm grid's Nyquist frequency) has no place on a 2 mm grid.
    Trilinear sampling alone keeps |w0 - w1| of it at each coarse voxel, all of it where the sample points fall on
    source voxels. The Gaussian of sigma 0.7355 (scipy's kernel, radius 3) leaves
    (1 - 2 e^-0.924 + 2 e^-3.697 - 2 e^-8.318) / (1 + 2 e^-0.924 + 2 e^-3.697 + 2 e^-8.318) = 0.139 of it."""
    x = np.arange(97)
    fine = np.broadcast_to(np.where(x % 2 == 0, 1.0, -1.0)[:, None, None], (97, 16, 16)).astype(np.float32)[None]
    plain = resize_image(fine, (48, 8, 8))[0][3:-3]
    sigmas = antialias_sigmas((1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    smooth = resize_image(antialias_in_mask(fine, sigmas, None), (48, 8, 8))[0][3:-3]
    e = np.exp(-1 / (2 * sigmas[0] ** 2) * np.arange(4) ** 2)
    left = (e[0] - 2 * e[1] + 2 * e[2] - 2 * e[3]) / (e[0] + 2 * e[1] + 2 * e[2] + 2 * e[3])
    assert abs(left - 0.139) < 1e-3
    assert np.abs(plain).max() > 0.9
    assert np.abs(smooth).max() <= left + 1e-4


def _loaded(image: np.ndarray) -> LoadedCase:
    from types import SimpleNamespace

    case = SimpleNamespace(case_id="c", images={}, reference_image=None)
    return LoadedCase(case=case, image=image, modalities=("flair", "t1", "t1ce", "t2"), label=None, affine=np.eye(4))


def test_preprocess_smooths_only_when_asked_and_keeps_older_fingerprints():
    assert DEFAULT.fingerprint() == replace(DEFAULT, antialias=False).fingerprint()
    assert DEFAULT.fingerprint() != replace(DEFAULT, antialias=True).fingerprint()
    rng = np.random.default_rng(1)
    image = np.zeros((4, 40, 40, 40), dtype=np.float32)
    image[:, 5:35, 5:35, 5:35] = rng.random((4, 30, 30, 30), dtype=np.float32) + 1.0
    config = replace(DEFAULT, target_spacing=(2.0, 2.0, 2.0))
    plain = preprocess_loaded(_loaded(image), config).image
    smooth = preprocess_loaded(_loaded(image), replace(config, antialias=True)).image
    assert plain.shape == smooth.shape
    # smoothing lowers the spread of white noise inside the brain (the z-score then rescales nothing here:
    # it ran before); the background stays 0
    inside = plain != 0
    assert smooth[inside].std() < 0.8 * plain[inside].std()
    np.testing.assert_array_equal(smooth[~inside], 0)
