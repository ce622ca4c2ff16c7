"""Scans from the scanner, simulated from real BraTS cases: glioseg prepare + predict against the BraTS-ready run.

For each case (real BraTS 2018, already co-registered, 1 mm, skull-stripped):

1. **BraTS-ready run**: ``glioseg predict CASE`` (the shipped model), Dice per region against
   the reference labels.
2. **Scanner simulation**: each modality is moved by its own known random rigid motion
   (rotation 5-15 degrees about a random axis, translation 5-20 mm in a random direction) and
   imaged on a clinical grid centred on the head: FLAIR axial 0.5 x 0.5 x 5 mm, T2 axial
   0.6 x 0.6 x 4 mm (written as a DICOM series, one file per slice), T1ce 3D 1 mm axial, T1
   sagittal 1 x 1 x 1.2 mm. A thick slice is simulated as a slab: the volume is resampled at
   1 mm along the slice axis, smoothed along it with a Gaussian whose FWHM is the slice
   thickness, then every k-th slice is kept.
3. ``glioseg predict --raw`` on those four series (``--no-brain-extraction``: the series are
   skull-stripped), writing the label map on the T1ce series' own grid. Dice against the
   reference labels taken to that grid (nearest neighbour through the T1ce's known motion), the
   recovered transforms against the known ones (rotation error in degrees; translation error:
   the largest displacement error over the brain, mm), and the time of each step.
4. ``--skull`` (first case only): a skull and scalp are added around the brain (see
   :func:`add_skull`), and ``glioseg predict --raw`` runs with brain extraction (HD-BET); its
   Dice against the clean run's, and the HD-BET mask against the true brain.
5. ``--head T1 GM WM``: HD-BET on a real head image and its grey/white matter maps, its mask
   against the brain mask they give (grey + white matter probability > 0.2, closed, holes
   filled: nilearn's ``load_mni152_brain_mask`` rule), and a picture. It was run on the MNI
   ICBM152 2009a T1 template in the nilearn wheel (``nilearn/datasets/data/``), which nilearn
   ships already brain-masked: it checks the mask's agreement on a brain without a skull, not
   skull removal. A real head with the skull and its published mask: ``brain.py --robex``.

Usage::

    python benchmarks/scanner/run.py --data ../shared/data/brats2018 --cases Brats18_CBICA_AOZ_1 Brats18_TCIA01_499_1 \\
        --work /tmp/glioseg-scanner --out benchmarks/scanner [--skull] [--head T1 GM WM]

Writes ``results.json``, ``results.md`` and PNGs into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from glioseg.metrics import dice
from glioseg.prepare.register import rotation_angle
from glioseg.prepare.series import keep_locale

MODALITIES = ("flair", "t1", "t1ce", "t2")
REGIONS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=float)
GRIDS = {  # modality -> (size, spacing, direction): clinical grids
    "flair": ((460, 460, 32), (0.5, 0.5, 5.0), np.eye(3)),
    "t2": ((384, 384, 38), (0.6, 0.6, 4.0), np.eye(3)),
    "t1ce": ((240, 240, 170), (1.0, 1.0, 1.0), np.eye(3)),
    "t1": ((240, 200, 150), (1.0, 1.0, 1.2), SAGITTAL),
}
DICOM_MODALITY = "t2"
MOTION = "random"
INTERPOLATION = "linear"
"""``--interpolation``: how glioseg prepare resamples the series onto its 1 mm grid."""
POSE = "atlas"
"""``--pose``: glioseg prepare's grid turned to BraTS's pose (``atlas``) or along the scanner's axes."""
"""``--motion``: each series its own random motion (``random``), none, or the T1ce's for all (``same``)."""


def axis_rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about the unit vector ``axis`` (Rodrigues' formula)."""
    angle = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def brain_centre(image: sitk.Image) -> np.ndarray:
    """The physical point (mm) at the centre of ``image``'s non-zero voxels."""
    index = np.argwhere(sitk.GetArrayFromImage(image) > 0).mean(0)[::-1]
    return np.array(image.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def random_motion(rng: np.random.Generator, max_degrees: float = 15.0, max_mm: float = 20.0) -> np.ndarray:
    """A 4x4 rigid motion about the origin: 5..max degrees about a random axis, 5..max mm along a random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rotation = axis_rotation(axis, rng.uniform(5.0, max_degrees))
    direction = rng.normal(size=3)
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = direction / np.linalg.norm(direction) * rng.uniform(5.0, max_mm)
    return out


def about(motion: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The same rotation and translation applied about ``centre`` instead of the origin."""
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = -centre, centre
    return back @ motion @ shift


def affine_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:3, :3].ravel().tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    return transform


def scanner_grid(size, spacing, direction, centre: np.ndarray) -> sitk.Image:
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    grid.SetOrigin((centre - np.asarray(direction) @ ((np.array(size) - 1) / 2 * np.array(spacing))).tolist())
    return grid


def image_on_scanner(
    volume: sitk.Image, motion: np.ndarray, size, spacing, direction, centre: np.ndarray
) -> sitk.Image:
    """``volume`` (the head) moved by ``motion`` and imaged on a clinical grid, thick slices as smoothed slabs."""
    to_head = affine_transform(np.linalg.inv(motion))
    thickness = float(spacing[2])
    if thickness <= 2.0:
        return sitk.Resample(
            volume, scanner_grid(size, spacing, direction, centre), to_head, sitk.sitkLinear, 0.0, sitk.sitkFloat32
        )
    k = int(round(thickness))
    fine = scanner_grid((size[0], size[1], size[2] * k), (spacing[0], spacing[1], thickness / k), direction, centre)
    array = sitk.GetArrayFromImage(sitk.Resample(volume, fine, to_head, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    array = ndimage.gaussian_filter1d(array, sigma=k / 2.355, axis=0)[k // 2 :: k][: size[2]]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.CopyInformation(scanner_grid(size, spacing, direction, centre))
    return out


def write_dicom_series(image: sitk.Image, folder: Path, patient_id: str) -> Path:
    """A 3-D image as one DICOM series of int16 slices (one file per slice)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 4000), sitk.sitkInt16)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for key, value in {
            "0010|0020": patient_id,
            "0020|000e": "1.2.826.0.1.3680043.2.1125.7",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.8",
            "0008|0060": "MR",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.{k + 100}",
            "0018|0015": "HEAD",
        }.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        with keep_locale():  # GDCM sets the process's locale to "C"
            writer.Execute(piece)
    return folder


SKULL_LAYERS = (  # (outer distance from the brain in mm, {modality: intensity / the brain's median})
    (1.5, {"t1": 0.3, "t1ce": 0.3, "t2": 2.0, "flair": 0.15}),  # CSF
    (3.5, {"t1": 0.05, "t1ce": 0.05, "t2": 0.05, "flair": 0.05}),  # inner table (cortical bone)
    (6.5, {"t1": 1.3, "t1ce": 1.3, "t2": 0.9, "flair": 1.0}),  # diploe (fatty marrow)
    (8.5, {"t1": 0.05, "t1ce": 0.05, "t2": 0.05, "flair": 0.05}),  # outer table
    (11.0, {"t1": 0.6, "t1ce": 0.7, "t2": 0.5, "flair": 0.6}),  # muscle and galea
    (16.0, {"t1": 1.5, "t1ce": 1.5, "t2": 1.1, "flair": 1.2}),  # subcutaneous fat
    (17.5, {"t1": 0.8, "t1ce": 0.9, "t2": 0.7, "flair": 0.8}),  # skin
)


def add_skull(images: dict[str, np.ndarray], brain: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Wrap a skull-stripped brain in concentric layers of CSF, bone, marrow, muscle, fat and skin.

    Each layer is a shell at a fixed distance from the brain mask (Euclidean distance transform,
    1 mm voxels; :data:`SKULL_LAYERS`), its intensity a multiple of the brain's median in that
    modality, with 5% Gaussian noise and a smooth +-10% bias. The shell follows the brain's
    outline everywhere (also under the brain: no neck, face or eyes), so it is a simplification.
    """
    distance = ndimage.distance_transform_edt(~brain)
    _, yy, xx = np.meshgrid(*(np.linspace(0, 1, n) for n in brain.shape), indexing="ij")
    bias = 1.0 + 0.1 * np.sin(2 * math.pi * xx + 1.0) * np.cos(2 * math.pi * yy)
    out = {}
    for modality, image in images.items():
        median = float(np.median(image[brain]))
        head = image.astype(np.float32).copy()
        inner = 0.0
        for outer, levels in SKULL_LAYERS:
            shell = (distance > inner) & (distance <= outer)
            head[shell] = levels[modality] * median * bias[shell] * (1 + 0.05 * rng.normal(size=int(shell.sum())))
            inner = outer
        out[modality] = np.clip(head, 0, None)
    return out


def region_dice(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {name: float(dice(np.isin(pred, labels), np.isin(ref, labels))) for name, labels in REGIONS.items()}


MODELS: dict[str, str] = {}
"""``--model CASE=PATH[,PATH...]``: the model(s) each case is predicted with (default: the shipped model)."""
PREDICT_OPTIONS: list[str] = []
"""``--predict-option``: added to every ``glioseg predict``, ready and raw runs alike (e.g. ``--mirror``)."""
_CASE: list[str] = [""]
"""The case being run (its model is added to every ``glioseg predict``)."""


def glioseg(*args: str) -> float:
    """Run the glioseg CLI in a subprocess; returns its wall time (s)."""
    if args[0] == "predict" and _CASE[0] in MODELS:
        args = (*args, "--model", *MODELS[_CASE[0]].split(","))  # several: their probabilities averaged
    if args[0] == "predict":
        args = (*args, *PREDICT_OPTIONS)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "glioseg", *args, "--quiet"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"glioseg {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    print(result.stdout.strip(), flush=True)
    return time.perf_counter() - started


def transform_errors(found: np.ndarray, known: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Rotation error (degrees) and the largest displacement error over ``points`` (mm) of two 4x4 rigid maps."""
    residual = found[:3, :3].T @ known[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(residual) - 1) / 2))))
    ones = np.c_[points, np.ones(len(points))]
    return angle, float(np.linalg.norm(ones @ found.T - ones @ known.T, axis=1).max())


def run_case(case: Path, work: Path, rng: np.random.Generator, out: Path, picture: bool) -> dict:
    _CASE[0] = case.name
    cid = case.name
    files = {m: case / f"{cid}_{m}.nii.gz" for m in (*MODALITIES, "seg")}
    ready = work / "ready"
    ready_time = glioseg("predict", str(case), "-o", str(ready), "--timings", str(work / f"{cid}_ready_timings.json"))
    seg = sitk.ReadImage(str(files["seg"]), sitk.sitkUInt8)
    ref = sitk.GetArrayFromImage(seg)
    pred_ready = sitk.ReadImage(str(ready / f"{cid}.nii.gz"), sitk.sitkUInt8)
    result: dict = {
        "case": cid,
        "dice_ready": region_dice(sitk.GetArrayFromImage(pred_ready), ref),
        "ready_wall_s": ready_time,
    }

    t1ce = sitk.ReadImage(str(files["t1ce"]))
    brain = sitk.GetArrayFromImage(t1ce) > 0
    centre = brain_centre(t1ce)
    motions = {m: about(random_motion(rng), centre) for m in MODALITIES}
    if MOTION == "none":  # control: thick slices without motion
        motions = {m: np.eye(4) for m in MODALITIES}
    elif MOTION == "same":  # control: every series moved as the T1ce (the head's pose, no registration error)
        motions = {m: motions["t1ce"] for m in MODALITIES}
    scanner = work / f"{cid}_scanner"
    scanner.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for m in MODALITIES:
        size, spacing, direction = GRIDS[m]
        image = image_on_scanner(
            sitk.ReadImage(str(files[m]), sitk.sitkFloat32),
            motions[m],
            size,
            spacing,
            direction,
            motions[m][:3, :3] @ centre + motions[m][:3, 3],
        )
        if m == DICOM_MODALITY:
            paths[m] = write_dicom_series(image, scanner / f"{m}_dicom", patient_id=cid)
        else:
            paths[m] = scanner / f"{m}.nii.gz"
            sitk.WriteImage(image, str(paths[m]))
    raw = work / "raw" / cid
    timings_file = work / f"{cid}_raw_timings.json"
    raw_time = glioseg(
        "predict",
        "--raw",
        *[x for m in MODALITIES for x in (f"--{m}", str(paths[m]))],
        "-o",
        str(raw),
        "--case-id",
        cid,
        "--no-brain-extraction",
        "--reference",
        "t1ce",
        "--timings",
        str(timings_file),
        "--interpolation",
        INTERPOLATION,
        "--pose",
        POSE,
    )
    t1ce_grid = sitk.ReadImage(str(paths["t1ce"]))
    ref_on_t1ce = sitk.GetArrayFromImage(
        sitk.Resample(
            seg,
            t1ce_grid,
            affine_transform(np.linalg.inv(motions["t1ce"])),
            sitk.sitkNearestNeighbor,
            0,
            sitk.sitkUInt8,
        )
    )
    on_t1ce = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / f"{cid}_on_t1ce.nii.gz"), sitk.sitkUInt8))
    ready_on_t1ce = sitk.GetArrayFromImage(
        sitk.Resample(
            pred_ready,
            t1ce_grid,
            affine_transform(np.linalg.inv(motions["t1ce"])),
            sitk.sitkNearestNeighbor,
            0,
            sitk.sitkUInt8,
        )
    )
    result["dice_raw_on_t1ce"] = region_dice(on_t1ce, ref_on_t1ce)
    result["dice_ready_moved_to_t1ce"] = region_dice(ready_on_t1ce, ref_on_t1ce)
    info = json.loads((raw / "prepared" / cid / "prepare.json").read_text())
    brain_points = np.array(
        [seg.TransformIndexToPhysicalPoint([int(v) for v in idx[::-1]]) for idx in np.argwhere(brain)[::50]]
    )
    at_reference = brain_points @ motions["t1ce"][:3, :3].T + motions["t1ce"][:3, 3]
    result["transforms"] = {}
    result["pose"] = {k: v for k, v in info["pose"].items() if k != "rotation"}
    if "rotation" in info["pose"]:  # BraTS's axes where the T1ce saw them: the known motion's rotation
        found_axes = np.array(info["pose"]["rotation"])
        known_axes = motions["t1ce"][:3, :3]
        result["pose"]["error_deg"] = rotation_angle(found_axes.T @ known_axes)
        result["pose"]["known_deg"] = rotation_angle(known_axes)
    for m in MODALITIES:
        if m == "t1ce":
            continue
        known = motions[m] @ np.linalg.inv(motions["t1ce"])
        found = np.array(info["series"][m]["transform_reference_to_series"])
        degrees, mm = transform_errors(found, known, at_reference)
        result["transforms"][m] = {
            "rotation_error_deg": degrees, "max_displacement_error_mm": mm, "nmi": info["series"][m]["nmi"],
            "known_rotation_deg": transform_errors(np.eye(4), known, at_reference)[0],
        }
        if "rotation" in info["pose"]:  # BraTS's axes -> the series (pose, then registration) against the known motion
            composed = found[:3, :3] @ np.array(info["pose"]["rotation"])
            result["transforms"][m]["composed_rotation_error_deg"] = rotation_angle(composed.T @ motions[m][:3, :3])
    network = json.loads(timings_file.read_text())["cases"][cid]
    result["time_s"] = {
        "conversion": info["timings_s"]["conversion"],
        "registration": info["timings_s"]["registration"],
        "brain_extraction": info["timings_s"]["brain_extraction"],
        "resampling_writing": info["timings_s"]["resampling_writing"],
        "network": network["network"],
        "predict_total": network["total"],
        "wall": raw_time,
        "pose": info["timings_s"].get("pose", 0.0),
    }
    if picture:
        overlay_figure(sitk.GetArrayFromImage(t1ce_grid), on_t1ce, ref_on_t1ce, out / f"overlay_{cid}.png", cid)
    return result


def skull_case(case: Path, work: Path, rng: np.random.Generator, out: Path, dice_clean: dict[str, float]) -> dict:
    cid = case.name
    arrays = {
        m: sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"{cid}_{m}.nii.gz"), sitk.sitkFloat32)) for m in MODALITIES
    }
    brain = ndimage.binary_fill_holes(np.any([a > 0 for a in arrays.values()], axis=0))
    heads = add_skull(arrays, brain, rng)
    grid = sitk.ReadImage(str(case / f"{cid}_t1ce.nii.gz"))
    folder = work / f"{cid}_skull"
    folder.mkdir(parents=True, exist_ok=True)
    for m, array in heads.items():
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(grid)
        sitk.WriteImage(image, str(folder / f"{m}.nii.gz"))
    raw = work / "skull" / cid
    timings_file = work / f"{cid}_skull_timings.json"
    series = [x for m in MODALITIES for x in (f"--{m}", str(folder / f"{m}.nii.gz"))]
    load_before, cpu_before = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = glioseg(
        "predict",
        "--raw",
        *series,
        "-o",
        str(raw),
        "--case-id",
        cid,
        "--reference",
        "t1ce",
        "--timings",
        str(timings_file),
    )
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    load = [round(load_before, 1), round(os.getloadavg()[0], 1)]  # 1-minute load average before and after
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"{cid}_seg.nii.gz"), sitk.sitkUInt8))
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / f"{cid}_on_t1ce.nii.gz"), sitk.sitkUInt8))
    mask_image = sitk.ReadImage(str(raw / "prepared" / cid / f"{cid}_brainmask.nii.gz"))
    mask = sitk.GetArrayFromImage(sitk.Resample(mask_image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    info = json.loads((raw / "prepared" / cid / "prepare.json").read_text())
    network = json.loads(timings_file.read_text())["cases"][cid]
    mask_figure(
        heads["t1ce"],
        mask,
        brain,
        out / f"skull_{cid}.png",
        f"{cid} with a simulated skull: HD-BET mask (red) and the true brain (cyan)",
    )
    tumour = ref > 0
    return {
        "case": cid,
        "dice_skull": region_dice(pred, ref),
        "dice_clean": dice_clean,
        "mask_dice_vs_true_brain": float(dice(mask, brain)),
        "tumour_voxels_outside_mask": int((tumour & ~mask).sum()),
        "tumour_voxels": int(tumour.sum()),
        "time_s": {**info["timings_s"], "network": network["network"], "wall": wall, "cpu": round(cpu, 1)},
        "load_average": load,
        "pose": info.get("pose", {}).get("degrees"),
    }


def head_check(t1: Path, gm: Path, wm: Path, out: Path) -> dict:
    from glioseg.prepare.brain import brain_mask
    from glioseg.prepare.pipeline import canonical_grid

    image = sitk.ReadImage(str(t1), sitk.sitkFloat32)
    grid = canonical_grid(image)
    head = sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    tissue = sum(
        sitk.GetArrayFromImage(
            sitk.Resample(
                sitk.ReadImage(str(p), sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
            )
        )
        for p in (gm, wm)
    )
    tissue = tissue / 255.0 if tissue.max() > 2 else tissue
    reference = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.2, iterations=2))
    started = time.perf_counter()
    found = brain_mask(head, (1.0, 1.0, 1.0))
    seconds = time.perf_counter() - started
    mask_figure(
        head,
        found,
        reference,
        out / "head_mni152.png",
        "MNI ICBM152 2009a T1 as nilearn ships it (already brain-masked): HD-BET mask (red), template brain mask "
        "(cyan)",
    )
    return {
        "mask_dice": float(dice(found, reference)),
        "mask_ml": float(found.sum() / 1000),
        "reference_ml": float(reference.sum() / 1000),
        "seconds": seconds,
    }


def overlay_figure(t1ce: np.ndarray, pred: np.ndarray, ref: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(
        [(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.55), (0.1, 0.8, 0.1, 0.45), (0, 0, 0, 0), (1.0, 0.9, 0.0, 0.6)]
    )
    k = int(np.argmax((ref > 0).sum((1, 2))))
    low, high = np.percentile(t1ce[k][t1ce[k] > 0], (1, 99.5)) if (t1ce[k] > 0).any() else (0, 1)
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, labels, name in zip(
        axes,
        (None, pred, ref),
        (
            "T1ce series as acquired (its own grid)",
            "glioseg predict --raw, on that grid",
            "reference labels, moved onto that grid",
        ),
        strict=True,
    ):
        ax.imshow(t1ce[k], cmap="gray", vmin=low, vmax=high, origin="lower")
        if labels is not None:
            ax.imshow(labels[k], cmap=colours, vmin=0, vmax=4, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    figure.suptitle(f"{title}: slice {k} of the moved T1ce (NCR red, ED green, ET yellow)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def mask_figure(head: np.ndarray, mask: np.ndarray, reference: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = [int(v) for v in np.argwhere(reference).mean(0)]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    views = (
        (head[centre[0]], mask[centre[0]], reference[centre[0]]),
        (head[:, centre[1]], mask[:, centre[1]], reference[:, centre[1]]),
        (head[:, :, centre[2]], mask[:, :, centre[2]], reference[:, :, centre[2]]),
    )
    for ax, (image, found, ref) in zip(axes, views, strict=True):
        ax.imshow(image, cmap="gray", origin="lower")
        ax.contour(ref, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.contour(found, levels=[0.5], colors="red", linewidths=0.8)
        ax.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def markdown(results: dict) -> str:
    lines = [
        "# Scans from the scanner, simulated from real BraTS cases",
        "",
        "Machine: 2-core CPU shared with other jobs; one run per case.",
        "",
    ]
    if results.get("predict_options"):
        lines += [f"Every `glioseg predict` (ready and raw runs) with `{' '.join(results['predict_options'])}`.", ""]
    lines += [
        "| case | Dice WT / TC / ET, BraTS-ready | raw series, on the T1ce's grid | BraTS-ready prediction moved to "
        "that grid | largest difference raw - ready |",
        "|---|---|---|---|---:|",
    ]
    for r in results["cases"]:
        fmt = lambda d: " / ".join(f"{d[k]:.4f}" for k in ("wt", "tc", "et"))  # noqa: E731
        worst = max(abs(r["dice_raw_on_t1ce"][k] - r["dice_ready"][k]) for k in REGIONS)
        lines.append(
            f"| {r['case']} | {fmt(r['dice_ready'])} | {fmt(r['dice_raw_on_t1ce'])} | "
            f"{fmt(r['dice_ready_moved_to_t1ce'])} | {worst:.4f} |"
        )
    lines += [
        "",
        "| case | series | known motion vs T1ce (deg) | rotation error (deg) | largest displacement error over the "
        "brain (mm) | NMI |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results["cases"]:
        for m, t in r["transforms"].items():
            lines.append(
                f"| {r['case']} | {m} | {t['known_rotation_deg']:.2f} | {t['rotation_error_deg']:.3f} | "
                f"{t['max_displacement_error_mm']:.3f} | {t['nmi']:.3f} |"
            )
    posed = [r for r in results["cases"] if "error_deg" in r.get("pose", {})]
    if posed:
        lines += [
            "", "Pose (`--pose atlas`): BraTS's axes from ROBEX's atlas, against the T1ce's known motion;",
            "composed: pose and registration, BraTS's axes -> each series, against its known motion (degrees).",
            "",
            "| case | T1ce turned (deg) | pose error (deg) | composed error flair / t1 / t2 (deg) | scale | pose s |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for r in posed:
            errors = [r["transforms"][m]["composed_rotation_error_deg"] for m in ("flair", "t1", "t2")]
            composed = " / ".join(f"{e:.2f}" for e in errors)
            p, seconds = r["pose"], r["time_s"]["pose"]
            row = [r["case"], f"{p['known_deg']:.2f}", f"{p['error_deg']:.2f}", composed]
            row += [f"{p['scale']:.3f}", f"{seconds:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| case | conversion s | registration s | brain extraction s | resampling + writing s | network s | predict "
        "--raw wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["cases"]:
        t = r["time_s"]
        lines.append(
            f"| {r['case']} | {t['conversion']:.1f} | {t['registration']:.1f} | {t['brain_extraction']:.1f} | "
            f"{t['resampling_writing']:.1f} | {t['network']:.1f} | {t['wall']:.1f} |"
        )
    for s in results.get("skull", []):
        skull = " / ".join(f"{s['dice_skull'][k]:.4f}" for k in REGIONS)
        clean = " / ".join(f"{s['dice_clean'][k]:.4f}" for k in REGIONS)
        lines += [
            "",
            f"Skull simulation, {s['case']}: Dice WT / TC / ET with the skull (HD-BET) {skull}, clean BraTS-ready run "
            f"{clean};",
            f"HD-BET mask vs the true brain: Dice {s['mask_dice_vs_true_brain']:.4f}; tumour voxels outside the mask: "
            f"{s['tumour_voxels_outside_mask']} of {s['tumour_voxels']};",
            f"times (s): {json.dumps(s['time_s'])}",
        ]
        if "load_average" in s:
            lines.append(f"1-minute load average before and after: {s['load_average']}; pose {s['pose']} deg")
    if "head" in results:
        h = results["head"]
        lines += [
            "",
            f"MNI ICBM152 2009a T1 (nilearn's copy, already brain-masked): HD-BET mask Dice {h['mask_dice']:.4f} "
            f"against the template brain mask",
            f"({h['mask_ml']:.0f} ml vs {h['reference_ml']:.0f} ml), {h['seconds']:.0f} s",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brats2018"
    )
    parser.add_argument("--cases", nargs="+", default=["Brats18_CBICA_AOZ_1", "Brats18_TCIA01_499_1"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/glioseg-scanner"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--skull", action="store_true", help="also the skull simulation with HD-BET on the first case")
    parser.add_argument(
        "--head",
        nargs=3,
        type=Path,
        metavar=("T1", "GM", "WM"),
        help="a head image with skull and its grey/white matter maps",
    )
    parser.add_argument(
        "--only", choices=("cases", "skull", "head"), help="run one part, merging into an existing results.json"
    )
    parser.add_argument(
        "--iso",
        action="store_true",
        help="control: FLAIR and T2 on 1 mm axial grids too (same motions), to separate slice thickness "
        "from registration",
    )
    parser.add_argument(
        "--motion",
        choices=("random", "none", "same"),
        default="random",
        help="control: no motion, or every series moved as the T1ce",
    )
    parser.add_argument(
        "--interpolation", choices=("linear", "bspline"), default="linear", help="passed to glioseg predict --raw"
    )
    parser.add_argument("--pose", choices=("atlas", "scanner"), default="atlas", help="passed to glioseg predict --raw")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="CASE=PATH[,PATH...]",
        help="predict CASE (ready and raw runs) with this model, e.g. the fold model that never saw it (several, "
        "comma-separated: an ensemble, their probabilities averaged)",
    )
    parser.add_argument(
        "--predict-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="added to every glioseg predict, ready and raw runs alike, e.g. --predict-option=--mirror",
    )
    args = parser.parse_args()
    PREDICT_OPTIONS.extend(args.predict_option)
    MODELS.update(item.split("=", 1) for item in args.model)
    global MOTION, INTERPOLATION, POSE
    MOTION, INTERPOLATION, POSE = args.motion, args.interpolation, args.pose
    if args.iso:
        GRIDS.update({m: ((240, 240, 170), (1.0, 1.0, 1.0), np.eye(3)) for m in ("flair", "t2")})
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2] / "src"))
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if args.only and results_path.exists() else {}
    rng = np.random.default_rng(args.seed)
    if args.only in (None, "cases"):
        results["predict_options"] = args.predict_option
        results["cases"] = [
            run_case(
                args.data / cid, args.work, rng, args.out, picture=i == 0 and args.motion == "random" and not args.iso
            )
            for i, cid in enumerate(args.cases)
        ]
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.skull or args.only == "skull":
        first = args.data / (results["cases"][0]["case"] if "cases" in results else args.cases[0])
        _CASE[0] = first.name
        # the clean run of this model, now: a results.json of another model's `cases` run gave a stale one
        ready = args.work / "skull_ready"
        glioseg("predict", str(first), "-o", str(ready))
        clean = region_dice(
            sitk.GetArrayFromImage(sitk.ReadImage(str(ready / f"{first.name}.nii.gz"), sitk.sitkUInt8)),
            sitk.GetArrayFromImage(sitk.ReadImage(str(first / f"{first.name}_seg.nii.gz"), sitk.sitkUInt8)),
        )
        results["skull"] = [skull_case(first, args.work, np.random.default_rng(args.seed + 1), args.out, clean)]
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.head is not None and args.only in (None, "head"):
        results["head"] = head_check(*args.head, args.out)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
