"""Which model files to trust: the shipped model's checksums and the model folders of ``glioseg cv pack``.

A model folder (``pack.json``, its members, ``checksums.json``; written by
:mod:`glioseg.cv.pack`) is read here (:func:`is_pack`, :func:`read_pack`, :func:`pack_members`),
so the predictor and the shipped model can use one without importing the cross-validation.

``glioseg/weights/checksums.json`` maps each shipped ``*.pt`` to its sha256 (written by
:func:`write_checksums` when a model is shipped); :func:`verify_checksum` refuses a shipped
checkpoint whose bytes differ (a damaged or altered installation).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from glioseg.errors import GliosegError
from glioseg.files import write_json

PACK = "pack.json"
PACK_FORMAT = 1

SHIPPED_WEIGHTS = "weights"
"""Folder inside the ``glioseg`` package holding the shipped model (``*.pt`` checkpoints)."""

CHECKSUMS = "checksums.json"
"""File beside the shipped checkpoints: ``{file name: sha256 hex digest}``."""

SHIPPED_MISSING = "missing_modalities"
"""Sub-folder of the shipped weights holding the second model: a ``glioseg cv pack`` folder of a model
trained with modality dropout, which ``glioseg predict`` uses without ``--model`` for a case that lacks a modality."""


def shipped_weights_dir() -> Path:
    """The package's ``glioseg/weights/`` folder (it may not exist)."""
    return Path(str(resources.files("glioseg") / SHIPPED_WEIGHTS))


def shipped_checkpoints() -> list[Path]:
    """The checkpoints shipped in the package's ``glioseg/weights/`` folder (sorted; may be empty).

    A folder written by ``glioseg cv pack`` gives its listed members.
    """
    folder = shipped_weights_dir()
    if not folder.is_dir():
        return []
    if is_pack(folder):
        return pack_members(folder)
    return sorted(entry for entry in folder.iterdir() if entry.name.endswith(".pt"))


def shipped_missing_checkpoints() -> list[Path]:
    """The members of the shipped missing-modality model (``glioseg/weights/missing_modalities/``; may be empty).

    Raises:
        GliosegError: the folder is there but a member is missing or fails its checksum.
    """
    folder = shipped_weights_dir() / SHIPPED_MISSING
    return pack_members(folder) if is_pack(folder) else []


def sha256(path: str | Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(weights_dir: str | Path) -> dict[str, str]:
    """Record the sha256 of every ``*.pt`` in ``weights_dir`` in its ``checksums.json`` (when shipping a model).

    Returns:
        ``{file name: sha256}`` as written.
    """
    weights_dir = Path(weights_dir)
    checksums = {path.name: sha256(path) for path in sorted(weights_dir.glob("*.pt"))}
    write_json(weights_dir / CHECKSUMS, checksums)
    return checksums


def verify_checksum(path: str | Path, *, shipped: bool = True) -> None:
    """Check a checkpoint against the ``checksums.json`` beside it.

    Args:
        path: a shipped checkpoint, or (``shipped=False``) a member of a model folder ``glioseg cv pack`` wrote
            elsewhere, whose error names the folder's own fix (reinstalling glioseg would not change it).

    Raises:
        GliosegError: the file has no entry, or its sha256 differs (damaged or altered install or model folder).
    """
    path = Path(path)
    refuse = (
        GliosegError(path, f"shipped weights {path.name} fail their checksum", "reinstall glioseg")
        if shipped
        else GliosegError(
            path,
            f"fails its checksum in {CHECKSUMS} (damaged or altered)",
            "copy the whole model folder again, or pack it again with `glioseg cv pack`",
        )
    )
    record = path.parent / CHECKSUMS
    try:
        expected = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        expected = exc
    if not isinstance(expected, dict):  # the record itself is at fault, not the checkpoint
        problem = (
            "is missing" if isinstance(expected, FileNotFoundError)
            else f"cannot be read as a table of checksums ({type(expected).__name__})"
        )
        raise GliosegError(record, f"{problem}, so {path.name} cannot be checked", refuse.fix)
    try:
        actual = sha256(path)
    except OSError:
        raise refuse from None
    if expected.get(path.name) != actual:
        raise refuse


def is_shipped(path: Path) -> bool:
    """True for a checkpoint file inside the shipped weights folder."""
    return path.is_file() and path.resolve().parent == shipped_weights_dir().resolve()


def is_pack(path: str | Path) -> bool:
    """True for a folder written by :func:`glioseg.cv.pack.pack_models` (it holds ``pack.json``)."""
    return (Path(path) / PACK).is_file()


def read_pack(folder: str | Path) -> dict[str, Any]:
    """Read ``pack.json``.

    Raises:
        GliosegError: unreadable, or not a pack manifest.
    """
    path = Path(folder) / PACK
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GliosegError(
            path, f"unreadable model manifest ({type(exc).__name__})", "pack the model again with `glioseg cv pack`"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise GliosegError(
            path, "is not a model manifest written by this glioseg", "pack the model again with `glioseg cv pack`"
        )
    members = manifest.get("members")
    if (
        not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) and m and "/" not in m and m not in (".", "..") for m in members)
    ):
        raise GliosegError(
            path, "lists no members (or names outside the folder)", "pack the model again with `glioseg cv pack`"
        )
    return manifest


def pack_members(folder: str | Path) -> list[Path]:
    """The member files of a pack (checkpoints checked against ``checksums.json``; export folders check themselves).

    Raises:
        GliosegError: a member missing or failing its checksum, or a checkpoint in the folder
            that the manifest does not list.
    """
    folder = Path(folder)
    manifest = read_pack(folder)
    members = [folder / name for name in manifest["members"]]
    shipped = shipped_weights_dir().resolve()
    within_shipped = shipped in (folder.resolve(), *folder.resolve().parents)  # the shipped model, or one inside it
    for member in members:
        if not member.exists():
            raise GliosegError(
                member, "is missing from the model folder", "copy the whole model folder, or pack it again"
            )
        if member.suffix == ".pt":
            verify_checksum(member, shipped=within_shipped)
    unlisted = sorted(p.name for p in folder.glob("*.pt") if p.name not in manifest["members"])
    if unlisted:
        raise GliosegError(
            folder / unlisted[0],
            f"is not listed in {PACK}",
            f"remove it, or pack the model again (the folder's {CHECKSUMS} covers only the listed members)",
        )
    return members
