"""The report's figures, drawn with matplotlib's Agg backend and written atomically as PNG.

* :func:`~glioseg.training.curves.training_curves` -- loss, accuracy, IoU and Dice per epoch, train and
  validation (the paper's Figs. 10-12), from a run's ``metrics.csv`` history (defined beside the trainer, which draws
  them).
* :func:`prediction_panels` -- axial, coronal and sagittal slices through the tumor (the slice
  with the largest tumor area in each view), FLAIR alone, with the reference and with each
  model's prediction overlaid, models side by side (the paper's Figs. 7-9).
* :func:`region_boxplots` -- per-case Dice and HD95 per region, one box per model.

Overlay colours (internal labels): necrosis / non-enhancing core (NCR) red, edema (ED) green,
enhancing tumor (ET) yellow -- ITK-SNAP's default colours for the BraTS labels 1, 2 and 4,
drawn at 50% opacity over the grey-scale FLAIR.

Slices are shown in RAS+ orientation (the arrays are re-oriented with the image affine):
anterior or superior up, the patient's left on the image's left (neurological convention).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from glioseg.labels import DISPLAY_NAMES, EDEMA, ENHANCING, NECROSIS, REGION_NAMES
from glioseg.training.curves import CURVE_PANELS, DPI, save_figure, training_curves  # noqa: F401  (re-exported: the trainer draws its curves)

logger = logging.getLogger(__name__)

LABEL_COLOURS = {NECROSIS: (1.0, 0.0, 0.0), EDEMA: (0.0, 0.8, 0.0), ENHANCING: (1.0, 1.0, 0.0)}
"""Internal label -> RGB of its overlay."""

LABEL_NAMES = DISPLAY_NAMES

OVERLAY_ALPHA = 0.5

VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))
"""View name and the array axis (RAS+) it slices."""

# --- prediction images -------------------------------------------------------------------------


def tumor_slices(masks: Sequence[np.ndarray], shape: Sequence[int]) -> dict[str, int]:
    """Index of the slice with the largest tumor area per view.

    Args:
        masks: boolean (X, Y, Z) masks in order of preference (the reference first); the first
            non-empty one decides; among equally large slices the middle one. The middle slice
            when all are empty.
        shape: (X, Y, Z).

    Returns:
        ``{"axial": z, "coronal": y, "sagittal": x}``.
    """
    chosen = next((m for m in masks if m is not None and m.any()), None)
    slices = {}
    for view, axis in VIEWS:
        if chosen is None:
            slices[view] = shape[axis] // 2
        else:
            areas = chosen.sum(axis=tuple(a for a in range(3) if a != axis))
            tied = np.flatnonzero(areas == areas.max())
            slices[view] = int(tied[len(tied) // 2])  # the middle one of equally large slices
    return slices


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice, rotated so that the second remaining axis points up."""
    return np.rot90(np.take(volume, index, axis=axis))


def overlay_rgba(labels: np.ndarray) -> np.ndarray:
    """(A, B) internal labels -> (A, B, 4) RGBA overlay, transparent on background."""
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value, colour in LABEL_COLOURS.items():
        mask = labels == value
        rgba[mask, :3] = colour
        rgba[mask, 3] = OVERLAY_ALPHA
    return rgba


def prediction_panels(
    flair: np.ndarray,
    reference: np.ndarray | None,
    predictions: Mapping[str, np.ndarray | None],
    title: str,
    path: str | Path,
    *,
    scan_name: str = "FLAIR",
) -> Path:
    """Slices through the tumor: FLAIR, reference and each model, views in rows.

    Args:
        flair: (X, Y, Z) FLAIR (or the scan named ``scan_name``) in RAS+ orientation.
        reference: (X, Y, Z) internal labels, RAS+, or ``None``.
        predictions: model name -> (X, Y, Z) internal labels (RAS+), or ``None`` when missing.
        title: figure title (the case id).
        path: the PNG to write.
        scan_name: the name of the scan drawn under the labels (first column's title).
    """
    masks = [
        reference > 0 if reference is not None else None,
        *[(p > 0) for p in predictions.values() if p is not None],
    ]
    slices = tumor_slices([m for m in masks if m is not None], flair.shape)
    columns: list[tuple[str, np.ndarray | None, bool]] = [(scan_name, None, True)]
    if reference is not None:
        columns.append(("reference", reference, True))
    columns += [(name, labels, labels is not None) for name, labels in predictions.items()]
    lo, hi = np.percentile(flair[flair > 0], (0.5, 99.5)) if np.any(flair > 0) else (0.0, 1.0)
    figure = Figure(figsize=(2.4 * len(columns), 2.5 * len(VIEWS) + 0.5))
    for row, (view, axis) in enumerate(VIEWS):
        index = slices[view]
        background = _take(flair, axis, index)
        for col, (name, labels, available) in enumerate(columns):
            axes = figure.add_subplot(len(VIEWS), len(columns), row * len(columns) + col + 1)
            axes.imshow(background, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if labels is not None:
                axes.imshow(overlay_rgba(_take(labels, axis, index)), interpolation="nearest")
            elif not available:
                axes.text(0.5, 0.5, "no prediction", color="white", ha="center", va="center", transform=axes.transAxes)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(name, fontsize=10)
            if col == 0:
                axes.set_ylabel(f"{view} {index}", fontsize=9)
    handles = [Patch(color=LABEL_COLOURS[v], label=LABEL_NAMES[v]) for v in (NECROSIS, EDEMA, ENHANCING)]
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    figure.suptitle(title)
    figure.subplots_adjust(wspace=0.03, hspace=0.08, bottom=0.06)
    return save_figure(figure, path)


# --- per-case distributions ----------------------------------------------------------------------


def region_boxplots(
    per_model: Mapping[str, Sequence[Mapping[str, float | str]]], title: str, path: str | Path
) -> Path | None:
    """Box plots of per-case Dice (top row) and HD95 (bottom row) per region, a box per model.

    Args:
        per_model: model name -> rows of its ``per_case.csv`` (keys ``dice_wt``, ``hd95_et``...).
        title: figure title (the split).
        path: the PNG to write.

    Returns:
        ``path``, or ``None`` when no model has rows.
    """
    models = [name for name, rows in per_model.items() if rows]
    if not models:
        return None
    figure = Figure(figsize=(max(3.0, 1.0 + 0.9 * len(models)) * 3, 6.4))
    for row, (metric, label) in enumerate((("dice", "Dice"), ("hd95", "HD95 (mm)"))):
        for col, region in enumerate(REGION_NAMES):
            axes = figure.add_subplot(2, 3, row * 3 + col + 1)
            key = f"{metric}_{region}"
            data = [np.array([float(r[key]) for r in per_model[m] if key in r], dtype=float) for m in models]
            data = [d[np.isfinite(d)] for d in data]
            axes.boxplot(data, showmeans=True)
            axes.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right", fontsize=8)
            axes.set_title(f"{region.upper()} {label}", fontsize=10)
            axes.grid(alpha=0.3, axis="y")
            if metric == "dice":
                axes.set_ylim(-0.02, 1.02)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)
