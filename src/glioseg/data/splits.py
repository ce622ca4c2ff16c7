"""Deterministic train/validation splits, saved as JSON next to the results they produced.

A split depends only on the set of case ids and the seed: ids are sorted first, then
permuted by ``np.random.default_rng(seed)``, so listing order (``os.listdir``, globbing)
never changes it. The JSON file holds::

    {"method": "ratio", "seed": 0, "train": [...], "val": [...], "val_fraction": 0.25}
    {"method": "kfold", "seed": 0, "train": [...], "val": [...], "k": 5, "fold": 0}

with ``train`` and ``val`` sorted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.io import write_json
from glioseg.errors import GliosegError


def _sorted_unique(case_ids: Sequence[str]) -> list[str]:
    ids = [str(case_id) for case_id in case_ids]
    duplicates = sorted(case_id for case_id, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise GliosegError(
            None, f"case id(s) {duplicates[:5]} appear more than once", "give each case a unique id"
        )
    if len(ids) < 2:
        raise GliosegError(
            None, f"cannot split {len(ids)} case(s) into training and validation", "use at least 2 cases"
        )
    return sorted(ids)


def ratio_split(case_ids: Sequence[str], val_fraction: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """Split case ids at random into training and validation (the paper's 75:25).

    The validation set has ``round(n * val_fraction)`` cases, at least 1 and at most ``n - 1``.

    Args:
        case_ids: unique case ids, in any order.
        val_fraction: share of cases for validation, in (0, 1).
        seed: seed of the permutation.

    Returns:
        ``{"method": "ratio", "seed", "val_fraction", "train": [...], "val": [...]}``.

    Raises:
        GliosegError: fewer than 2 cases, duplicate ids, or a fraction outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise GliosegError(
            None, f"validation fraction {val_fraction} is not in (0, 1)", "use e.g. 0.25 for a 75:25 split"
        )
    ids = _sorted_unique(case_ids)
    n_val = min(max(int(round(len(ids) * val_fraction)), 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return {"method": "ratio", "seed": int(seed), "val_fraction": float(val_fraction), "train": train, "val": val}


def kfold_split(case_ids: Sequence[str], k: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Split case ids into ``k`` folds; fold ``f`` validates on the ``f``-th part.

    Every id is in exactly one fold's validation set; fold sizes differ by at most one.

    Args:
        case_ids: unique case ids, in any order.
        k: number of folds, 2 <= k <= number of cases.
        seed: seed of the permutation.

    Returns:
        ``k`` dicts ``{"method": "kfold", "seed", "k", "fold", "train": [...], "val": [...]}``.

    Raises:
        GliosegError: fewer than 2 cases, duplicate ids, or k outside [2, n].
    """
    ids = _sorted_unique(case_ids)
    if not 2 <= k <= len(ids):
        raise GliosegError(None, f"cannot make {k} folds from {len(ids)} cases", f"use 2 <= k <= {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = [sorted(ids[i] for i in part) for part in np.array_split(order, k)]
    return [
        {
            "method": "kfold",
            "seed": int(seed),
            "k": int(k),
            "fold": fold,
            "train": sorted(case_id for other, part in enumerate(parts) if other != fold for case_id in part),
            "val": val,
        }
        for fold, val in enumerate(parts)
    ]


def _check_split(split: Any, path: str | Path | None) -> dict[str, Any]:
    fix = 'a split file holds {"train": [...], "val": [...], "seed": ..., "method": ...}; recreate it'
    if not isinstance(split, dict):
        raise GliosegError(path, "split is not a JSON object", fix)
    missing = [key for key in ("train", "val", "seed", "method") if key not in split]
    if missing:
        raise GliosegError(path, f"split lacks {', '.join(missing)}", fix)
    for key in ("train", "val"):
        if not isinstance(split[key], list) or not all(isinstance(case_id, str) for case_id in split[key]):
            raise GliosegError(path, f'split "{key}" is not a list of case ids', fix)
    overlap = sorted(set(split["train"]) & set(split["val"]))
    if overlap:
        raise GliosegError(path, f"case(s) {overlap[:5]} are in both train and val", fix)
    return split


def save_split(path: str | Path, split: dict[str, Any]) -> None:
    """Write a split (from :func:`ratio_split` or one fold of :func:`kfold_split`) as JSON, atomically."""
    write_json(path, _check_split(split, path))


def load_split(path: str | Path) -> dict[str, Any]:
    """Read a split written by :func:`save_split`.

    Raises:
        GliosegError: the file is missing, not JSON, or not a valid split.
    """
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except FileNotFoundError:
        raise GliosegError(path, "split file not found", "check the path, or create the split again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GliosegError(path, f"cannot read split file ({exc})", "recreate the split file") from None
    return _check_split(split, path)
