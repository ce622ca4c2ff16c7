"""Reading a series once: a ``.nii.gz`` is decompressed once, and its image is bit-identical to ``sitk.ReadImage``'s.

``read_series`` used to decompress a ``.nii.gz`` three times (the gzip check, nibabel's checks, SimpleITK's read);
now nibabel and SimpleITK read one decompressed copy. The image must stay what SimpleITK makes of the file itself:
the same origin, spacing, direction and float32 voxels, whatever the header (oblique, qform and sform disagreeing,
scaled integers).
"""

from __future__ import annotations

import gzip
import shutil
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from glioseg.errors import GliosegError  # noqa: E402
from glioseg.prepare.series import read_series  # noqa: E402

SHAPE = (40, 48, 36)
SPACING = (4.0, 4.2, 4.5)


def _head(dtype: type, scale: float, seed: int = 0) -> np.ndarray:
    """An ellipsoid head (about 120 x 150 x 125 mm at :data:`SPACING`) with noise, zero outside."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    inside = ((i - 20) / 15) ** 2 + ((j - 24) / 18) ** 2 + ((k - 18) / 14) ** 2 <= 1
    return (inside * (scale + 0.1 * scale * rng.standard_normal(SHAPE))).astype(dtype)


def _affine(degrees: float, shear: float = 0.0) -> np.ndarray:
    """Voxel -> RAS: :data:`SPACING` turned ``degrees`` about z and x, sheared along x by ``shear``, off-centre."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = about_z @ about_x @ np.diag(SPACING)
    affine[0, 1] += shear
    affine[:3, 3] = [-83.3, 97.1, -61.7]
    return affine


def _write(
    path: Path,
    data: np.ndarray,
    qform: np.ndarray | None,
    sform: np.ndarray | None,
    scaling: tuple[float, float] | None,
) -> Path:
    """A NIfTI-1 file of ``data`` as stored, voxels of :data:`SPACING`, its qform (code 1) and sform (code 2) each given
    or absent (code 0), and ``(scl_slope, scl_inter)`` written into the header (nibabel's writer would reset them)."""
    image = nib.Nifti1Image(data, None, dtype=data.dtype)
    image.header.set_zooms((*SPACING, 1.0)[: data.ndim])  # the voxel size SimpleITK reads without a qform
    image.set_qform(qform, code=0 if qform is None else 1)
    image.set_sform(sform, code=0 if sform is None else 2)
    raw = bytearray(image.to_bytes())
    if scaling is not None:
        raw[112:120] = struct.pack("<ff", *scaling)  # scl_slope, scl_inter
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


OBLIQUE, OTHER = _affine(17.0), _affine(-9.0)
SYNTHETIC = {  # name -> (data, qform, sform, (scl_slope, scl_inter))
    "float32 oblique, qform = sform": (_head(np.float32, 500.0), OBLIQUE, OBLIQUE, None),
    "qform and sform disagree": (_head(np.float32, 500.0), OTHER, OBLIQUE, None),
    "qform alone, oblique": (_head(np.float32, 500.0), OBLIQUE, None, None),
    "sheared sform, qform beside it": (_head(np.float32, 500.0), OTHER, _affine(17.0, shear=0.8), None),
    "neither qform nor sform": (_head(np.float32, 500.0), None, None, None),
    "int16 with scl_slope and scl_inter": (_head(np.int16, 2000.0), OBLIQUE, OBLIQUE, (0.37, 12.5)),
    "int16 scaled by a third, qform and sform disagreeing": (
        _head(np.int16, 3000.0, seed=1), OTHER, OBLIQUE, (1.0 / 3.0, -7.25)
    ),
    "uint8": (_head(np.uint8, 200.0), OTHER, OTHER, None),
    "float64": (_head(np.float64, 1234.5678), OBLIQUE, OTHER, None),
    "int32 beyond float32's integers": (_head(np.int32, 2.0e8), OBLIQUE, OBLIQUE, None),
    "a 4-D file holding one volume": (_head(np.float32, 500.0)[..., None], OBLIQUE, OBLIQUE, None),
}


def _assert_as_simpleitk_reads(image, path: Path) -> None:
    """``image`` is bit-identical to ``sitk.ReadImage(path, sitkFloat32)`` (its first volume for a 4-D file)."""
    expected = sitk.ReadImage(str(path), sitk.sitkFloat32)
    if expected.GetDimension() == 4:
        expected = expected[:, :, :, 0]
    assert image.GetPixelID() == expected.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == expected.GetSize()
    assert image.GetOrigin() == expected.GetOrigin()
    assert image.GetSpacing() == expected.GetSpacing()
    assert image.GetDirection() == expected.GetDirection()
    assert sitk.GetArrayViewFromImage(image).tobytes() == sitk.GetArrayViewFromImage(expected).tobytes()


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_a_nifti_series_is_the_image_simpleitk_reads_from_the_file(tmp_path, name):
    data, qform, sform, scaling = SYNTHETIC[name]
    path = _write(tmp_path / "series.nii.gz", data, qform, sform, scaling)
    written = nib.load(str(path))  # the file is what the case says
    codes = (int(written.header["qform_code"]), int(written.header["sform_code"]))
    assert codes == (int(qform is not None), 2 * int(sform is not None))
    scaled = (written.dataobj.slope, written.dataobj.inter)
    assert scaled == ((1.0, 0.0) if scaling is None else tuple(np.float32(scaling)))
    image = read_series(path, "t1").image
    _assert_as_simpleitk_reads(image, path)
    if name != "neither qform nor sform":  # the test would pass with the identity direction everywhere
        assert not np.allclose(np.reshape(image.GetDirection(), (3, 3)), np.eye(3))


@pytest.mark.real
def test_the_series_of_a_real_case_are_the_images_simpleitk_reads(real_data_root):
    """A BraTS 2018 case: int16, qform (code 2) and sform (code 1) both set."""
    case = sorted(p for p in real_data_root.iterdir() if p.is_dir())[0]
    for modality in ("flair", "t1", "t1ce", "t2"):
        path = case / f"{case.name}_{modality}.nii.gz"
        _assert_as_simpleitk_reads(read_series(path, modality).image, path)


def test_a_nii_gz_is_decompressed_once_and_simpleitk_reads_the_uncompressed_copy(tmp_path, monkeypatch):
    """Python decompresses the file once (plus nibabel's header peek); SimpleITK is given no gzip file to inflate."""
    path = _write(tmp_path / "series.nii.gz", *SYNTHETIC["int16 with scl_slope and scl_inter"])
    size = len(gzip.decompress(path.read_bytes()))
    inflated: list[int] = []
    original_read = gzip._GzipReader.read  # every byte Python's gzip inflates passes here

    def counted(self, *args):
        chunk = original_read(self, *args)
        inflated.append(len(chunk))
        return chunk

    given: list[str] = []
    original_image_read = sitk.ReadImage

    def recorded(name, *args):
        given.append(str(name))
        return original_image_read(name, *args)

    monkeypatch.setattr(gzip._GzipReader, "read", counted)
    monkeypatch.setattr(sitk, "ReadImage", recorded)
    read_series(path, "t1")
    assert size <= sum(inflated) < size + 64 * 1024, (size, sum(inflated))
    assert len(given) == 1 and given[0].endswith("series.nii") and not Path(given[0]).exists()


def test_a_series_beside_an_uncompressed_file_of_its_name_is_read_itself(tmp_path):
    """SimpleITK, given t1.nii.gz, read the t1.nii beside it (another image) while nibabel checked t1.nii.gz."""
    data, qform, sform, _ = SYNTHETIC["float32 oblique, qform = sform"]
    path = _write(tmp_path / "t1.nii.gz", data, qform, sform, None)
    _write(tmp_path / "t1.nii", np.ascontiguousarray(data[::-1]), qform, sform, None)
    alone = tmp_path / "alone" / "t1.nii.gz"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    _assert_as_simpleitk_reads(read_series(path, "t1").image, alone)


@pytest.mark.parametrize("field", [-8, -4])
def test_a_gzip_trailer_that_does_not_match_is_refused_and_no_copy_is_left(tmp_path, monkeypatch, field):
    """The CRC-32 (``-8``) and the length (``-4``) at the end of the stream are checked: one flipped bit of either
    refuses the file, and the decompressed copy is removed."""
    path = _write(tmp_path / "series.nii.gz", *SYNTHETIC["float32 oblique, qform = sform"])
    raw = bytearray(path.read_bytes())
    raw[field] ^= 1
    path.write_bytes(bytes(raw))
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    with pytest.raises(GliosegError, match="corrupt or truncated gzip data"):
        read_series(path, "t1")
    assert list((tmp_path / "temp").iterdir()) == []


def test_a_dicom_series_is_read_by_the_series_reader_alone(tmp_path, monkeypatch):
    """Each slice file is read once (the series reader keeps every slice's tags); none is opened on its own."""
    from test_prepare_pipeline import GRIDS, MOTIONS, scan, write_dicom_series

    size, spacing, direction = GRIDS["t2"]
    folder = write_dicom_series(scan("t2", MOTIONS["t2"], size, spacing, direction), tmp_path / "t2", "P7")
    one_by_one: list[str] = []
    original = sitk.ImageFileReader.ReadImageInformation

    def recorded(self):
        one_by_one.append(self.GetFileName())
        return original(self)

    monkeypatch.setattr(sitk.ImageFileReader, "ReadImageInformation", recorded)
    series = read_series(folder, "t2")
    assert one_by_one == []
    assert series.patient_id == "P7" and series.image.GetSize() == tuple(size)


def test_when_the_series_reader_fails_the_slices_are_checked_one_by_one_first(tmp_path, monkeypatch):
    """A failed series read still names a missing slice (read file by file), and otherwise the reader's error."""
    from test_prepare_pipeline import GRIDS, MOTIONS, scan, write_dicom_series

    def failing(self):
        raise RuntimeError("Exception thrown in SimpleITK ImageSeriesReader_Execute:\nITK ERROR: stand-in failure")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", failing)
    size, spacing, direction = GRIDS["t2"]
    folder = write_dicom_series(scan("t2", MOTIONS["t2"], size, spacing, direction), tmp_path / "t2")
    with pytest.raises(GliosegError, match=r"cannot be read as one DICOM series \(ITK ERROR: stand-in failure\)"):
        read_series(folder, "t2")
    (folder / "slice015.dcm").unlink()
    with pytest.raises(GliosegError, match="slices are unevenly spaced"):
        read_series(folder, "t2")
