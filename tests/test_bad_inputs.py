"""Every command fed broken input: one line naming the file and the fix, a non-zero exit,
nothing half-written, and the other cases of a batch finished.

Extends ``test_cli.py`` (whose seven broken cases for ``preprocess`` are not repeated here).
Runs as root in CI, so unreadable files, read-only folders and full disks are simulated by
monkeypatching the calls that would fail (``os.access``, ``mkdir``/``mkstemp``/``os.replace``,
the writers ``nib.save``/``np.savez_compressed``/``torch.save``/``Path.write_text``).
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import (
    BAD_CASE,
    BRATS_AFFINE,
    GOOD_CASE,
    TINY_CASE_SHAPE,
    TINY_UNET,
    run_cli,
    save_nifti,
    tiny_case_arrays,
)

import glioseg.checksums as checksums_module
from glioseg.checkpoint import build_model, save_checkpoint
from glioseg.checksums import verify_checksum, write_checksums
from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.errors import GliosegError

# --- helpers ------------------------------------------------------------------------------------



def _file(folder: Path, key: str) -> Path:
    return folder / f"{BAD_CASE}_{key}.nii.gz"


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _assert_one_clean_error(err: str, name: str, pattern: str) -> str:
    """Exactly one ``error:`` line names ``name``; it matches ``pattern`` and says what to do."""
    assert "Traceback" not in err, err
    lines = [line for line in _error_lines(err) if name in line]
    assert len(lines) == 1, err
    assert "Fix:" in lines[0], lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def _assert_nothing_partial(folder: Path, case_id: str = BAD_CASE) -> None:
    """No output of ``case_id`` and no temporary file anywhere under ``folder``."""
    if not folder.exists():
        return
    assert not [p for p in folder.rglob(f"*{case_id}*")], sorted(folder.rglob("*"))
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name], sorted(folder.rglob("*"))



def _two_cases(root: Path, write_case) -> Path:
    """``root`` with the case to break and a good one; returns the folder of the former."""
    folder = write_case(root, BAD_CASE, shape=TINY_CASE_SHAPE)
    write_case(root, GOOD_CASE, shape=TINY_CASE_SHAPE, seed=3)
    return folder


def _read_only(monkeypatch, folder: Path) -> None:
    """Simulate a read-only file system under ``folder`` (root ignores permission bits)."""
    folder = Path(folder).absolute()

    def inside(path) -> bool:
        path = Path(path).absolute()
        return path == folder or folder in path.parents

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_mkdir, real_mkstemp, real_replace = Path.mkdir, tempfile.mkstemp, os.replace

    def mkdir(self, *args, **kwargs):
        if inside(self) and not self.exists():
            refuse(self)
        return real_mkdir(self, *args, **kwargs)

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and inside(dir):
            refuse(dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if inside(dst):
            refuse(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "replace", replace)


def _fill_disk_while_writing(module, name: str, monkeypatch, when=lambda target: True) -> None:
    """Replace the writer ``module.name`` by one that writes a few bytes, then runs out of space."""
    real = getattr(module, name)

    def writer(*args, **kwargs):
        target = args[0] if name == "savez_compressed" else args[1]  # (file, **arrays) or (object, file)
        target_name = getattr(target, "name", str(target))
        if not when(str(target_name)):
            return real(*args, **kwargs)
        if hasattr(target, "write"):
            target.write(b"partial")
        else:
            Path(target).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module, name, writer)


# --- broken cases (each breaks the case folder of BAD_CASE; returns the file to name and the message) ----


def _missing_modality(folder, monkeypatch):
    _file(folder, "t1").unlink()
    return BAD_CASE, "no t1 image"


def _second_flair(folder, monkeypatch):
    flair, _ = tiny_case_arrays(TINY_CASE_SHAPE, seed=9)
    save_nifti(folder / f"{BAD_CASE}_flair.nii", flair["flair"])  # beside <case>_flair.nii.gz: which one is meant?
    return f"{BAD_CASE}_flair.nii", "second flair file"


def _duplicate_case_id(folder, monkeypatch):
    shutil.copytree(folder, folder.parent / "copy" / BAD_CASE)
    return BAD_CASE, "also found in"


def _different_shapes(folder, monkeypatch):
    save_nifti(_file(folder, "t2"), np.ones((20, 22, 25), dtype=np.int16))
    return _file(folder, "t2").name, "shape"


def _different_spacing(folder, monkeypatch):
    affine = BRATS_AFFINE.copy()
    affine[2, 2] = 1.5
    images, _ = tiny_case_arrays(TINY_CASE_SHAPE)
    save_nifti(_file(folder, "t1"), images["t1"], affine)
    return _file(folder, "t1").name, "affine"


def _different_orientation(folder, monkeypatch):
    images, _ = tiny_case_arrays(TINY_CASE_SHAPE)
    save_nifti(_file(folder, "t1ce"), images["t1ce"], np.diag([1.0, 1.0, 1.0, 1.0]))  # RAS instead of LPS
    return _file(folder, "t1ce").name, "affine"


def _two_d(folder, monkeypatch):
    save_nifti(_file(folder, "t2"), np.ones((20, 22), dtype=np.int16))
    return _file(folder, "t2").name, "2D image"


def _five_d(folder, monkeypatch):
    save_nifti(_file(folder, "t1ce"), np.ones((*TINY_CASE_SHAPE, 1, 3), dtype=np.int16))
    return _file(folder, "t1ce").name, "5D image"


def _nan(folder, monkeypatch):
    data = np.ones(TINY_CASE_SHAPE, dtype=np.float32)
    data[5, 5, 5] = np.nan
    save_nifti(_file(folder, "flair"), data)
    return _file(folder, "flair").name, "NaN"


def _infinite(folder, monkeypatch):
    data = np.random.default_rng(0).random(TINY_CASE_SHAPE).astype(np.float32)
    data[3, 4, 5] = -np.inf
    save_nifti(_file(folder, "flair"), data)
    return _file(folder, "flair").name, "infinite"


def _all_zero(folder, monkeypatch):
    save_nifti(_file(folder, "t1"), np.zeros(TINY_CASE_SHAPE, dtype=np.int16))
    return _file(folder, "t1").name, "all zero"


def _constant(folder, monkeypatch):
    save_nifti(_file(folder, "t2"), np.full(TINY_CASE_SHAPE, 7, dtype=np.int16))
    return _file(folder, "t2").name, "constant"


def _empty_file(folder, monkeypatch):
    _file(folder, "t2").write_bytes(b"")
    return _file(folder, "t2").name, "empty"


def _truncated(folder, monkeypatch):
    raw = _file(folder, "t1ce").read_bytes()
    _file(folder, "t1ce").write_bytes(raw[: len(raw) // 2])
    return _file(folder, "t1ce").name, "truncated|corrupt"


def _not_gzip(folder, monkeypatch):
    raw = gzip.decompress(_file(folder, "flair").read_bytes())
    _file(folder, "flair").write_bytes(raw)  # an uncompressed NIfTI named .nii.gz
    return _file(folder, "flair").name, "gzip"


def _corrupt_header(folder, monkeypatch):
    raw = bytearray(gzip.decompress(_file(folder, "t1").read_bytes()))
    raw[40:56] = struct.pack("<8h", 3, 4000, 4000, 4000, 1, 1, 1, 1)  # dim: 64e9 voxels, in a 40 kB file
    _file(folder, "t1").write_bytes(gzip.compress(bytes(raw)))
    return _file(folder, "t1").name, "absurd image shape"


def _directory_named_like_a_file(folder, monkeypatch):
    _file(folder, "t2").unlink()
    _file(folder, "t2").mkdir()
    return _file(folder, "t2").name, "is a directory"


def _unreadable(folder, monkeypatch):
    target = _file(folder, "flair")
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, *a, **k: (
            False if Path(path) == target and mode & os.R_OK else real_access(path, mode, *a, **k)
        ),
    )
    return target.name, "permission denied"


def _unknown_label(folder, monkeypatch):
    seg = np.zeros(TINY_CASE_SHAPE, dtype=np.uint8)
    seg[10, 10, 10] = 7
    save_nifti(_file(folder, "seg"), seg)
    return _file(folder, "seg").name, r"value\(s\) \[7\]"


def _float_label(folder, monkeypatch):
    seg = np.zeros(TINY_CASE_SHAPE, dtype=np.float32)
    seg[10, 10, 10] = 1.5
    save_nifti(_file(folder, "seg"), seg)
    return _file(folder, "seg").name, "non-integer"


IMAGE_BREAKERS = [
    _missing_modality, _second_flair, _duplicate_case_id, _different_shapes, _different_spacing, _different_orientation,
    _two_d, _five_d, _nan, _infinite, _all_zero, _constant, _empty_file, _truncated, _not_gzip, _corrupt_header,
    _directory_named_like_a_file, _unreadable,
]
LABEL_BREAKERS = [_unknown_label, _float_label]
IN_TEST_CLI = {
    _missing_modality,
    _different_shapes,
    _nan,
    _empty_file,
    _unknown_label,
}  # test_cli.py covers these for preprocess


def _ids(breakers):
    return [b.__name__.strip("_") for b in breakers]


# --- shared model and cache ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A preprocessed cache of three tiny labelled cases."""
    root = tmp_path_factory.mktemp("cache_data")
    for i in range(3):
        folder = root / "raw" / f"Brats18_T_{i}"
        folder.mkdir(parents=True)
        images, seg = tiny_case_arrays(TINY_CASE_SHAPE, seed=i)
        for m, data in {**images, "seg": seg}.items():
            save_nifti(folder / f"Brats18_T_{i}_{m}.nii.gz", data)
    config = load_config("cpu", TINY_UNET)
    report = preprocess_dataset(discover(root / "raw").cases, config.preprocess, root / "cache", progress=False)
    assert len(report.done) == 3
    return root / "cache"


def _predict(capsys, data, out, model, *extra):
    return run_cli(
        capsys, "predict", data, "-o", out, "--model", model, "--device", "cpu", "--threads", "1", "--quiet", *extra
    )


def _train_args(cache, run, *extra):
    return (
        "train",
        "--preset",
        "cpu",
        "--cache",
        cache,
        "--run-dir",
        run,
        "--model",
        "unet",
        "--epochs",
        "1",
        "--patch-size",
        "16",
        "16",
        "16",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        *(
            a
            for item in [
                *TINY_UNET[:4],
                "train.samples_per_epoch=2",
                "train.batch_size=2",
                "preprocess.target_spacing=null",
            ]
            for a in ("--set", item)
        ),
        *extra,
    )


# --- inspect --------------------------------------------------------------------------------------


INSPECT_BREAKERS = [
    b for b in IMAGE_BREAKERS + LABEL_BREAKERS if b is not _missing_modality
]  # inspect counts modalities instead


@pytest.mark.parametrize("break_it", INSPECT_BREAKERS, ids=_ids(INSPECT_BREAKERS))
def test_inspect_lists_the_broken_case_as_a_problem(tmp_path, write_case, capsys, monkeypatch, break_it):
    folder = _two_cases(tmp_path / "data", write_case)
    name, message = break_it(folder, monkeypatch)
    code, out, err = run_cli(capsys, "inspect", tmp_path / "data", "--deep")
    assert code == 1 and "Traceback" not in err
    problems = [line for line in out.splitlines() if line.startswith("  - ") and name in line]
    assert len(problems) == 1, out
    assert "Fix:" in problems[0] and re.search(message, problems[0]), problems[0]


def test_inspect_without_deep_checks_headers_and_readability(tmp_path, write_case, capsys, monkeypatch):
    folder = _two_cases(tmp_path / "data", write_case)
    name, _ = _unreadable(folder, monkeypatch)
    code, out, _ = run_cli(capsys, "inspect", tmp_path / "data")
    assert code == 1 and any(
        name in line and "permission denied" in line and "Fix:" in line for line in out.splitlines()
    )
    monkeypatch.undo()
    _corrupt_header(folder, monkeypatch)
    code, out, _ = run_cli(capsys, "inspect", tmp_path / "data")
    assert code == 1 and any(
        f"{BAD_CASE}_t1.nii.gz" in line and "absurd" in line and "Fix:" in line for line in out.splitlines()
    )


def test_a_case_reached_twice_through_a_symbolic_link_is_one_case(tmp_path, write_case):
    folder = _two_cases(tmp_path / "data", write_case)
    (tmp_path / "data" / "links").mkdir()
    (tmp_path / "data" / "links" / BAD_CASE).symlink_to(folder)
    dataset = discover(tmp_path / "data")
    assert [case.case_id for case in dataset.cases] == sorted([BAD_CASE, GOOD_CASE]) and dataset.problems == []


def test_inspect_counts_a_missing_modality(tmp_path, write_case, capsys, monkeypatch):
    _missing_modality(_two_cases(tmp_path / "data", write_case), monkeypatch)
    code, out, _ = run_cli(capsys, "inspect", tmp_path / "data")
    assert code == 0 and "t1 (1/2)" in out


def test_extra_modality_file_is_a_warning_not_a_crash(tmp_path, write_case, capsys, tiny_model):
    folder = _two_cases(tmp_path / "data", write_case)
    stray = folder / f"{BAD_CASE}_t1ce_old.nii.gz"
    shutil.copy(_file(folder, "t1ce"), stray)
    code, out, _ = run_cli(capsys, "inspect", tmp_path / "data")
    assert code == 0 and any(
        line.startswith("warning:") and stray.name in line and "ignored" in line for line in out.splitlines()
    )
    code, _, err = run_cli(
        capsys,
        "preprocess",
        tmp_path / "data",
        "--preset",
        "cpu",
        "--set",
        "preprocess.target_spacing=null",
        "--out",
        tmp_path / "cache",
        "--quiet",
        "--workers",
        "1",
    )
    assert code == 0 and f"warning: {stray}" in err and not _error_lines(err)
    assert (tmp_path / "cache" / f"{BAD_CASE}.npz").exists() and (tmp_path / "cache" / f"{GOOD_CASE}.npz").exists()
    code, _, err = _predict(capsys, tmp_path / "data", tmp_path / "out", tiny_model)
    assert code == 0 and stray.name in err
    assert (tmp_path / "out" / f"{BAD_CASE}.nii.gz").exists() and (tmp_path / "out" / f"{GOOD_CASE}.nii.gz").exists()


# --- preprocess -------------------------------------------------------------------------------------


PREPROCESS_BREAKERS = [b for b in IMAGE_BREAKERS + LABEL_BREAKERS if b not in IN_TEST_CLI]


def _preprocess_tiny(capsys, data, cache) -> tuple[int, str, str]:
    """``glioseg preprocess DATA --out CACHE`` on the native grid, quietly, one worker: ``(code, stdout, stderr)``."""
    return run_cli(
        capsys, "preprocess", data, "--preset", "cpu", "--set", "preprocess.target_spacing=null", "--out", cache,
        "--quiet", "--workers", "1",
    )


@pytest.mark.parametrize("break_it", PREPROCESS_BREAKERS, ids=_ids(PREPROCESS_BREAKERS))
def test_preprocess_skips_the_broken_case_and_caches_the_others(tmp_path, write_case, capsys, monkeypatch, break_it):
    folder = _two_cases(tmp_path / "data", write_case)
    name, message = break_it(folder, monkeypatch)
    cache = tmp_path / "cache"
    code, _, err = _preprocess_tiny(capsys, tmp_path / "data", cache)
    assert code != 0
    _assert_one_clean_error(err, name, message)
    _assert_nothing_partial(cache)
    assert (cache / f"{GOOD_CASE}.npz").exists() and (cache / f"{GOOD_CASE}.json").exists()


def test_preprocess_disk_full_mid_write_leaves_no_entry(tmp_path, write_case, capsys, monkeypatch):
    _two_cases(tmp_path / "data", write_case)
    _fill_disk_while_writing(np, "savez_compressed", monkeypatch, when=lambda target: BAD_CASE in target)
    cache = tmp_path / "cache"
    code, _, err = _preprocess_tiny(capsys, tmp_path / "data", cache)
    assert code != 0
    _assert_one_clean_error(err, f"{BAD_CASE}.npz", "no space left")
    _assert_nothing_partial(cache)
    assert (cache / f"{GOOD_CASE}.npz").exists() and (cache / f"{GOOD_CASE}.json").exists()


def test_preprocess_into_a_read_only_folder(tmp_path, write_case, capsys, monkeypatch):
    _two_cases(tmp_path / "data", write_case)
    cache = tmp_path / "ro" / "cache"
    _read_only(monkeypatch, tmp_path / "ro")
    code, _, err = run_cli(
        capsys, "preprocess", tmp_path / "data", "--preset", "cpu", "--out", cache, "--quiet", "--workers", "1"
    )
    assert code == 2
    _assert_one_clean_error(err, str(cache), "cannot create|read-only")
    assert not (tmp_path / "ro").exists()


# --- predict ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("break_it", IMAGE_BREAKERS, ids=_ids(IMAGE_BREAKERS))
def test_predict_skips_the_broken_case_and_writes_the_others(
    tmp_path, write_case, capsys, monkeypatch, tiny_model, break_it
):
    folder = _two_cases(tmp_path / "data", write_case)
    name, message = break_it(folder, monkeypatch)
    out = tmp_path / "out"
    code, _, err = _predict(capsys, tmp_path / "data", out, tiny_model)
    assert code != 0
    _assert_one_clean_error(err, name, message)
    _assert_nothing_partial(out)
    assert (out / f"{GOOD_CASE}.nii.gz").exists()


def test_predict_ten_cases_three_broken(tmp_path, write_case, capsys, tiny_model):
    """Acceptance: the 7 good label maps are written, the 3 broken cases named, the exit non-zero."""
    data = tmp_path / "data"
    ids = [f"Brats18_C_{i}" for i in range(10)]
    for i, case_id in enumerate(ids):
        write_case(data, case_id, shape=TINY_CASE_SHAPE, seed=i, label=False)
    broken = {ids[1]: "t2", ids[4]: "flair", ids[8]: "t1ce"}
    (data / ids[1] / f"{ids[1]}_t2.nii.gz").write_bytes(b"")
    save_nifti(data / ids[4] / f"{ids[4]}_flair.nii.gz", np.full(TINY_CASE_SHAPE, np.nan, dtype=np.float32))
    (data / ids[8] / f"{ids[8]}_t1ce.nii.gz").unlink()
    out = tmp_path / "out"
    code, stdout, err = _predict(capsys, data, out, tiny_model, "--save-probabilities")
    assert code != 0
    assert "7 predicted" in stdout and "3 failed" in stdout
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(f"{i}.nii.gz" for i in ids if i not in broken)
    assert len(list(out.glob("*_probabilities.npz"))) == 7
    errors = _error_lines(err)
    assert len(errors) == 3 and all("Fix:" in e for e in errors)
    for case_id, modality in broken.items():
        assert any(case_id in e and modality in e for e in errors), (case_id, errors)
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_predict_disk_full_mid_write_leaves_nothing_of_the_case(tmp_path, write_case, capsys, monkeypatch, tiny_model):
    _two_cases(tmp_path / "data", write_case)
    _fill_disk_while_writing(nib, "save", monkeypatch, when=lambda target: BAD_CASE in target)
    out = tmp_path / "out"
    code, _, err = _predict(capsys, tmp_path / "data", out, tiny_model, "--save-probabilities")
    assert code != 0
    _assert_one_clean_error(err, f"{BAD_CASE}.nii.gz", "no space left")
    _assert_nothing_partial(out)  # the probabilities written before the label map are removed too
    assert (out / f"{GOOD_CASE}.nii.gz").exists() and (out / f"{GOOD_CASE}_probabilities.npz").exists()


def test_predict_into_a_read_only_folder(tmp_path, write_case, capsys, monkeypatch, tiny_model):
    _two_cases(tmp_path / "data", write_case)
    _read_only(monkeypatch, tmp_path / "ro")
    code, _, err = _predict(capsys, tmp_path / "data", tmp_path / "ro" / "out", tiny_model)
    assert code == 2
    _assert_one_clean_error(err, "out", "cannot create the output folder")
    assert not (tmp_path / "ro").exists()


def test_predict_into_an_existing_read_only_folder(tmp_path, write_case, capsys, monkeypatch, tiny_model):
    _two_cases(tmp_path / "data", write_case)
    out = tmp_path / "out"
    out.mkdir()
    _read_only(monkeypatch, out)
    code, _, err = _predict(capsys, tmp_path / "data", out, tiny_model)
    assert code != 0
    for case_id in (BAD_CASE, GOOD_CASE):
        _assert_one_clean_error(err, f"{case_id}.nii.gz", "read-only")
    assert list(out.iterdir()) == []


def _corrupt_pt(path: Path, tiny_model: Path) -> str:
    path.write_bytes(os.urandom(2000))
    return "corrupt checkpoint"


def _truncated_pt(path: Path, tiny_model: Path) -> str:
    raw = tiny_model.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return "corrupt checkpoint"


def _foreign_pt(path: Path, tiny_model: Path) -> str:
    torch.save({"state_dict": {"w": torch.ones(3)}}, path)
    return "not a glioseg checkpoint"


def _pickled_object_pt(path: Path, tiny_model: Path) -> str:
    torch.save({"model": {}, "config": {}, "extra": GliosegError(None, "x", "y")}, path)
    return "refused"


def _mismatched_weights_pt(path: Path, tiny_model: Path) -> str:
    config = load_config("cpu", TINY_UNET)
    bigger = load_config("cpu", [*TINY_UNET, "model.filters=[4,8,16]"])
    torch.save({"config": config.to_dict(), "model": build_model(bigger).state_dict()}, path)
    return "weights do not fit"


def _bad_config_pt(path: Path, tiny_model: Path) -> str:
    torch.save({"config": {"model": {"layers": 3}}, "model": {}}, path)
    return "unknown key"


MODEL_BREAKERS = [_corrupt_pt, _truncated_pt, _foreign_pt, _pickled_object_pt, _mismatched_weights_pt, _bad_config_pt]


@pytest.mark.parametrize("break_it", MODEL_BREAKERS, ids=_ids(MODEL_BREAKERS))
def test_predict_with_a_broken_model_file(tmp_path, write_case, capsys, tiny_model, break_it):
    _two_cases(tmp_path / "data", write_case)
    model = tmp_path / "model.pt"
    message = break_it(model, tiny_model)
    code, _, err = _predict(capsys, tmp_path / "data", tmp_path / "out", model)
    assert code == 2
    _assert_one_clean_error(err, "model.pt", message)
    assert len(_error_lines(err)) == 1 and not (tmp_path / "out").exists()


# --- shipped weights: checksums ------------------------------------------------------------------------


def test_shipped_weights_are_checked_against_their_checksums(tmp_path, write_case, capsys, monkeypatch, tiny_model):
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(tiny_model, weights / "sa_unet.pt")
    monkeypatch.setattr(checksums_module, "shipped_weights_dir", lambda: weights)
    assert write_checksums(weights) == {"sa_unet.pt": __import__("hashlib").sha256(tiny_model.read_bytes()).hexdigest()}
    verify_checksum(weights / "sa_unet.pt")
    write_case(tmp_path / "data", GOOD_CASE, shape=TINY_CASE_SHAPE)
    code, _, _ = run_cli(
        capsys, "predict", tmp_path / "data", "-o", tmp_path / "out", "--device", "cpu", "--quiet"
    )  # no --model: shipped
    assert code == 0 and (tmp_path / "out" / f"{GOOD_CASE}.nii.gz").exists()

    with open(weights / "sa_unet.pt", "ab") as handle:  # damaged install
        handle.write(b"\0")
    with pytest.raises(GliosegError, match=r"fail their checksum.*reinstall glioseg"):
        verify_checksum(weights / "sa_unet.pt")
    code, _, err = run_cli(capsys, "predict", tmp_path / "data", "-o", tmp_path / "out2", "--device", "cpu", "--quiet")
    assert code == 2 and not (tmp_path / "out2").exists()
    _assert_one_clean_error(err, "sa_unet.pt", "shipped weights sa_unet.pt fail their checksum")

    shutil.copy(tiny_model, weights / "resunet.pt")  # shipped without a checksum entry
    with pytest.raises(GliosegError, match=r"resunet\.pt fail their checksum"):
        verify_checksum(weights / "resunet.pt")
    (weights / "checksums.json").unlink()
    with pytest.raises(GliosegError, match="reinstall"):
        verify_checksum(weights / "resunet.pt")


# --- train --------------------------------------------------------------------------------------------


def _empty_cache(tmp_path, tiny_cache):
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache", "0 usable case"


def _missing_cache(tmp_path, tiny_cache):
    return tmp_path / "nowhere", "0 usable case"


def _corrupt_cache_entry(tmp_path, tiny_cache):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    for npz in sorted(cache.glob("*.npz")):
        npz.write_bytes(npz.read_bytes()[:100])
    return cache, "corrupt cache entry"


TRAIN_BREAKERS = [_empty_cache, _missing_cache, _corrupt_cache_entry]


@pytest.mark.parametrize("break_it", TRAIN_BREAKERS, ids=_ids(TRAIN_BREAKERS))
def test_train_on_a_broken_cache_writes_no_run(tmp_path, capsys, tiny_cache, break_it):
    cache, message = break_it(tmp_path, tiny_cache)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *_train_args(cache, run))
    assert code == 2
    _assert_one_clean_error(err, str(cache), message)
    assert not run.exists()


@pytest.mark.parametrize(
    "content", [None, "{{{: not yaml\n", "model: {layers: 3}\n"], ids=["no-config", "bad-yaml", "unknown-key"]
)
def test_train_resume_on_a_folder_that_is_not_a_run(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "config.yaml").write_text(content)
        (run / "cache.txt").write_text(f"{tmp_path / 'cache'}\n")
    code, _, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 2
    _assert_one_clean_error(err, str(run), "not a glioseg run|invalid YAML|unknown key")
    assert sorted(p.name for p in run.iterdir()) == ([] if content is None else ["cache.txt", "config.yaml"])


def test_train_resume_without_cache_txt(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {epochs: 1}\n")
    code, _, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 2
    _assert_one_clean_error(err, str(run), "no cache.txt")


def test_train_disk_full_while_saving_the_checkpoint(tmp_path, capsys, monkeypatch, tiny_cache):
    _fill_disk_while_writing(torch, "save", monkeypatch)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *_train_args(tiny_cache, run))
    assert code == 2
    _assert_one_clean_error(err, "last.pt", "no space left")
    assert not (run / "last.pt").exists() and not [p for p in run.iterdir() if ".tmp" in p.name]


def test_a_full_disk_under_torch_save_is_reported_as_such(tmp_path, monkeypatch):
    """torch's zip writer raises RuntimeError, not OSError, when the disk fills up (seen on /dev/full)."""

    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(GliosegError, match=r"last\.pt: no space left on device") as info:
        save_checkpoint(tmp_path / "last.pt", {"model": {}})
    assert "Fix: free disk space" in str(info.value) and list(tmp_path.iterdir()) == []


def test_train_into_a_read_only_folder(tmp_path, capsys, monkeypatch, tiny_cache):
    _read_only(monkeypatch, tmp_path / "ro")
    run = tmp_path / "ro" / "run"
    code, _, err = run_cli(capsys, *_train_args(tiny_cache, run))
    assert code == 2
    _assert_one_clean_error(err, str(run), "cannot create the run folder")
    assert not (tmp_path / "ro").exists()


# --- evaluate -----------------------------------------------------------------------------------------


def _reference_and_predictions(root: Path, write_case) -> tuple[Path, Path]:
    """References BAD_CASE and GOOD_CASE (brats2018) with perfect predictions of both."""
    refs, preds = root / "ref", root / "pred"
    preds.mkdir(parents=True)
    for i, case_id in enumerate((BAD_CASE, GOOD_CASE)):
        write_case(refs, case_id, shape=TINY_CASE_SHAPE, seed=i)
        shutil.copy(refs / case_id / f"{case_id}_seg.nii.gz", preds / f"{case_id}.nii.gz")
    return refs, preds


def _evaluate(capsys, preds, refs, out, *extra):
    return run_cli(capsys, "evaluate", "--pred", preds, "--ref", refs, "-o", out, "--quiet", "--workers", "1", *extra)


def _prediction_without_reference(refs, preds, monkeypatch):
    shutil.rmtree(refs / BAD_CASE)
    return f"{BAD_CASE}.nii.gz", "no labelled reference case"


def _reference_without_prediction(refs, preds, monkeypatch):
    (preds / f"{BAD_CASE}.nii.gz").unlink()
    return f"{BAD_CASE}.nii.gz", "reference case .* has no prediction"


def _prediction_of_another_shape(refs, preds, monkeypatch):
    save_nifti(preds / f"{BAD_CASE}.nii.gz", np.zeros((20, 22, 25), dtype=np.uint8))
    return f"{BAD_CASE}.nii.gz", "shape"


def _prediction_of_another_affine(refs, preds, monkeypatch):
    save_nifti(preds / f"{BAD_CASE}.nii.gz", np.zeros(TINY_CASE_SHAPE, dtype=np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
    return f"{BAD_CASE}.nii.gz", "affine"


def _prediction_with_an_unknown_value(refs, preds, monkeypatch):
    data = np.zeros(TINY_CASE_SHAPE, dtype=np.uint8)
    data[5, 5, 5] = 9
    save_nifti(preds / f"{BAD_CASE}.nii.gz", data)
    return f"{BAD_CASE}.nii.gz", r"value\(s\) \[9\]"


def _prediction_with_fractions(refs, preds, monkeypatch):
    data = np.zeros(TINY_CASE_SHAPE, dtype=np.float32)
    data[5, 5, 5] = 0.5
    save_nifti(preds / f"{BAD_CASE}.nii.gz", data)
    return f"{BAD_CASE}.nii.gz", "non-integer"


def _truncated_prediction(refs, preds, monkeypatch):
    raw = (preds / f"{BAD_CASE}.nii.gz").read_bytes()
    (preds / f"{BAD_CASE}.nii.gz").write_bytes(raw[: len(raw) // 2])
    return f"{BAD_CASE}.nii.gz", "truncated|corrupt"


def _prediction_is_a_directory(refs, preds, monkeypatch):
    (preds / f"{BAD_CASE}.nii.gz").unlink()
    (preds / f"{BAD_CASE}.nii.gz").mkdir()
    return f"{BAD_CASE}.nii.gz", "is a directory"


def _unreadable_prediction(refs, preds, monkeypatch):
    return _unreadable_file(preds / f"{BAD_CASE}.nii.gz", monkeypatch)


def _unreadable_reference(refs, preds, monkeypatch):
    return _unreadable_file(refs / BAD_CASE / f"{BAD_CASE}_seg.nii.gz", monkeypatch)


def _unreadable_file(target: Path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, *a, **k: (
            False if Path(path) == target and mode & os.R_OK else real_access(path, mode, *a, **k)
        ),
    )
    return target.name, "permission denied"


EVALUATE_BREAKERS = [
    _prediction_without_reference,
    _reference_without_prediction,
    _prediction_of_another_shape,
    _prediction_of_another_affine,
    _prediction_with_an_unknown_value,
    _prediction_with_fractions,
    _truncated_prediction,
    _prediction_is_a_directory,
    _unreadable_prediction,
    _unreadable_reference,
]


@pytest.mark.parametrize("break_it", EVALUATE_BREAKERS, ids=_ids(EVALUATE_BREAKERS))
def test_evaluate_reports_the_broken_pair_and_scores_the_others(tmp_path, write_case, capsys, monkeypatch, break_it):
    refs, preds = _reference_and_predictions(tmp_path, write_case)
    name, message = break_it(refs, preds, monkeypatch)
    out = tmp_path / "eval"
    code, _, err = _evaluate(capsys, preds, refs, out)
    assert code != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if name in line and line.startswith(("error:", "warning:"))]
    assert len(lines) == 1 and "Fix:" in lines[0] and re.search(message, lines[0]), err
    per_case = (out / "per_case.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in per_case[1:]] == [GOOD_CASE], "only the good pair is scored"
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def _write_as(path: Path, reference: Path, mapping: dict[int, int]) -> None:
    seg = nib.load(str(reference))
    data = np.asarray(seg.dataobj)
    save_nifti(path, np.vectorize(mapping.get)(data).astype(np.uint8), seg.affine)


@pytest.mark.parametrize(
    "ref_convention, pred_convention",
    [("brats2018", "brats2023"), ("brats2023", "brats2018")],
    ids=["2023-pred-2018-ref", "2018-pred-2023-ref"],
)
def test_evaluate_refuses_predictions_in_another_label_convention(
    tmp_path, write_case, capsys, ref_convention, pred_convention
):
    refs, preds = _reference_and_predictions(tmp_path, write_case)
    to_2023 = {0: 0, 1: 1, 2: 2, 4: 3}
    for i, case_id in enumerate((BAD_CASE, GOOD_CASE)):
        seg = refs / case_id / f"{case_id}_seg.nii.gz"
        if ref_convention == "brats2023":  # BraTS 2023 naming and values for the references
            ref_2023 = refs / f"BraTS-GLI-0000{i}-000"
            ref_2023.mkdir()
            for m, key in (("flair", "t2f"), ("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w")):
                shutil.copy(refs / case_id / f"{case_id}_{m}.nii.gz", ref_2023 / f"{ref_2023.name}-{key}.nii.gz")
            _write_as(ref_2023 / f"{ref_2023.name}-seg.nii.gz", seg, to_2023)
            shutil.copy(seg, preds / f"{ref_2023.name}.nii.gz")  # the prediction keeps brats2018 values (ET = 4)
            shutil.rmtree(refs / case_id)
            (preds / f"{case_id}.nii.gz").unlink()
        else:
            _write_as(preds / f"{case_id}.nii.gz", seg, to_2023)  # ET written as 3
    out = tmp_path / "eval"
    code, _, err = _evaluate(capsys, preds, refs, out)
    assert code == 2
    line = _assert_one_clean_error(err, ".nii.gz", f"its {pred_convention}|like {pred_convention}")
    assert ref_convention in line and f"labels={pred_convention}" in line and "refusing to score" in line
    assert not out.exists(), "nothing may be scored or written"
    code, _, err = _evaluate(capsys, preds, refs, out, "--labels", pred_convention)  # saying so converts them
    assert code == 0, err
    assert [row.split(",")[1] for row in (out / "per_case.csv").read_text().splitlines()[1:]] == ["1", "1"]


def test_evaluate_disk_full_while_writing_the_tables(tmp_path, write_case, capsys, monkeypatch):
    refs, preds = _reference_and_predictions(tmp_path, write_case)
    real_write_text = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if ".tmp" in self.name and "per_case" in self.name:
            real_write_text(self, text[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "eval"
    code, _, err = _evaluate(capsys, preds, refs, out)
    assert code == 2
    _assert_one_clean_error(err, "per_case.csv", "no space left")
    assert list(out.iterdir()) == []


def test_evaluate_into_a_read_only_folder(tmp_path, write_case, capsys, monkeypatch):
    refs, preds = _reference_and_predictions(tmp_path, write_case)
    out = tmp_path / "eval"
    out.mkdir()
    _read_only(monkeypatch, out)
    code, _, err = _evaluate(capsys, preds, refs, out)
    assert code == 2
    _assert_one_clean_error(err, "per_case.csv", "read-only")
    assert list(out.iterdir()) == []


def test_evaluate_an_empty_prediction_folder(tmp_path, write_case, capsys):
    refs, preds = _reference_and_predictions(tmp_path, write_case)
    for path in preds.iterdir():
        path.unlink()
    code, _, err = _evaluate(capsys, preds, refs, tmp_path / "eval")
    assert code == 2
    _assert_one_clean_error(err, str(preds), "holds no .nii.gz prediction")
    assert not (tmp_path / "eval").exists()


# --- audit of the library's writes and loads -----------------------------------------------------------

SRC = Path(__file__).resolve().parents[1] / "src" / "glioseg"
WRITERS = {"save", "savez", "savez_compressed", "savefig", "write_text", "write_bytes", "dump", "to_csv"}


def _calls(tree):
    import ast

    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            chain, up = [], node
            while up in parents:
                up = parents[up]
                chain.append(up)
            yield node, chain


def _inside_atomic_path(chain) -> bool:
    import ast

    return any(
        isinstance(node, ast.With)
        and any(
            isinstance(item.context_expr, ast.Call)
            and getattr(item.context_expr.func, "id", getattr(item.context_expr.func, "attr", "")) == "atomic_path"
            for item in node.items
        )
        for node in chain
    )


def test_every_write_in_the_library_goes_through_atomic_path_and_every_torch_load_is_weights_only():
    import ast

    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for call, chain in _calls(tree):
            func = call.func
            name = getattr(func, "attr", getattr(func, "id", ""))
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if (
                name == "load"
                and getattr(func.value, "id", "") == "torch"
                and not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
            ):
                offenders.append(f"{where} torch.load without weights_only=True")
            # methods and module functions only: glioseg.data.io's own write_text/write_json are atomic
            writes = (
                isinstance(func, ast.Attribute)
                and name in WRITERS
                and not (name == "save" and getattr(func.value, "id", "") not in ("nib", "np", "torch"))
            )
            if (
                name == "open"
                and len(call.args) > 1
                and isinstance(call.args[1], ast.Constant)
                and set(str(call.args[1].value)) & set("wax")
            ):
                writes = True
            if writes and not _inside_atomic_path(chain):
                offenders.append(f"{where} {name}() outside `with atomic_path(...)`")
    assert offenders == [], "\n".join(offenders)


def test_train_on_a_folder_with_an_unusable_case_trains_on_the_others_and_exits_1(tmp_path, capsys):
    """A case without its T2 among usable ones: named in one error line, left out, the model trained on the
    others, and the exit status says something was left out (1, as predict's; it was 0)."""
    from glioseg.data.synth import write_cohort

    data = tmp_path / "data"
    ids = write_cohort(data, cases=3, shape=(24, 24, 24), layout="brats2018")
    (data / ids[0] / f"{ids[0]}_t2.nii.gz").unlink()
    tiny = ["model.filters=[4,8]", "model.norm=none", "model.dropout=none", "preprocess.target_spacing=null",
            "train.samples_per_epoch=2", "train.batch_size=2"]
    code, _, err = run_cli(
        capsys, "train", "--data", data, "--cache", tmp_path / "cache", "--run-dir", tmp_path / "run", "--preset",
        "cpu", "--model", "unet", "--epochs", "1", "--patch-size", "16", "16", "16", "--device", "cpu", "--threads",
        "1", "--quiet", *(a for item in tiny for a in ("--set", item)),
    )
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1, (code, err)
    assert len(errors) == 1 and ids[0] in errors[0] and "t2" in errors[0].lower(), errors
    assert (tmp_path / "run" / "last.pt").is_file()
    assert sorted(p.stem for p in (tmp_path / "cache").glob("*.npz")) == sorted(ids[1:])


def test_an_unreadable_checksums_json_is_named_not_the_checkpoint_it_cannot_check(tmp_path, write_case, capsys):
    """Before: a model folder whose checksums.json was damaged or missing said ``fold0.pt: fails its checksum``,
    blaming an intact checkpoint."""
    model = tmp_path / "model"
    shutil.copytree(checksums_module.shipped_weights_dir() / "missing_modalities", model)
    record = model / "checksums.json"
    for content, problem in (("{not json", "cannot be read as a table of checksums"), ("[1, 2]", "cannot be read"),
                             (None, "is missing")):
        if content is None:
            record.unlink()
        else:
            record.write_text(content)
        with pytest.raises(GliosegError) as caught:
            verify_checksum(model / "fold0.pt", shipped=False)
        assert caught.value.path == record and caught.value.problem.startswith(problem), caught.value
        assert "fold0.pt cannot be checked" in caught.value.problem and "pack it again" in caught.value.fix
    write_case(tmp_path / "data", GOOD_CASE, shape=TINY_CASE_SHAPE, label=False)
    code, _, err = run_cli(
        capsys, "predict", tmp_path / "data", "-o", tmp_path / "out", "--model", model, "--device", "cpu", "--quiet"
    )
    assert code == 2 and not (tmp_path / "out").exists()
    _assert_one_clean_error(err, "checksums.json", r"checksums\.json: is missing, so fold0\.pt cannot be checked")
