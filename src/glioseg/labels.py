"""The one table of BraTS label conventions and evaluation regions.

glioseg works internally in one convention and converts at the edges (reading a
label map, writing a prediction):

=====  ==========================================  =====================
value  internal class                              region membership
=====  ==========================================  =====================
0      background                                  -
1      necrotic / non-enhancing tumor core (NCR)   WT, TC
2      peritumoral edema (ED, "SNFH" in 2023+)      WT
3      enhancing tumor (ET)                        WT, TC, ET
=====  ==========================================  =====================

Source conventions (value in the file -> internal value):

* ``brats2018``: BraTS 2018-2021. 1 NCR/NET, 2 ED, 4 ET.
* ``brats2023``: BraTS 2023+ (GLI, MET, MEN, PED, SSA). 1 NETC, 2 SNFH, 3 ET.
* ``brats2024``: BraTS 2024 GLI post-treatment. 1 NETC, 2 SNFH, 3 ET, 4 resection cavity
  (RC). The cavity is no tumor class: it belongs to no region (the 2024 organisers' WT is
  labels 1-3) and reads as background internally, so an internal map never turns back into 4.
  It is chosen explicitly (``--labels brats2024``), never guessed: its files look like BraTS
  2018 files (value 4) or 2023 files (no 4) by their values alone.
* ``msd``: Medical Segmentation Decathlon Task01_BrainTumour. 1 edema,
  2 non-enhancing tumor, 3 enhancing tumor.

Regions follow the official BraTS definitions: whole tumor WT = all tumor labels,
tumor core TC = NCR + ET, enhancing tumor ET.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from glioseg.errors import GliosegError
from glioseg.validation import MAX_LISTED, format_values

NUM_CLASSES = 4
CLASS_NAMES = ("background", "necrosis", "edema", "enhancing")
BACKGROUND, NECROSIS, EDEMA, ENHANCING = 0, 1, 2, 3

DISPLAY_NAMES = {NECROSIS: "necrosis (NCR)", EDEMA: "edema (ED)", ENHANCING: "enhancing (ET)"}
"""How figures, legends and the viewer name the tumor labels."""

REGIONS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"wt": (NECROSIS, EDEMA, ENHANCING), "tc": (NECROSIS, ENHANCING), "et": (ENHANCING,)}
)
"""Evaluation regions as sets of internal class values, in the order WT, TC, ET."""

REGION_NAMES = tuple(REGIONS)


@dataclass(frozen=True)
class LabelConvention:
    """How one data source numbers the tumor classes.

    Attributes:
        name: identifier used on the command line (``--labels NAME``).
        description: human-readable origin of the convention.
        to_internal: source value -> internal value, background included.
    """

    name: str
    description: str
    to_internal: Mapping[int, int]

    @property
    def from_internal(self) -> dict[int, int]:
        """Internal value -> source value (the smallest source value where several map to one)."""
        inverse: dict[int, int] = {}
        for source, internal in sorted(self.to_internal.items()):
            inverse.setdefault(internal, source)
        return inverse

    @property
    def values(self) -> tuple[int, ...]:
        """The label values allowed in a file of this convention, sorted."""
        return tuple(sorted(self.to_internal))

    def region_values(self, region: str) -> tuple[int, ...]:
        """The source values that make up ``region`` ("wt", "tc" or "et")."""
        members = REGIONS[region]
        return tuple(sorted(s for s, i in self.to_internal.items() if i in members))


CONVENTIONS: Mapping[str, LabelConvention] = MappingProxyType(
    {
        "brats2018": LabelConvention(
            "brats2018", "BraTS 2018-2021: 1 NCR/NET, 2 ED, 4 ET", {0: 0, 1: 1, 2: 2, 4: 3}
        ),
        "brats2023": LabelConvention(
            "brats2023", "BraTS 2023+: 1 NETC, 2 SNFH, 3 ET", {0: 0, 1: 1, 2: 2, 3: 3}
        ),
        "brats2024": LabelConvention(
            "brats2024",
            "BraTS 2024 GLI post-treatment: 1 NETC, 2 SNFH, 3 ET, 4 resection cavity (no region)",
            {0: 0, 1: 1, 2: 2, 3: 3, 4: 0},
        ),
        "msd": LabelConvention(
            "msd", "MSD Task01_BrainTumour: 1 edema, 2 non-enhancing, 3 enhancing", {0: 0, 1: 2, 2: 1, 3: 3}
        ),
    }
)


def get_convention(name: str) -> LabelConvention:
    """Look a convention up by name, with an error that lists the known ones."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise GliosegError(
            None, f"unknown label convention '{name}'", f"use one of {', '.join(CONVENTIONS)}"
        ) from None


def _lookup_table(mapping: Mapping[int, int]) -> np.ndarray:
    table = np.full(max(mapping) + 1, 255, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


def check_integral_labels(labels: np.ndarray, path: str | Path | None = None) -> None:
    """Raise :class:`GliosegError` if a float label map holds a value that is not a whole number.

    The message shows such values as stored (e.g. ``3.9999``, never truncated to ``3``), so
    that no later check mistakes them for another convention's labels.
    """
    if labels.dtype.kind != "f":
        return
    bad = ~np.isfinite(labels) | (labels != np.round(labels))
    if bad.any():
        shown = format_values(np.format_float_positional(v, trim="-") for v in np.unique(labels[bad])[:MAX_LISTED])
        raise GliosegError(
            path,
            f"label map has non-integer values {shown} ({int(np.count_nonzero(bad))} voxel(s))",
            "a label map must hold whole numbers: round it (e.g. numpy.rint) and re-export it as an integer image",
        )


def check_label_values(
    labels: np.ndarray, convention: LabelConvention, path: str | Path | None = None, fix: str | None = None
) -> None:
    """Raise :class:`GliosegError` if ``labels`` holds values outside ``convention``.

    Float label maps are accepted only when every value is integral. ``fix`` replaces the
    default advice (e.g. to name a command's option that sets the convention).
    """
    check_integral_labels(labels, path)
    present = np.unique(labels)
    unknown = sorted(set(present.astype(np.int64).tolist()) - set(convention.values))
    if unknown:
        raise GliosegError(
            path,
            f"label map has value(s) {format_values(unknown)} not in the {convention.name} convention "
            f"{list(convention.values)}",
            fix or f"check that the file is a label map in the {convention.name} convention ({convention.description})",
        )


def to_internal(
    labels: np.ndarray, convention: LabelConvention | str, path: str | Path | None = None, fix: str | None = None
) -> np.ndarray:
    """Convert a source label map to the internal convention.

    Args:
        labels: integer (or integral float) label map of any shape.
        convention: the source convention or its name.
        path: the file it came from, named in errors.
        fix: advice for an error about unknown values (see :func:`check_label_values`).

    Returns:
        ``uint8`` array of the same shape with values in {0, 1, 2, 3}.
    """
    convention = get_convention(convention) if isinstance(convention, str) else convention
    check_label_values(labels, convention, path, fix)
    return _lookup_table(convention.to_internal)[labels.astype(np.int64)]


def from_internal(labels: np.ndarray, convention: LabelConvention | str) -> np.ndarray:
    """Convert an internal label map (values 0-3) to a source convention, as ``uint8``."""
    convention = get_convention(convention) if isinstance(convention, str) else convention
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"internal label map must hold values 0-{NUM_CLASSES - 1}")
    return _lookup_table(convention.from_internal)[
        labels if labels.dtype.kind == "u" else labels.astype(np.int64)
    ]  # uint8 indexes without a 64-bit copy


def region_masks(labels: np.ndarray, convention: LabelConvention | str | None = None) -> dict[str, np.ndarray]:
    """Boolean masks of WT, TC and ET.

    Args:
        labels: label map, internal convention when ``convention`` is ``None``,
            otherwise in that source convention.
        convention: source convention of ``labels``, or ``None`` for internal.

    Returns:
        ``{"wt": mask, "tc": mask, "et": mask}``, each a bool array shaped like ``labels``.
    """
    if convention is None:
        return {region: np.isin(labels, members) for region, members in REGIONS.items()}
    convention = get_convention(convention) if isinstance(convention, str) else convention
    return {region: np.isin(labels, convention.region_values(region)) for region in REGIONS}


class ConventionMismatch(GliosegError):
    """A prediction's label values belong to another convention than the reference's."""


def detect_convention(labels: np.ndarray, reference_convention: str, path: str | Path | None = None) -> str:
    """The label convention of a prediction whose convention was not given: the reference's.

    Args:
        labels: the predicted label map (integer values).
        reference_convention: the convention of the reference labels.
        path: the prediction file, named in errors.

    Raises:
        ConventionMismatch: ``labels`` hold values that ``reference_convention`` lacks but another
            convention has (e.g. 3 against ``brats2018``): scoring them would be wrong.
        GliosegError: ``labels`` hold values of no known convention.
    """
    reference = get_convention(reference_convention)
    check_integral_labels(labels, path)
    values = set(np.unique(labels).astype(np.int64).tolist())
    extra = sorted(values - set(reference.values))
    if not extra:
        return reference.name
    others = [c for c in CONVENTIONS.values() if c.name != reference.name and values <= set(c.values)]
    if not others:
        raise GliosegError(
            path,
            f"label map has value(s) {format_values(extra)} of no known label convention "
            f"({'; '.join(c.description for c in CONVENTIONS.values())})",
            "check that the file is a label map",
        )
    names = " or ".join(c.name for c in others)
    raise ConventionMismatch(
        path,
        f"prediction holds label value(s) {format_values(extra)}, which the references' {reference.name} convention "
        f"({reference.description}) "
        f"does not have: it looks like {names} labels ({'; '.join(c.description for c in others)}); refusing to score "
        "it",
        f"evaluate with labels={others[0].name} to convert the predictions to {reference.name}, or predict in the "
        f"{reference.name} convention",
    )
