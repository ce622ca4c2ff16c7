"""The on-disk cache of preprocessed cases.

The cache holds per case ``<case>.npz`` (image, label, and the label of the crop at the original
resolution when the recipe resamples: ``PreprocessedCase.reference``) and ``<case>.json`` (metadata, written
last: it marks the case as complete; it records the recipe and its fingerprint). A case is
re-done when the preset or the source files change. :func:`preprocess_dataset` fills it;
training reads it with :func:`cached_case_ids` and :func:`load_cached`, which check every
entry's fingerprint against the recipe the reader expects and refuse an entry made by another
recipe, naming the settings that differ.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.discovery import Case
from glioseg.data.io import atomic_path, write_json
from glioseg.data.preprocess import CropInfo, PreprocessConfig, PreprocessedCase, preprocess_case
from glioseg.errors import GliosegError
from glioseg.parallel import map_cases

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold a lock on the folder ``cache`` for the block, so that one process at a time checks and fills it.

    Two commands on one work folder (``cv train`` of the folds and ``cv train --all``, started
    together) each found the cache out of date (the data copied anew: other file times) and
    rewrote it; a case's entry is missing while it is rewritten, and the fold that read it then
    failed ("missing or unreadable cache entry"). With the lock the second waits, then finds every
    entry current. An advisory ``flock`` (POSIX) on the folder itself, so the cache holds no file of
    its own for it; where there is none (Windows), or the folder cannot be opened, the block runs
    unlocked as before.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        folder = os.open(cache, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("%s: another process is filling this cache; waiting for it to finish", cache)
            fcntl.flock(folder, fcntl.LOCK_EX)  # a signal meanwhile raises here (PEP 475 retries only without one)
        yield
    finally:
        os.close(folder)  # the lock goes with the descriptor


def _source_stamp(case: Case) -> list:
    files = sorted({str(p) for p in case.images.values()} | ({str(case.label)} if case.label else set()))
    stamp = []
    for f in files:
        st = os.stat(f)
        stamp.append([Path(f).name, st.st_size, int(st.st_mtime)])
    return stamp


def current_cache_entry(cache: Path, case: Case, config: PreprocessConfig) -> dict | None:
    """The metadata of this case in ``cache`` if it was done with this recipe from the same
    source files (and its arrays are there), else ``None``."""
    meta_path = cache / f"{case.case_id}.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != config.fingerprint() or meta.get("source") != _source_stamp(case):
        return None
    if meta.get("kept", True) and not (cache / f"{case.case_id}.npz").exists():
        return None
    return meta


def save_cached(cache: Path, case: Case, result: PreprocessedCase, config: PreprocessConfig) -> None:
    """Write one case: the arrays first, then the metadata that marks the entry complete.

    If either write fails (full disk), neither file of the case is left in the cache.
    """
    meta_path, arrays_path = cache / f"{case.case_id}.json", cache / f"{case.case_id}.npz"
    meta_path.unlink(missing_ok=True)
    try:
        _write_cached(meta_path, arrays_path, case, result, config)
    except BaseException:
        arrays_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise


def _write_cached(
    meta_path: Path, arrays_path: Path, case: Case, result: PreprocessedCase, config: PreprocessConfig
) -> None:
    if result.kept:
        arrays = {"image": result.image.astype(config.image_dtype)}
        if result.label is not None:
            arrays["label"] = result.label.astype(np.uint8)
        if result.regions is not None:  # fractions in 1/255 steps: a quarter of float16's size
            arrays["regions"] = np.rint(result.regions * 255).astype(np.uint8)
        if result.reference is not None:  # the label on the original grid, for validation (see PreprocessedCase)
            arrays["reference"] = result.reference.astype(np.uint8)
        with atomic_path(arrays_path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    else:
        arrays_path.unlink(missing_ok=True)
    meta = {
        "case_id": case.case_id,
        "fingerprint": config.fingerprint(),
        "recipe": config.recorded(),
        "source": _source_stamp(case),
        "layout": case.layout,
        "convention": case.convention,
        "modalities": list(config.modalities),
        "kept": result.kept,
        "tumor_fraction": None if np.isnan(result.tumor_fraction) else result.tumor_fraction,
        "has_label": result.label is not None,
        "crop": asdict(result.crop),
    }
    write_json(meta_path, meta)


def _plain(value: object) -> object:
    """Tuples as lists (as JSON stores them), so a recipe compares equal to its JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recipe_differences(found: dict, expected: PreprocessConfig) -> list[str]:
    """The settings in which a cached recipe (``asdict`` of a :class:`PreprocessConfig`, as
    stored in an entry) differs from ``expected``, as ``"key X in the cache, Y expected"``."""
    wanted = expected.recorded()
    keys = sorted(set(found) | set(wanted))
    return [
        f"{key} {json.dumps(_plain(found.get(key)))} in the cache, {json.dumps(_plain(wanted.get(key)))} expected"
        for key in keys
        if _plain(found.get(key)) != _plain(wanted.get(key))
    ]


def _entry_recipe(cache: Path, meta: dict) -> dict | None:
    """The recipe an entry was made with: its own record, else the cache's ``preset.json`` when
    the fingerprints agree (entries of older glioseg versions record only the fingerprint)."""
    if isinstance(meta.get("recipe"), dict):
        return meta["recipe"]
    try:
        preset = json.loads((cache / "preset.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(preset, dict) and preset.get("fingerprint") == meta.get("fingerprint"):
        return preset.get("config")
    return None


def _recipe_error(
    cache: Path, mismatched: Sequence[tuple[str, dict]], total: int, expected: PreprocessConfig
) -> GliosegError:
    """One-line error for cache entries made by another recipe than ``expected``."""
    case_id, meta = mismatched[0]
    recipe = _entry_recipe(cache, meta)
    if recipe is None:
        differences = (
            f"fingerprint {meta.get('fingerprint')} in the cache, {expected.fingerprint()} expected "
            "(the entry does not record its recipe)"
        )
    else:
        differences = (
            "; ".join(recipe_differences(recipe, expected))
            or f"cache format (fingerprint {meta.get('fingerprint')} in the cache, {expected.fingerprint()} expected)"
        )
    count = (
        f"all {total} entries" if len(mismatched) == total else f"{len(mismatched)} of {total} entries (e.g. {case_id})"
    )
    return GliosegError(
        cache,
        f"{count} were preprocessed with another recipe than the preset's: {differences}",
        "preprocess the data into a new cache folder with the preset you train with "
        "(`glioseg preprocess`, or `glioseg train` from the raw data), or train with the preset that made this cache",
    )


def _read_meta(meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "fingerprint" in meta and "case_id" in meta else None


def load_cached(cache: str | Path, case_id: str, config: PreprocessConfig) -> PreprocessedCase:
    """Read one preprocessed case from ``cache``, checking that ``config`` made it.

    Args:
        cache: the cache folder.
        case_id: the case.
        config: the recipe the caller expects (e.g. the preset it trains with).

    Raises:
        GliosegError: the entry is missing, corrupt, was dropped by the preset, or was made by
            another recipe than ``config`` (the message lists the settings that differ).
    """
    cache = Path(cache)
    meta_path = cache / f"{case_id}.json"
    meta = _read_meta(meta_path)
    if meta is None:
        raise GliosegError(meta_path, "missing or unreadable cache entry", "run `glioseg preprocess` again")
    if meta["fingerprint"] != config.fingerprint():
        raise _recipe_error(cache, [(case_id, meta)], 1, config)
    if not meta["kept"]:
        raise GliosegError(
            meta_path,
            f"case {case_id} was dropped by the preset (tumor fraction {meta['tumor_fraction']:.4f})",
            "leave it out of the split",
        )
    try:
        with np.load(cache / f"{case_id}.npz") as arrays:
            image = arrays["image"].astype(np.float32)
            label = arrays.get("label")
            regions = arrays["regions"].astype(np.float32) / 255 if "regions" in arrays else None
            reference = arrays.get("reference")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise GliosegError(
            cache / f"{case_id}.npz",
            f"corrupt cache entry ({type(exc).__name__}: {exc})",
            "delete it and run `glioseg preprocess` again",
        ) from None
    frac = meta.get("tumor_fraction")
    crop = CropInfo.from_dict(meta["crop"])
    return PreprocessedCase(
        case_id, image, label, crop, True, float("nan") if frac is None else frac, regions, reference=reference
    )


def cached_case_ids(cache: str | Path, config: PreprocessConfig, *, kept_only: bool = True) -> list[str]:
    """Ids of the complete entries in ``cache``, sorted, after checking that ``config`` made all of them.

    Raises:
        GliosegError: one or more entries were made by another recipe (the message counts them
            and lists the settings that differ), so a cache never mixes recipes silently.
    """
    cache = Path(cache)
    entries = []
    for meta_path in sorted(cache.glob("*.json")):
        if meta_path.name in ("preset.json", "split.json"):
            continue
        meta = _read_meta(meta_path)
        if meta is not None:
            entries.append((meta["case_id"], meta))
    mismatched = [(case_id, meta) for case_id, meta in entries if meta["fingerprint"] != config.fingerprint()]
    if mismatched:
        raise _recipe_error(cache, mismatched, len(entries), config)
    return sorted(case_id for case_id, meta in entries if meta.get("kept", True) or not kept_only)


@dataclass
class PreprocessReport:
    """Outcome of :func:`preprocess_dataset`.

    Attributes:
        done: ids preprocessed in this run.
        cached: ids already in the cache.
        dropped: ids the preset dropped, with their tumor fraction.
        failed: one-line error per case that could not be read.
    """

    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    dropped: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def _work(args: tuple[Case, PreprocessConfig, Path]) -> tuple[str, bool, float, str | None]:
    case, config, cache = args
    try:
        result = preprocess_case(case, config)
        save_cached(cache, case, result, config)
    except GliosegError as exc:
        # an entry of earlier source files (the case lost a modality, a file broke) is not this case: training
        # would read it while the error line says the case is left out
        (cache / f"{case.case_id}.json").unlink(missing_ok=True)  # the marker first, as save_cached
        (cache / f"{case.case_id}.npz").unlink(missing_ok=True)
        return case.case_id, False, float("nan"), str(exc)
    return case.case_id, result.kept, result.tumor_fraction, None


def preprocess_dataset(
    cases: Sequence[Case], config: PreprocessConfig, cache: str | Path, *, workers: int = 1, progress: bool = True
) -> PreprocessReport:
    """Preprocess ``cases`` into ``cache``, skipping those already current.

    A case that fails is reported, its entry of earlier source files removed, and the others go on.
    Entries are written atomically, so an interrupted run leaves only complete entries.
    """
    cache = Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GliosegError(
            cache, f"cannot create the cache folder ({exc.strerror})", "choose a folder you can write to"
        ) from None
    report = PreprocessReport()
    with cache_lock(cache):
        write_json(cache / "preset.json", {"fingerprint": config.fingerprint(), "config": config.recorded()})
        todo = []
        for case in cases:
            meta = current_cache_entry(cache, case, config)
            if meta is not None:
                if meta["kept"]:
                    report.cached.append(case.case_id)
                else:
                    report.dropped[case.case_id] = meta["tumor_fraction"]
            else:
                todo.append(case)
        jobs = [(case, config, cache) for case in todo]
        for outcome in map_cases(_work, jobs, workers=workers, desc="preprocess", progress=progress):
            _record(report, outcome)
    return report


def _record(report: PreprocessReport, outcome: tuple[str, bool, float, str | None]) -> None:
    case_id, kept, fraction, error = outcome
    if error is not None:
        report.failed.append(error)
    elif kept:
        report.done.append(case_id)
    else:
        report.dropped[case_id] = fraction
