"""The on-disk cache of preprocessed cases.

The cache holds per case ``<case>.npz`` (image, label) and ``<case>.json`` (metadata, written
last: it marks the case as complete). A case is re-done when the preset or the source files
change. :func:`preprocess_dataset` fills it; training reads it with :func:`load_cached`.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from glioseg.data.discovery import Case
from glioseg.data.io import atomic_path, write_json
from glioseg.data.preprocess import CropInfo, PreprocessConfig, PreprocessedCase, preprocess_case
from glioseg.errors import GliosegError
from glioseg.parallel import map_cases

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


def _write_cached(meta_path: Path, arrays_path: Path, case: Case, result: PreprocessedCase, config: PreprocessConfig) -> None:
    if result.kept:
        arrays = {"image": result.image.astype(config.image_dtype)}
        if result.label is not None:
            arrays["label"] = result.label.astype(np.uint8)
        with atomic_path(arrays_path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
    else:
        arrays_path.unlink(missing_ok=True)
    meta = {
        "case_id": case.case_id,
        "fingerprint": config.fingerprint(),
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


def load_cached(cache: str | Path, case_id: str) -> PreprocessedCase:
    """Read one preprocessed case from ``cache``.

    Raises:
        GliosegError: the entry is missing or was dropped by the preset.
    """
    cache = Path(cache)
    meta_path = cache / f"{case_id}.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        raise GliosegError(meta_path, "missing or unreadable cache entry", "run `glioseg preprocess` again") from None
    if not meta["kept"]:
        raise GliosegError(meta_path, f"case {case_id} was dropped by the preset (tumor fraction {meta['tumor_fraction']:.4f})", "leave it out of the split")
    try:
        with np.load(cache / f"{case_id}.npz") as arrays:
            image = arrays["image"].astype(np.float32)
            label = arrays["label"] if "label" in arrays else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise GliosegError(cache / f"{case_id}.npz", f"corrupt cache entry ({type(exc).__name__}: {exc})", "delete it and run `glioseg preprocess` again") from None
    frac = meta.get("tumor_fraction")
    return PreprocessedCase(case_id, image, label, CropInfo.from_dict(meta["crop"]), True, float("nan") if frac is None else frac)


def cached_case_ids(cache: str | Path, *, kept_only: bool = True) -> list[str]:
    """Ids of the complete entries in ``cache``, sorted."""
    ids = []
    for meta_path in sorted(Path(cache).glob("*.json")):
        if meta_path.name == "preset.json" or meta_path.name == "split.json":
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if "fingerprint" in meta and (meta.get("kept", True) or not kept_only):
            ids.append(meta["case_id"])
    return ids


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
        return case.case_id, False, float("nan"), str(exc)
    return case.case_id, result.kept, result.tumor_fraction, None


def preprocess_dataset(
    cases: Sequence[Case], config: PreprocessConfig, cache: str | Path, *, workers: int = 1, progress: bool = True
) -> PreprocessReport:
    """Preprocess ``cases`` into ``cache``, skipping those already current.

    A case that fails is reported and the others go on. Entries are written atomically, so an
    interrupted run leaves only complete entries.
    """
    cache = Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GliosegError(cache, f"cannot create the cache folder ({exc.strerror})", "choose a folder you can write to") from None
    write_json(cache / "preset.json", {"fingerprint": config.fingerprint(), "config": asdict(config)})
    report = PreprocessReport()
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
