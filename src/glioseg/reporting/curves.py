"""Training curves: loss and accuracy/Dice per epoch, train and validation (the paper's Figs. 10-12)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glioseg.data.io import atomic_path  # noqa: E402


def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in history:
        value = row.get(key)
        if value is None or value == "":
            continue
        value = float(value)
        if not math.isnan(value):
            xs.append(float(row["epoch"]))
            ys.append(value)
    return xs, ys


def plot_curves(history: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> None:
    """Write a 3-panel PNG: loss, accuracy and IoU, Dice per region (validation).

    Args:
        history: rows of ``metrics.csv`` (dicts with ``epoch``, ``train_loss``, ``val_loss``, ...).
        path: output PNG, written atomically.
        title: figure title (model and run).
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "--")):
        axes[0].plot(*_series(history, key), style, marker=".", label=label)
    axes[0].set_title("loss")
    for key, label, style in (
        ("train_accuracy", "train accuracy", "-"), ("val_accuracy", "val accuracy", "--"),
        ("train_iou", "train IoU", "-"), ("val_iou", "val IoU", "--"),
    ):
        axes[1].plot(*_series(history, key), style, marker=".", label=label)
    axes[1].set_title("accuracy and IoU (threshold 0.5)")
    for key, label in (("val_dice_wt", "WT"), ("val_dice_tc", "TC"), ("val_dice_et", "ET")):
        axes[2].plot(*_series(history, key), marker="o", label=label)
    axes[2].set_title("validation Dice (whole volumes)")
    axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
