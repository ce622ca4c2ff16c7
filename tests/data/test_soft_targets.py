"""Soft region targets (``preprocess.soft_targets``): what they hold, how they travel, what they train."""

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from glioseg.config import load_config
from glioseg.data.augment import AugmentConfig, augment, augment_with_targets
from glioseg.data.cache import load_cached, preprocess_dataset
from glioseg.data.dataset import PatchDataset
from glioseg.data.discovery import discover
from glioseg.data.preprocess import (
    footprint_weights,
    region_fractions,
    resize_image,
    resize_labels,
)
from glioseg.data.synth import write_cohort
from glioseg.errors import GliosegError
from glioseg.heads import label_targets
from glioseg.losses import build_loss
from glioseg.training.loop import build_trainer


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize(
    "ratio, expected",
    [(2.0, [0.25, 0.5, 0.25]), (1.0, [1.0]), (0.5, [1.0]), (3.0, [1 / 3, 1 / 3, 1 / 3]), (2.5, [0.3, 0.4, 0.3])],
)
def test_footprint_weights_are_the_overlap_of_each_source_voxel_with_the_box(ratio, expected):
    # 2.5: the box [-1.25, 1.25] covers 0.75 of voxels -1 and 1 and all of voxel 0; / 2.5
    assert footprint_weights(ratio) == pytest.approx(expected)


def test_region_fractions_by_hand():
    """9 -> 5 voxels along x (output voxel i sits on input voxel 2i; ratio 1.8, weights 0.4, 1, 0.4 / 1.8)."""
    label = np.zeros((9, 6, 6), np.uint8)
    label[3:] = 2  # edema from x = 3 on, across the whole y-z plane: WT only
    fractions = region_fractions(label, (5, 3, 3))
    assert fractions.shape == (3, 5, 3, 3) and fractions.dtype == np.float32
    # x = 0: voxels 0, 1 (and -1, clamped to 0): none in WT. x = 2: voxels 1, 2, 3 -> 0.4 / 1.8.
    np.testing.assert_allclose(fractions[0, :, 1, 1], [0, 0.4 / 1.8, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(
        fractions[0], fractions[0, :, :1, :1].repeat(3, 1).repeat(3, 2), atol=1e-6
    )  # nothing changes along y, z
    assert fractions[1].max() == 0 and fractions[2].max() == 0  # no core, no ET


def test_region_fractions_nest_like_the_regions():
    label = np.random.default_rng(0).integers(0, 4, (20, 18, 16)).astype(np.uint8)
    wt, tc, et = region_fractions(label, (10, 9, 8))
    assert np.all(wt >= tc - 1e-6) and np.all(tc >= et - 1e-6)  # ET in TC in WT, voxel by voxel
    assert et.min() >= 0 and wt.max() <= 1


@pytest.mark.parametrize("radius", [2.5, 3.3, 8.0])
def test_soft_targets_lift_the_resolution_ceiling_of_a_small_tumour(radius):
    """A perfect 2 mm prediction, back on the 1 mm grid (trilinear, threshold 0.5, as predict does):
    soft targets reproduce a small sphere better than the hard resampled labels."""
    n, m = 41, 21
    offsets = np.indices((n, n, n)) - n // 2
    label = ((offsets**2).sum(0) <= radius**2).astype(np.uint8) * 3
    hard = resize_labels(label, (m, m, m))
    hard_back = resize_labels(hard, (n, n, n)) == 3
    soft_back = resize_image(region_fractions(label, (m, m, m))[2:3], (n, n, n))[0] > 0.5
    assert _dice(soft_back, label == 3) > _dice(hard_back, label == 3)
    assert _dice(soft_back, label == 3) > 0.8


def test_augment_with_targets_moves_them_exactly_like_the_image():
    """Targets that are a copy of two image channels come out equal to those channels after every
    spatial op; the image and label are those of plain augment() with the same draws."""
    rng_image = np.random.default_rng(1)
    image = rng_image.normal(size=(4, 30, 28, 26)).astype(np.float32)
    label = rng_image.integers(0, 4, (30, 28, 26)).astype(np.uint8)
    spatial = AugmentConfig(
        rotate_prob=1.0, scale_prob=1.0, flip_prob=1.0, intensity_prob=0.0, gamma_prob=0.0, noise_prob=0.0
    )
    for seed in range(4):
        a_img, a_lab = augment(
            image, label, spatial, np.random.default_rng(seed), center=(15, 14, 13), out_shape=(16, 16, 16)
        )
        b_img, b_lab, b_tgt = augment_with_targets(
            image,
            label,
            image[1:3].copy(),
            spatial,
            np.random.default_rng(seed),
            center=(15, 14, 13),
            out_shape=(16, 16, 16),
        )
        np.testing.assert_array_equal(a_lab, b_lab)
        np.testing.assert_allclose(a_img, b_img, atol=1e-6)
        np.testing.assert_allclose(b_tgt, b_img[1:3], atol=1e-6)
    # intensity ops change the image, never the targets
    noisy = AugmentConfig(
        rotate_prob=0.0, scale_prob=0.0, flip_prob=0.0, intensity_prob=1.0, gamma_prob=1.0, noise_prob=1.0
    )
    c_img, _, c_tgt = augment_with_targets(
        image, label, image[1:3].copy(), noisy, np.random.default_rng(0), out_shape=(16, 16, 16)
    )
    plain, _ = augment(image, label, AugmentConfig.none(), np.random.default_rng(0), out_shape=(16, 16, 16))
    assert not np.allclose(c_img[1:3], plain[1:3])
    np.testing.assert_allclose(c_tgt, plain[1:3], atol=1e-6)


def test_patch_dataset_yields_targets_beside_the_same_image_and_label():
    rng = np.random.default_rng(2)
    images = [rng.normal(size=(2, 20, 20, 20)).astype(np.float32) for _ in range(2)]
    labels = [rng.integers(0, 4, (20, 20, 20)).astype(np.uint8) for _ in range(2)]
    targets = [region_fractions(lab, lab.shape) for lab in labels]
    plain = PatchDataset(images, labels, (12, 12, 12), 4, 0.5, AugmentConfig(), seed=5)
    soft = PatchDataset(images, labels, (12, 12, 12), 4, 0.5, AugmentConfig(), seed=5, targets=targets)
    for k in range(4):
        image, label = plain[k]
        s_image, s_label, s_target = soft[k]
        torch.testing.assert_close(image, s_image)
        torch.testing.assert_close(label, s_label)
        assert s_target.shape == (3, 12, 12, 12) and s_target.dtype == torch.float32
    # fractions on the label's own grid are its masks; without rotation they stay 0/1 and match the label
    still = PatchDataset(images, labels, (12, 12, 12), 2, 0.5, AugmentConfig.none(), seed=5, targets=targets)
    _, label, target = still[0]
    torch.testing.assert_close(target, label_targets(label[None], "regions")[0])
    with pytest.raises(GliosegError, match="do not fit"):
        PatchDataset(images, labels, (12, 12, 12), 2, targets=[t[:, :-1] for t in targets])


@pytest.mark.parametrize("name", ["dice_bce", "dice_focal", "dice", "bce", "focal"])
def test_losses_take_soft_targets_and_agree_with_the_label_map_on_hard_ones(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4)
    labels = torch.randint(0, 4, (2, 6, 5, 4))
    loss = build_loss(name, head="regions")
    torch.testing.assert_close(loss(logits, labels), loss(logits, label_targets(labels, "regions")))
    soft = torch.rand(2, 3, 6, 5, 4)
    assert torch.isfinite(loss(logits, soft))
    with pytest.raises(ValueError, match="soft targets"):
        build_loss(name, head="classes")(torch.randn(2, 4, 6, 5, 4), torch.rand(2, 4, 6, 5, 4))


def test_soft_targets_keep_older_fingerprints_and_change_only_their_own():
    """Adding the setting left every older recipe's fingerprint as it was (caches, cv work folders and
    predict's settings stamp made before stay valid); these are the values glioseg 42ff0fc computed."""
    assert load_config("cpu").preprocess.fingerprint() == "c88b42c6958b0cfa"
    assert load_config("default").preprocess.fingerprint() == "a455c621502612f2"
    assert load_config("paper").preprocess.fingerprint() == "973eafc29118e539"
    soft = load_config("cpu", ["preprocess.soft_targets=true"]).preprocess
    later = ("cascade_margin", "antialias")  # added later (issue 22, session 15), unset here
    fields = {k: v for k, v in asdict(soft).items() if k not in later}
    payload = json.dumps({"format": 1, **fields}, sort_keys=True)
    assert soft.fingerprint() == hashlib.sha256(payload.encode()).hexdigest()[:16] != "c88b42c6958b0cfa"


def test_soft_targets_need_the_regions_head_and_patches():
    with pytest.raises(GliosegError, match=r"preprocess\.soft_targets"):
        load_config("cpu", ["preprocess.soft_targets=true", "model.head=classes"])
    with pytest.raises(GliosegError, match=r"preprocess\.soft_targets"):
        load_config("cpu", ["preprocess.soft_targets=true", "train.sampling=whole"])


def test_cache_round_trip_and_a_short_training_on_soft_targets(tmp_path):
    write_cohort(tmp_path / "raw", cases=3, shape=(40, 40, 40), layout="brats2021", seed=3)
    cases = discover(tmp_path / "raw").cases
    tiny = [
        "preprocess.target_spacing=[2,2,2]",
        "model.filters=[4,8,16]",
        "train.patch_size=[16,16,16]",
        "train.samples_per_epoch=2",
        "train.batch_size=2",
        "train.epochs=2",
        "train.val_every=2",
        "train.threads=1",
        "train.device=cpu",
    ]
    config = load_config("cpu", [*tiny, "preprocess.soft_targets=true"])
    preprocess_dataset(cases, config.preprocess, tmp_path / "cache", progress=False)
    cached = load_cached(tmp_path / "cache", cases[0].case_id, config.preprocess)
    from glioseg.data.discovery import load_case

    loaded = load_case(cases[0], config.preprocess.modalities)
    box = cached.crop.box
    source = loaded.label[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]]
    expected = region_fractions(source, cached.crop.shape)
    assert cached.regions is not None and cached.regions.shape == (3, *cached.crop.shape)
    np.testing.assert_allclose(cached.regions, expected, atol=0.5 / 255 + 1e-6)  # stored in 1/255 steps
    assert np.count_nonzero((expected > 0.01) & (expected < 0.99)) > 0  # really fractional at 2 mm
    history = build_trainer(config, tmp_path / "cache", tmp_path / "run", progress=False).fit()
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])
    # the hard recipe cannot train on this cache, and a soft recipe on a hard cache says what to do
    with pytest.raises(GliosegError, match="soft_targets"):
        build_trainer(load_config("cpu", tiny), tmp_path / "cache", tmp_path / "run2", progress=False)


def test_the_cascade_margin_leaves_older_fingerprints_and_sets_its_own():
    """``preprocess.cascade_margin`` (issue 22) unset: the fingerprints above; set: another cache."""
    base = load_config("cpu", ["preprocess.target_spacing=null"]).preprocess
    margin = load_config("cpu", ["preprocess.target_spacing=null", "preprocess.cascade_margin=16"]).preprocess
    assert load_config("default").preprocess.fingerprint() == "a455c621502612f2"
    assert margin.fingerprint() != base.fingerprint() and margin.input_channels == base.input_channels + 3 == 7
    with pytest.raises(GliosegError, match=r"preprocess\.cascade_margin=16.*native grid"):
        load_config("cpu", ["preprocess.cascade_margin=16"])  # cpu is a 2 mm preset
