"""Rigid registration of one series onto the reference series (SimpleITK), with a quality check.

Mattes mutual information, a centred Euler transform started from the images' centres of mass,
three resolution levels (shrink 4, 2, 1). The result is checked, never trusted silently: the
normalised mutual information (NMI, Studholme: ``(H(A) + H(B)) / H(A, B)``, 1 for independent
images, 2 for identical ones) of the two heads after registration must reach
:data:`MIN_NMI`, and be higher than at each of the 12 transforms 3 degrees or 3 mm away (a
local maximum: the optimiser reached the top), or the series is refused as a registration
that did not converge. The NMI is taken over the fixed image's head and a 10 mm margin around
it, so the head's outline counts: on two real cases moved onto clinical grids
(``benchmarks/scanner``), FLAIR, T1 and T2 against T1ce scored 1.20-1.37 at the known
alignment and 1.11-1.17 at 5-8 degrees and mm away; an image of noise scores about 1.0. The
threshold catches gross failures (another patient, noise), the neighbour check the rest.

Neither catches a series whose voxels were flipped left-right with its header unchanged (a
conversion error): a brain is nearly symmetric, so the mirror image of the head registers to a
local maximum well above the threshold (a real case's T2 moved onto a clinical grid: NMI 1.155,
the true T2 1.223). So ``glioseg prepare`` also registers the series' left-right mirror image (:func:`mirrored`) and
refuses the series when the mirror scores more than :data:`MIRROR_MARGIN` higher
(:attr:`Registration.mirrored`). A series flipped front-back or head-foot is refused by the
threshold already (NMI 1.06-1.09 on that case).

Registration runs on copies smoothed and resampled to 2 mm voxels (a 0.5 x 0.5 x 5 mm FLAIR
becomes 2 x 2 x 5 mm), at three levels (8, 4 and 2 mm).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MIN_NMI = 1.10
"""Smallest normalised mutual information accepted after registration (see the module docstring)."""


@dataclass(frozen=True)
class Registration:
    """A rigid transform from the reference's patient coordinates to a series' own.

    Attributes:
        transform: the SimpleITK ``Euler3DTransform`` (reference point -> series point, LPS mm).
        nmi: normalised mutual information of the two heads after registration (1 to 2).
        iterations: optimiser iterations at the last level.
        stop: the optimiser's stopping condition, in its words.
        best_neighbour_nmi: the highest NMI of the 12 transforms 3 degrees or 3 mm away (:func:`neighbours`);
            at a converged registration it is lower than ``nmi``.
        mirror_nmi: the NMI at which the series' left-right mirror image registers (:func:`mirrored`;
            ``None`` when not checked); for a series not flipped it is lower than ``nmi``.
    """

    transform: Any
    nmi: float
    iterations: int
    stop: str
    best_neighbour_nmi: float = 0.0
    mirror_nmi: float | None = None

    @property
    def converged(self) -> bool:
        """The quality check: NMI at least :data:`MIN_NMI`, and no neighbour 3 degrees or 3 mm away scores higher."""
        return self.nmi >= MIN_NMI and self.best_neighbour_nmi <= self.nmi

    @property
    def mirrored(self) -> bool:
        """The mirror check: the series' left-right mirror image (:func:`mirrored`) registers with an NMI of at least
        :data:`MIN_NMI` (a mirror of noise proves nothing) and more than :data:`MIRROR_MARGIN` higher than the series
        itself (see the module docstring)."""
        return self.mirror_nmi is not None and self.mirror_nmi >= max(MIN_NMI, self.nmi + MIRROR_MARGIN)

    def matrix(self) -> np.ndarray:
        """The transform as a 4x4 matrix acting on LPS points (reference -> series)."""
        return transform_matrix(self.transform)

    @property
    def rotation_degrees(self) -> float:
        """The rotation angle of the transform (degrees)."""
        return rotation_angle(self.matrix()[:3, :3])


def transform_matrix(transform: Any) -> np.ndarray:
    """A SimpleITK affine-family transform as a 4x4 matrix ``y = A x + t`` on LPS points."""
    a = np.array(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    center = np.array(transform.GetCenter(), dtype=np.float64)
    translation = np.array(transform.GetTranslation(), dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = translation + center - a @ center
    return out


def rotation_angle(rotation: np.ndarray) -> float:
    """The angle (degrees) of a 3x3 rotation matrix."""
    cosine = (float(np.trace(rotation)) - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def normalised_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Studholme's NMI ``(H(a) + H(b)) / H(a, b)`` of two equally shaped samples (1: independent, 2: identical).

    Args:
        a, b: intensities at the same points (any shape, flattened).
        bins: histogram bins per image.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    joint /= joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h_joint = entropy(joint)
    return (entropy(joint.sum(1)) + entropy(joint.sum(0))) / h_joint if h_joint > 0 else 2.0


def coarse(image: Any, resolution: float) -> Any:
    """``image`` smoothed and resampled to voxels of at least ``resolution`` mm (same direction and field of view;
    coarser axes kept)."""
    import SimpleITK as sitk

    spacing = [max(float(s), resolution) for s in image.GetSpacing()]
    if spacing == [float(s) for s in image.GetSpacing()]:
        return image
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)]
    sigmas = [
        0.5 * t if t > s else 0.01 * s for s, t in zip(image.GetSpacing(), spacing, strict=True)
    ]  # (the filter refuses 0)
    smooth = sitk.SmoothingRecursiveGaussian(image, sigmas)
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(spacing)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(
        image.TransformContinuousIndexToPhysicalPoint(
            [0.5 * (t / s) - 0.5 for s, t in zip(image.GetSpacing(), spacing, strict=True)]
        )
    )
    return sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def mattes_registration(
    fixed: Any,
    moving: Any,
    initial: Any,
    *,
    sampling: float,
    seed: int,
    iterations: int,
    shrink: list[int],
    sigmas: list[float],
) -> tuple[Any, Any]:
    """Mattes mutual information (32 bins, random sampling), regular-step gradient descent over a pyramid.

    The one registration set-up of :func:`register_rigid` and the atlas pose
    (:func:`glioseg.prepare.pose.register_to_atlas`); they differ in the transform and the levels.

    Args:
        fixed, moving: SimpleITK float images (already :func:`coarse`).
        initial: the initial transform (its kind is the kind optimised).
        sampling: share of the fixed image's voxels sampled for the metric.
        seed: the sampling seed (>= 0; the same seed samples the same voxels).
        iterations: largest number of optimiser iterations per level.
        shrink, sigmas: the pyramid's shrink factors and smoothing sigmas (mm), one per level.

    Returns:
        The optimised transform (unwrapped from ITK's composite) and the registration method
        (its metric value, iterations and stop condition).
    """
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # ITK takes seed 0 as "from the wall clock" (sitkWallClock): the default seed 0 drew other voxels on every run,
    # and the atlas pose of one case came out 2.5 to 4.0 degrees from the scanner's axes in three runs
    method.SetMetricSamplingPercentage(sampling, seed + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-4,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    if result.GetName() == "CompositeTransform":
        result = sitk.CompositeTransform(result).GetNthTransform(0)
    return result, method


def register_rigid(
    fixed: Any,
    moving: Any,
    *,
    resolution: float = 2.0,
    iterations: int = 200,
    sampling: float = 0.1,
    seed: int = 0,
    quality_full: bool = False,
) -> Registration:
    """Rigidly register ``moving`` onto ``fixed`` (both SimpleITK float images on their own grids).

    Args:
        fixed: the reference series.
        moving: the series to align.
        resolution: both images are smoothed and resampled to voxels of at least this size (mm) first.
        iterations: largest number of optimiser iterations per level.
        sampling: share of the reference's voxels sampled for the metric (random, seeded).
        seed: the sampling seed (the result is reproducible).

    Returns:
        The transform mapping reference points to ``moving`` points, and its quality.
    """
    import SimpleITK as sitk

    full_fixed, full_moving = fixed, moving
    fixed, moving = coarse(fixed, resolution), coarse(moving, resolution)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    found, method = mattes_registration(
        fixed,
        moving,
        initial,
        sampling=sampling,
        seed=seed,
        iterations=iterations,
        shrink=[4, 2, 1],
        sigmas=[4.0, 2.0, 0.0],
    )

    def scored(found: Any) -> tuple[Any, float, float, Any]:
        transform = sitk.Euler3DTransform(found)
        nmi = registration_quality(
            full_fixed if quality_full else fixed, full_moving if quality_full else moving, transform
        )
        scores = [(registration_quality(fixed, moving, nearby), nearby) for nearby in neighbours(transform)]
        neighbour, best = max(scores, key=lambda pair: pair[0])
        return transform, nmi, neighbour, best

    transform, nmi, neighbour, best = scored(found)
    for restart in range(RESTARTS):
        if neighbour <= nmi:  # a local maximum of the NMI: the check passes (or fails on MIN_NMI alone)
            break
        # the optimiser stopped on a slope (a neighbour 3 degrees or 3 mm away scores higher): go on from there
        again, again_method = mattes_registration(
            fixed,
            moving,
            best,
            sampling=sampling,
            seed=seed,
            iterations=iterations,
            shrink=[2, 1],
            sigmas=[2.0, 0.0],
        )
        candidate = scored(again)
        logger.info(
            "registration restart %d from the best neighbour: NMI %.4f -> %.4f (best neighbour %.4f)",
            restart + 1,
            nmi,
            candidate[1],
            candidate[2],
        )
        if candidate[1] <= nmi:
            break
        (transform, nmi, neighbour, best), method = candidate, again_method
    registration = Registration(
        transform=transform,
        nmi=nmi,
        iterations=int(method.GetOptimizerIteration()),
        stop=method.GetOptimizerStopConditionDescription(),
        best_neighbour_nmi=neighbour,
    )
    logger.info(
        "registered: rotation %.2f deg, NMI %.4f (best neighbour %.4f), %d iterations (%s)",
        registration.rotation_degrees,
        nmi,
        neighbour,
        registration.iterations,
        registration.stop,
    )
    return registration


RESTARTS = 2
"""How many times a registration that stopped below a neighbour's NMI goes on from that neighbour (two finer levels).

On a real case's FLAIR moved 23 degrees from its T1ce (``benchmarks/scanner``, TCIA13_623_1) the seeded optimiser
stopped at NMI 1.184 with a neighbour at 1.206: refused as not converged, though the series was right."""


NEIGHBOUR_STEP = (3.0, 3.0)
"""Rotation (degrees) and translation (mm) of the 12 neighbours a converged registration must beat
(:func:`neighbours`)."""


def neighbours(transform: Any) -> list[Any]:
    """The 12 transforms that differ from ``transform`` by +-3 degrees about, or +-3 mm along, one axis (about its
    centre)."""
    import SimpleITK as sitk

    out = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            rotated = sitk.Euler3DTransform(transform)
            angles = [rotated.GetAngleX(), rotated.GetAngleY(), rotated.GetAngleZ()]
            angles[axis] += sign * math.radians(NEIGHBOUR_STEP[0])
            rotated.SetRotation(*angles)
            shifted = sitk.Euler3DTransform(transform)
            translation = list(shifted.GetTranslation())
            translation[axis] += sign * NEIGHBOUR_STEP[1]
            shifted.SetTranslation(translation)
            out += [rotated, shifted]
    return out


MIRROR_MARGIN = 0.01
"""A series is refused as mirrored when its mirror image registers with an NMI higher than its own by more than this.

On 7 real cases from both data folders, FLAIR, T1 and T2 on clinical grids against the T1ce
(``benchmarks/scanner/mirror``), a correct series' mirror scored 0.046-0.27 lower than the
series, and a series flipped left-right as much higher; duplicate registrations agree within
0.001. The threshold sits a little on the flipped side of the middle, so that a correct series is
never refused."""


QUALITY_MARGIN_MM = 10.0
"""The NMI is taken over the fixed image's head (Otsu foreground) grown by this margin, so the head's outline counts."""


def registration_quality(fixed: Any, moving: Any, transform: Any) -> float:
    """NMI of ``fixed`` and ``moving`` (resampled through ``transform``) over the fixed image's head and a margin around
    it."""
    import SimpleITK as sitk

    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    radius = [max(1, int(math.ceil(QUALITY_MARGIN_MM / s))) for s in fixed.GetSpacing()]
    head = sitk.GetArrayViewFromImage(sitk.BinaryDilate(sitk.OtsuThreshold(fixed, 0, 1), radius)) > 0
    covered = sitk.GetArrayViewFromImage(_coverage(moving, fixed, transform)) > 0
    region = head & covered
    if region.sum() < 1000:
        return 1.0
    return normalised_mutual_information(
        sitk.GetArrayViewFromImage(fixed)[region], sitk.GetArrayViewFromImage(resampled)[region]
    )


def mirrored(image: Any, axis: int = 0) -> Any:
    """``image`` mirrored in space along the patient's LPS ``axis`` (0: left-right) about its field of view's centre.

    Only the header changes (direction and origin; the voxels are shared): voxel ``i`` lies at
    the mirror image of where it lay, ``F (p - c) + c`` with ``F`` the reflection of ``axis``
    and ``c`` the centre of the field of view, whatever the series' direction cosines. The
    direction's determinant changes sign; SimpleITK's registration and resampling take it as
    any other.
    """
    import SimpleITK as sitk

    flip = np.eye(3)
    flip[axis, axis] = -1.0
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()]))
    out = sitk.Image(image)
    out.SetDirection((flip @ direction).ravel().tolist())
    out.SetOrigin((flip @ (np.array(image.GetOrigin()) - centre) + centre).tolist())
    return out


def _coverage(moving: Any, fixed: Any, transform: Any) -> Any:
    """1 where the reference's voxels map inside ``moving``'s field of view, else 0 (on the reference's grid)."""
    import SimpleITK as sitk

    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    return sitk.Resample(ones, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
