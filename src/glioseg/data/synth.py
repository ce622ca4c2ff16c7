"""Synthetic BraTS-like cohorts for tests and demos.

A synthetic case is a skull-stripped head: an ellipsoidal brain deformed by smooth
noise, zero outside, holding white matter, grey matter and CSF (an outer rim and two
lateral ventricles) with per-modality contrasts, thin enhancing vessels on T1ce, a
smooth multiplicative bias field per modality and Rician noise. A glioma sits inside
the brain: a necrotic core, an enhancing rim around it and peritumoral edema around
both, each an ellipsoid with its own low-frequency deformation.

The sub-regions are separable only by combining modalities, as in real BraTS data:

===========  ======  ======  ======  ==========
compartment  T1      T1ce    T2      FLAIR
===========  ======  ======  ======  ==========
WM           bright  mid     dark    dark
GM           mid     mid     mid     mid
CSF          dark    dark    bright  dark
edema        mid     mid     bright  bright
necrosis     dark    dark    bright  mid
enhancing    mid     bright  mid     mid-bright
vessels      -       bright  -       -
===========  ======  ======  ======  ==========

Every scalar parameter of a case (sizes, position, contrasts, gains) is jittered, so
absolute intensities are not informative and a network must learn the relations.

Geometry is defined in millimetres relative to the image extent, so tumor size scales
with ``shape * spacing``. At 240x240x155 (1 mm) the whole tumor has 25k-255k voxels
(median about 115k, so more than 1% of a 128^3 crop), except in a fraction
``small_tumor_fraction`` of the cases, which get a small tumor (about 0.5k-7k voxels).
Every tumor has necrosis, enhancing tumor and edema, unless the image is too coarse for them.

Smooth random fields are Gaussian-interpolated low-resolution noise, computed one axis at a
time (much faster than ``scipy.ndimage.zoom`` at full resolution), and only inside the brain's
bounding box: a 64^3 case takes about 0.05 s, a 240x240x155 case 1.5-3 s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import nibabel as nib
import numpy as np

from glioseg.data.discovery import MODALITIES, MSD_CHANNELS
from glioseg.data.io import atomic_folder, atomic_path, write_label_map
from glioseg.errors import GliosegError
from glioseg.files import check_output_path
from glioseg.labels import EDEMA, ENHANCING, NECROSIS, from_internal

logger = logging.getLogger(__name__)

LAYOUTS = ("brats2018", "brats2020", "brats2021", "brats2023", "msd")
"""Layouts :func:`write_cohort` can write (``brats2020`` is the 2018 naming with ``.nii`` files)."""

SMALL_TUMOR_FRACTION = 0.1
"""Default probability that a case gets a small tumor."""

MIN_SIZE = 16
"""Smallest image size (voxels) along any axis."""

_BRAIN_SEMI_AXES = np.array([0.64, 0.78, 0.82])
"""Brain semi-axes as fractions of the half extent (BraTS: ~140 x 170 x 125 mm in 240 x 240 x 155)."""


@dataclass(frozen=True)
class SyntheticCase:
    """One synthetic patient, in memory.

    Attributes:
        images: internal modality name (``flair``, ``t1``, ``t1ce``, ``t2``) -> (X, Y, Z) ``int16``,
            zero outside the brain, positive inside.
        label: (X, Y, Z) ``uint8`` in the internal convention (0 bg, 1 NCR, 2 ED, 3 ET).
        affine: 4x4 voxel-to-world matrix, BraTS-like: ``diag(-sx, -sy, sz)`` with a y offset.
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class _Contrast:
    """Mean intensity of each compartment in one modality, before per-case jitter, gain and bias."""

    white_matter: float
    grey_matter: float
    csf: float
    edema: float
    necrosis: float
    enhancing: float
    vessel: float = 0.0  # added on top of the tissue where vessels run


_CONTRASTS: Mapping[str, _Contrast] = MappingProxyType(
    {
        "flair": _Contrast(white_matter=300, grey_matter=370, csf=90, edema=720, necrosis=330, enhancing=560),
        "t1": _Contrast(white_matter=620, grey_matter=470, csf=170, edema=420, necrosis=250, enhancing=540),
        "t1ce": _Contrast(
            white_matter=380, grey_matter=320, csf=120, edema=310, necrosis=140, enhancing=1100, vessel=450
        ),
        "t2": _Contrast(white_matter=330, grey_matter=480, csf=1300, edema=1050, necrosis=1250, enhancing=700),
    }
)


@dataclass(frozen=True)
class _Tumor:
    """A tumor rendered in a box of the image.

    All arrays are (bx, by, bz), the shape of ``box``.

    Attributes:
        box: the slices of the image the tumor occupies.
        label: internal labels (0 outside the tumor).
        whole: soft membership of the whole tumor (0..1).
        core: soft membership of the tumor core.
        necrosis: soft membership of the necrosis, relative to the core.
        edema_strength: 0.7 at the edema's outer border rising to 1 towards the core.
        texture: multiplicative heterogeneity of the tumor intensities (around 1).
    """

    box: tuple[slice, slice, slice]
    label: np.ndarray
    whole: np.ndarray
    core: np.ndarray
    necrosis: np.ndarray
    edema_strength: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True)
class _Naming:
    """How one layout names its cases and files."""

    case_id: str  # format string of the case number
    first_number: int
    separator: str  # between case id and file key
    extension: str
    keys: Mapping[str, str]  # internal modality or "seg" -> file key
    convention: str


_KEYS_2018 = MappingProxyType({"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"})
_KEYS_2023 = MappingProxyType({"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"})

_NAMINGS: Mapping[str, _Naming] = MappingProxyType(
    {
        "brats2018": _Naming("Brats18_SYN_{:03d}_1", 1, "_", ".nii.gz", _KEYS_2018, "brats2018"),
        "brats2020": _Naming("BraTS20_Training_{:03d}", 1, "_", ".nii", _KEYS_2018, "brats2018"),
        "brats2021": _Naming("BraTS2021_{:05d}", 0, "_", ".nii.gz", _KEYS_2018, "brats2018"),
        "brats2023": _Naming("BraTS-GLI-{:05d}-000", 0, "-", ".nii.gz", _KEYS_2023, "brats2023"),
        "msd": _Naming("BRATS_{:03d}", 1, "", ".nii.gz", MappingProxyType({}), "msd"),
    }
)


# ----------------------------------------------------------------------------- smooth fields


def _axis_weights(n: int, knots: int) -> np.ndarray:
    """Gaussian interpolation weights from ``knots`` control points to ``n`` voxels, (n, knots).

    Rows have unit Euclidean norm, so unit-variance white noise on the knots becomes a
    smooth field of unit variance everywhere.
    """
    centres = np.linspace(0.0, n - 1.0, knots)
    width = 0.6 * max((n - 1.0) / (knots - 1), 1.0)
    weights = np.exp(-0.5 * ((np.arange(n)[:, None] - centres[None, :]) / width) ** 2)
    return (weights / np.linalg.norm(weights, axis=1, keepdims=True)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], knots: Sequence[int], count: int = 1) -> np.ndarray:
    """Smooth zero-mean unit-variance random fields.

    Args:
        rng: random generator.
        shape: (X, Y, Z) output shape.
        knots: control points per axis (more knots, finer detail).
        count: number of independent fields.

    Returns:
        (count, X, Y, Z) ``float32``.
    """
    coarse = rng.standard_normal((count, *knots), dtype=np.float32)
    wx, wy, wz = (_axis_weights(n, k) for n, k in zip(shape, knots, strict=True))
    # one axis at a time; einsum's own loops, not BLAS, whose threads stall on a busy machine
    fields = np.einsum("cijk,zk->cijz", coarse, wz)
    fields = np.einsum("cijz,yj->ciyz", fields, wy)
    return np.einsum("ciyz,xi->cxyz", fields, wx)


def _knots(extent_mm: np.ndarray, per_longest_axis: int) -> tuple[int, int, int]:
    """Knots per axis for features of a given size relative to the longest axis."""
    x, y, z = (max(3, int(round(per_longest_axis * e / extent_mm.max()))) for e in extent_mm)
    return x, y, z


def _ramp(signed: np.ndarray, width: float) -> np.ndarray:
    """Soft membership: 0 below ``-width / 2``, 1 above ``width / 2``, linear between (partial volume)."""
    return np.clip(0.5 + signed / width, 0.0, 1.0)


def _open_grid(lo: Sequence[int], hi: Sequence[int], spacing: np.ndarray, centre: np.ndarray) -> list[np.ndarray]:
    """Broadcastable voxel coordinates in mm relative to ``centre``: (bx,1,1), (1,by,1), (1,1,bz)."""
    axes = []
    for axis in range(3):
        coords = (np.arange(lo[axis], hi[axis], dtype=np.float32) * spacing[axis] - centre[axis]).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = -1
        axes.append(coords.reshape(shape))
    return axes


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ----------------------------------------------------------------------------- one case


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    if len(shape) != 3 or any(int(n) != n or n < MIN_SIZE for n in shape):
        raise GliosegError(
            None,
            f"synthetic image shape {tuple(shape)} is not three sizes of at least {MIN_SIZE}",
            f"give three sizes, each >= {MIN_SIZE}",
        )
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise GliosegError(
            None, f"voxel spacing {tuple(spacing)} is not three positive sizes", "give three positive voxel sizes in mm"
        )
    x, y, z = (int(n) for n in shape)
    return (x, y, z), np.asarray(spacing, dtype=np.float64)


def brats_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The BraTS voxel-to-world matrix: ``diag(-sx, -sy, sz)`` with origin ``(0, (Y - 1) * sy, 0)``, 4x4."""
    affine = np.diag([-float(spacing[0]), -float(spacing[1]), float(spacing[2]), 1.0])
    affine[1, 3] = (shape[1] - 1) * float(spacing[1])
    return affine


def synthesize_case(
    rng: np.random.Generator,
    shape: Sequence[int] = (96, 96, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    small_tumor_fraction: float = SMALL_TUMOR_FRACTION,
) -> SyntheticCase:
    """Draw one BraTS-like case.

    Args:
        rng: the random generator; the case is a pure function of its state.
        shape: (X, Y, Z) image size in voxels, each at least :data:`MIN_SIZE`.
        spacing: voxel size in mm; anatomy is sized in mm relative to ``shape * spacing``.
        small_tumor_fraction: probability of a small tumor (whole tumor about 0.1% of the brain
            instead of 2-12%).

    Returns:
        The case: four (X, Y, Z) ``int16`` images, an (X, Y, Z) ``uint8`` internal label map
        and a BraTS-like 4x4 affine.
    """
    shape, spacing_mm = _check_geometry(shape, spacing)
    spacing = spacing_mm  # type: ignore[assignment]  # checked, now an array
    extent = np.asarray(shape) * spacing_mm
    centre = extent / 2 + rng.uniform(-0.03, 0.03, 3) * extent
    semi = extent / 2 * _BRAIN_SEMI_AXES * rng.uniform(0.93, 1.04, 3)
    # everything is drawn in the brain's bounding box (the outline deforms the ellipsoid by at most 1 / 0.8)
    lo = np.clip(np.floor((centre - 1.25 * semi) / spacing).astype(int), 0, shape)
    hi = np.clip(np.ceil((centre + 1.25 * semi) / spacing).astype(int) + 1, 0, shape)
    region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    anatomy = _draw_anatomy(rng, lo, hi, spacing, centre, semi)  # type: ignore[arg-type]
    tumor = _draw_tumor(rng, lo, hi, spacing, centre, semi, anatomy.brain, small_tumor_fraction)  # type: ignore[arg-type]
    label = np.zeros(shape, dtype=np.uint8)
    label[region][tumor.box] = tumor.label
    images = {}
    for modality, values in _render(rng, anatomy, tumor).items():
        images[modality] = np.zeros(shape, dtype=np.int16)
        images[modality][region] = values
    return SyntheticCase(images=images, label=label, affine=brats_affine(shape, spacing))


@dataclass(frozen=True)
class _Anatomy:
    """Healthy tissue in the brain's bounding box, all arrays (rx, ry, rz).

    Attributes:
        brain: the brain mask.
        beyond_white_matter: soft membership of grey matter or CSF (0 in white matter).
        csf: soft membership of CSF (outer rim and ventricles).
        vessels: soft membership of small vessels (grey matter and sulci).
        texture: zero-mean fine-grained tissue texture (unit variance).
    """

    brain: np.ndarray
    beyond_white_matter: np.ndarray
    csf: np.ndarray
    vessels: np.ndarray
    texture: np.ndarray


def _draw_anatomy(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, spacing: np.ndarray, centre: np.ndarray, semi: np.ndarray
) -> _Anatomy:
    """A deformed ellipsoidal brain with nested white matter, grey matter and CSF (lengths in mm)."""
    shape = tuple(int(n) for n in hi - lo)
    extent = np.asarray(shape) * spacing
    voxel_mm = float(spacing.mean())
    x, y, z = _open_grid(lo, hi, spacing, centre)  # type: ignore[arg-type]
    sx, sy, sz = semi.tolist()
    radius = np.sqrt((x / sx) ** 2 + (y / sy) ** 2 + (z / sz) ** 2)
    outline, folds = _smooth_noise(rng, shape, _knots(extent, 6), 2)
    gyri, vessel_a, vessel_b = _smooth_noise(rng, shape, _knots(extent, 16), 3)
    radius /= 1.0 + np.clip(0.07 * outline, -0.2, 0.2)
    brain = radius < 1.0
    # tissue depth: 0 at the centre, 1 at the surface, folded so the cortex has gyri
    depth = radius + 0.05 * folds + 0.05 * gyri
    pv = float(np.clip(1.5 * voxel_mm / semi.mean(), 0.02, 0.12))  # partial-volume width, normalised units
    beyond_white_matter = _ramp(depth - rng.uniform(0.66, 0.74), pv)
    csf = _ramp(depth - rng.uniform(0.92, 0.95), pv)
    for side in (-1.0, 1.0):  # lateral ventricles, long in y
        v_semi = (semi * np.array([0.07, 0.33, 0.12]) * rng.uniform(0.8, 1.25)).tolist()
        cx, cy, cz = (semi * np.array([side * 0.12, rng.uniform(-0.05, 0.05), 0.08])).tolist()
        ventricle = np.sqrt(((x - cx) / v_semi[0]) ** 2 + ((y - cy) / v_semi[1]) ** 2 + ((z - cz) / v_semi[2]) ** 2)
        ventricle /= 1.0 + np.clip(0.15 * folds, -0.4, 0.4)
        np.maximum(csf, _ramp(1.0 - ventricle, voxel_mm / min(v_semi)), out=csf)
    vessels = _ramp(0.1 - np.maximum(np.abs(vessel_a), np.abs(vessel_b)), 0.08) * beyond_white_matter
    return _Anatomy(brain=brain, beyond_white_matter=beyond_white_matter, csf=csf, vessels=vessels, texture=gyri)


def _render(rng: np.random.Generator, anatomy: _Anatomy, tumor: _Tumor) -> dict[str, np.ndarray]:
    """Intensities of every modality: contrasts, tumor, bias field and Rician noise.

    Returns:
        Internal modality name -> (rx, ry, rz) ``int16``, 0 outside the brain and at least 1 inside.
    """
    brain = anatomy.brain
    biases = _smooth_noise(rng, brain.shape, _knots(np.asarray(brain.shape, dtype=float), 3), len(MODALITIES))
    inside = np.count_nonzero(brain)
    images = {}
    for modality, bias in zip(MODALITIES, biases, strict=True):
        contrast = _CONTRASTS[modality]
        wm, gm, csf, edema, necrosis, enhancing = (
            rng.uniform(0.92, 1.08, 6)
            * [
                contrast.white_matter,
                contrast.grey_matter,
                contrast.csf,
                contrast.edema,
                contrast.necrosis,
                contrast.enhancing,
            ]
        ).tolist()
        gain = rng.uniform(0.8, 1.2)
        value = (1.0 - anatomy.csf) * (wm + (gm - wm) * anatomy.beyond_white_matter) + csf * anatomy.csf
        value *= 1.0 + 0.03 * anatomy.texture
        if contrast.vessel:
            value += contrast.vessel * rng.uniform(0.8, 1.2) * anatomy.vessels
        tissue = value[tumor.box]
        swollen = tissue + (edema - tissue) * tumor.edema_strength
        core = enhancing * (1.0 - tumor.necrosis) + necrosis * tumor.necrosis
        lesion = (swollen * (1.0 - tumor.core) + core * tumor.core) * tumor.texture
        value[tumor.box] = tissue * (1.0 - tumor.whole) + lesion * tumor.whole
        value *= gain * np.exp(0.12 * bias)
        sigma = 0.03 * wm * gain
        signal = value[brain]
        noisy = np.sqrt(
            (signal + sigma * rng.standard_normal(inside, dtype=np.float32)) ** 2
            + (sigma * rng.standard_normal(inside, dtype=np.float32)) ** 2
        )
        image = np.zeros(brain.shape, dtype=np.int16)
        image[brain] = np.clip(np.rint(noisy), 1, np.iinfo(np.int16).max)
        images[modality] = image
    return images


def _draw_tumor(
    rng: np.random.Generator,
    region_lo: np.ndarray,
    region_hi: np.ndarray,
    spacing: np.ndarray,
    brain_centre: np.ndarray,
    brain_semi: np.ndarray,
    brain: np.ndarray,
    small_tumor_fraction: float,
) -> _Tumor:
    """Place a deformed three-layer tumor inside the brain (lengths in mm, box relative to the region)."""
    small = rng.random() < small_tumor_fraction
    radius = float(brain_semi.mean()) * (rng.uniform(0.08, 0.15) if small else rng.uniform(0.30, 0.50))
    axes = [radius, *(radius * rng.uniform(0.7, 1.0, 2)).tolist()]
    rotation = _random_rotation(rng)
    core_ratio, necrosis_ratio = rng.uniform(0.55, 0.8), rng.uniform(0.55, 0.8)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    core_offset = direction * rng.uniform(0.0, 0.35 * (1.0 - core_ratio)) * radius
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    reach = 1.0 - 1.1 * radius / brain_semi.min()  # how far from the brain centre the tumor still fits
    centre = brain_centre + direction * rng.uniform(0.1, 1.0) * max(reach, 0.0) * brain_semi
    amplitude = rng.uniform(0.15, 0.3)

    half = np.ceil((1.6 * radius + np.linalg.norm(core_offset)) / spacing).astype(int) + 1
    middle = np.rint(centre / spacing).astype(int)
    lo = np.clip(middle - half, region_lo, region_hi)
    hi = np.clip(middle + half + 1, region_lo, region_hi)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo - region_lo, hi - region_lo, strict=True))
    box_shape = tuple(int(n) for n in hi - lo)
    wobble = _smooth_noise(rng, box_shape, (5, 5, 5), 3)
    texture = _smooth_noise(rng, box_shape, (9, 9, 9))[0]

    voxel_mm = float(spacing.mean())
    x, y, z = _open_grid(lo, hi, spacing, centre)
    whole_distance = np.zeros(box_shape, dtype=np.float32)
    core_distance = np.zeros(box_shape, dtype=np.float32)
    for axis in range(3):
        rx, ry, rz = rotation[:, axis].tolist()
        along = rx * x + ry * y + rz * z
        shift = float(rotation[:, axis] @ core_offset)
        whole_distance += (along / axes[axis]) ** 2
        core_distance += ((along - shift) / (axes[axis] * core_ratio)) ** 2
    whole_distance = np.sqrt(whole_distance)
    core_distance = np.sqrt(core_distance)
    # the edema is the most irregular layer, the core and the necrosis are more compact; the
    # enhancing rim around the necrosis is at least 1.5 voxels and 10% of the core radius thick,
    # and the edema extends at least 15% beyond the core
    whole_distance /= 1.0 + np.clip(amplitude * wobble[0], -0.4, 0.5)
    core_distance /= 1.0 + np.clip(0.6 * amplitude * wobble[1], -0.3, 0.3)
    largest_necrosis = float(np.clip(1.0 - 1.5 * voxel_mm / (radius * core_ratio), 0.3, 0.9))
    necrosis_radius = np.minimum(
        necrosis_ratio * (1.0 + np.clip(0.5 * amplitude * wobble[2], -0.15, 0.15)), largest_necrosis
    )
    necrosis_distance = core_distance / necrosis_radius
    np.minimum(whole_distance, core_distance / 1.15, out=whole_distance)

    in_brain = brain[box]
    core_mask = (core_distance < 1.0) & in_brain
    necrosis_mask = core_mask & (necrosis_distance < 1.0)
    label = np.where((whole_distance < 1.0) & in_brain, EDEMA, 0).astype(np.uint8)
    label[core_mask] = ENHANCING
    label[necrosis_mask] = NECROSIS
    core = _ramp(1.0 - core_distance, voxel_mm / (radius * core_ratio))
    return _Tumor(
        box=box,  # type: ignore[arg-type]
        label=label,
        whole=np.maximum(_ramp(1.0 - whole_distance, voxel_mm / radius), core),
        core=core,
        necrosis=_ramp(1.0 - necrosis_distance, voxel_mm / (radius * core_ratio * necrosis_ratio)),
        edema_strength=0.7 + 0.3 * np.clip((1.0 - whole_distance) / 0.3, 0.0, 1.0),
        texture=1.0 + 0.08 * texture,
    )


# ----------------------------------------------------------------------------- cohorts on disk


def _save_image(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(data, affine)
    image.set_data_dtype(data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def _write_msd_case(
    image_path: Path, image: np.ndarray, labels: np.ndarray | None, label_path: Path, affine: np.ndarray
) -> None:
    """Write an MSD case's 4D image and label so that no reader sees one without the other.

    Both are written under hidden names first (``.<case>.staged.nii.gz``, which discovery
    skips); then the label is renamed into place, and the image last (an image in ``imagesTr``
    without its label would read as a case without reference). A failure removes what was written.
    """
    def staged(path: Path) -> Path:
        return path.parent / f".{path.name.split('.')[0]}.staged{''.join(path.suffixes)}"

    written: list[Path] = []
    try:
        if labels is not None:
            written.append(label_path)
            write_label_map(staged(label_path), labels, affine)
        written.append(image_path)
        _save_image(staged(image_path), image, affine)
        for path in written:
            os.replace(staged(path), path)
    except BaseException as exc:
        for path in written:
            staged(path).unlink(missing_ok=True)
        if label_path in written and not image_path.exists():
            label_path.unlink(missing_ok=True)
        if isinstance(exc, GliosegError) and exc.path is not None:
            for path in written:  # name the file where it would have been, not its staged name (removed)
                if exc.path == staged(path):
                    raise GliosegError(path, exc.problem, exc.fix) from None
        if isinstance(exc, OSError):
            raise GliosegError(
                image_path,
                f"cannot be written ({exc.strerror or exc})",
                "free disk space or choose another output folder",
            ) from None
        raise


class CasesExist(GliosegError):
    """The output folder of :func:`write_cohort` already holds cases."""


def _refuse_existing_cases(out: Path) -> None:
    """Raise if ``out`` is a file, or a folder with NIfTI files in it or one level below (e.g. ``<case>/`` or
    ``imagesTr/``)."""
    if out.exists() and not out.is_dir():
        raise GliosegError(out, "is a file, not a folder", "choose an output folder")
    if not out.is_dir():
        return
    for entry in sorted(out.iterdir()):
        if entry.name.lower().endswith((".nii", ".nii.gz")):
            found = entry
        elif entry.is_dir() and not entry.is_symlink():
            found = next((p for p in sorted(entry.iterdir()) if p.name.lower().endswith((".nii", ".nii.gz"))), None)  # type: ignore[assignment]
        else:
            found = None
        if found is not None:
            raise CasesExist(
                out,
                f"already holds cases (e.g. {found.relative_to(out)}); writing synthetic cases there could replace "
                "them",
                "choose an empty or new folder, or write into it anyway (force=True)",
            )


def case_ids(layout: str, cases: int) -> list[str]:
    """The ids :func:`write_cohort` gives its cases, in order."""
    naming = _naming(layout)
    return [naming.case_id.format(naming.first_number + i) for i in range(cases)]


def _naming(layout: str) -> _Naming:
    try:
        return _NAMINGS[layout]
    except KeyError:
        raise GliosegError(None, f"unknown synthetic layout '{layout}'", f"use one of {', '.join(LAYOUTS)}") from None


def write_cohort(
    out: str | Path,
    cases: int,
    shape: Sequence[int] = (96, 96, 96),
    layout: str = "brats2020",
    seed: int = 0,
    with_labels: bool = True,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    small_tumor_fraction: float = SMALL_TUMOR_FRACTION,
    force: bool = False,
) -> list[str]:
    """Write a synthetic cohort in one of the published BraTS layouts.

    Case ``i`` (0-based) is drawn from ``np.random.default_rng([seed, i])``, so it is the
    same whatever ``cases`` is. Every file is written atomically. A folder that already holds
    cases (NIfTI files in it or one level below, or any file this call would write) is refused
    unless ``force`` is given; then cases of the same ids are replaced. Each case is written in a
    hidden staging folder (MSD: under hidden file names) and renamed into place, so an interrupted
    run (full disk, Ctrl-C) never leaves a case without its label.

    Layouts (``N`` is the case number):

    * ``brats2018``: ``Brats18_SYN_NNN_1/Brats18_SYN_NNN_1_{flair,t1,t1ce,t2,seg}.nii.gz``, from 1.
    * ``brats2020``: ``BraTS20_Training_NNN/BraTS20_Training_NNN_{flair,...,seg}.nii``, from 1.
    * ``brats2021``: ``BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,...,seg}.nii.gz``, from 0.
    * ``brats2023``: ``BraTS-GLI-NNNNN-000/BraTS-GLI-NNNNN-000-{t2f,t1n,t1c,t2w,seg}.nii.gz``, from 0.
    * ``msd``: ``imagesTr/BRATS_NNN.nii.gz`` (X, Y, Z, 4) in channel order FLAIR, T1w, T1gd, T2w and
      ``labelsTr/BRATS_NNN.nii.gz``, from 1; ``imagesTs/`` when ``with_labels`` is false.

    Labels are written in the layout's convention (ET = 4 up to 2021, 3 from 2023, MSD numbering).

    Args:
        out: output folder (created).
        cases: number of cases.
        shape: (X, Y, Z) image size.
        layout: one of :data:`LAYOUTS`.
        seed: non-negative seed of the cohort.
        with_labels: write label maps.
        spacing: voxel size in mm.
        small_tumor_fraction: probability of a small tumor per case.
        force: write into a folder that already holds cases.

    Returns:
        The case ids, in order.

    Raises:
        GliosegError: unknown layout, negative count or seed, bad shape or spacing, unwritable
            folder, or a folder that already holds cases (without ``force``).
    """
    naming = _naming(layout)
    if int(cases) != cases or cases < 0:
        raise GliosegError(
            None, f"number of synthetic cases {cases} is not a non-negative integer", "give a number of cases >= 0"
        )
    if int(seed) != seed or seed < 0:
        raise GliosegError(None, f"seed {seed} is not a non-negative integer", "give a seed >= 0")
    if not 0.0 <= small_tumor_fraction <= 1.0:
        raise GliosegError(
            None, f"small-tumor fraction {small_tumor_fraction} is outside [0, 1]", "give a probability between 0 and 1"
        )
    shape, spacing = _check_geometry(shape, spacing)  # type: ignore[assignment]
    out = Path(out)
    check_output_path(out, folder=True)  # a file, or a path under one, named as such before any case is drawn
    ids = case_ids(layout, int(cases))
    if not force:
        _refuse_existing_cases(out)
    for index, case_id in enumerate(ids):
        case = synthesize_case(
            np.random.default_rng([int(seed), index]), shape, spacing, small_tumor_fraction=small_tumor_fraction
        )
        labels = from_internal(case.label, naming.convention) if with_labels else None
        if layout == "msd":
            stack = np.stack([case.images[m] for m in MSD_CHANNELS], axis=-1)
            name = f"{case_id}{naming.extension}"
            _write_msd_case(
                out / ("imagesTr" if with_labels else "imagesTs") / name,
                stack,
                labels,
                out / "labelsTr" / name,
                case.affine,
            )
        else:
            with atomic_folder(out / case_id) as folder:  # the case appears whole, or not at all
                for modality in MODALITIES:
                    _save_image(
                        folder / f"{case_id}{naming.separator}{naming.keys[modality]}{naming.extension}",
                        case.images[modality],
                        case.affine,
                    )
                if labels is not None:
                    write_label_map(
                        folder / f"{case_id}{naming.separator}{naming.keys['seg']}{naming.extension}",
                        labels,
                        case.affine,
                    )
        logger.debug("wrote synthetic case %s", case_id)
    logger.info("wrote %d synthetic %s cases of shape %s to %s", len(ids), layout, shape, out)
    return ids
