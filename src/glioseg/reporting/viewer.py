"""A self-contained HTML page per case: an interactive 3D viewer (NiiVue) of the scans and label maps.

The page opens offline from disk (``file://``) in any current browser with WebGL2: the NiiVue
bundle (``assets/niivue/``, BSD 2-Clause) and every volume are inlined, the volumes as base64
gzipped NIfTI on the case's grid, cropped to the head (:func:`content_box`, with the affine
shifted to match). It shows:

* the modalities the case has (FLAIR, T1, T1ce, T2), one at a time, windowed to ``uint8``
  (:func:`window_to_uint8`: the 0.5-99.5 percentile range of the non-zero voxels -> 1..255,
  zero stays zero); a modality the case lacks is listed as absent (no button, no volume: never
  drawn as a black scan);
* the reference and each prediction as label overlays (internal labels 0-3) in the colours
  of the report's figures (NCR red, ED green, ET yellow), one at a time, with an opacity slider
  and a toggle per class;
* the three orthogonal slices and a 3D render (turned to the tumor's side), or any one of them;
* a crosshair readout of the voxel indices (i, j, k) of the original files, the scan value
  and the label of every label map there;
* a legend with the volume of NCR, ED, ET, WT and TC in ml per label map.

A real BraTS case (240 x 240 x 155, four modalities, two label maps) makes a page of about
9-10 MB (see README), 2.3 MB of it NiiVue. The page sets ``window.gliosegViewer.ready`` (and ``<body data-ready>``)
once NiiVue has drawn the volumes, and ``window.gliosegViewer.error`` if it cannot.
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg import __version__
from glioseg.data.discovery import MODALITIES, NIFTI_SUFFIXES, Case, load_case
from glioseg.data.io import AFFINE_TOLERANCE, read_volume
from glioseg.errors import GliosegError
from glioseg.files import atomic_path, script_json
from glioseg.labels import (
    DISPLAY_NAMES,
    EDEMA,
    ENHANCING,
    NECROSIS,
    REGIONS,
    get_convention,
    to_internal,
)
from glioseg.reporting.figures import LABEL_COLOURS, OVERLAY_ALPHA

logger = logging.getLogger(__name__)

NIIVUE_VERSION = "0.69.0"
"""The vendored NiiVue release (``assets/niivue/niivue.umd.js``)."""

MODALITY_LABELS = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}

CLASSES = tuple(
    (value, key, DISPLAY_NAMES[value]) for value, key in ((NECROSIS, "ncr"), (EDEMA, "ed"), (ENHANCING, "et"))
)
"""Internal label value, key and name of each class drawn."""

WINDOW_PERCENTILES = (0.5, 99.5)
"""Percentiles of the non-zero voxels mapped to 1 and 255 by :func:`window_to_uint8`."""


@dataclass(frozen=True)
class ViewerPage:
    """A written viewer page.

    Attributes:
        path: the HTML file.
        size: its size in bytes.
        labelmaps: the names of the label maps it shows, in order.
    """

    path: Path
    size: int
    labelmaps: tuple[str, ...]


def window_to_uint8(image: np.ndarray) -> np.ndarray:
    """Window a scan to ``uint8`` for display.

    Zero voxels (outside the head in BraTS) stay 0; the others are mapped linearly from the
    :data:`WINDOW_PERCENTILES` of the non-zero voxels to 1..255 and clipped.

    Args:
        image: (X, Y, Z) array of any real type.

    Returns:
        (X, Y, Z) ``uint8``.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.zeros(image.shape, dtype=np.uint8)
    foreground = image != 0
    if not foreground.any():
        return out
    low, high = np.percentile(image[foreground], WINDOW_PERCENTILES)
    if high <= low:
        high = low + 1.0
    scaled = 1.0 + 254.0 * (image[foreground] - low) / (high - low)
    out[foreground] = np.clip(np.rint(scaled), 1, 255).astype(np.uint8)
    return out


def encode_nifti(data: np.ndarray, affine: np.ndarray, *, label: bool = False) -> str:
    """A volume as base64 text of a gzipped NIfTI-1 file (what NiiVue's ``loadFromBase64`` reads).

    Args:
        data: (X, Y, Z) ``uint8`` array.
        affine: its 4x4 voxel-to-world matrix (kept, so voxel indices match the original files).
        label: mark it as a label map (NIfTI intent ``label``) rather than a scan (window 0-255).
    """
    image = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    image.set_data_dtype(np.uint8)
    image.header["scl_slope"], image.header["scl_inter"] = 1, 0
    if label:
        image.header.set_intent("label")
    else:
        image.header["cal_min"], image.header["cal_max"] = 0, 255
    raw = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": raw, "header": raw})
    image.to_file_map(file_map)
    return base64.b64encode(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)).decode("ascii")


def class_volumes_ml(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume in ml of each class (``ncr``, ``ed``, ``et``) and region (``wt``, ``tc``) of an internal label map."""
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=4)
    volumes = {key: float(counts[value]) * voxel_ml for value, key, _ in CLASSES}
    for region in ("wt", "tc"):
        volumes[region] = float(sum(counts[v] for v in REGIONS[region])) * voxel_ml
    return volumes


def content_box(volumes: Sequence[np.ndarray], margin: int = 2) -> tuple[slice, slice, slice]:
    """The smallest box holding every non-zero voxel of ``volumes``, grown by ``margin`` voxels.

    The page holds only this box (BraTS heads fill about half of the 240 x 240 x 155 grid): the
    volumes shrink and the browser has less to draw. The whole grid when every voxel is zero.

    Args:
        volumes: (X, Y, Z) arrays of one shape.
        margin: voxels of background kept around the content.
    """
    shape = volumes[0].shape
    content = np.zeros(shape, dtype=bool)
    for volume in volumes:
        content |= np.asarray(volume) != 0
    if not content.any():
        return slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2])
    box = []
    for axis in range(3):
        present = np.flatnonzero(content.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, shape[axis])))
    return box[0], box[1], box[2]


def _tumor_centre(labelmaps: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The voxel the page starts at: the tumor voxel nearest the centroid of the first map with a tumor."""
    for labels in labelmaps.values():
        tumor = np.argwhere(labels > 0)
        if len(tumor):
            centroid = tumor.mean(axis=0)
            i, j, k = (int(v) for v in tumor[np.argmin(((tumor - centroid) ** 2).sum(axis=1))])
            return i, j, k
    return shape[0] // 2, shape[1] // 2, shape[2] // 2


def _asset(name: str) -> str:
    return resources.files("glioseg.reporting").joinpath("assets", *name.split("/")).read_text(encoding="utf-8")


def viewer_html(
    scans: Mapping[str, np.ndarray],
    labelmaps: Mapping[str, np.ndarray],
    affine: np.ndarray,
    title: str,
    *,
    subtitle: str = "",
    opacity: float = OVERLAY_ALPHA,
    absent: Sequence[str] = (),
) -> str:
    """The viewer page as one HTML string.

    Args:
        scans: modality name (``flair``, ``t1``, ``t1ce``, ``t2``) -> (X, Y, Z) scan, in the
            order they are offered; the first is shown first.
        labelmaps: name (e.g. ``reference``, a model's name) -> (X, Y, Z) internal label map
            (values 0-3) on the same grid; the first is shown first.
        affine: 4x4 voxel-to-world matrix shared by all volumes.
        title: the page's title (the case id).
        subtitle: a line under the title (e.g. where the files came from).
        opacity: initial overlay opacity, 0-1.
        absent: modalities the case lacks, listed on the page as absent.

    Raises:
        ValueError: no scan, shapes that differ, label values outside 0-3, or a modality both
            given and absent.
    """
    if not scans:
        raise ValueError("a viewer page needs at least one scan")
    if set(absent) & set(scans):
        raise ValueError(f"modalities {sorted(set(absent) & set(scans))} are both given and absent")
    shape = next(iter(scans.values())).shape
    for name, volume in [*scans.items(), *labelmaps.items()]:
        if volume.shape != shape:
            raise ValueError(f"{name} has shape {volume.shape}, the first scan {shape}")
    for name, labels in labelmaps.items():
        if labels.size and (labels.min() < 0 or labels.max() > 3):
            raise ValueError(f"label map {name} holds values outside the internal 0-3")
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    centre = _tumor_centre(labelmaps, shape)
    box = content_box([*scans.values(), *labelmaps.values()])
    origin = [b.start for b in box]
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] = affine[:3, :3] @ origin + affine[:3, 3]
    colours = {value: [round(255 * c) for c in LABEL_COLOURS[value]] for value, _, _ in CLASSES}
    classes = [{"value": value, "key": key, "name": name, "rgb": colours[value]} for value, key, name in CLASSES]
    columns: list[dict[str, object]] = [
        {"key": key, "name": key.upper(), "rgb": colours[value]} for value, key, _ in CLASSES
    ]
    columns += [{"key": "wt", "name": "WT", "rgb": None}, {"key": "tc", "name": "TC", "rgb": None}]
    payload = {
        "modalities": [
            {
                "name": name,
                "label": MODALITY_LABELS.get(name, name),
                "nifti": encode_nifti(window_to_uint8(volume)[box], cropped_affine),
            }
            for name, volume in scans.items()
        ],
        "absent_modalities": [{"name": name, "label": MODALITY_LABELS.get(name, name)} for name in absent],
        "labelmaps": [
            {
                "name": name,
                "nifti": encode_nifti(labels[box], cropped_affine, label=True),
                "volumes_ml": class_volumes_ml(labels, voxel_ml),
            }
            for name, labels in labelmaps.items()
        ],
        "classes": classes,
        "volume_columns": columns,
        "shape": list(shape),
        "crop_origin": origin,
        "crop_shape": [b.stop - b.start for b in box],
        "affine": affine.tolist(),
        "inverse_affine": np.linalg.inv(affine).tolist(),
        "start_voxel": list(centre),
        "opacity": float(opacity),
    }
    niivue = _asset("niivue/niivue.umd.js")
    if "</script" in niivue.lower() or "<!--" in niivue:  # would end the inline <script> early, or change how it ends
        raise RuntimeError("the vendored NiiVue bundle contains '</script' or '<!--': it cannot be inlined")
    data = script_json(payload)  # no '<' of any name reaches the page's HTML parser
    return string.Template(_asset("viewer.html")).substitute(
        title=html.escape(title), subtitle=html.escape(subtitle), data=data, niivue=niivue,
        niivue_version=NIIVUE_VERSION, glioseg_version=__version__, opacity_percent=round(100 * opacity),
    )


def write_viewer(
    path: str | Path,
    scans: Mapping[str, np.ndarray],
    labelmaps: Mapping[str, np.ndarray],
    affine: np.ndarray,
    title: str,
    *,
    subtitle: str = "",
    opacity: float = OVERLAY_ALPHA,
    absent: Sequence[str] = (),
) -> ViewerPage:
    """Write :func:`viewer_html` to ``path`` atomically.

    ``subtitle``, ``opacity`` and ``absent`` are :func:`viewer_html`'s.
    """
    document = viewer_html(scans, labelmaps, affine, title, subtitle=subtitle, opacity=opacity, absent=absent)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    size = path.stat().st_size
    logger.info("viewer page written to %s (%.1f MB)", path, size / 1e6)
    return ViewerPage(path, size, tuple(labelmaps))


def read_labelmap(
    path: str | Path, case: Case, shape: tuple[int, int, int], affine: np.ndarray, convention: str | None = None
) -> np.ndarray:
    """Read a label map (e.g. a prediction) for a case and convert it to internal labels.

    Args:
        path: the label map file.
        case: the case it belongs to (its convention is the default).
        shape: the case's grid shape.
        affine: the case's affine; the label map must be on the same grid.
        convention: the label map's convention, or ``None`` for the case's (values of another
            convention are then refused, see :func:`glioseg.labels.detect_convention`).

    Returns:
        (X, Y, Z) ``uint8`` internal labels.

    Raises:
        GliosegError: unreadable file, another grid, or values of another or no convention.
    """
    from glioseg.labels import detect_convention

    volume = read_volume(path, dtype=None)
    if volume.data.shape != tuple(shape):
        raise GliosegError(
            volume.path,
            f"shape {volume.data.shape} differs from the case's {tuple(shape)}",
            "give a label map of this case, on its grid",
        )
    if not np.allclose(volume.affine, affine, atol=AFFINE_TOLERANCE):  # every layout, MSD included
        raise GliosegError(
            volume.path,
            f"affine (orientation/spacing/origin) differs from the case's images by more than {AFFINE_TOLERANCE} mm",
            "give a label map of this case, on its grid",
        )
    if convention is None:
        convention = detect_convention(volume.data, case.convention, volume.path)
    return to_internal(volume.data, get_convention(convention), volume.path)


def case_viewer(
    case: Case,
    out: str | Path,
    *,
    predictions: Sequence[tuple[str, Path]] = (),
    labels: str | None = None,
) -> ViewerPage:
    """Read a case (every modality it has, its reference label if any) and predictions; write its page.

    Everything is read and checked before anything is written: a broken file raises and no
    page is left behind.

    Args:
        case: the case.
        out: the HTML file to write.
        predictions: ``(name, label map file)`` per prediction, shown after the reference.
        labels: the predictions' label convention, or ``None`` for the case's.

    Raises:
        GliosegError: a broken or mismatched file (named in the message), or two label maps with one name.
    """
    modalities = tuple(m for m in MODALITIES if m in case.images)
    loaded = load_case(case, modalities, with_label=True)
    labelmaps: dict[str, np.ndarray] = {}
    if loaded.label is not None:
        labelmaps["reference"] = loaded.label
    for name, path in predictions:
        if name in labelmaps:
            raise GliosegError(
                path, f"a second label map named '{name}'", "give each prediction its own name (NAME=FILE)"
            )
        labelmaps[name] = read_labelmap(path, case, loaded.shape, loaded.affine, labels)
    scans = dict(zip(modalities, loaded.image, strict=True))
    source = case.reference_image.parent
    absent = absent_modalities(case)
    return write_viewer(
        out, scans, labelmaps, loaded.affine, case.case_id, subtitle=f"{source} ({case.layout} layout)", absent=absent
    )


def absent_modalities(case: Case) -> tuple[str, ...]:
    """The BraTS modalities (FLAIR, T1, T1ce, T2) that ``case`` has no image of, in that order."""
    return tuple(m for m in MODALITIES if m not in case.images)


def viewer_inputs(case: Case, predictions: Sequence[tuple[str, Path]]) -> tuple[list[Path], list[Path]]:
    """What a case's page reads, and the folders it must not write into (for
    :func:`~glioseg.files.check_outputs_apart`).

    Returns:
        ``(files, protected)``: every image, the reference label and each prediction file; the
        MSD label folder (``labelsTr``) when the case has one.
    """
    files = [
        *case.images.values(),
        *([case.label] if case.label is not None else []),
        *(path for _, path in predictions),
    ]
    protected = [case.label.parent] if case.layout == "msd" and case.label is not None else []
    return files, protected


def prediction_names(case: Case, predictions: Sequence[tuple[str | None, Path]]) -> list[tuple[str, Path]]:
    """Name each ``(name or None, file)`` prediction of a case for the page.

    An unnamed prediction is called after its file (``unet.nii.gz`` -> ``unet``), or after its
    folder when the file is named after the case (``preds/unet/<case>.nii.gz`` -> ``unet``).

    Raises:
        GliosegError: two predictions end up with one name (or the name ``reference``).
    """
    named: list[tuple[str, Path]] = []
    for given_name, given_path in predictions:
        path, name = Path(given_path), given_name
        if name is None:
            stem = next((path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.lower().endswith(s)), path.name)
            name = path.parent.resolve().name if stem == case.case_id else stem
        if name == "reference" or name in (n for n, _ in named):
            raise GliosegError(
                path, f"a second label map named '{name}'", "give each prediction its own name (NAME=FILE)"
            )
        named.append((name, path))
    return named
