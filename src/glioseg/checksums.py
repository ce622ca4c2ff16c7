"""The shipped model's checksums: sha256 of each checkpoint in ``glioseg/weights/``.

``glioseg/weights/checksums.json`` maps each shipped ``*.pt`` to its sha256 (written by
:func:`write_checksums` when a model is shipped); :func:`verify_checksum` refuses a shipped
checkpoint whose bytes differ (a damaged or altered installation).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from glioseg.errors import GliosegError
from glioseg.files import write_json

SHIPPED_WEIGHTS = "weights"
"""Folder inside the ``glioseg`` package holding the shipped model (``*.pt`` checkpoints)."""

CHECKSUMS = "checksums.json"
"""File beside the shipped checkpoints: ``{file name: sha256 hex digest}``."""


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
    from glioseg.cv.pack import is_pack, pack_members

    if is_pack(folder):
        return pack_members(folder)
    return sorted(entry for entry in folder.iterdir() if entry.name.endswith(".pt"))


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


def verify_checksum(path: str | Path) -> None:
    """Check a shipped checkpoint against the ``checksums.json`` beside it.

    Raises:
        GliosegError: the file has no entry, or its sha256 differs (damaged or altered install).
    """
    path = Path(path)
    refuse = GliosegError(path, f"shipped weights {path.name} fail their checksum", "reinstall glioseg")
    try:
        expected = json.loads((path.parent / CHECKSUMS).read_text())
        actual = sha256(path)
    except (OSError, ValueError):
        raise refuse from None
    if not isinstance(expected, dict) or expected.get(path.name) != actual:
        raise refuse


def is_shipped(path: Path) -> bool:
    """True for a checkpoint file inside the shipped weights folder."""
    return path.is_file() and path.resolve().parent == shipped_weights_dir().resolve()
