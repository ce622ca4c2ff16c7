"""Case discovery and loading on synthetic cohorts in every layout, and on the real BraTS 2018 sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from glioseg.data.discovery import MODALITIES, case_from_files, discover, load_case
from glioseg.data.synth import synthesize_case, write_cohort
from glioseg.errors import GliosegError

SHAPE = (33, 34, 35)
SEED = 11
BRATS_LAYOUTS = ("brats2018", "brats2020", "brats2021", "brats2023")
ALL_LAYOUTS = (*BRATS_LAYOUTS, "msd")
DETECTED_LAYOUT = {
    "brats2018": "brats2018",
    "brats2020": "brats2018",
    "brats2021": "brats2021",
    "brats2023": "brats2023",
    "msd": "msd",
}
CONVENTION = {
    "brats2018": "brats2018",
    "brats2020": "brats2018",
    "brats2021": "brats2018",
    "brats2023": "brats2023",
    "msd": "msd",
}


def _cohort(root: Path, layout: str, cases: int = 3, with_labels: bool = True) -> list[str]:
    return write_cohort(root, cases, SHAPE, layout=layout, seed=SEED, with_labels=with_labels)


def _synthetic(ids: list[str], case_id: str):
    """The in-memory case that ``write_cohort`` wrote under ``case_id``."""
    return synthesize_case(np.random.default_rng([SEED, ids.index(case_id)]), SHAPE)


def _assert_loads_as_synthetic(case, synthetic) -> None:
    loaded = load_case(case)
    assert loaded.image.shape == (4, *SHAPE) and loaded.image.dtype == np.float32
    assert loaded.modalities == MODALITIES
    for channel, modality in enumerate(MODALITIES):
        np.testing.assert_array_equal(loaded.image[channel], synthetic.images[modality])
    np.testing.assert_array_equal(loaded.label, synthetic.label)  # back in the internal convention
    np.testing.assert_allclose(loaded.affine, synthetic.affine, atol=1e-5)


# ----------------------------------------------------------------------------- every layout


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_discover_finds_every_case_with_its_layout_convention_and_files(tmp_path, layout):
    ids = _cohort(tmp_path, layout)
    dataset = discover(tmp_path)
    assert dataset.layout == DETECTED_LAYOUT[layout]
    assert dataset.convention == CONVENTION[layout]
    assert [case.case_id for case in dataset.cases] == sorted(ids)
    assert dataset.problems == [] and dataset.warnings == []
    for case in dataset.cases:
        assert case.layout == DETECTED_LAYOUT[layout] and case.convention == CONVENTION[layout]
        assert tuple(case.images) == MODALITIES
        assert case.label is not None
        if layout == "msd":
            assert set(case.images.values()) == {tmp_path / "imagesTr" / f"{case.case_id}.nii.gz"}
            assert case.label == tmp_path / "labelsTr" / f"{case.case_id}.nii.gz"
        else:  # every file of a case carries its id and sits in its folder
            for path in [*case.images.values(), case.label]:
                assert path.name.startswith(case.case_id) and path.parent.name == case.case_id
            assert "seg" in case.label.name


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_load_case_returns_the_synthetic_images_and_internal_labels(tmp_path, layout):
    ids = _cohort(tmp_path, layout, cases=2)
    for case in discover(tmp_path).cases:
        _assert_loads_as_synthetic(case, _synthetic(ids, case.case_id))


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_cases_without_labels_are_found(tmp_path, layout):
    ids = _cohort(tmp_path, layout, cases=2, with_labels=False)
    dataset = discover(tmp_path)
    assert [case.case_id for case in dataset.cases] == sorted(ids)
    assert dataset.layout == DETECTED_LAYOUT[layout] and dataset.problems == []
    assert all(case.label is None for case in dataset.cases)
    loaded = load_case(dataset.cases[0])
    assert loaded.label is None and loaded.image.shape == (4, *SHAPE)


def test_single_case_folder_is_a_dataset_of_one(tmp_path):
    ids = _cohort(tmp_path, "brats2021", cases=2)
    dataset = discover(tmp_path / ids[1])
    assert [case.case_id for case in dataset.cases] == [ids[1]]


# ----------------------------------------------------------------------------- explicit files


def test_case_from_files_takes_the_id_from_the_names_and_loads(tmp_path):
    ids = _cohort(tmp_path, "brats2020", cases=1)
    folder = tmp_path / ids[0]
    case = case_from_files(**{m: folder / f"{ids[0]}_{m}.nii" for m in MODALITIES}, seg=folder / f"{ids[0]}_seg.nii")
    assert case.case_id == ids[0] and case.layout == "files" and case.convention == "brats2018"
    _assert_loads_as_synthetic(case, _synthetic(ids, ids[0]))


def test_case_from_files_with_brats2023_names_and_labels(tmp_path):
    ids = _cohort(tmp_path, "brats2023", cases=1)
    folder = tmp_path / ids[0]
    keys = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
    case = case_from_files(
        **{m: folder / f"{ids[0]}-{k}.nii.gz" for m, k in keys.items()},
        seg=folder / f"{ids[0]}-seg.nii.gz",
        convention="brats2023",
    )
    assert case.case_id == ids[0]
    _assert_loads_as_synthetic(case, _synthetic(ids, ids[0]))


def test_case_from_files_with_the_wrong_convention_is_refused_on_load(tmp_path):
    ids = _cohort(tmp_path, "brats2020", cases=1)
    folder = tmp_path / ids[0]
    case = case_from_files(
        **{m: folder / f"{ids[0]}_{m}.nii" for m in MODALITIES},
        seg=folder / f"{ids[0]}_seg.nii",
        convention="brats2023",
    )
    with pytest.raises(GliosegError, match=r"value\(s\) \[4\]"):  # ET is 4 in BraTS 2020, 3 in 2023
        load_case(case)


# ----------------------------------------------------------------------------- oddities of real releases


def test_brats2020_case_355_misnamed_label_is_accepted_with_a_warning(tmp_path):
    ids = _cohort(tmp_path, "brats2020")
    folder = tmp_path / ids[1]
    misnamed = folder / "W39_1998.09.19_Segm.nii"
    (folder / f"{ids[1]}_seg.nii").rename(misnamed)
    dataset = discover(tmp_path)
    assert [case.case_id for case in dataset.cases] == ids and dataset.problems == []
    case = dataset.cases[1]
    assert case.label == misnamed
    assert len(dataset.warnings) == 1
    assert "W39_1998.09.19_Segm.nii" in dataset.warnings[0] and ids[1] in dataset.warnings[0]
    _assert_loads_as_synthetic(case, _synthetic(ids, ids[1]))


@pytest.mark.parametrize("layout, missing_file", [("brats2021", "{}_t1ce.nii.gz"), ("brats2023", "{}-t2w.nii.gz")])
def test_a_missing_modality_is_a_problem_naming_the_case(tmp_path, layout, missing_file):
    ids = _cohort(tmp_path, layout)
    (tmp_path / ids[2] / missing_file.format(ids[2])).unlink()
    dataset = discover(tmp_path)
    assert [case.case_id for case in dataset.cases] == ids[:2]
    assert len(dataset.problems) == 1
    message = str(dataset.problems[0])
    assert ids[2] in message and ("t1ce" in message if layout == "brats2021" else "t2" in message)
    # asking for fewer modalities keeps the case
    assert len(discover(tmp_path, required=("flair", "t1") if layout == "brats2021" else ("flair", "t1ce")).cases) == 3


def test_msd_image_without_label_is_a_problem(tmp_path):
    ids = _cohort(tmp_path, "msd")
    (tmp_path / "labelsTr" / f"{ids[0]}.nii.gz").unlink()
    dataset = discover(tmp_path)
    assert [case.case_id for case in dataset.cases] == ids[1:]
    assert len(dataset.problems) == 1 and ids[0] in str(dataset.problems[0])


def test_the_same_case_in_two_folders_is_a_problem(tmp_path):
    ids = _cohort(tmp_path, "brats2021", cases=2)
    shutil.copytree(tmp_path / ids[0], tmp_path / "copy" / ids[0])
    dataset = discover(tmp_path)
    assert [case.case_id for case in dataset.cases] == ids[1:], "which copy is meant cannot be known: neither is used"
    assert len(dataset.problems) == 1 and "also found" in str(dataset.problems[0])


# ----------------------------------------------------------------------------- pairing by id


def test_files_are_paired_by_case_id_not_listing_order(tmp_path):
    # Ids whose files interleave in a sorted listing of one flat folder:
    # BraTS2021_100_* < BraTS2021_10_* < BraTS2021_1_* ('0' sorts before '_').
    written = _cohort(tmp_path / "cohort", "brats2021")
    renamed = {old: new for old, new in zip(written, ["BraTS2021_1", "BraTS2021_10", "BraTS2021_100"], strict=True)}
    flat = tmp_path / "flat"
    flat.mkdir()
    for old, new in renamed.items():
        for path in (tmp_path / "cohort" / old).iterdir():
            path.rename(flat / path.name.replace(old, new))
    listing = sorted(p.name for p in flat.iterdir())
    assert listing[0].startswith("BraTS2021_100_") and listing[-1].startswith("BraTS2021_1_")
    dataset = discover(flat)
    assert sorted(case.case_id for case in dataset.cases) == sorted(renamed.values())
    assert dataset.problems == []
    for case in dataset.cases:
        for path in [*case.images.values(), case.label]:
            assert path.name.startswith(case.case_id + "_")
        old = next(o for o, n in renamed.items() if n == case.case_id)
        _assert_loads_as_synthetic(case, _synthetic(written, old))


def test_an_unrelated_case_inside_another_case_folder_keeps_its_own_files(tmp_path):
    ids = _cohort(tmp_path, "brats2018")
    for path in (tmp_path / ids[2]).iterdir():  # case 3's files moved into case 1's folder
        path.rename(tmp_path / ids[0] / path.name)
    (tmp_path / ids[2]).rmdir()
    dataset = discover(tmp_path)
    assert [case.case_id for case in dataset.cases] == ids and dataset.problems == []
    for case in dataset.cases:
        assert all(case.case_id in path.name for path in [*case.images.values(), case.label])
        _assert_loads_as_synthetic(case, _synthetic(ids, case.case_id))


# ----------------------------------------------------------------------------- real data


@pytest.mark.real
def test_real_brats2018_sample_is_discovered_and_loads(real_data_root):
    # real_data_root (tests/conftest.py) is ../shared/data/brats2018 beside the repository, or a skip
    dataset = discover(real_data_root)
    assert dataset.layout == "brats2018" and dataset.convention == "brats2018"
    assert len(dataset.cases) == 16 and dataset.problems == []
    for case in dataset.cases:
        assert tuple(case.images) == MODALITIES and case.label is not None
        assert all(path.name.startswith(case.case_id) for path in [*case.images.values(), case.label])
    loaded = load_case(dataset.cases[0])
    assert loaded.image.shape == (4, 240, 240, 155)
    assert set(np.unique(loaded.label)) <= {0, 1, 2, 3} and loaded.label.any()
    np.testing.assert_allclose(np.abs(np.diag(loaded.affine)[:3]), 1.0)
