"""Summarise a dataset: layout, cases, modalities, label convention, shapes, spacings, problems."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.discovery import Case, Dataset, load_case
from glioseg.data.io import AFFINE_TOLERANCE, read_header, read_volume
from glioseg.errors import GliosegError
from glioseg.labels import check_label_values, get_convention


@dataclass
class DatasetSummary:
    """What :func:`summarise` found.

    Attributes:
        dataset: the discovery result.
        modalities: modality name -> number of cases that have it.
        shapes: image shape -> number of cases.
        spacings: voxel size (mm, rounded to 0.01) -> number of cases.
        label_values: values seen in the label maps.
        labelled: number of cases with a label map.
        problems: one line per file or case that cannot be used.
    """

    dataset: Dataset
    modalities: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    label_values: set = field(default_factory=set)
    labelled: int = 0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The human-readable report."""
        d = self.dataset
        n = len(d.cases)
        conv = get_convention(d.convention)
        out = [
            f"root:        {d.root}",
            f"layout:      {d.layout}",
            f"cases:       {n} ({self.labelled} with labels, {n - self.labelled} without)",
            "modalities:  " + ", ".join(f"{m} ({c}/{n})" for m, c in self.modalities.items()),
            f"labels:      {conv.name} convention ({conv.description}); values found {sorted(self.label_values)}",
            "shapes:      " + ", ".join(f"{'x'.join(map(str, s))} ({c})" for s, c in self.shapes.most_common()),
            "spacings:    "
            + ", ".join(f"{' x '.join(f'{v:g}' for v in s)} mm ({c})" for s, c in self.spacings.most_common()),
        ]
        out += [f"warning:     {w}" for w in d.warnings]
        out.append(f"problems:    {len(self.problems)}" + ("" if self.problems else " (none)"))
        out += [f"  - {p}" for p in self.problems]
        return out


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    image = read_header(path)
    try:
        return tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any header failure becomes a clear problem line
        raise GliosegError(
            path, f"cannot read the NIfTI header ({type(exc).__name__}: {exc})", "re-download or re-export this file"
        ) from None


def _check_case(case: Case, summary: DatasetSummary, deep: bool) -> None:
    if deep:
        loaded = load_case(case, tuple(case.images))
        summary.shapes[loaded.shape] += 1
        summary.spacings[tuple(round(s, 2) for s in loaded.spacing)] += 1
        if loaded.label is not None:
            conv = get_convention(case.convention)
            summary.label_values |= {conv.from_internal[int(v)] for v in np.unique(loaded.label)}
        return
    grids = {}
    for path in case.images.values():
        if path not in grids:
            grids[path] = _header_grid(path)
    (ref_path, (ref_shape, ref_affine)), *rest = grids.items()
    if case.layout == "msd":
        if len(ref_shape) != 4 or ref_shape[3] != 4:
            raise GliosegError(
                ref_path,
                f"MSD image has shape {ref_shape}, expected (X, Y, Z, 4)",
                "use the Task01_BrainTumour images as published",
            )
    elif len(ref_shape) != 3:
        raise GliosegError(
            ref_path, f"is a {len(ref_shape)}D image of shape {ref_shape}, expected 3D", "give one volume per file"
        )
    for path, (shape, affine) in rest:
        if shape != ref_shape:
            raise GliosegError(
                path,
                f"shape {shape} differs from {ref_path.name} {ref_shape}",
                "resample all modalities onto one grid (co-register them)",
            )
        if not np.allclose(affine, ref_affine, atol=AFFINE_TOLERANCE):
            raise GliosegError(
                path, f"affine differs from {ref_path.name}", "resample all modalities onto one grid (co-register them)"
            )
    summary.shapes[ref_shape[:3]] += 1
    summary.spacings[tuple(round(float(s), 2) for s in np.linalg.norm(ref_affine[:3, :3], axis=0))] += 1
    if case.label is not None:
        seg = read_volume(case.label, dtype=None)
        if seg.data.shape[:3] != ref_shape[:3]:
            raise GliosegError(
                case.label,
                f"label shape {seg.data.shape} differs from the images {ref_shape[:3]}",
                "use the label map that belongs to this case",
            )
        if not np.allclose(seg.affine, ref_affine, atol=AFFINE_TOLERANCE):
            raise GliosegError(
                case.label,
                f"label affine (orientation/spacing/origin) differs from the images' by more than {AFFINE_TOLERANCE} "
                "mm",
                "resample the label onto its images' grid, or fix its header",
            )
        check_label_values(seg.data, get_convention(case.convention), case.label)
        summary.label_values |= set(np.unique(seg.data).astype(int).tolist())


def summarise(dataset: Dataset, *, deep: bool = False) -> DatasetSummary:
    """Check every case of ``dataset``.

    Args:
        dataset: from :func:`glioseg.data.discovery.discover`.
        deep: read every image fully (finite values, non-empty modalities) instead of headers only.
    """
    summary = DatasetSummary(dataset, problems=[str(p) for p in dataset.problems])
    for case in dataset.cases:
        for m in case.images:
            summary.modalities[m] += 1
        try:
            _check_case(case, summary, deep)
        except GliosegError as exc:
            summary.problems.append(str(exc))
            continue
        summary.labelled += case.label is not None
    return summary
