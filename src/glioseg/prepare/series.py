"""Reading one series (a NIfTI file or a DICOM folder) and refusing what cannot be a head scan.

Every refusal is one :class:`GliosegError` naming the file or folder and the fix: a missing
path, one DICOM file given for its series' folder, a folder holding no DICOM or several series,
a localizer (too few slices, or slices in several orientations), a 4-D series given as one
modality, a DICOM series with a slice missing (its slices unevenly spaced), a NIfTI file that is
truncated or corrupt, holds NaN or infinite values or has a singular affine, a scan whose field
of view cannot be a head, and DICOM series of different patients (``PatientID`` differs).
"""

from __future__ import annotations

import contextlib
import gzip
import locale
import logging
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.errors import GliosegError

logger = logging.getLogger(__name__)

MIN_SLICES = 10
"""Fewest voxels along any axis of a series (a localizer has 1-3 slices per orientation)."""

HEAD_EXTENT_MM = (60.0, 320.0)
"""The foreground's extent along every axis of a head scan lies in this range (mm)."""

NOT_HEAD_PARTS = (
    "CHEST", "THORAX", "ABDOMEN", "PELVIS", "KNEE", "SPINE", "CSPINE", "TSPINE", "LSPINE", "HEART", "BREAST",
    "LIVER", "HIP", "SHOULDER", "ANKLE", "EXTREMITY", "LEG", "ARM", "HAND", "FOOT", "WHOLEBODY",
)
"""DICOM ``BodyPartExamined`` values that are refused (an empty or head value passes)."""


@dataclass(frozen=True)
class Series:
    """One series as read from disk.

    Attributes:
        image: the 3-D SimpleITK image (float32), in its own grid and patient coordinates (LPS).
        path: the NIfTI file or DICOM folder it came from.
        kind: ``"nifti"`` or ``"dicom"``.
        patient_id: DICOM ``PatientID`` (``None`` for NIfTI or when absent).
    """

    image: Any
    path: Path
    kind: str
    patient_id: str | None = None

    def grid(self) -> dict[str, list[float] | list[int]]:
        """The series' own grid (size, spacing, origin, direction in LPS), to map labels back onto it."""
        return grid_of(self.image)


def grid_of(image: Any) -> dict[str, list[float] | list[int]]:
    """Size, spacing, origin and direction of a SimpleITK image as plain lists."""
    return {
        "size": [int(s) for s in image.GetSize()],
        "spacing": [float(s) for s in image.GetSpacing()],
        "origin": [float(s) for s in image.GetOrigin()],
        "direction": [float(s) for s in image.GetDirection()],
    }


def reference_image(grid: Mapping[str, Any]) -> Any:
    """An empty SimpleITK image on a grid recorded by :func:`grid_of` (for resampling onto it)."""
    import SimpleITK as sitk

    image = sitk.Image([int(s) for s in grid["size"]], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in grid["spacing"]])
    image.SetOrigin([float(s) for s in grid["origin"]])
    image.SetDirection([float(s) for s in grid["direction"]])
    return image


FIRST_SLICE_TAGS = ("0010|0020", "0018|0015", "0020|0037")
"""The DICOM tags read from a series' first slice: ``PatientID``, ``BodyPartExamined``, ``ImageOrientationPatient``."""

SLICE_GAP_TOLERANCE = 0.1
"""Largest departure of a gap between neighbouring DICOM slices from their median gap, as a share of it."""


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Restore the process's locale after the block: GDCM (SimpleITK's DICOM library) sets it to "C".

    Without this, writing a DICOM file left Python's default text encoding at ASCII for the rest
    of the process, and a later ``Path.write_text`` of a non-ASCII character failed.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Keep ITK's warnings off the terminal in the block (they are several lines each; glioseg's checks say it in one).

    GDCM warned "No Series were found" over three lines before glioseg's own one-line refusal of
    an empty folder, and a series with a missing slice only drew ITK's warning.
    """
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def check_exists(path: Path, modality: str) -> None:
    """Refuse a series path that is not there.

    Raises:
        GliosegError: naming the path and the modality.
    """
    if not path.exists():
        raise GliosegError(
            path,
            f"the {modality} series is not there",
            f"give an existing NIfTI file or DICOM folder as the {modality} series",
        )


def read_series(path: str | Path, modality: str) -> Series:
    """Read one modality's series and check that it can be a 3-D head scan.

    Args:
        path: a ``.nii``/``.nii.gz`` file or a folder of one DICOM series.
        modality: its name (``flair``, ``t1``, ``t1ce``, ``t2``), for messages.

    Raises:
        GliosegError: missing, unreadable, not one 3-D series, a localizer, or not a head.
    """
    path = Path(path)
    check_exists(path, modality)
    if path.is_file() and _is_dicom_file(path):
        raise GliosegError(
            path,
            f"is one DICOM file (a single slice), given as the {modality} series",
            f"give the folder that holds all the DICOM files of the {modality} series (one folder per series)",
        )
    with keep_locale(), quiet_itk():
        series = _read_dicom(path, modality) if path.is_dir() else _read_nifti(path, modality)
    _check_shape(series, modality)
    _check_head(series, modality)
    return series


def _is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: ``DICM`` after the 128-byte preamble (DICOM part 10).

    One slice given for a series was refused as "not a readable NIfTI file", with the fix to check
    that it is a ``.nii`` or ``.nii.gz`` image.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_nifti(path: Path, modality: str) -> Series:
    import SimpleITK as sitk

    from glioseg.data.io import read_data, read_header

    header = read_header(path)  # glioseg's checks: not NIfTI, truncated, absurd shape (nibabel reads the header alone)
    shape = tuple(int(s) for s in header.shape)
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        raise GliosegError(
            path,
            f"is a 4-D series of shape {shape} ({int(np.prod(shape[3:]))} volumes), given as the {modality} image",
            "give one 3-D volume per modality (split the series, e.g. keep its first volume, or pick the right series)",
        )
    # every voxel checked: SimpleITK read a truncated .nii.gz as zeros after the cut, corrupt gzip data as noise, NaN
    # as 0, and refused a singular affine in ITK's words. The file is decompressed once: nibabel (the checks) and
    # SimpleITK (the image) read the same uncompressed copy, so the image is what sitk.ReadImage makes of the file.
    with _uncompressed(path) as plain:
        read_data(header, path, dtype=None, ndim=(1, 2, 3), uncompressed=None if plain == path else plain)
        try:
            image = sitk.ReadImage(str(plain), sitk.sitkFloat32)
        except RuntimeError as exc:
            why = str(exc).replace(str(plain), str(path)).strip().splitlines()[-1][:200]
            raise GliosegError(path, f"cannot be read as an image ({why})", "re-export this series as NIfTI") from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    return Series(image=image, path=path, kind="nifti")


DECOMPRESS_CHUNK = 1 << 24
"""Bytes decompressed at a time (16 MiB)."""


@contextlib.contextmanager
def _uncompressed(path: Path) -> Iterator[Path]:
    """A ``.nii.gz`` file decompressed once into a temporary ``.nii``, removed after the block; any other file as it is.

    The gzip stream is decompressed to its end, so its checksum and length are checked (nibabel stops at the last
    voxel's byte). nibabel's checks and SimpleITK's image both read this copy: SimpleITK parses the same bytes with the
    same reader, so the image is bit-identical to ``sitk.ReadImage(path)``'s, and the copy sits alone in its folder
    (given ``t1.nii.gz``, SimpleITK read a ``t1.nii`` lying beside it instead). Measured in
    ``benchmarks/scanner/read_once.md``: a BraTS case's four series read in 0.62 of the time three decompressions
    took. A compressed file of another kind (an ``.img.gz`` of a header/image pair) is checked to its end
    (:func:`check_gzip`) and read where it is.

    Raises:
        GliosegError: truncated or corrupt gzip data, or no room for the copy in the temporary folder.
    """
    if not path.name.lower().endswith(".nii.gz"):
        check_gzip(path)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="glioseg-") as folder:
        copy = Path(folder) / path.name[: -len(".gz")]  # same name, so that SimpleITK picks its NIfTI reader
        with copy.open("wb") as target:
            for chunk in _gzip_chunks(path):
                try:
                    target.write(chunk)
                except OSError as exc:
                    raise GliosegError(
                        folder,
                        f"no room for the decompressed copy of {path} ({exc.strerror or exc})",
                        "free space in the temporary folder, or set TMPDIR to a folder with room",
                    ) from None
        yield copy


def check_gzip(path: Path) -> None:
    """Decompress a ``.gz`` file to its end, so that its checksum is checked (nibabel stops at the last voxel's byte).

    Raises:
        GliosegError: truncated or corrupt gzip data.
    """
    if not path.name.lower().endswith(".gz"):
        return
    for _ in _gzip_chunks(path):
        pass


def _gzip_chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a ``.gz`` file, :data:`DECOMPRESS_CHUNK` at a time, to the end of its stream (its
    checksum and length checked there).

    Raises:
        GliosegError: truncated or corrupt gzip data.
    """
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(DECOMPRESS_CHUNK):
                yield chunk
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise GliosegError(
            path, f"corrupt or truncated gzip data ({exc})", "re-download or re-export this file"
        ) from None


def _read_dicom(folder: Path, modality: str) -> Series:
    import SimpleITK as sitk

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise GliosegError(
            folder,
            f"holds no DICOM series (given as the {modality} series)",
            "give the folder of this modality's DICOM files, or its NIfTI file",
        )
    if len(series_ids) > 1:
        raise GliosegError(
            folder,
            f"holds {len(series_ids)} DICOM series, not one",
            f"give the folder of the {modality} series alone (one folder per series)",
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    # every file read once, by the series reader, which keeps each slice's tags for the checks below; only when it
    # fails are the files read one by one (as before), to name the one that cannot be read
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image, failure = reader.Execute(), None
    except RuntimeError as exc:
        image, failure = None, exc
    if failure is None:
        first = {key: reader.GetMetaData(0, key).strip() for key in FIRST_SLICE_TAGS if reader.HasMetaDataKey(0, key)}
        positions = [
            reader.GetMetaData(i, "0020|0032").strip() if reader.HasMetaDataKey(i, "0020|0032") else name
            for i, name in enumerate(files)
        ]
        orientations = [
            reader.GetMetaData(i, "0020|0037").strip() if reader.HasMetaDataKey(i, "0020|0037") else ""
            for i in range(len(files))
        ]
    else:
        first, positions, orientations = _read_slice_tags(files, modality)
    _check_one_orientation(folder, orientations, modality)
    repeats = len(positions) - len(set(positions))
    if repeats:
        volumes = len(positions) // max(len(set(positions)), 1)
        raise GliosegError(
            folder,
            f"is a 4-D series: {len(positions)} images at {len(set(positions))} slice positions (about {volumes} "
            f"volumes), given as the {modality} image",
            "give one 3-D volume per modality (export one volume of the series, e.g. one echo or time point)",
        )
    _check_slice_gaps(folder, positions, first.get("0020|0037"), modality)
    part = (first.get("0018|0015") or "").upper().replace(" ", "")
    if part in NOT_HEAD_PARTS:
        raise GliosegError(
            folder,
            f"is a scan of the {part.lower()} (DICOM BodyPartExamined), not of the head",
            "give the head series of this patient",
        )
    if failure is not None:
        raise GliosegError(
            folder,
            f"cannot be read as one DICOM series ({str(failure).strip().splitlines()[-1][:200]})",
            "re-export the series from the scanner or PACS",
        ) from None
    return Series(image=image, path=folder, kind="dicom", patient_id=first.get("0010|0020"))


def _read_slice_tags(files: Sequence[str], modality: str) -> tuple[dict[str, str], list[str], list[str]]:
    """The first slice's tags, every slice's position (``ImagePositionPatient``, or its file name when absent) and
    orientation (``ImageOrientationPatient``, or ``""``), each file read on its own: after the series reader failed,
    to name a file that cannot be read.

    Raises:
        GliosegError: naming the first file that cannot be read as DICOM.
    """
    import SimpleITK as sitk

    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    info.LoadPrivateTagsOff()
    info.ReadImageInformation()
    positions, orientations = [], []
    for name in files:
        slice_info = sitk.ImageFileReader()
        slice_info.SetFileName(name)
        try:
            slice_info.ReadImageInformation()
        except RuntimeError as exc:
            raise GliosegError(
                name,
                f"cannot be read as DICOM ({str(exc).strip().splitlines()[-1][:200]}), a file of the {modality} series",
                "re-export the series from the scanner or PACS",
            ) from None
        positions.append(
            slice_info.GetMetaData("0020|0032").strip() if slice_info.HasMetaDataKey("0020|0032") else name
        )
        orientations.append(
            slice_info.GetMetaData("0020|0037").strip() if slice_info.HasMetaDataKey("0020|0037") else ""
        )
    first = {key: info.GetMetaData(key).strip() for key in FIRST_SLICE_TAGS if info.HasMetaDataKey(key)}
    return first, positions, orientations


ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between two slices' direction cosines (``ImageOrientationPatient``) of one volume."""


def _check_one_orientation(folder: Path, orientations: list[str], modality: str) -> None:
    """Refuse a DICOM series whose slices lie in more than one orientation: a multi-plane localizer (axial, sagittal
    and coronal slices under one series UID), not one volume.

    Such a series was refused as one whose slices are unevenly spaced ("the usual 0.00 mm"), with the fix to copy its
    files again. Slices without a usable orientation are not compared.
    """
    planes: list[np.ndarray] = []
    for text in orientations:
        try:
            cosines = np.array([float(v) for v in text.split("\\")], dtype=np.float64).reshape(6)
        except ValueError:
            continue
        if not any(np.abs(cosines - plane).max() <= ORIENTATION_TOLERANCE for plane in planes):
            planes.append(cosines)
    if len(planes) > 1:
        raise GliosegError(
            folder,
            f"holds {len(orientations)} images in {len(planes)} slice orientations: a multi-plane localizer or scout, "
            f"not a {modality} volume",
            f"give the diagnostic {modality} series (one orientation, at least {MIN_SLICES} slices)",
        )


def _check_slice_gaps(folder: Path, positions: list[str], orientation: str | None, modality: str) -> None:
    """Refuse a DICOM series whose slices are unevenly spaced along their normal: a slice is missing.

    ITK reads such a series with one mean spacing (and a warning), so every slice after the gap
    lands in the wrong place. GDCM leaves out a file it cannot parse (e.g. a truncated one)
    without a word, so an unreadable slice shows up here too.
    """
    try:
        row_col = np.array([float(v) for v in (orientation or "").split("\\")], dtype=np.float64).reshape(2, 3)
        points = np.array([[float(v) for v in p.split("\\")] for p in positions], dtype=np.float64).reshape(-1, 3)
    except ValueError:
        return  # no usable ImagePositionPatient/ImageOrientationPatient: ITK orders the files its own way
    if len(points) < 3:
        return
    gaps = np.diff(np.sort(points @ np.cross(row_col[0], row_col[1])))
    usual = float(np.median(gaps))
    uneven = np.abs(gaps - usual) > SLICE_GAP_TOLERANCE * usual
    if uneven.any():
        raise GliosegError(
            folder,
            f"the {modality} series' slices are unevenly spaced: {int(uneven.sum())} of {len(gaps)} gaps differ from "
            f"the usual {usual:.2f} mm (largest {float(gaps.max()):.2f} mm), so a slice is missing or unreadable",
            "copy every file of the series again, or re-export it from the scanner or PACS",
        )


def _check_shape(series: Series, modality: str) -> None:
    size = series.image.GetSize()
    if series.image.GetDimension() != 3:
        raise GliosegError(
            series.path,
            f"is a {series.image.GetDimension()}-D image, not 3-D",
            f"give one 3-D volume as the {modality} series",
        )
    if min(size) < MIN_SLICES:
        raise GliosegError(
            series.path,
            f"has only {min(size)} slices along one axis (size {tuple(size)}): a localizer or scout, not a {modality} "
            "volume",
            f"give the diagnostic {modality} series (at least {MIN_SLICES} slices)",
        )


def foreground_extent(image: Any) -> tuple[float, float, float]:
    """Extent in mm of the foreground (Otsu threshold) along the three voxel axes of ``image``."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(image)  # (z, y, x)
    values = array[np.isfinite(array)]
    if values.size == 0 or float(values.max()) == float(values.min()):
        return (0.0, 0.0, 0.0)
    mask = sitk.OtsuThreshold(image, 0, 1)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    if not stats.HasLabel(1):
        return (0.0, 0.0, 0.0)
    _, _, _, sx, sy, sz = stats.GetBoundingBox(1)
    spacing = image.GetSpacing()
    return (sx * spacing[0], sy * spacing[1], sz * spacing[2])


def _check_head(series: Series, modality: str) -> None:
    extent = foreground_extent(series.image)
    low, high = HEAD_EXTENT_MM
    if min(extent) < low or max(extent) > high:
        shown = " x ".join(f"{e:.0f}" for e in extent)
        raise GliosegError(
            series.path,
            f"does not look like a head scan: its foreground spans {shown} mm (a head spans {low:.0f}-{high:.0f} mm "
            "along every axis)",
            f"give this patient's {modality} head series (not a body, spine or partial-coverage scan)",
        )


def check_same_patient(series: Mapping[str, Series]) -> None:
    """Refuse DICOM series of different patients (their ``PatientID`` differs).

    Raises:
        GliosegError: naming the first series whose patient differs from the first one's.
    """
    known = [(m, s) for m, s in series.items() if s.patient_id]
    for _, item in known[1:]:
        first_modality, first = known[0]
        if item.patient_id != first.patient_id:
            raise GliosegError(
                item.path,
                f"belongs to patient '{item.patient_id}', the {first_modality} series ({first.path}) to patient "
                f"'{first.patient_id}'",
                "give the four series of one patient",
            )
