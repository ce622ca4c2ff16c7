"""Find the cases of a BraTS dataset in any of its published layouts, and load them.

Supported layouts (files are paired by case id, never by listing order):

* ``brats2018`` (BraTS 2018-2020): ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]``.
  BraTS 2020's case 355 ships its label as ``W39_1998.09.19_Segm.nii``: accepted with a warning.
* ``brats2021``: ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``.
* ``brats2023`` (BraTS 2023+, GLI/MET/MEN/PED/SSA):
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1c,t1n,t2f,t2w,seg}.nii.gz``.
* ``msd`` (Medical Segmentation Decathlon Task01_BrainTumour): ``imagesTr/BRATS_001.nii.gz``
  4D with channels (FLAIR, T1w, T1gd, T2w), labels in ``labelsTr/``; ``imagesTs/`` without labels.
* ``files``: explicit files for one case (``--flair --t1 --t1ce --t2 [--seg]``).

A case is never guessed at: two files for one modality of a case, or one case id in two folders,
are reported as problems and the case is not used. Other NIfTI files beside a case's files
(e.g. ``<case>_t1ce_old.nii.gz``) are ignored with a warning.

Modalities are named internally ``flair``, ``t1``, ``t1ce``, ``t2`` whatever the source calls them.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.config.sections import MODALITIES  # re-exported: the one modality tuple
from glioseg.data.io import AFFINE_TOLERANCE, READ_THREADS, Volume, check_castable, read_header, read_volume
from glioseg.errors import GliosegError
from glioseg.labels import CONVENTIONS, to_internal

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")

LAYOUT_CONVENTION = {
    "brats2018": "brats2018",
    "brats2021": "brats2018",
    "brats2023": "brats2023",
    "msd": "msd",
    "files": "brats2018",
}
"""The label convention each layout ships its labels in."""

# file-name suffix -> internal modality (or "seg"), per naming family
_SUFFIXES_2018 = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}
_SUFFIXES_2023 = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "seg": "seg"}
_RE_2018 = re.compile(r"^(?P<case>.+)_(?P<key>flair|t1ce|t1|t2|seg)$", re.IGNORECASE)
_RE_2023 = re.compile(r"^(?P<case>.+)-(?P<key>t2f|t1n|t1c|t2w|seg)$", re.IGNORECASE)
_RE_MISNAMED_SEG = re.compile(r"_Segm$", re.IGNORECASE)

MSD_CHANNELS = ("flair", "t1", "t1ce", "t2")
"""Channel order of the MSD Task01 4D images (FLAIR, T1w, T1gd, T2w)."""


@dataclass(frozen=True)
class Case:
    """One patient's files.

    Attributes:
        case_id: identifier taken from the file names (the folder name for BraTS layouts).
        images: internal modality name -> file. For ``msd`` every modality maps to the one 4D file.
        label: the label map file, or ``None`` for a case without labels.
        layout: the layout it was found in.
        convention: label convention of ``label`` (and of predictions written for it).
    """

    case_id: str
    images: Mapping[str, Path]
    label: Path | None
    layout: str
    convention: str

    @property
    def reference_image(self) -> Path:
        """The file whose grid (shape and affine) predictions are written on."""
        return next(iter(self.images.values()))

    def require(self, modalities: Sequence[str]) -> None:
        """Raise :class:`GliosegError` if any of ``modalities`` is missing."""
        missing = [m for m in modalities if m not in self.images]
        if missing:
            folder = self.reference_image.parent if self.images else None
            raise GliosegError(
                folder,
                f"case {self.case_id} has no {', '.join(missing)} image",
                "add the missing file(s) (expected names like "
                f"{expected_file_name(self.case_id, missing[0], self.layout)}) or remove the case",
            )


def expected_file_name(case_id: str, modality: str, layout: str) -> str:
    """The file name a layout gives ``modality`` of ``case_id`` (for error hints)."""
    if layout == "brats2023":
        source = {v: k for k, v in _SUFFIXES_2023.items()}[modality]
        return f"{case_id}-{source}.nii.gz"
    return f"{case_id}_{modality}.nii.gz"


@dataclass
class Dataset:
    """What :func:`discover` found under a root folder.

    Attributes:
        root: the folder searched.
        layout: the layout detected.
        cases: complete cases, sorted by id.
        problems: one-line messages for files or cases that could not be used.
        warnings: one-line messages for oddities that were accepted.
    """

    root: Path
    layout: str
    cases: list[Case] = field(default_factory=list)
    problems: list[GliosegError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def convention(self) -> str:
        return LAYOUT_CONVENTION[self.layout]


def strip_nifti(name: str) -> str | None:
    """``<stem>.nii.gz`` or ``<stem>.nii`` (any case) -> ``<stem>``; ``None`` for other names."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if strip_nifti(p.name) is not None and not p.name.startswith("."))


def _is_case_file_name(name: str) -> bool:
    stem = strip_nifti(name)
    return stem is not None and bool(_RE_2023.match(stem) or _RE_2018.match(stem) or _RE_MISNAMED_SEG.search(stem))


def _holds_case_files(folder: Path) -> bool:
    """True if ``folder`` itself (not below) holds a file named like a BraTS modality or label."""
    try:
        with os.scandir(folder) as entries:
            return any(_is_case_file_name(entry.name) for entry in entries)
    except OSError:
        return False


def _walk(root: Path, warnings: list[str]) -> Iterator[tuple[Path, list[Path]]]:
    """Yield ``(folder, NIfTI-named entries)`` for the folders under ``root``, depth first, sorted.

    Terminates on any tree: every real folder is entered once (symbolic-link cycles end), and a
    link to a folder outside ``root`` is followed only if that folder is a case folder (it holds
    modality or label files), and then its sub-folders are not searched (a link to ``/`` or a
    home folder is not walked). Links to single files are used wherever they point. Hidden
    entries and unreadable folders are skipped.
    """
    root_real = Path(os.path.realpath(root))
    visited = {root_real}
    stack: list[tuple[Path, bool]] = [(root, False)]  # (folder, reached through a link leaving root)
    while stack:
        folder, outside = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError:
            continue
        files: list[Path] = []
        subfolders: list[os.DirEntry] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if strip_nifti(entry.name) is not None:
                files.append(Path(entry.path))  # a folder named like a file is reported when read
                continue
            try:
                if entry.is_dir():
                    subfolders.append(entry)
            except OSError:
                continue
        if files:
            yield folder, files
        if outside:
            continue
        for entry in reversed(subfolders):  # popped in sorted order
            real = Path(os.path.realpath(entry.path))
            if real in visited:
                continue  # a cycle, or a folder already reached through another path
            leaves = root_real not in real.parents
            if leaves and not _holds_case_files(real):
                warnings.append(
                    f"{entry.path}: symbolic link to {real}, outside the dataset folder and not a case folder, not "
                    "followed"
                    " (pass that folder itself to use the cases under it)"
                )
                continue
            visited.add(real)
            stack.append((Path(entry.path), leaves))


def discover(root: str | Path, required: Sequence[str] = MODALITIES, *, require_labels: bool = True) -> Dataset:
    """Find every case under ``root``.

    ``root`` may be a dataset folder (cases in sub-folders, at any depth), a single case
    folder, or an MSD task folder (holding ``imagesTr``).

    Args:
        root: the folder to search.
        required: modalities every case must have; cases missing one are reported as problems.
        require_labels: an MSD ``imagesTr`` image without its label is a problem (for training);
            when off (prediction) it is a case without a label.

    Raises:
        GliosegError: ``root`` does not exist, holds no case, or mixes layouts.
    """
    root = Path(root)
    if not root.exists():
        raise GliosegError(root, "folder not found", "check the path to your BraTS data")
    if not root.is_dir():
        raise GliosegError(root, "is a file, not a folder", "pass the dataset folder, or the single files of one case")
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        dataset = _discover_msd(root, require_labels)
    else:
        dataset = _discover_brats(root, required)
    if not dataset.cases and not dataset.problems:
        raise GliosegError(
            root,
            "no BraTS cases found",
            "point to the folder holding the case folders (e.g. <case>/<case>_flair.nii.gz) or an MSD Task01 folder",
        )
    return dataset


def _discover_brats(root: Path, required: Sequence[str]) -> Dataset:
    found: dict[str, dict[str, Path]] = {}
    origin: dict[str, Path] = {}
    families: Counter[str] = Counter()
    problems: list[GliosegError] = []
    warnings: list[str] = []
    for folder, files in _walk(root, warnings):
        if not files:
            continue
        per_case: dict[str, dict[str, Path]] = {}
        misnamed: list[Path] = []
        unrecognised: list[Path] = []
        ambiguous: set[str] = set()
        for path in files:
            stem = strip_nifti(path.name) or path.name  # _nifti_files holds NIfTI names only
            match = _RE_2023.match(stem)
            family = "brats2023"
            key_map = _SUFFIXES_2023
            if match is None:
                match = _RE_2018.match(stem)
                family, key_map = "brats2018", _SUFFIXES_2018
            if match is None:
                (misnamed if _RE_MISNAMED_SEG.search(stem) else unrecognised).append(path)
                continue
            case_id, key = match.group("case"), key_map[match.group("key").lower()]
            if family == "brats2018" and case_id.startswith("BraTS2021"):
                family = "brats2021"
            families[family] += 1
            slot = per_case.setdefault(case_id, {})
            if key in slot:
                # which of the two is meant cannot be known: the case is not used
                problems.append(
                    GliosegError(
                        path,
                        f"second {key} file for case {case_id} (also {slot[key].name}); the case is skipped",
                        "keep one file per modality",
                    )
                )
                ambiguous.add(case_id)
                continue
            slot[key] = path
        if misnamed and len(per_case) == 1:
            (case_id, slot), = per_case.items()
            if "seg" not in slot:
                slot["seg"] = misnamed.pop(0)
                warnings.append(
                    f"{slot['seg']}: misnamed label file (as in BraTS 2020 case 355) accepted as the label of {case_id}"
                )
        if per_case:
            for path in [*misnamed, *unrecognised]:
                warnings.append(f"{path}: not a BraTS modality or label file name, ignored")
        for case_id, slot in per_case.items():
            if case_id in origin and origin[case_id].resolve() == folder.resolve():
                continue  # the same folder reached again through a symbolic link
            if case_id in origin:
                problems.append(
                    GliosegError(
                        folder,
                        f"case id {case_id} also found in {origin[case_id]}; neither is used",
                        "remove or rename one of the two case folders",
                    )
                )
                found.pop(case_id, None)
                continue
            origin[case_id] = folder
            if case_id not in ambiguous:  # a case with two files for one modality is reported above and not used
                found[case_id] = slot
    if not families:
        return Dataset(root=root, layout="brats2018", problems=problems, warnings=warnings)
    layout = families.most_common(1)[0][0]
    if len(families) > 1 and {"brats2023"} & set(families):
        raise GliosegError(
            root,
            f"mixes BraTS layouts ({', '.join(sorted(families))}) with different label conventions",
            "keep one BraTS release per folder",
        )
    convention = LAYOUT_CONVENTION[layout]
    cases = []
    for case_id in sorted(found):
        slot = found[case_id]
        images = {m: slot[m] for m in MODALITIES if m in slot}
        if not images:
            problems.append(
                GliosegError(
                    slot["seg"],
                    f"label file for case {case_id} has no images beside it",
                    "add the case's modality files or remove the label",
                )
            )
            continue
        case = Case(case_id, images, slot.get("seg"), layout, convention)
        try:
            case.require(required)
        except GliosegError as exc:
            problems.append(exc)
            continue
        cases.append(case)
    return Dataset(root=root, layout=layout, cases=cases, problems=problems, warnings=warnings)


def _discover_msd(root: Path, require_labels: bool = True) -> Dataset:
    dataset = Dataset(root=root, layout="msd")
    labels_dir = root / "labelsTr"
    for images_dir in (root / "imagesTr", root / "imagesTs"):
        if not images_dir.is_dir():
            continue
        for path in _nifti_files(images_dir):
            case_id = strip_nifti(path.name) or path.name
            label = labels_dir / path.name if images_dir.name == "imagesTr" else None
            if label is not None and not label.exists() and not require_labels:
                label = None
            elif label is not None and not label.exists():
                dataset.problems.append(
                    GliosegError(
                        path,
                        f"no label {label} for this training image",
                        "add the label, or move the image to imagesTs",
                    )
                )
                continue
            dataset.cases.append(Case(case_id, {m: path for m in MSD_CHANNELS}, label, "msd", "msd"))
    if labels_dir.is_dir():
        image_names = {p.name for p in _nifti_files(root / "imagesTr")} if (root / "imagesTr").is_dir() else set()
        for label in _nifti_files(labels_dir):
            if label.name not in image_names:
                dataset.problems.append(
                    GliosegError(
                        label, "label without a matching image in imagesTr", "add the image or remove the label"
                    )
                )
    counts = Counter(case.case_id for case in dataset.cases)
    for case_id in sorted(i for i, n in counts.items() if n > 1):
        files = [case.reference_image for case in dataset.cases if case.case_id == case_id]
        dataset.problems.append(
            GliosegError(
                files[-1],
                f"case id {case_id} also found as {files[0]}; neither is used",
                "keep one image per case id in imagesTr/imagesTs",
            )
        )
    dataset.cases = sorted((case for case in dataset.cases if counts[case.case_id] == 1), key=lambda c: c.case_id)
    return dataset


MAX_CASE_ID_BYTES = 200
"""Longest case id (UTF-8 bytes) accepted from ``--case-id``: ``<id>_probabilities.npz`` must fit a file name (255)."""


def check_case_id(case_id: str) -> None:
    """Refuse a case id that would not name one file inside an output folder.

    A case id becomes a file name (``OUT/<case>.nii.gz``, ``CACHE/<case>.npz``), so it may not
    hold ``/`` or ``\\`` (a path: ``../victim``, ``/etc/x``), a NUL byte, be ``.``, ``..`` or
    empty, start with ``.`` (a hidden file that later commands skip), or be longer than
    :data:`MAX_CASE_ID_BYTES` bytes.

    Raises:
        GliosegError: naming the id and what is wrong with it.
    """
    fix = "give a plain case id, e.g. Brats18_XYZ_1 (letters, digits, '_', '-')"
    shown = repr(case_id[:60] + ("..." if len(case_id) > 60 else ""))
    if case_id in ("", ".", ".."):
        raise GliosegError(None, f"case id {shown} is not a file name", fix)
    if any(c in case_id for c in "/\\\0"):
        raise GliosegError(
            None, f"case id {shown} holds a path separator or NUL (it would write outside the output folder)", fix
        )
    if case_id.startswith("."):
        raise GliosegError(None, f"case id {shown} starts with '.' (a hidden file, skipped by later commands)", fix)
    if len(case_id.encode("utf-8", "surrogateescape")) > MAX_CASE_ID_BYTES:
        raise GliosegError(
            None,
            f"case id of {len(case_id)} characters is longer than {MAX_CASE_ID_BYTES} bytes (file names hold at most "
            "255)",
            fix,
        )


def case_from_files(
    flair: str | Path | None = None,
    t1: str | Path | None = None,
    t1ce: str | Path | None = None,
    t2: str | Path | None = None,
    seg: str | Path | None = None,
    case_id: str | None = None,
    convention: str | None = None,
) -> Case:
    """Build a case from explicit files (the ``files`` layout).

    The label convention defaults to ``brats2023`` for BraTS 2023-style names
    (``...-t2f.nii.gz``) and ``brats2018`` otherwise.
    """
    given = {"flair": flair, "t1": t1, "t1ce": t1ce, "t2": t2}
    images = {m: Path(p) for m, p in given.items() if p is not None}
    if not images:
        raise GliosegError(
            None,
            "no image given",
            "give the case's FLAIR, T1, T1ce and T2 images (a model trained with modality dropout accepts any of them)",
        )
    for path in [*images.values(), *([Path(seg)] if seg else [])]:
        if not path.is_file():
            raise GliosegError(path, "file not found" if not path.exists() else "is not a file", "check the path")
    _check_distinct_files(Case("files", images, None, "files", "brats2018"), tuple(images))
    stem = strip_nifti(next(iter(images.values())).name) or "case"
    match_2023 = _RE_2023.match(stem)
    if case_id is None:
        match = match_2023 or _RE_2018.match(stem)
        case_id = match.group("case") if match else stem
    check_case_id(case_id)
    if convention is None:
        convention = "brats2023" if match_2023 else "brats2018"
    if convention not in CONVENTIONS:
        raise GliosegError(None, f"unknown label convention '{convention}'", f"use one of {', '.join(CONVENTIONS)}")
    return Case(case_id, images, Path(seg) if seg else None, "files", convention)


@dataclass(frozen=True)
class LoadedCase:
    """A case read from disk and checked.

    Attributes:
        case: the files it came from.
        image: (C, X, Y, Z) float32, channels in the order requested.
        modalities: the channel names.
        label: (X, Y, Z) uint8 in the internal convention, or ``None``.
        affine: 4x4 voxel-to-world matrix shared by all files.
    """

    case: Case
    image: np.ndarray
    modalities: tuple[str, ...]
    label: np.ndarray | None
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        x, y, z = (float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])


def load_case(case: Case, modalities: Sequence[str] = MODALITIES, *, with_label: bool = True) -> LoadedCase:
    """Read and validate one case.

    Checks: every requested modality exists, is 3D (MSD: 4D with 4 channels), finite and
    not constant (e.g. all zero); all share one shape and affine (within :data:`AFFINE_TOLERANCE`); the label
    map has the same grid and only values of the case's convention.

    Raises:
        GliosegError: naming the offending file and the fix.
    """
    case.require(modalities)
    channels: list[np.ndarray] = []
    grid: Volume | None = None  # the first image read: the grid every other file must share
    if case.layout == "msd":
        volume = read_volume(case.reference_image, ndim=(4,))
        if volume.data.shape[-1] != len(MSD_CHANNELS):
            raise GliosegError(
                volume.path,
                f"MSD image has {volume.data.shape[-1]} channels, expected 4 (FLAIR, T1w, T1gd, T2w)",
                "use the Task01_BrainTumour images as published",
            )
        affine = volume.affine
        for m in modalities:
            channels.append(volume.data[..., MSD_CHANNELS.index(m)])
            _check_not_empty(volume.path, m, float(channels[-1].min()), float(channels[-1].max()))
        grid = volume
    else:
        _check_distinct_files(case, modalities)
        paths = [case.images[m] for m in modalities]
        x, y, z = (*read_header(paths[0]).shape[:3], 1, 1)[:3]  # a 2-D file is refused by read_volume below
        # each channel Fortran-ordered, as NIfTI stores it, so the cast copies without transposing; filled in place: no
        # stacked copy
        image = np.empty((len(modalities), z, y, x), dtype=np.float32).transpose(0, 3, 2, 1)
        with ThreadPoolExecutor(min(len(paths), READ_THREADS)) as pool:  # gzip, min/max and the cast release the GIL
            futures = [pool.submit(_read_channel, path, image[index]) for index, path in enumerate(paths)]
            for index, (m, future) in enumerate(zip(modalities, futures, strict=True)):
                volume, low, high = future.result()
                if grid is None:
                    grid = volume
                else:
                    _check_same_grid(grid, volume)
                _check_not_empty(volume.path, m, low, high)
                for other, data in zip(modalities, channels, strict=False):
                    if _same_values(data, image[index]):
                        raise GliosegError(
                            volume.path,
                            f"{m} image is identical to the {other} image {case.images[other].name}",
                            "give each modality its own scan",
                        )
                channels.append(image[index])
        assert grid is not None  # modalities is never empty
        affine = grid.affine
    label = None
    if with_label and case.label is not None:
        seg = read_volume(case.label, dtype=None)
        _check_same_grid(grid, seg)  # every layout, MSD included: a reoriented label is not the case's
        label = to_internal(np.asarray(seg.data), case.convention, seg.path)
    if case.layout == "msd":
        image = np.stack(channels).astype(np.float32, copy=False)
    return LoadedCase(case, image, tuple(modalities), label, affine)


def _check_distinct_files(case: Case, modalities: Sequence[str]) -> None:
    """Refuse one file given for two modalities (through a copy of its path or a link)."""
    seen: dict[Path, str] = {}
    for m in modalities:
        real = Path(os.path.realpath(case.images[m]))
        if real in seen:
            first = seen[real]
            raise GliosegError(
                case.images[m],
                f"the same file is given for {first} ({case.images[first]}) and {m}",
                "give each modality its own scan",
            )
        seen[real] = m


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal(a, b)``, first on every 101st voxel (two different scans almost always differ there)."""
    same_layout = a.strides == b.strides  # then memory order (a view) pairs the same voxels
    if a.shape != b.shape or not np.array_equal(
        a.ravel(order="K" if same_layout else "C")[::101], b.ravel(order="K" if same_layout else "C")[::101]
    ):
        return False
    return bool(np.array_equal(a, b))


def _read_channel(path: Path, out: np.ndarray) -> tuple[Volume, float, float]:
    """Read one modality (:func:`read_volume`, stored type) into the float32 ``out`` when it has its
    shape (otherwise the caller's grid check refuses it); also its minimum and maximum."""
    volume = read_volume(path, dtype=None)
    low, high = float(volume.data.min()), float(volume.data.max())  # on the stored type: int16 is half the bytes
    if volume.data.shape == out.shape:
        check_castable(volume.data, np.float32, path)
        np.copyto(out, volume.data, casting="unsafe")  # the values read_volume(dtype=float32) gives
    return volume, low, high


def _check_not_empty(path: Path, modality: str, low: float, high: float) -> None:
    """Refuse a modality whose voxels (minimum ``low``, maximum ``high``) are all zero or all equal."""
    if low == 0 and high == 0:
        raise GliosegError(
            path, f"{modality} image is all zero", "re-export this modality; an empty scan cannot be segmented"
        )
    if low == high:
        raise GliosegError(
            path,
            f"{modality} image is constant (every voxel is {low:g})",
            "re-export this modality; a scan without contrast cannot be segmented",
        )


def _check_same_grid(reference: Volume, other: Volume) -> None:
    ref_name = (
        reference.path.name
        if reference.path.name != other.path.name
        else f"{reference.path.parent.name}/{reference.path.name}"
    )
    ref_shape, shape = reference.data.shape[:3], other.data.shape[:3]
    if ref_shape != shape:
        raise GliosegError(
            other.path,
            f"shape {shape} differs from {ref_name} {ref_shape}",
            "resample all modalities and the label onto one grid (co-register them)",
        )
    if not np.allclose(reference.affine, other.affine, atol=AFFINE_TOLERANCE):
        raise GliosegError(
            other.path,
            f"affine (orientation/spacing/origin) differs from {ref_name} by more than {AFFINE_TOLERANCE} mm",
            "resample all modalities and the label onto one grid (co-register them)",
        )
