"""Reading and writing NIfTI files with clear errors; label maps are written atomically.

The atomic writes and output-path checks live in :mod:`glioseg.files` (every layer uses them);
their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.errors import GliosegError
from glioseg.files import (  # re-exported: the atomic writes were defined here before glioseg.files
    atomic_folder,
    atomic_path,
    check_output_path,
    check_outputs_apart,
    script_json,
    write_json,
    write_text,
)

AFFINE_TOLERANCE = 1e-3
"""Largest absolute difference allowed between the affines of one case's files (mm)."""


@dataclass(frozen=True)
class Volume:
    """One image read from disk.

    Attributes:
        data: the voxel array, (X, Y, Z) or (X, Y, Z, C) for 4D files.
        affine: 4x4 voxel-to-world matrix.
        path: the file it was read from.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along the three array axes."""
        x, y, z = (float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z


MAX_DIM = 4096
"""Largest size along any axis accepted from a NIfTI header (BraTS images have 240)."""

MAX_VOXELS = 2**31
"""Largest number of voxels accepted from a NIfTI header."""

_DEFLATE_MAX_RATIO = 1100
"""gzip (deflate) cannot compress better than about 1032:1: a bound on what a .gz file can hold."""

_NIBABEL_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    nib.spatialimages.ImageDataError,
    nib.wrapstruct.WrapStructError,
)
_READ_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    struct.error,
    *_NIBABEL_ERRORS,
)


def check_readable(path: str | Path) -> None:
    """Raise :class:`GliosegError` unless ``path`` is an existing, readable, non-empty file."""
    path = Path(path)
    if not path.exists():
        raise GliosegError(path, "file not found", "check the path, or that the case folder is complete")
    if path.is_dir():
        raise GliosegError(path, "is a directory, not a NIfTI file", "remove or rename the folder")
    if not os.access(path, os.R_OK):
        raise GliosegError(path, "cannot be read (permission denied)", "give your user read permission")
    if path.stat().st_size == 0:
        raise GliosegError(path, "file is empty", "re-download or re-export this file")


def _check_header(path: Path, image: nib.spatialimages.SpatialImage) -> None:
    """Refuse absurd or inconsistent headers before any voxel is read (no huge allocation)."""
    shape = tuple(int(s) for s in image.shape)
    if any(s < 1 for s in shape):
        raise GliosegError(path, f"header gives the image shape {shape}, with an empty axis", "re-export this file")
    if any(s > MAX_DIM for s in shape) or math.prod(shape) > MAX_VOXELS:
        problem = (
            f"header gives an absurd image shape {shape} (over {MAX_DIM} voxels along an axis or {MAX_VOXELS} in all)"
        )
        raise GliosegError(path, problem, "the header is corrupt: re-download or re-export this file")
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf":
        raise GliosegError(
            path, f"holds {dtype} voxels, expected real numbers", "re-export it as an integer or float image"
        )
    offset = int(getattr(image.dataobj, "offset", 0))
    needed = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        if needed > _DEFLATE_MAX_RATIO * size + 1024:
            raise GliosegError(
                path,
                f"truncated or corrupt: the header needs {needed} bytes of data, more than a {size}-byte .gz file can "
                "hold",
                "re-download or re-export this file",
            )
    elif needed > size:
        raise GliosegError(
            path,
            f"truncated: the header needs {needed} bytes, the file has {size}",
            "re-download or re-export this file",
        )


def read_header(path: str | Path) -> nib.spatialimages.SpatialImage:
    """Open a NIfTI file and check its header, without reading the voxels.

    Absurd shapes (see :data:`MAX_DIM`, :data:`MAX_VOXELS`), non-numeric voxel types and files
    too short for what their header promises are refused here, before any large allocation.

    Raises:
        GliosegError: the file is missing, unreadable, empty, not NIfTI, or its header is corrupt.
    """
    path = Path(path)
    check_readable(path)
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            if handle.read(2) != b"\x1f\x8b":
                raise GliosegError(
                    path,
                    "is named .gz but is not gzip-compressed",
                    "rename it to .nii if it is an uncompressed NIfTI file, or re-export it",
                )
    try:
        image: nib.spatialimages.SpatialImage = nib.load(str(path))  # type: ignore[assignment]  # NIfTI files load as spatial images
        _check_header(path, image)
    except GliosegError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated by _read_error, or re-raised if unexpected
        raise _read_error(path, exc) from None
    return image


def _read_error(path: Path, exc: Exception) -> Exception:
    """The :class:`GliosegError` for an exception raised while reading ``path`` (``exc`` itself if unexpected)."""
    if isinstance(exc, (gzip.BadGzipFile, zlib.error, EOFError)):
        return GliosegError(path, f"corrupt or truncated gzip data ({exc})", "re-download or re-export this file")
    if isinstance(exc, nib.filebasedimages.ImageFileError):
        return GliosegError(path, f"not a readable NIfTI file ({exc})", "check that it is a .nii or .nii.gz image")
    if isinstance(exc, _READ_ERRORS):
        return GliosegError(
            path, f"cannot be read as NIfTI ({type(exc).__name__}: {exc})", "re-download or re-export this file"
        )
    return exc


def check_castable(data: np.ndarray, dtype: np.dtype | type, path: Path) -> None:
    """Refuse float data whose magnitudes the narrower float ``dtype`` cannot hold (overflow, or all below its smallest
    normal value).

    Raises:
        GliosegError: naming ``path`` and the rescaling to do.
    """
    target = np.dtype(dtype)
    if target.kind == "f" and data.dtype.kind == "f" and data.size and data.dtype.itemsize > target.itemsize:
        largest = float(np.max(np.abs(data)))
        if largest > float(np.finfo(target).max):
            raise GliosegError(
                path,
                f"intensities up to {largest:.3g} exceed the {target.name} range (+-{float(np.finfo(target).max):.3g})",
                "rescale the image (e.g. divide it by a constant) and re-export it",
            )
        if 0 < largest < float(np.finfo(target).tiny):
            raise GliosegError(
                path,
                f"intensities are all below {largest:.3g} in magnitude, too small for {target.name} (smallest normal "
                f"value {float(np.finfo(target).tiny):.3g})",
                "rescale the image (e.g. multiply it by a constant) and re-export it",
            )


def read_volume(
    path: str | Path, *, dtype: np.dtype | type | None = np.float32, ndim: tuple[int, ...] = (3,)
) -> Volume:
    """Read a NIfTI file fully, checking that it is intact, finite and of the expected rank.

    The header is checked first (:func:`read_header`), then the voxels (:func:`read_data`).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        dtype: cast the data to this type, or ``None`` to keep the stored type.
        ndim: accepted numbers of dimensions (trailing singleton axes beyond 3 are squeezed).

    Raises:
        GliosegError: the file is missing, empty, corrupt, truncated, of the wrong rank or not finite.
    """
    path = Path(path)
    return read_data(read_header(path), path, dtype=dtype, ndim=ndim)


def read_data(
    image: nib.spatialimages.SpatialImage,
    path: Path,
    *,
    dtype: np.dtype | type | None = np.float32,
    ndim: tuple[int, ...] = (3,),
    uncompressed: Path | None = None,
) -> Volume:
    """Read the voxels of a NIfTI file whose header :func:`read_header` checked, and check them as :func:`read_volume`
    does.

    Args:
        image: what ``read_header(path)`` returned.
        path: the file, named in every message.
        dtype: cast the data to this type, or ``None`` to keep the stored type.
        ndim: accepted numbers of dimensions (trailing singleton axes beyond 3 are squeezed).
        uncompressed: a file holding the decompressed bytes of ``path`` (a ``.nii.gz``): the voxels are read from
            there (memory-mapped), not decompressed again; the data may then map that file.

    Raises:
        GliosegError: truncated data, the wrong rank, a singular or non-finite affine, NaN/infinite voxels, or
            values outside the range of ``dtype``.
    """
    try:
        with contextlib.ExitStack() as stack:
            if uncompressed is not None:
                raw = stack.enter_context(io.FileIO(uncompressed))
                raw.name = str(path)  # nibabel names the file it reads in its messages: the one given, not the copy
                image = type(image).from_file_map(type(image).make_file_map({"image": raw}))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # overflow in scaling shows up as inf below
                data = np.asanyarray(image.dataobj)
                affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - translated by _read_error, or re-raised if unexpected
        raise _read_error(path, exc) from None
    while data.ndim > 3 and data.shape[-1] == 1 and data.ndim not in ndim:
        data = data[..., 0]
    if data.ndim not in ndim:
        expected = " or ".join(f"{n}D" for n in ndim)
        raise GliosegError(
            path,
            f"is a {data.ndim}D image of shape {data.shape}, expected {expected}",
            "give one volume per file (split 4D series first)",
        )
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GliosegError(path, "has an invalid (singular or non-finite) affine", "fix the header's qform/sform")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise GliosegError(
            path, "contains NaN or infinite values", "repair the image (e.g. replace NaN with 0) and retry"
        )
    if dtype is not None:
        check_castable(data, dtype, path)
        data = np.asarray(data, dtype=dtype)
    return Volume(data=data, affine=affine, path=path)


READ_THREADS = 4
"""Files :func:`read_volumes` reads at once (a BraTS case has four modalities)."""


def read_volumes(paths: Sequence[str | Path], *, dtype: np.dtype | type | None = np.float32) -> list[Volume]:
    """Read several NIfTI files (:func:`read_volume`) in parallel threads, in the order given.

    gzip decompression and the conversion to ``dtype`` release the GIL, so the four gzipped
    modalities of a case read in about half the time of one after the other on two cores.

    Raises:
        GliosegError: for the first file in ``paths`` that fails, as :func:`read_volume` would.
    """
    if len(paths) <= 1:
        return [read_volume(p, dtype=dtype) for p in paths]
    with ThreadPoolExecutor(min(len(paths), READ_THREADS)) as pool:
        futures = [pool.submit(read_volume, p, dtype=dtype) for p in paths]
        return [future.result() for future in futures]


def write_label_map(
    path: str | Path, labels: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None
) -> None:
    """Write a ``uint8`` label map atomically, keeping the reference geometry.

    Args:
        path: output ``.nii.gz`` (or ``.nii``) path.
        labels: (X, Y, Z) integer array.
        affine: 4x4 voxel-to-world matrix of the reference image.
        header: optional header of the reference image (its qform/sform codes are kept).
    """
    image = nib.Nifti1Image(
        np.asarray(labels, dtype=np.uint8), affine, header=header.copy() if header is not None else None
    )
    image.set_data_dtype(np.uint8)
    image.header["scl_slope"], image.header["scl_inter"] = 1, 0
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


__all__ = [
    "AFFINE_TOLERANCE", "MAX_DIM", "MAX_VOXELS", "READ_THREADS", "Volume", "atomic_folder", "atomic_path",
    "check_output_path", "check_outputs_apart", "check_readable", "read_header", "read_volume", "read_volumes",
    "script_json", "write_json", "write_label_map", "write_text",
]
