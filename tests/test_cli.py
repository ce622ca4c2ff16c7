"""The foundation's user-facing failures: one line naming the file, non-zero exit, nothing half-written."""

import nibabel as nib
import numpy as np
import pytest
from conftest import BRATS_AFFINE

from glioseg.cli import main

CASE = "Brats18_BAD_1"


def _nifti(path, data):
    nib.save(nib.Nifti1Image(data, BRATS_AFFINE), str(path))


def _missing_modality(folder):
    (folder / f"{CASE}_flair.nii.gz").unlink()
    return f"{CASE}", "no flair image"


def _different_shapes(folder):
    _nifti(folder / f"{CASE}_t2.nii.gz", np.ones((20, 22, 25), dtype=np.int16))
    return f"{CASE}_t2.nii.gz", "shape"


def _four_d(folder):
    _nifti(folder / f"{CASE}_t1ce.nii.gz", np.ones((20, 22, 24, 3), dtype=np.int16))
    return f"{CASE}_t1ce.nii.gz", "4D image"


def _nan(folder):
    data = np.ones((20, 22, 24), dtype=np.float32)
    data[5, 5, 5] = np.nan
    _nifti(folder / f"{CASE}_flair.nii.gz", data)
    return f"{CASE}_flair.nii.gz", "NaN"


def _empty_file(folder):
    (folder / f"{CASE}_t2.nii.gz").write_bytes(b"")
    return f"{CASE}_t2.nii.gz", "empty"


def _corrupt_gzip(folder):
    path = folder / f"{CASE}_t1.nii.gz"
    raw = bytearray(path.read_bytes())
    raw[40:60] = b"\x00" * 20
    path.write_bytes(bytes(raw))
    return f"{CASE}_t1.nii.gz", "corrupt|cannot be read|not a readable"


def _unknown_label(folder):
    seg = np.zeros((20, 22, 24), dtype=np.uint8)
    seg[10, 10, 10] = 3  # 3 is not a BraTS 2018 label
    _nifti(folder / f"{CASE}_seg.nii.gz", seg)
    return f"{CASE}_seg.nii.gz", r"value\(s\) \[3\]"


BROKEN = [_missing_modality, _different_shapes, _four_d, _nan, _empty_file, _corrupt_gzip, _unknown_label]


@pytest.mark.parametrize("break_it", BROKEN, ids=[f.__name__.strip("_") for f in BROKEN])
def test_preprocess_reports_broken_case_and_writes_nothing_for_it(tmp_path, write_case, capsys, break_it):
    root = tmp_path / "data"
    folder = write_case(root, CASE, shape=(20, 22, 24))
    write_case(root, "Brats18_GOOD_1", shape=(20, 22, 24), seed=3)
    name, message = break_it(folder)
    cache = tmp_path / "cache"
    code = main(["preprocess", str(root), "--preset", "default", "--out", str(cache), "--quiet", "--workers", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0
    assert len(errors) == 1, err
    assert name in errors[0] and "Fix:" in errors[0]
    assert __import__("re").search(message, errors[0]), errors[0]
    assert not list(cache.glob(f"{CASE}*")), "nothing may be cached for the broken case"
    assert (cache / "Brats18_GOOD_1.npz").exists() and (cache / "Brats18_GOOD_1.json").exists()
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]


def test_inspect_reports_problems_and_exits_nonzero(tmp_path, write_case, capsys):
    folder = write_case(tmp_path, CASE)
    _different_shapes(folder)
    assert main(["inspect", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "problems:    1" in out and f"{CASE}_t2.nii.gz" in out


def test_inspect_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err


def test_inspect_explicit_files(tmp_path, write_case, capsys):
    folder = write_case(tmp_path, CASE)
    args = ["inspect"] + [
        a for m in ("flair", "t1", "t1ce", "t2", "seg") for a in (f"--{m}", str(folder / f"{CASE}_{m}.nii.gz"))
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "layout:      files" in out and "cases:       1 (1 with labels" in out and "[0, 1, 2, 4]" in out


@pytest.mark.real
def test_inspect_real_brats2018(real_data_root, capsys):
    assert main(["inspect", str(real_data_root)]) == 0
    out = capsys.readouterr().out
    assert "layout:      brats2018" in out
    assert "cases:       16 (16 with labels" in out
    assert "flair (16/16), t1 (16/16), t1ce (16/16), t2 (16/16)" in out
    assert "values found [0, 1, 2, 4]" in out
    assert "240x240x155 (16)" in out and "1 x 1 x 1 mm (16)" in out
