import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.io import atomic_path, read_data, read_header, read_volume, write_label_map
from glioseg.errors import GliosegError


def _save(path, data, affine=None):
    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_read_round_trip_keeps_affine(tmp_path):
    affine = np.diag([-1.0, -1.0, 2.5, 1.0])
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    vol = read_volume(_save(tmp_path / "a.nii.gz", data, affine))
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.spacing == (1.0, 1.0, 2.5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (
            lambda p: p.write_bytes(gzip.compress(b"not a nifti at all" * 10)[:-20]),
            "corrupt|cannot be read|not a readable",
        ),
        (lambda p: p.write_bytes(b"\x1f\x8b" + os.urandom(200)), "corrupt|cannot be read|not a readable"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_broken_files_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "x_flair.nii.gz"
    make(path)
    with pytest.raises(GliosegError, match=message) as info:
        read_volume(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value) and "Fix:" in str(info.value)


def test_truncated_gzip(tmp_path):
    path = _save(tmp_path / "t.nii.gz", np.random.default_rng(0).random((30, 30, 30)).astype(np.float32))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(GliosegError, match=r"t\.nii\.gz"):
        read_volume(path)


def test_nan_and_wrong_rank(tmp_path):
    data = np.ones((4, 4, 4), dtype=np.float32)
    data[1, 1, 1] = np.nan
    with pytest.raises(GliosegError, match="NaN"):
        read_volume(_save(tmp_path / "n.nii.gz", data))
    with pytest.raises(GliosegError, match="4D image"):
        read_volume(_save(tmp_path / "f.nii.gz", np.ones((4, 4, 4, 2), dtype=np.float32)))
    assert read_volume(_save(tmp_path / "s.nii.gz", np.ones((4, 4, 4, 1), dtype=np.float32))).data.shape == (4, 4, 4)


def test_read_data_from_an_uncompressed_copy_reads_and_names_as_read_volume(tmp_path):
    """The voxels read from a decompressed copy of a .nii.gz are the file's, and a message names the file, not the
    copy (glioseg prepare decompresses each series once into a temporary copy)."""
    data = np.random.default_rng(0).integers(-300, 3000, (5, 6, 7)).astype(np.int16)
    path = _save(tmp_path / "a.nii.gz", data, np.diag([1.5, -0.9, 3.0, 1.0]))
    copy = tmp_path / "copy" / "a.nii"
    copy.parent.mkdir()
    copy.write_bytes(gzip.decompress(path.read_bytes()))
    volume = read_data(read_header(path), path, dtype=None, uncompressed=copy)
    expected = read_volume(path, dtype=None)
    assert volume.data.dtype == expected.data.dtype and volume.path == path
    np.testing.assert_array_equal(volume.data, expected.data)
    np.testing.assert_array_equal(volume.affine, expected.affine)
    copy.write_bytes(copy.read_bytes()[:-50])  # a short stream: nibabel's read fails
    with pytest.raises(GliosegError, match="cannot be read as NIfTI") as info:
        read_data(read_header(path), path, dtype=None, uncompressed=copy)
    assert str(path) in str(info.value) and str(copy) not in str(info.value)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "case.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash mid-write")
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", ["w" * 239 + ".nii.gz", "é" * 120 + ".nii.gz", "v" * 251 + ".npz", "u" * 255])
def test_every_name_the_file_system_holds_can_be_written_atomically(tmp_path, name):
    """A name near the 255-byte limit (a case folder of 239 characters names its cache and prediction files so):
    the temporary name beside it was the name plus 14 bytes, and the write failed with 'File name too long'."""
    from glioseg.files import atomic_folder

    assert len(name.encode()) <= 255
    if name.endswith(".nii.gz"):
        write_label_map(tmp_path / "files" / name, np.ones((2, 2, 2), dtype=np.uint8), np.eye(4))
        assert nib.load(str(tmp_path / "files" / name)).shape == (2, 2, 2)  # written in the format its suffix names
    else:
        with atomic_path(tmp_path / "files" / name) as tmp:
            tmp.write_bytes(b"whole")
        assert (tmp_path / "files" / name).read_bytes() == b"whole"
    with atomic_folder(tmp_path / "folders" / name) as staging:
        (staging / "inside.txt").write_text("whole")
    assert [p.name for p in (tmp_path / "files").iterdir()] == [name]  # no temporary file left
    assert [p.name for p in (tmp_path / "folders").iterdir()] == [name]
    assert (tmp_path / "folders" / name / "inside.txt").read_text() == "whole"


def test_a_name_too_long_for_the_file_system_is_one_clear_error(tmp_path):
    name = "w" * 239 + "_probabilities.npz"  # 257 bytes: predict --save-probabilities of a 239-character case id
    too_long = r"name of 257 bytes is too long for the file system\. Fix: use a shorter"
    with pytest.raises(GliosegError, match=too_long), atomic_path(tmp_path / name) as tmp:
        np.savez(tmp, x=np.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_reported_and_cleaned(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", full)
    with pytest.raises(GliosegError, match="no space left"):
        write_label_map(tmp_path / "p.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_label_map_written_uint8_with_reference_geometry(tmp_path):
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [0, 239, 0]
    labels = np.array([0, 1, 2, 4], dtype=np.int64).reshape(1, 2, 2)
    write_label_map(tmp_path / "p.nii.gz", labels, affine)
    img = nib.load(str(tmp_path / "p.nii.gz"))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels)


def test_script_json_round_trips_and_holds_no_markup():
    import json

    from glioseg.data.io import script_json

    payload = {"names": ["<!--<script>", "</script>", "a & b > c", "line\u2028sep\u2029", "é"], "n": [1, 2.5]}
    text = script_json(payload)
    assert json.loads(text) == payload
    assert not set(text) & set("<>&") and text.isascii()
