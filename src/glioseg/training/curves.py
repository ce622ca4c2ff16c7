"""A run's training curves (``curves.png``): loss, accuracy, IoU and Dice per epoch, train and
validation (the paper's Figs. 10-12), drawn with matplotlib's Agg backend and written atomically.

The trainer draws them after every epoch; the report draws the same figure for each run
(:mod:`glioseg.reporting.figures` re-exports :func:`training_curves` and :func:`save_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glioseg.files import atomic_path

DPI = 90


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Render ``figure`` to a PNG at ``path`` atomically."""
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)


CURVE_PANELS = (
    ("Loss", (("train_loss", "train"), ("val_loss", "validation"))),
    ("Voxel accuracy", (("train_voxel_accuracy", "train"), ("val_voxel_accuracy", "validation"))),
    ("IoU", (("train_iou", "train"), ("val_iou", "validation"))),
    ("Validation Dice", (("val_dice_wt", "WT"), ("val_dice_tc", "TC"), ("val_dice_et", "ET"))),
)
"""Panel title and its ``(metrics.csv column, legend)`` lines; panels without data are left out."""


def training_curves(history: Mapping[str, np.ndarray], title: str, path: str | Path) -> Path | None:
    """Plot a training history, one panel per quantity with data.

    Args:
        history: column of ``metrics.csv`` -> float array per row (NaN where empty); the
            ``epoch`` column gives the x axis (row number + 1 if absent).
        title: figure title (the model's name).
        path: the PNG to write.

    Returns:
        ``path``, or ``None`` when no column has a value (nothing written).
    """
    lengths = [len(v) for v in history.values()]
    n = max(lengths, default=0)
    epochs = history.get("epoch")
    if epochs is None or np.all(np.isnan(epochs)):
        epochs = np.arange(1, n + 1, dtype=float)
    panels: list[tuple[str, list[tuple[str, str]]]] = []
    for panel_title, lines in CURVE_PANELS:
        present = [
            (column, label) for column, label in lines if column in history and np.any(np.isfinite(history[column]))
        ]
        if present:
            panels.append((panel_title, present))
    if not panels:
        return None
    figure = Figure(figsize=(4.2 * len(panels), 3.4))
    for i, (panel_title, lines) in enumerate(panels):  # type: ignore[assignment]
        axes = figure.add_subplot(1, len(panels), i + 1)
        for column, label in lines:
            values = history[column]
            finite = np.isfinite(values) & np.isfinite(epochs)
            sparse = finite.sum() <= 0.5 * finite.size  # e.g. validation every N epochs
            axes.plot(
                epochs[finite],
                values[finite],
                marker="o" if sparse or finite.sum() == 1 else None,
                markersize=3,
                label=label,
            )
        axes.set_title(panel_title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, path)
