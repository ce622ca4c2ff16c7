"""Files written whole or not at all, and output paths checked before any work.

Every output of glioseg (label maps, caches, checkpoints, tables, reports) is written to a
temporary name beside its target and renamed onto it (:func:`atomic_path`, :func:`atomic_folder`),
so an interrupted command never leaves a half-written file. This module stands on the ground
floor: it imports nothing of glioseg but :mod:`glioseg.errors` and :mod:`glioseg.interrupts`, so every
layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.errors import GliosegError
from glioseg.interrupts import deferred_signals

_UMASK = os.umask(0)
os.umask(_UMASK)


def check_outputs_apart(
    outputs: Iterable[str | Path], inputs: Iterable[str | Path], protected: Iterable[str | Path] = ()
) -> None:
    """Refuse, before any work, outputs that would land onto or inside an input, or in a protected folder.

    Paths are compared after resolving symbolic links and ``..``, so a link or another spelling
    of an input path is caught too.

    Args:
        outputs: files (and folders) the command will write.
        inputs: files the command reads in the same run.
        protected: folders nothing may be written into (a dataset's reference labels).

    Raises:
        GliosegError: naming the output and the input (or folder) it would overwrite.
    """
    real_inputs = {Path(os.path.realpath(p)): Path(p) for p in inputs}
    real_protected = {Path(os.path.realpath(p)): Path(p) for p in protected}
    for output in outputs:
        real = Path(os.path.realpath(output))
        if real in real_inputs:
            raise GliosegError(
                output,
                f"would overwrite the input file {real_inputs[real]}, which this command reads",
                "choose another output folder",
            )
        for parent in real.parents:
            if parent in real_inputs:
                raise GliosegError(
                    output,
                    f"would be written inside the input file {real_inputs[parent]}",
                    "choose another output folder",
                )
            if parent in real_protected:
                raise GliosegError(
                    output,
                    f"would be written into {real_protected[parent]}, which holds the dataset's reference labels",
                    "choose an output folder outside the dataset's label folder",
                )


def check_output_path(path: str | Path, *, folder: bool) -> None:
    """Refuse, before any work, an output path that cannot be written where it is.

    An output file that is an existing folder, an output folder that is an existing file, and
    any output below an existing file (``report.html/x``) are refused with the path named.

    Args:
        path: the output the command will write.
        folder: ``True`` for an output folder, ``False`` for an output file.

    Raises:
        GliosegError: naming the path and what is in the way.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise GliosegError(path, "is a file, not a folder", "choose an output folder")
        if not folder and path.is_dir():
            raise GliosegError(path, "is a folder, not a file", "give the name of the file to write (e.g. page.html)")
        return
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise GliosegError(
                    path, f"lies inside {parent}, which is a file, not a folder", "choose an output path in a folder"
                )
            return


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``path``; move it onto ``path`` only if the block succeeds.

    Readers never see a half-written folder: until the rename, its files live under a hidden
    name (``.<name>.<random>.tmp``) that discovery skips. An existing ``path`` is replaced (it
    is moved aside first, and removed once the new folder is in place), unless ``replace`` is
    ``False``: then a ``path`` that appeared meanwhile is kept and :class:`GliosegError` raised.
    A failure (full disk, crash, exception, SIGINT/SIGTERM turned into an exception) removes
    the staging folder.
    """
    path = Path(path)
    staging: Path | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a Ctrl-C or SIGTERM arriving meanwhile is raised on leaving, when staging is known
            with deferred_signals():
                staging = Path(
                    tempfile.mkdtemp(prefix=_hidden_prefix(path.name, ".tmp"), suffix=".tmp", dir=path.parent)
                )
        except OSError as exc:
            raise _write_error(path, exc) from None
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders
        if not replace and (path.exists() or path.is_symlink()):
            raise GliosegError(
                path, "already exists (it appeared while this command wrote)", "remove it, or choose another output"
            )
        with deferred_signals():  # the swap is not cut in two: a signal meanwhile acts once the new folder is in place
            old = None
            if path.exists() or path.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=_hidden_prefix(path.name, ".old"), suffix=".old", dir=path.parent))
                os.replace(path, old / "replaced")
            try:
                os.replace(staging, path)
            except BaseException:
                if old is not None:  # put the former folder back
                    os.replace(old / "replaced", path)
                    shutil.rmtree(old, ignore_errors=True)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(path, exc) from None
    except GliosegError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.path is not None and staging in exc.path.parents:  # name the file where it would have been
                raise GliosegError(path / exc.path.relative_to(staging), exc.problem, exc.fix) from None
        raise
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise

def script_json(payload: Any) -> str:
    """``payload`` as JSON text that is safe inside an HTML ``<script>`` element.

    Every ``<``, ``>`` and ``&`` is written as a JSON ``\\u`` escape (so neither ``</script>``
    nor ``<!--`` can end or change the script element, whatever a name holds), and every
    character outside ASCII too (U+2028 and U+2029 end a line in older JavaScript). ``JSON.parse``
    gives back the original strings.
    """
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True, default=_json_default)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure (full disk, crash, exception) leaves neither a partial ``path`` nor the temporary file.
    The temporary name keeps the final suffixes so that writers choosing a format by extension work.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from None
    suffix = "".join(path.suffixes)
    if len(os.fsencode(suffix)) > _MAX_TEMPORARY_SUFFIX:  # a name with many dots: its format's extension is enough
        two = "".join(path.suffixes[-2:])
        suffix = two if len(os.fsencode(two)) <= _MAX_TEMPORARY_SUFFIX else ""
    tmp_path: Path | None = None
    try:
        # a Ctrl-C or SIGTERM arriving meanwhile is raised on leaving, when tmp_path is known
        with deferred_signals():
            try:
                fd, tmp = tempfile.mkstemp(
                    prefix=_hidden_prefix(path.name.split(".")[0], f".tmp{suffix}"), suffix=f".tmp{suffix}",
                    dir=path.parent,
                )
                os.close(fd)
            except OSError as exc:
                raise _write_error(path, exc) from None
            tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give outputs the usual permissions
        os.replace(tmp_path, path)
    except OSError as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise _write_error(path, exc) from None
    except BaseException:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise


_NAME_MAX = 255
"""Bytes in one file name on Linux file systems (ext4, XFS, btrfs, tmpfs)."""

_MAX_TEMPORARY_SUFFIX = 32
"""Longest suffix a temporary name keeps whole (``.nii.gz``, ``.npz``, ``.json``; a name with many dots keeps two)."""


def _hidden_prefix(stem: str, suffix: str) -> str:
    """``.<stem>.``, the stem cut so that the temporary name (prefix, 8 random characters, ``suffix``) fits a
    file name: a final name near the 255-byte limit (a case id of 239 characters) must not fail on its temporary one.
    """
    room = _NAME_MAX - len(os.fsencode(f"..{'x' * 8}{suffix}"))
    return "." + os.fsencode(stem)[: max(room, 0)].decode("utf-8", "ignore") + "."


def _write_error(path: Path, exc: OSError) -> GliosegError:
    if exc.errno == errno.ENOSPC:
        return GliosegError(
            path, "no space left on device while writing", "free disk space or choose another output folder"
        )
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return GliosegError(
            path, "cannot write here (read-only or permission denied)", "choose an output folder you can write to"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return GliosegError(
            path,
            f"cannot be written: its name of {len(os.fsencode(path.name))} bytes is too long for the file system",
            "use a shorter name (for a case: rename its folder to a shorter case id)",
        )
    return GliosegError(path, f"cannot be written ({exc.strerror or exc})", "check the output folder")

def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (pretty-printed, sorted keys)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
