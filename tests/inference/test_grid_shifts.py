"""``inference.shifts`` (``glioseg predict --shifts``): the average over the placements of a resampling recipe's
coarse grid, against an independent computation (scipy's zoom, a hand-written list of placements)."""

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage
import torch

from glioseg.checksums import shipped_checkpoints
from glioseg.data.discovery import discover, load_case
from glioseg.data.preprocess import grid_shifts, preprocess_loaded
from glioseg.heads import to_probabilities
from glioseg.inference.cascade import StagePrior
from glioseg.inference.predictor import Predictor
from tests.conftest import BRATS_AFFINE
from tests.inference.test_predictor import PointwiseLinear, tiny_config

EIGHT = [(1, 1, 1), (1, 1, 0), (1, 0, 1), (1, 0, 0), (0, 1, 1), (0, 1, 0), (0, 0, 1), (0, 0, 0)]


@pytest.mark.parametrize(
    "spacing, target, expected",
    [
        ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), EIGHT),
        ((1.0, 1.0, 5.0), (2.0, 2.0, 2.0), [(1, 1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 0)]),  # 5 mm slices: z not
        (
            (0.5, 0.5, 1.0),
            (2.0, 2.0, 2.0),
            [(2, 2, 1), (2, 2, 0), (2, 0, 1), (2, 0, 0), (0, 2, 1), (0, 2, 0), (0, 0, 1), (0, 0, 0)],
        ),
        ((1.0, 1.0, 1.0), (1.2, 1.2, 1.2), [(0, 0, 0)]),  # less than 1.5 source voxels per coarse voxel
        ((1.0, 1.0, 1.0), None, [(0, 0, 0)]),
    ],
)
def test_grid_shifts_are_half_a_coarse_voxel_in_source_voxels(spacing, target, expected):
    assert grid_shifts(spacing, target) == expected


def _bordered_case(root, case_id="Brats18_A_1", shape=(27, 30, 25), seed=5):
    """A case whose brain (non-zero) leaves 3 voxels of background on every side, so every placement fits."""
    rng = np.random.default_rng(seed)
    folder = root / case_id
    folder.mkdir(parents=True)
    inner = tuple(slice(3, n - 3) for n in shape)
    for i, m in enumerate(("flair", "t1", "t1ce", "t2")):
        data = np.zeros(shape, np.int16)
        smooth = scipy.ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
        data[inner] = (500 + 50 * i + 2000 * smooth[inner]).astype(np.int16)
        nib.save(nib.Nifti1Image(data, BRATS_AFFINE), str(folder / f"{case_id}_{m}.nii.gz"))
    return discover(root).cases[0]


@pytest.mark.parametrize("head", ["classes", "regions"])
def test_shifted_probabilities_are_the_average_of_the_eight_placements(tmp_path, head):
    case = _bordered_case(tmp_path)
    config = tiny_config(head, "[2.0,2.0,2.0]")
    model = PointwiseLinear(out_channels=4 if head == "classes" else 3)
    predictor = Predictor([model], config, overlap=0.5, shifts=True)
    loaded = predictor.read(case)
    probs = predictor.predict_probabilities(loaded)

    # expected: each placement by hand (the box grown at its start), scipy's linear zoom back, the mean
    plain = load_case(case, with_label=False)
    total, count = np.zeros(probs.shape), np.zeros(probs.shape[1:])
    boxes = []
    for shift in EIGHT:
        pre = preprocess_loaded(plain, config.preprocess, box_shift=shift)
        boxes.append(pre.crop.box)
        coarse = to_probabilities(model(torch.from_numpy(pre.image)[None]), head)[0].numpy()
        factors = [c / s for c, s in zip(pre.crop.cropped_shape, pre.crop.shape, strict=True)]
        fine = np.stack([scipy.ndimage.zoom(channel.astype(np.float64), factors, order=1) for channel in coarse])
        where = tuple(slice(a, b) for a, b in pre.crop.box)
        total[(slice(None), *where)] += fine
        count[where] += 1
    assert all(a - 1 == b for (a, _), (b, _) in zip(boxes[-1], boxes[0], strict=True))  # each axis really shifted
    inside = count > 0
    expected = np.zeros(probs.shape)
    expected[:, inside] = total[:, inside] / count[inside]
    if head == "classes":
        expected[0, ~inside] = 1.0
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    unshifted = Predictor([model], config, overlap=0.5).predict_probabilities(loaded)
    assert np.abs(probs - unshifted).max() > 1e-3  # the placements differ: the average is not one of them


def test_shifts_change_nothing_without_resampling_and_labels_follow_the_average(tmp_path):
    case = _bordered_case(tmp_path)
    native = tiny_config("classes", "null")
    model = PointwiseLinear()
    loaded = Predictor([model], native).read(case)
    np.testing.assert_array_equal(
        Predictor([model], native, shifts=True).predict_probabilities(loaded),
        Predictor([model], native).predict_probabilities(loaded),
    )
    # with resampling, the written label map is the argmax of the averaged probabilities
    coarse = tiny_config("classes", "[2.0,2.0,2.0]")
    shifted = Predictor([model], coarse, shifts=True)
    probs = shifted.predict_probabilities(loaded)
    shifted.predict_case(case, tmp_path / "out" / "Brats18_A_1.nii.gz", labels_convention="brats2023")
    written = np.asarray(nib.load(str(tmp_path / "out" / "Brats18_A_1.nii.gz")).dataobj)
    np.testing.assert_array_equal(written, np.argmax(probs, axis=0))
    assert len(np.unique(written)) > 1


def test_the_stamp_of_a_prediction_without_shifts_is_what_it_was_before_the_setting():
    """Label maps written before ``inference.shifts`` existed keep their stamp (``predict --continue`` keeps them):
    the shipped model's settings hash, as computed at 5610b6f."""
    stamp = Predictor.from_checkpoints(shipped_checkpoints(), device="cpu").stamp("brats2018")
    assert "settings=93f650d82256 " in stamp
    shifted = Predictor.from_checkpoints(shipped_checkpoints(), device="cpu", shifts=True).stamp("brats2018")
    assert "settings=93f650d82256 " not in shifted and shifted.split(" settings=")[0] == stamp.split(" settings=")[0]


def test_a_cascades_first_stage_averages_its_placements(tmp_path):
    """A cascade's second stage works on the native grid (nothing to shift); its first stage, given shifts, gives
    the prior the labels it writes alone with them."""
    case = _bordered_case(tmp_path)
    stage1 = Predictor([PointwiseLinear()], tiny_config("classes", "[2.0,2.0,2.0]"), shifts=True)
    loaded = stage1.read(case)
    stage1.predict_case(case, tmp_path / "alone" / "Brats18_A_1.nii.gz", labels_convention="brats2023")
    alone = np.asarray(nib.load(str(tmp_path / "alone" / "Brats18_A_1.nii.gz")).dataobj)
    np.testing.assert_array_equal(StagePrior(stage1)(loaded), alone)
    plain = Predictor([PointwiseLinear()], tiny_config("classes", "[2.0,2.0,2.0]"))
    assert not np.array_equal(StagePrior(plain)(loaded), alone)


def test_predict_shifts_on_the_command_line_is_the_predictors_and_is_stamped(tmp_path, capsys):
    from tests.conftest import run_cli
    from tests.inference.test_predictor import _save_run

    case = _bordered_case(tmp_path / "data")
    config = tiny_config("classes", "[2.0,2.0,2.0]", patch=(24, 24, 24))
    model = _save_run(tmp_path / "run", config)
    code, _, err = run_cli(
        capsys,
        "predict",
        tmp_path / "data",
        "-o",
        tmp_path / "cli",
        "--model",
        tmp_path / "run",
        "--shifts",
        "--device",
        "cpu",
    )
    assert code == 0, err
    written = nib.load(str(tmp_path / "cli" / "Brats18_A_1.nii.gz"))
    shifted = Predictor([model], config, shifts=True)
    expected = np.argmax(shifted.predict_probabilities(shifted.read(case)), axis=0)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.take([0, 1, 2, 4], expected))  # BraTS 2018 labels
    assert written.header["descrip"].tobytes().decode().rstrip("\0") == shifted.stamp("brats2018")
