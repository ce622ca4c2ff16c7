import numpy as np
import pytest

from glioseg.errors import GliosegError
from glioseg.labels import CONVENTIONS, from_internal, region_masks, to_internal


@pytest.mark.parametrize(
    "name, source, internal",
    [
        ("brats2018", [0, 1, 2, 4], [0, 1, 2, 3]),
        ("brats2023", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("msd", [0, 1, 2, 3], [0, 2, 1, 3]),  # MSD: 1 edema, 2 non-enhancing, 3 enhancing
        ("brats2024", [0, 1, 2, 3], [0, 1, 2, 3]),
    ],
)
def test_conversion_round_trip(name, source, internal):
    src = np.array(source, dtype=np.int16)
    assert to_internal(src, name).tolist() == internal
    assert from_internal(np.array(internal), name).tolist() == source


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_regions_agree_between_source_and_internal(name):
    rng = np.random.default_rng(0)
    src = rng.choice(CONVENTIONS[name].values, size=(6, 7, 8))
    internal = to_internal(src, name)
    by_source, by_internal = region_masks(src, name), region_masks(internal)
    for region in ("wt", "tc", "et"):
        np.testing.assert_array_equal(by_source[region], by_internal[region])


def test_official_region_definitions_brats2018():
    src = np.array([0, 1, 2, 4])
    masks = region_masks(src, "brats2018")
    assert masks["wt"].tolist() == [False, True, True, True]
    assert masks["tc"].tolist() == [False, True, False, True]
    assert masks["et"].tolist() == [False, False, False, True]


def test_brats2024_resection_cavity_is_in_no_region_and_never_written():
    src = np.array([0, 1, 2, 3, 4])
    assert to_internal(src, "brats2024").tolist() == [0, 1, 2, 3, 0]
    masks = region_masks(src, "brats2024")  # the 2024 organisers: WT = 1-3, TC = 1 and 3, ET = 3
    assert masks["wt"].tolist() == [False, True, True, True, False]
    assert masks["tc"].tolist() == [False, True, False, True, False]
    assert masks["et"].tolist() == [False, False, False, True, False]
    assert from_internal(np.array([0, 1, 2, 3]), "brats2024").tolist() == [0, 1, 2, 3]  # 0 stays 0, not 4
    with pytest.raises(GliosegError, match=r"\[5\]"):
        to_internal(np.array([0, 5]), "brats2024")


def test_unknown_label_names_file_and_values():
    with pytest.raises(GliosegError, match=r"seg\.nii\.gz: label map has value\(s\) \[3\]"):
        to_internal(np.array([0, 1, 3]), "brats2018", "seg.nii.gz")


def test_non_integer_float_labels_rejected():
    with pytest.raises(GliosegError, match="non-integer"):
        to_internal(np.array([0.0, 1.5]), "brats2018", "x.nii")
    assert to_internal(np.array([0.0, 4.0]), "brats2018").tolist() == [0, 3]
