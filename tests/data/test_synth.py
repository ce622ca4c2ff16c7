"""Synthetic cohorts: determinism, anatomy, contrasts, sizes, speed and the files of every layout."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.discovery import MODALITIES, MSD_CHANNELS
from glioseg.data.synth import LAYOUTS, SyntheticCase, brats_affine, case_ids, synthesize_case, write_cohort
from glioseg.errors import GliosegError
from glioseg.labels import BACKGROUND, EDEMA, ENHANCING, NECROSIS, get_convention

SHAPE = (33, 34, 35)
CROP_1_PERCENT = 0.01 * 128**3  # 1% of the 128^3 crop of the paper, in mm^3 at 1 mm


def _case(seed: int, shape=SHAPE, **kwargs) -> SyntheticCase:
    return synthesize_case(np.random.default_rng(seed), shape, **kwargs)


def _counts(label: np.ndarray) -> np.ndarray:
    """Voxels per internal class, (4,)."""
    return np.bincount(label.ravel(), minlength=4)


# ----------------------------------------------------------------------------- one case


def test_same_seed_gives_the_same_case_and_another_seed_a_different_one():
    a, b, c = _case(3), _case(3), _case(4)
    for m in MODALITIES:
        np.testing.assert_array_equal(a.images[m], b.images[m])
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.images["flair"], c.images["flair"])
    assert not np.array_equal(a.label, c.label)


def test_case_has_documented_types_shapes_and_brats_like_affine():
    case = synthesize_case(np.random.default_rng(0), SHAPE, (1.0, 1.5, 2.0))
    assert tuple(case.images) == MODALITIES
    for image in case.images.values():
        assert image.dtype == np.int16 and image.shape == SHAPE
    assert case.label.dtype == np.uint8 and case.label.shape == SHAPE
    assert set(np.unique(case.label)) <= {BACKGROUND, NECROSIS, EDEMA, ENHANCING}
    expected = np.array([[-1.0, 0, 0, 0], [0, -1.5, 0, 33 * 1.5], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(case.affine, expected)
    # BraTS files: diag(-1, -1, 1) with origin (0, 239, 0) for 240 x 240 x 155
    np.testing.assert_allclose(brats_affine((240, 240, 155), (1, 1, 1))[:3, 3], [0, 239, 0])


def test_background_is_zero_and_the_tumor_lies_inside_the_brain():
    for seed in range(4):
        case = _case(seed, (40, 44, 36))
        brain = case.images["flair"] > 0
        for m in MODALITIES:  # one skull-stripped mask shared by all modalities
            np.testing.assert_array_equal(case.images[m] > 0, brain)
        assert 0.1 < brain.mean() < 0.6
        assert np.all(brain[case.label > 0])
        assert case.label.any()


def test_intensities_are_positive_integers_in_a_brats_like_range_that_differs_per_modality():
    case = _case(1, (48, 48, 48))
    brain = case.images["t1"] > 0
    medians = []
    for m in MODALITIES:
        values = case.images[m][brain]
        assert values.min() >= 1 and values.max() < 4000
        assert 50 < np.median(values) < 1000
        medians.append(np.median(values))
    assert len({round(v, -1) for v in medians}) == 4


def test_every_tumor_class_is_present_and_the_layers_are_nested():
    counts = []
    for seed in range(8):
        case = _case(seed, (40, 40, 40), small_tumor_fraction=0.0)
        label = case.label
        counts.append(_counts(label))
        brain_size = np.count_nonzero(case.images["t2"])
        assert 0.005 < np.count_nonzero(label) / brain_size < 0.35
        # necrosis is wrapped in enhancing tumor: its outer face-neighbours are almost all ET
        outside = _face_neighbours(label == NECROSIS)
        assert np.mean(label[outside] == ENHANCING) > 0.9
        # the core is wrapped in edema, except where it meets the brain surface
        outside = _face_neighbours(np.isin(label, (NECROSIS, ENHANCING)))
        assert np.mean(label[outside] == EDEMA) > 0.7
    present = np.array(counts)[:, 1:] > 0
    assert present.all(axis=1).mean() >= 7 / 8


def _face_neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels outside ``mask`` that share a face with it."""
    grown = mask.copy()
    for axis in range(3):
        grown |= np.roll(mask, 1, axis) | np.roll(mask, -1, axis)
    return grown & ~mask


def test_tumor_size_scales_with_the_image_and_small_tumors_are_optional():
    # BraTS geometry (240 x 240 x 155 mm) drawn at 3 mm: 27 mm^3 per voxel
    shape, spacing = (80, 80, 52), (3.0, 3.0, 3.0)
    usual = [
        _counts(_case(seed, shape, spacing=spacing, small_tumor_fraction=0.0).label)[1:].sum() * 27 for seed in range(8)
    ]
    small = [
        _counts(_case(seed, shape, spacing=spacing, small_tumor_fraction=1.0).label)[1:].sum() * 27 for seed in range(8)
    ]
    assert np.mean(np.array(usual) > CROP_1_PERCENT) >= 7 / 8
    assert 40_000 < np.median(usual) < 250_000
    assert all(0 < s < CROP_1_PERCENT for s in small)
    # the same tumor, drawn on a 2x finer grid of the same field of view, has ~8x the voxels
    coarse = _counts(_case(5, (40, 40, 40), spacing=(2.0, 2.0, 2.0), small_tumor_fraction=0.0).label)[1:].sum()
    fine = _counts(_case(5, (80, 80, 80), spacing=(1.0, 1.0, 1.0), small_tumor_fraction=0.0).label)[1:].sum()
    assert 5 < fine / coarse < 12


def _medians(case: SyntheticCase) -> dict[str, dict[str, float]]:
    """Median intensity of each modality in each compartment (``normal``: brain without tumor)."""
    brain = case.images["flair"] > 0
    masks = {
        "normal": brain & (case.label == BACKGROUND),
        "ncr": case.label == NECROSIS,
        "ed": case.label == EDEMA,
        "et": case.label == ENHANCING,
    }
    return {m: {name: float(np.median(case.images[m][mask])) for name, mask in masks.items()} for m in MODALITIES}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sub_regions_have_brats_like_contrasts(seed):
    case = _case(seed, (48, 48, 48), small_tumor_fraction=0.0)
    med = _medians(case)
    flair, t1, t1ce, t2 = med["flair"], med["t1"], med["t1ce"], med["t2"]
    # edema: bright on FLAIR and T2, not on T1ce
    assert flair["ed"] > 1.4 * flair["normal"]
    assert t2["ed"] > 1.4 * t2["normal"]
    assert t1ce["ed"] < 1.3 * t1ce["normal"]
    # enhancing tumor: bright on T1ce, much less so on T1
    assert t1ce["et"] > 2.0 * max(t1ce["normal"], t1ce["ncr"], t1ce["ed"])
    assert t1ce["et"] / t1ce["normal"] > 1.8 * t1["et"] / t1["normal"]
    # necrosis: dark on T1ce and T1, bright on T2
    assert t1ce["ncr"] < 0.5 * t1ce["et"]
    assert t1["ncr"] < 0.8 * t1["normal"]
    assert t2["ncr"] > 1.2 * t2["et"] and t2["ncr"] > 1.5 * t2["normal"]


def test_no_single_modality_separates_the_tumor_from_healthy_tissue():
    case = _case(0, (48, 48, 48), small_tumor_fraction=0.0)
    normal = (case.images["t2"] > 0) & (case.label == BACKGROUND)
    # CSF is brighter than edema on T2 ...
    assert np.percentile(case.images["t2"][normal], 99) > np.median(case.images["t2"][case.label == EDEMA])
    # ... and as dark as necrosis on T1ce
    assert np.percentile(case.images["t1ce"][normal], 2) < np.median(case.images["t1ce"][case.label == NECROSIS])
    # bright vessels on T1ce outside the tumor
    assert (
        np.count_nonzero(case.images["t1ce"][normal] > np.median(case.images["t1ce"][case.label == ENHANCING]) * 0.7)
        > 0
    )


def test_a_64_cube_case_takes_well_under_half_a_second():
    synthesize_case(np.random.default_rng(0), (64, 64, 64))  # warm-up
    best = float("inf")
    for seed in range(3):  # best of three: the test machine is shared
        start = time.perf_counter()
        synthesize_case(np.random.default_rng(seed), (64, 64, 64))
        best = min(best, time.perf_counter() - start)
    assert best < 0.5


@pytest.mark.parametrize("shape", [(15, 32, 32), (32, 32), (32.5, 32, 32)])
def test_bad_shape_is_refused(shape):
    with pytest.raises(GliosegError, match="shape"):
        synthesize_case(np.random.default_rng(0), shape)


# ----------------------------------------------------------------------------- cohorts on disk


EXPECTED_FILES = {
    "brats2018": [
        "Brats18_SYN_001_1/Brats18_SYN_001_1_{}.nii.gz",
        "Brats18_SYN_002_1/Brats18_SYN_002_1_{}.nii.gz",
    ],
    "brats2020": [
        "BraTS20_Training_001/BraTS20_Training_001_{}.nii",
        "BraTS20_Training_002/BraTS20_Training_002_{}.nii",
    ],
    "brats2021": [
        "BraTS2021_00000/BraTS2021_00000_{}.nii.gz",
        "BraTS2021_00001/BraTS2021_00001_{}.nii.gz",
    ],
    "brats2023": [
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-{}.nii.gz",
        "BraTS-GLI-00001-000/BraTS-GLI-00001-000-{}.nii.gz",
    ],
}
KEYS_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
ET_VALUE = {"brats2018": 4, "brats2020": 4, "brats2021": 4, "brats2023": 3, "msd": 3}
CONVENTION = {
    "brats2018": "brats2018",
    "brats2020": "brats2018",
    "brats2021": "brats2018",
    "brats2023": "brats2023",
    "msd": "msd",
}


def _listing(root: Path) -> list[str]:
    """Every file under ``root`` (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cohort_files_are_named_as_the_layout_ships_them(tmp_path, layout, with_labels):
    ids = write_cohort(tmp_path, 2, SHAPE, layout=layout, seed=1, with_labels=with_labels)
    assert ids == case_ids(layout, 2)
    if layout == "msd":
        folder = "imagesTr" if with_labels else "imagesTs"
        expected = [f"{folder}/BRATS_00{i}.nii.gz" for i in (1, 2)]
        expected += [f"labelsTr/BRATS_00{i}.nii.gz" for i in (1, 2)] if with_labels else []
    else:
        keys = tuple(KEYS_2023.values() if layout == "brats2023" else MODALITIES) + (("seg",) if with_labels else ())
        expected = [pattern.format(key) for pattern in EXPECTED_FILES[layout] for key in keys]
    assert _listing(tmp_path) == sorted(expected)  # no temporary files left behind either


def _case_file(root: Path, layout: str, case_id: str, key: str) -> Path:
    """The file of one modality (internal name) or ``seg`` of a BraTS-layout case."""
    if layout == "brats2023":
        return root / case_id / f"{case_id}-{KEYS_2023.get(key, key)}.nii.gz"
    return root / case_id / f"{case_id}_{key}{'.nii' if layout == 'brats2020' else '.nii.gz'}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cohort_files_hold_the_synthetic_case_in_the_layout_convention(tmp_path, layout):
    ids = write_cohort(tmp_path, 2, SHAPE, layout=layout, seed=7)
    convention = get_convention(CONVENTION[layout])
    for index, case_id in enumerate(ids):
        case = synthesize_case(np.random.default_rng([7, index]), SHAPE)
        if layout == "msd":
            image = nib.load(tmp_path / "imagesTr" / f"{case_id}.nii.gz")
            data = np.asanyarray(image.dataobj)
            assert data.shape == (*SHAPE, 4) and data.dtype == np.int16
            for channel, modality in enumerate(MSD_CHANNELS):  # FLAIR, T1w, T1gd, T2w
                np.testing.assert_array_equal(data[..., channel], case.images[modality])
            seg = nib.load(tmp_path / "labelsTr" / f"{case_id}.nii.gz")
        else:
            for modality in MODALITIES:
                image = nib.load(_case_file(tmp_path, layout, case_id, modality))
                data = np.asanyarray(image.dataobj)
                assert data.dtype == np.int16
                np.testing.assert_array_equal(data, case.images[modality])
            seg = nib.load(_case_file(tmp_path, layout, case_id, "seg"))
        np.testing.assert_allclose(image.affine, case.affine, atol=1e-5)
        np.testing.assert_allclose(seg.affine, case.affine, atol=1e-5)
        labels = np.asanyarray(seg.dataobj)
        assert set(np.unique(labels)) <= set(convention.values)
        expected = np.zeros(SHAPE, dtype=np.int64)
        for source, internal in convention.to_internal.items():
            expected[case.label == internal] = source
        np.testing.assert_array_equal(labels, expected)
        assert ET_VALUE[layout] in labels


def test_brats2020_files_are_uncompressed_nifti(tmp_path):
    (case_id,) = write_cohort(tmp_path, 1, SHAPE, layout="brats2020")
    header = (tmp_path / case_id / f"{case_id}_flair.nii").read_bytes()[:348]
    assert header[344:348] == b"n+1\x00"  # NIfTI-1 single file, not gzip


def test_case_i_does_not_depend_on_the_cohort_size(tmp_path):
    write_cohort(tmp_path / "a", 1, SHAPE, layout="brats2021", seed=5)
    write_cohort(tmp_path / "b", 3, SHAPE, layout="brats2021", seed=5)
    write_cohort(tmp_path / "c", 1, SHAPE, layout="brats2021", seed=6)
    name = "BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz"
    a, b, c = (np.asanyarray(nib.load(tmp_path / d / name).dataobj) for d in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layout": "brats2019"}, "unknown synthetic layout"),
        ({"cases": -1}, "number of synthetic cases"),
        ({"seed": -3}, "seed"),
        ({"shape": (8, 8, 8)}, "shape"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"small_tumor_fraction": 1.5}, "small-tumor fraction"),
    ],
)
def test_bad_cohort_options_are_refused_before_writing(tmp_path, kwargs, match):
    options = {"cases": 1, "shape": SHAPE, **kwargs}
    with pytest.raises(GliosegError, match=match):
        write_cohort(tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
