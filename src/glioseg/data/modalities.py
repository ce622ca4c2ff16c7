"""Missing modalities: the one representation of an absent scan, in training and in prediction.

A model reads the channels of its ``preprocess.modalities`` (e.g. FLAIR, T1, T1ce, T2), in that
order. A modality that a case lacks is given to the network as **a channel of zeros everywhere**,
in the preprocessed image (after cropping, normalisation and resampling). After z-scoring inside
the brain, 0 is the mean intensity of that modality's brain and the value outside the brain, so
the absent scan reads as "no contrast anywhere" (with min-max scaling, the ``paper`` preset's,
0 is the modality's minimum); a scan that is present is never all zero
(:func:`glioseg.data.discovery.load_case` refuses a constant image), so the network can tell
the two apart. The number and order of the channels never change, so one network (and its
ONNX/OpenVINO export) serves every subset.

* Training (``augment.modality_dropout = p``, :class:`~glioseg.data.augment.RandomModalityDropout`):
  with probability ``p`` a sample keeps a subset of its channels drawn uniformly from the
  ``2^C - 2`` non-empty proper subsets, and :func:`drop_modalities` sets the others to 0 (last,
  after every other augmentation, so the dropped channel is exactly 0).
* Prediction (:class:`~glioseg.inference.predictor.Predictor`): the modalities the case has are
  read and preprocessed, and :func:`fill_absent` inserts a zero channel for each absent one.

Where a case's brain mask (the voxels that differ from the background in any channel present)
is the same with and without the absent scan, both give the network the very same array
(``tests/data/test_modalities.py`` checks it through the predictor). On the 16 shared BraTS 2018
cases it is the same for every absent modality in 13; in the 3 BraTS 2013 cases, leaving one scan
out shrinks the mask by at most 3,156 of about 1.5 million voxels (0.2%), which moves the
z-score statistics and crop of the other channels that little.

A model may be given a case without one of its modalities only if it was trained with
``augment.modality_dropout > 0`` (:func:`accepts_missing`); any non-empty subset is then accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from glioseg.errors import GliosegError

if TYPE_CHECKING:
    from glioseg.config import Config
    from glioseg.data.discovery import Case

ABSENT_VALUE = 0.0
"""The value of every voxel of an absent modality's channel in the preprocessed image."""

STAMP_INPUTS = "inputs="
"""The word of a label map's header stamp (``descrip``) that lists the modalities it was predicted from."""

SHIPPED_TAGS = ("glioseg shipped", "glioseg shipped-missing")
"""What ``glioseg predict`` without ``--model`` writes to a label map's header field ``aux_file``: the main
shipped model, or the shipped missing-modality model (:mod:`glioseg.inference.shipped`)."""


def drop_modalities(image: np.ndarray, keep: Sequence[bool]) -> np.ndarray:
    """Set the channels not kept to :data:`ABSENT_VALUE` (the training op of modality dropout).

    Args:
        image: ``(C, X, Y, Z)`` preprocessed image.
        keep: ``C`` flags; ``False`` marks an absent modality.

    Returns:
        ``(C, X, Y, Z)`` of ``image``'s dtype; a new array when a channel is dropped, else ``image``.

    Raises:
        ValueError: ``keep`` does not have one flag per channel.
    """
    if len(keep) != image.shape[0]:
        raise ValueError(f"{len(keep)} keep flags for {image.shape[0]} channels")
    if all(keep):
        return image
    out = image.copy()
    out[[not k for k in keep]] = ABSENT_VALUE
    return out


def fill_absent(image: np.ndarray, present: Sequence[str], expected: Sequence[str]) -> np.ndarray:
    """Place the channels of the ``present`` modalities at their positions among ``expected``, the others 0.

    ``fill_absent(preprocessed(case without m), ...)`` is ``drop_modalities(preprocessed(case), m absent)``
    where both brain masks agree (see the module docstring).

    Args:
        image: ``(len(present), X, Y, Z)`` preprocessed channels of the modalities the case has.
        present: their names, in the order of ``expected``.
        expected: the model's modalities (``preprocess.modalities``).

    Returns:
        ``(len(expected), X, Y, Z)`` of ``image``'s dtype (``image`` itself when nothing is absent).

    Raises:
        ValueError: ``present`` is empty, not a subset of ``expected`` in its order, or does not
            match ``image``'s channels.
    """
    present, expected = tuple(present), tuple(expected)
    if image.shape[0] != len(present):
        raise ValueError(f"{image.shape[0]} channels for {len(present)} modalities {list(present)}")
    if not present or tuple(m for m in expected if m in present) != present:
        raise ValueError(f"modalities {list(present)} are not a non-empty subset of {list(expected)} in its order")
    if present == expected:
        return image
    out = np.full((len(expected), *image.shape[1:]), ABSENT_VALUE, dtype=image.dtype)
    for channel, name in zip(image, present, strict=True):
        out[expected.index(name)] = channel
    return out


def accepts_missing(config: Config) -> bool:
    """Whether a model trained with ``config`` learned to segment without some of its modalities."""
    return config.augment.modality_dropout > 0


def present_modalities(case: Case, config: Config) -> tuple[str, ...]:
    """The model's modalities that ``case`` has, in the model's order, if the model can use them.

    Raises:
        GliosegError: the case has none of the model's modalities, or lacks one and the model
            was trained without modality dropout (the message names the case and the fix).
    """
    from glioseg.data.discovery import expected_file_name

    expected = tuple(config.preprocess.modalities)
    present = tuple(m for m in expected if m in case.images)
    missing = [m for m in expected if m not in case.images]
    where = case.reference_image.parent if case.images else None
    if not present:
        raise GliosegError(
            where, f"case {case.case_id} has none of the modalities the model reads ({', '.join(expected)})",
            f"add at least one of them (e.g. {expected_file_name(case.case_id, expected[0], case.layout)})",
        )
    if missing and not accepts_missing(config):
        raise GliosegError(
            where,
            f"case {case.case_id} has no {', '.join(missing)} image, and this model was trained on all of "
            f"{', '.join(expected)} without modality dropout (it never learned to do without one)",
            "add the missing file(s) (expected names like "
            f"{expected_file_name(case.case_id, missing[0], case.layout)}), "
            "or predict with a model trained with augment.modality_dropout > 0",
        )
    return present


def describe(present: Sequence[str], expected: Sequence[str]) -> str:
    """``"flair, t1ce, t2 (absent: t1, given as a zero channel)"`` for logs."""
    absent = [m for m in expected if m not in present]
    text = ", ".join(present)
    if absent:
        text += f" (absent: {', '.join(absent)}, given as zero channel{'s' if len(absent) > 1 else ''})"
    return text


def stamped_inputs(path: str | Path) -> tuple[str, ...] | None:
    """The modalities a label map was predicted from, as its header stamp says (``inputs=flair,t1ce``).

    Returns:
        The modality names, or ``None`` for a file without such a stamp (not written by
        ``glioseg predict``, or by a version before the stamp named its inputs) or unreadable.
    """
    text = _header_text(path, "descrip")
    for word in (text or "").split():
        if word.startswith(STAMP_INPUTS):
            return tuple(m for m in word[len(STAMP_INPUTS):].split(",") if m)
    return None


def stamped_model(path: str | Path) -> str | None:
    """The shipped model's tag in a label map's header field ``aux_file`` (one of :data:`SHIPPED_TAGS`), or ``None``
    (written with ``--model``, not by ``glioseg predict``, or unreadable)."""
    tag = _header_text(path, "aux_file")
    return tag if tag in SHIPPED_TAGS else None


def _header_text(path: str | Path, field: str) -> str | None:
    """A text field of a NIfTI header (``descrip``, ``aux_file``), stripped; ``None`` for an unreadable file."""
    try:
        raw = nib.load(str(path)).header[field]  # type: ignore[index]  # a NIfTI header
        return bytes(np.asarray(raw).item()).decode("ascii", "replace").strip("\x00 ")
    except Exception:  # noqa: BLE001 - an unreadable file is reported by whoever reads its voxels
        return None
