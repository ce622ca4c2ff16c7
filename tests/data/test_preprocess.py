import json
import types

import numpy as np
import pytest

from glioseg.config import load_config
from glioseg.data.cache import cached_case_ids, load_cached, preprocess_dataset
from glioseg.data.discovery import discover, load_case
from glioseg.data.preprocess import (
    CropInfo,
    PreprocessConfig,
    brain_box,
    invert_probabilities,
    minmax_scale,
    paste_back,
    preprocess_case,
    resize_labels,
    zscore_in_mask,
)
from glioseg.errors import GliosegError

PAPER = load_config("paper").preprocess
DEFAULT = load_config("default").preprocess
CPU = load_config("cpu").preprocess


def test_minmax_per_volume_not_per_slice():
    vol = np.stack([np.full((3, 3), 10.0), np.full((3, 3), 20.0), np.full((3, 3), 30.0)], axis=-1)
    out = minmax_scale(vol)
    # per-slice scaling (the tutorial's accident) would make every constant slice 0
    np.testing.assert_allclose(out[0, 0], [0.0, 0.5, 1.0])


def test_zscore_inside_mask_only():
    vol = np.array([0.0, 2.0, 4.0, 6.0])
    mask = np.array([False, True, True, True])
    out = zscore_in_mask(vol, mask)
    assert out[0] == 0
    np.testing.assert_allclose(out[1:], (np.array([2, 4, 6]) - 4) / np.std([2, 4, 6]), rtol=1e-6)


def invert_labels(label: np.ndarray, crop: CropInfo) -> np.ndarray:
    """The preprocessed label map back on the original grid: the inverse the tests check."""
    return paste_back(resize_labels(label, crop.cropped_shape).astype(np.uint8), crop, fill=0)


def test_brain_box_is_tight_and_includes_labels():
    image = np.zeros((1, 10, 10, 10))
    image[0, 2:5, 3:7, 4:6] = 1
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[8, 8, 8] = 1
    assert brain_box(image) == ((2, 5), (3, 7), (4, 6))
    assert brain_box(image, label) == ((2, 9), (3, 9), (4, 9))
    assert brain_box(image, margin=3) == ((0, 8), (0, 10), (1, 9))


def test_default_preset_inverts_labels_exactly(tmp_path, write_case):
    write_case(tmp_path, "Brats18_A_1", shape=(20, 22, 24))
    case = discover(tmp_path).cases[0]
    result = preprocess_case(case, DEFAULT)
    assert result.image.shape[1:] == (18, 19, 24)  # zero border cropped away
    original = load_case(case).label
    np.testing.assert_array_equal(invert_labels(result.label, result.crop), original)


def test_resampled_probabilities_return_to_original_grid(tmp_path, write_case):
    write_case(tmp_path, "Brats18_A_1", shape=(20, 22, 24))
    case = discover(tmp_path).cases[0]
    result = preprocess_case(case, CPU)
    assert result.crop.spacing == pytest.approx((18 / 9, 19 / 10, 24 / 12))
    assert result.image.shape[1:] == (9, 10, 12)
    probs = np.zeros((4, *result.crop.shape), dtype=np.float32)
    probs[0] = 1
    back = invert_probabilities(probs, result.crop)
    assert back.shape == (4, 20, 22, 24)
    np.testing.assert_allclose(back.sum(0), 1.0, atol=1e-6)


def test_cache_skips_and_redoes_when_preset_changes(tmp_path, write_case):
    root = tmp_path / "data"
    write_case(root, "Brats18_A_1", seed=1)
    write_case(root, "Brats18_B_1", seed=2)
    cases = discover(root).cases
    cache = tmp_path / "cache"
    first = preprocess_dataset(cases, DEFAULT, cache, progress=False)
    assert sorted(first.done) == ["Brats18_A_1", "Brats18_B_1"]
    second = preprocess_dataset(cases, DEFAULT, cache, progress=False)
    assert second.done == [] and sorted(second.cached) == ["Brats18_A_1", "Brats18_B_1"]
    changed = PreprocessConfig(**{**DEFAULT.__dict__, "margin": 1})
    third = preprocess_dataset(cases, changed, cache, progress=False)
    assert sorted(third.done) == ["Brats18_A_1", "Brats18_B_1"]
    assert cached_case_ids(cache, changed) == ["Brats18_A_1", "Brats18_B_1"]
    entry = load_cached(cache, "Brats18_A_1", changed)
    assert entry.image.dtype == np.float32 and entry.label.dtype == np.uint8


def test_paper_preset_drops_cases_with_little_tumor(tmp_path, write_case):
    # 160^3 so the fixed crop fits; the tiny label (8^3 voxels) is far below 1% of 128^3
    write_case(tmp_path, "Brats18_SMALL_1", shape=(240, 240, 155))
    case = discover(tmp_path).cases[0]
    report = preprocess_dataset([case], PAPER, tmp_path / "cache", progress=False)
    assert list(report.dropped) == ["Brats18_SMALL_1"]
    meta = json.loads((tmp_path / "cache" / "Brats18_SMALL_1.json").read_text())
    assert meta["kept"] is False and not (tmp_path / "cache" / "Brats18_SMALL_1.npz").exists()


@pytest.mark.real
def test_real_cases_paper_and_default(real_data_root, tmp_path):
    cases = discover(real_data_root).cases
    assert len(cases) == 16
    paper = preprocess_dataset(cases, PAPER, tmp_path / "paper", workers=2, progress=False)
    assert paper.failed == []
    kept = sorted(paper.done)
    assert len(kept) + len(paper.dropped) == 16
    sample = load_cached(tmp_path / "paper", kept[0], PAPER)
    assert sample.image.shape == (3, 128, 128, 128)
    assert sample.image.min() >= 0 and sample.image.max() <= 1
    assert set(np.unique(sample.label)) <= {0, 1, 2, 3}
    assert sample.label.shape == (128, 128, 128)

    default = preprocess_dataset(cases, DEFAULT, tmp_path / "default", workers=2, progress=False)
    assert default.failed == [] and len(default.done) == 16
    for case in cases:
        entry = load_cached(tmp_path / "default", case.case_id, DEFAULT)
        original = load_case(case, ("flair",)).label
        np.testing.assert_array_equal(invert_labels(entry.label, entry.crop), original, err_msg=case.case_id)


# --- the cache's recipe is checked on every read --------------------------------------------------

RECIPE_CHANGES = {
    "spacing": ({"target_spacing": (2.0, 2.0, 2.0)}, "target_spacing [2.0, 2.0, 2.0] in the cache, null expected"),
    "normalisation": ({"normalization": "minmax"}, 'normalization "minmax" in the cache, "zscore" expected'),
    "modalities": (
        {"modalities": ("flair", "t1ce", "t2")},
        'modalities ["flair", "t1ce", "t2"] in the cache, ["flair", "t1", "t1ce", "t2"] expected',
    ),
    "crop": (
        {"crop": "fixed", "fixed_crop": ((2, 18), (2, 18), (2, 18))},
        'crop "fixed" in the cache, "brain" expected',
    ),
}


@pytest.fixture
def two_cases(tmp_path, write_case):
    root = tmp_path / "data"
    write_case(root, "Brats18_A_1", seed=1)
    write_case(root, "Brats18_B_1", seed=2)
    return discover(root).cases


@pytest.mark.parametrize("name", sorted(RECIPE_CHANGES))
def test_cache_of_another_recipe_is_refused_naming_the_difference(tmp_path, two_cases, name):
    change, difference = RECIPE_CHANGES[name]
    other = PreprocessConfig(**{**DEFAULT.__dict__, **change})
    cache = tmp_path / "cache"
    preprocess_dataset(two_cases, other, cache, progress=False)
    assert cached_case_ids(cache, other) == ["Brats18_A_1", "Brats18_B_1"]  # its own recipe reads it
    for read in (lambda: cached_case_ids(cache, DEFAULT), lambda: load_cached(cache, "Brats18_A_1", DEFAULT)):
        with pytest.raises(GliosegError) as info:
            read()
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{cache}: ")
        assert difference in message, message
        assert "another recipe" in message and "Fix: preprocess the data into a new cache folder" in message
    # only the settings that differ are named
    assert "image_dtype" not in message and "margin" not in message


def test_cache_holding_some_entries_of_another_recipe_is_refused(tmp_path, two_cases):
    cache = tmp_path / "cache"
    preprocess_dataset(two_cases, CPU, cache, progress=False)
    preprocess_dataset(two_cases[:1], DEFAULT, cache, progress=False)  # re-does A only; B stays at 2 mm
    assert load_cached(cache, "Brats18_A_1", DEFAULT).crop.spacing == (1.0, 1.0, 1.0)
    with pytest.raises(
        GliosegError,
        match=r"1 of 2 entries \(e\.g\. Brats18_B_1\) were preprocessed with another recipe"
        r".*target_spacing \[2\.0, 2\.0, 2\.0\] in the cache, null expected",
    ):
        cached_case_ids(cache, DEFAULT)
    with pytest.raises(GliosegError, match="target_spacing"):
        load_cached(cache, "Brats18_B_1", DEFAULT)


def test_entry_without_recorded_recipe_falls_back_to_preset_json(tmp_path, two_cases):
    """Entries written before the recipe was recorded in each entry are still explained."""
    cache = tmp_path / "cache"
    preprocess_dataset(two_cases, CPU, cache, progress=False)
    for meta_path in cache.glob("Brats18_*.json"):
        meta = json.loads(meta_path.read_text())
        del meta["recipe"]
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        GliosegError, match=r"all 2 entries .*target_spacing \[2\.0, 2\.0, 2\.0\] in the cache, null expected"
    ):
        cached_case_ids(cache, DEFAULT)
    (cache / "preset.json").unlink()
    with pytest.raises(
        GliosegError, match=f"fingerprint {CPU.fingerprint()} in the cache, {DEFAULT.fingerprint()} expected"
    ):
        load_cached(cache, "Brats18_A_1", DEFAULT)


@pytest.mark.parametrize("order", ["C", "F"])
def test_zscore_in_slabs_is_the_plain_float64_formula_bit_for_bit(monkeypatch, order):
    """The slab-wise z-score (a few voxels per slab here) gives exactly the one-shot float64 result, in either memory
    order."""
    from glioseg.data import preprocess

    monkeypatch.setattr(preprocess, "ZSCORE_SLAB_VOXELS", 7)
    rng = np.random.default_rng(0)
    volume = np.asarray(rng.normal(300, 80, (9, 8, 7)).astype(np.float32), order=order)
    mask = rng.random((9, 8, 7)) > 0.3
    values = volume[mask].astype(np.float64)
    expected = ((volume.astype(np.float64) - values.mean()) / values.std()).astype(np.float32)
    expected[~mask] = 0
    out = zscore_in_mask(volume, mask)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("offset_inside_crop", [False, True])
def test_preprocessing_does_not_depend_on_memory_order_nor_on_reusing_the_whole_mask(
    tmp_path, write_case, offset_inside_crop
):
    """A Fortran-ordered image (as load_case gives) and a C-ordered copy preprocess to the same arrays,
    and equal the recipe written out with brain_mask on the crop, also when the crop's background differs."""
    import dataclasses

    from glioseg.data.preprocess import brain_mask, preprocess_loaded

    write_case(tmp_path, "Brats18_A_1", shape=(20, 22, 24))
    loaded = load_case(discover(tmp_path).cases[0], with_label=False)
    assert loaded.image[0].flags.f_contiguous  # NIfTI's order, read without a transposing copy
    image = np.array(loaded.image, order="C")
    if (
        offset_inside_crop
    ):  # channel 0: -7 outside the head, 0 over much of the brain: the crop's background is 0, not -7
        inside = brain_mask(image)
        image[0][~inside] = -7
        image[0][inside & (np.arange(20) < 14)[:, None, None]] = 0
        assert brain_mask(image)[inside].all()  # the other channels still mark the brain
    c_loaded = dataclasses.replace(loaded, image=image)
    f_loaded = dataclasses.replace(loaded, image=np.asfortranarray(image))
    config = PreprocessConfig(target_spacing=None)
    c_result, f_result = preprocess_loaded(c_loaded, config), preprocess_loaded(f_loaded, config)
    np.testing.assert_array_equal(c_result.image, f_result.image)
    box = brain_box(image)
    cropped = image[(slice(None), *(slice(a, b) for a, b in box))]
    mask = brain_mask(cropped)
    expected = np.stack([zscore_in_mask(channel, mask) for channel in cropped])
    np.testing.assert_array_equal(c_result.image, expected)


def test_the_whole_volume_mask_is_reused_only_when_the_crop_has_its_background(monkeypatch):
    """Zeros inside the brain box keep the crop's background at 0: the whole mask is cropped, not recomputed,
    and the result is the recipe's. A crop without zeros has its minimum as background: recomputed."""
    from glioseg.data import preprocess
    from glioseg.data.discovery import LoadedCase

    masks = []
    real = preprocess._mask_from_background
    monkeypatch.setattr(
        preprocess,
        "_mask_from_background",
        lambda image, background: masks.append(background) or real(image, background),
    )
    for hollow, computed in ((True, 1), (False, 2)):
        masks.clear()
        image = np.zeros((2, 10, 10, 10), dtype=np.float32)
        image[:, 2:8, 2:8, 2:8] = np.arange(1, 217, dtype=np.float32).reshape(6, 6, 6)
        if hollow:
            image[:, 4:6, 4:6, 4:6] = 0
        case = types.SimpleNamespace(case_id="A", images={}, reference_image="A.nii.gz")
        loaded = LoadedCase(case, image, ("flair", "t1"), None, np.eye(4))  # type: ignore[arg-type]
        result = preprocess.preprocess_loaded(loaded, PreprocessConfig(modalities=("flair", "t1"), target_spacing=None))
        assert len(masks) == computed
        cropped = image[:, 2:8, 2:8, 2:8]
        mask = preprocess.brain_mask(cropped)
        assert mask.sum() == (216 - 8 if hollow else 216 - 1)  # without zeros the minimum (1) is the background
        np.testing.assert_array_equal(result.image, np.stack([zscore_in_mask(channel, mask) for channel in cropped]))


@pytest.mark.parametrize(
    "shape, out",
    [
        ((3, 17, 23, 11), (9, 40, 11)),  # down, up, unchanged
        ((4, 33, 34, 35), (20, 51, 36)),
        ((2, 5, 6, 7), (5, 13, 2)),
        ((2, 1, 4, 9), (3, 1, 9)),  # a single sample becomes three (all equal)
        ((1, 9, 9, 9), (1, 1, 1)),  # to one sample: the first
    ],
)
def test_resize_image_numpy_equals_torch_trilinear(shape, out):
    import torch
    import torch.nn.functional as F

    from glioseg.data.preprocess import resize_image_numpy

    image = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32) * 100
    ours = resize_image_numpy(image, out)
    reference = F.interpolate(torch.from_numpy(image)[None], size=out, mode="trilinear", align_corners=True)[0]
    assert ours.dtype == np.float32 and ours.shape == (shape[0], *out)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-6, atol=1e-4)  # values up to ~400: a few ulp


def test_resize_image_numpy_by_hand_and_on_a_linear_ramp():
    from glioseg.data.preprocess import resize_image_numpy

    line = np.array([0.0, 10.0, 20.0], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(resize_image_numpy(line, (5, 1, 1)).ravel(), [0, 5, 10, 15, 20], atol=1e-6)
    x, y, z = np.meshgrid(np.arange(6), np.arange(7), np.arange(5), indexing="ij")
    ramp = (2.0 * x - 3.0 * y + 0.5 * z).astype(np.float32)[None]  # trilinear is exact on a linear function
    out = resize_image_numpy(ramp, (11, 4, 9))
    gx, gy, gz = np.meshgrid(np.linspace(0, 5, 11), np.linspace(0, 6, 4), np.linspace(0, 4, 9), indexing="ij")
    np.testing.assert_allclose(out[0], 2.0 * gx - 3.0 * gy + 0.5 * gz, atol=1e-5)


def test_preprocess_with_the_numpy_resize_equals_torch_on_a_2mm_recipe(tmp_path, write_case):
    from glioseg.data.preprocess import preprocess_loaded, resize_image_numpy

    write_case(tmp_path, "Brats18_R_1", shape=(33, 34, 35), seed=5)
    loaded = load_case(discover(tmp_path).cases[0], CPU.modalities, with_label=False)
    ours = preprocess_loaded(loaded, CPU, resize=resize_image_numpy)
    reference = preprocess_loaded(loaded, CPU)
    assert ours.crop == reference.crop and ours.crop.shape != ours.crop.cropped_shape  # it was resampled
    np.testing.assert_allclose(ours.image, reference.image, rtol=0, atol=1e-5)


def test_a_second_process_waits_for_the_cache_and_then_finds_it_current(tmp_path, write_case):
    """`cv train` of the folds and `cv train --all`, started together on one work folder whose data had been copied
    anew, both rewrote every entry; a fold worker of the first read an entry while the second had it removed for its
    rewrite, and the fold failed ("missing or unreadable cache entry"). Now the second waits for the first (a
    process holding the cache's lock stands in for it) and then rewrites nothing."""
    import subprocess
    import sys
    import threading

    root, cache = tmp_path / "data", tmp_path / "cache"
    write_case(root, "Brats18_A_1", seed=1)
    cases = discover(root).cases
    assert preprocess_dataset(cases, DEFAULT, cache, progress=False).done == ["Brats18_A_1"]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; f = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(float(sys.argv[2]))", str(cache), "3"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    stamp = (cache / "Brats18_A_1.json").stat().st_mtime_ns
    reports = []
    waiting = threading.Thread(target=lambda: reports.append(preprocess_dataset(cases, DEFAULT, cache, progress=False)))
    waiting.start()
    waiting.join(timeout=1.5)
    assert waiting.is_alive() and not reports  # blocked on the lock, not checking or writing
    holder.wait(timeout=30)
    waiting.join(timeout=30)
    assert reports and reports[0].cached == ["Brats18_A_1"] and reports[0].done == []
    assert (cache / "Brats18_A_1.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.iterdir()) == ["Brats18_A_1.json", "Brats18_A_1.npz", "preset.json"]
