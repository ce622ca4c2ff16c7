"""Fuzzing the NIfTI reader and case discovery: whatever the bytes or the folder tree, the only
exception is :class:`GliosegError`, with a one-line message that says what to do.

The default run is short and deterministic (``derandomize``); ``pytest -m slow tests/test_fuzz.py``
runs the same properties on many more, random examples.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import signal
import struct
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from glioseg.data.discovery import MODALITIES, discover, load_case
from glioseg.data.io import read_volume
from glioseg.errors import GliosegError

QUICK = settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
QUICK_TREES = settings(QUICK, max_examples=150)
LONG = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG_TREES = settings(LONG, max_examples=1000)


def assert_clean(error: GliosegError) -> None:
    message = str(error)
    assert "\n" not in message and "Fix:" in message, message


def refused(error: GliosegError) -> None:
    """Check the error and count its kind (see ``--hypothesis-show-statistics``)."""
    assert_clean(error)
    kind = re.sub(r"\S*/\S*|\b(Brats18|BraTS)\S*|\bx\b|\d+", "<>", error.problem.split("(")[0])
    event(f"refused: {kind.strip()[:60]}")


# --- NIfTI files ------------------------------------------------------------------------------------

# (offset, struct format) of the NIfTI-1 header fields that are fuzzed
FIELDS = {
    "sizeof_hdr": (0, "<i"),
    "dim_info": (39, "<B"),
    "dim": (40, "<8h"),
    "intent_code": (68, "<h"),
    "datatype": (70, "<h"),
    "bitpix": (72, "<h"),
    "pixdim": (76, "<8f"),
    "vox_offset": (108, "<f"),
    "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"),
    "xyzt_units": (123, "<B"),
    "qform_code": (252, "<h"),
    "sform_code": (254, "<h"),
    "quatern": (256, "<6f"),
    "srow": (280, "<12f"),
    "magic": (344, "<4s"),
}
DTYPES = (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64, np.complex64)

small_ints = st.integers(-(2**15), 2**15 - 1)
floats32 = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-30, 3e38]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)
dims = st.one_of(
    st.lists(st.integers(-2, 9), min_size=8, max_size=8),  # small, zero, negative and rank > 7
    st.lists(small_ints, min_size=8, max_size=8),  # absurd sizes
)
field_values = {
    "sizeof_hdr": st.sampled_from([348, 540, 0, -1, 2**31 - 1]).map(lambda v: (v,)),
    "dim_info": st.integers(0, 255).map(lambda v: (v,)),
    "dim": dims.map(tuple),
    "intent_code": small_ints.map(lambda v: (v,)),
    "datatype": st.one_of(
        st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304]), small_ints
    ).map(lambda v: (v,)),
    "bitpix": st.one_of(st.sampled_from([0, 1, 8, 16, 24, 32, 64, 128]), small_ints).map(lambda v: (v,)),
    "pixdim": st.lists(floats32, min_size=8, max_size=8).map(tuple),
    "vox_offset": st.one_of(st.sampled_from([0.0, 348.0, 352.0, 353.5, -352.0, 1e12, math.nan]), floats32).map(
        lambda v: (v,)
    ),
    "scl_slope": floats32.map(lambda v: (v,)),
    "scl_inter": floats32.map(lambda v: (v,)),
    "xyzt_units": st.integers(0, 255).map(lambda v: (v,)),
    "qform_code": st.sampled_from([0, 1, 2, 3, 4, -1, 99]).map(lambda v: (v,)),
    "sform_code": st.sampled_from([0, 1, 2, 3, 4, -1, 99]).map(lambda v: (v,)),
    "quatern": st.lists(floats32, min_size=6, max_size=6).map(tuple),
    "srow": st.lists(floats32, min_size=12, max_size=12).map(tuple),
    "magic": st.sampled_from([b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"abcd"]).map(lambda v: (v,)),
}


@st.composite
def nifti_files(draw) -> tuple[bytes, str]:
    """A small valid NIfTI file, then header fields overwritten, gzip or not, truncated and flipped."""
    ndim = draw(st.sampled_from([3, 3, 3, 3, 1, 2, 4, 5]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    data = (
        (rng.normal(size=shape) * 100).astype(dtype)
        if dtype.kind in "fc"
        else rng.integers(0, 100, size=shape).astype(dtype)
    )
    if dtype.kind == "f" and draw(st.booleans()):
        data.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    affine = np.diag([*draw(st.lists(st.sampled_from([-1.0, 0.5, 1.0, 2.0]), min_size=3, max_size=3)), 1.0])
    raw = bytearray(nib.Nifti1Image(data, affine, dtype=dtype).to_bytes())
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=4)):
        offset, fmt = FIELDS[name]
        struct.pack_into(fmt, raw, offset, *draw(field_values[name]))
    compressed = draw(st.booleans())
    blob = bytearray(gzip.compress(bytes(raw), compresslevel=1) if compressed else raw)
    if draw(st.sampled_from([False, False, False, True])):
        blob = blob[: draw(st.integers(1, max(len(blob) - 1, 1)))]
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):
        if blob:
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
    mislabelled = draw(st.sampled_from([False] * 9 + [True]))  # a gzip named .nii, or the reverse
    suffix = ".nii.gz" if compressed != mislabelled else ".nii"
    return bytes(blob), suffix


def _check_read_volume(file: tuple[bytes, str]) -> None:
    blob, suffix = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(blob)
        for kwargs in ({}, {"dtype": None}, {"ndim": (4,)}):
            try:
                volume = read_volume(path, **kwargs)
            except GliosegError as exc:
                refused(exc)
                assert exc.path == path
                continue
            event("read")
            assert volume.data.ndim in kwargs.get("ndim", (3,))
            assert volume.affine.shape == (4, 4) and np.all(np.isfinite(volume.affine))
            if volume.data.dtype.kind == "f":
                assert np.all(np.isfinite(volume.data))


@QUICK
@given(nifti_files())
def test_read_volume_raises_only_clean_errors(file):
    _check_read_volume(file)


@pytest.mark.slow
@LONG
@given(nifti_files())
def test_read_volume_raises_only_clean_errors_long(file):
    _check_read_volume(file)


def test_read_volume_refuses_absurd_shapes_before_reading(tmp_path):
    """A 4000^3 header on a 1 kB file must not allocate 500 GB: refused from the header alone."""
    raw = bytearray(nib.Nifti1Image(np.ones((4, 4, 4), np.float64), np.eye(4)).to_bytes())
    for shape, match in (((4000, 4000, 4000), "absurd"), ((5000, 2, 2), "absurd"), ((1000, 1000, 100), "truncated")):
        struct.pack_into("<8h", raw, 40, 3, *shape, 1, 1, 1, 1)
        for suffix, blob in ((".nii", raw), (".nii.gz", gzip.compress(bytes(raw)))):
            path = tmp_path / f"absurd{suffix}"
            path.write_bytes(blob)
            with pytest.raises(GliosegError, match=match) as info:
                read_volume(path)
            assert_clean(info.value)


# --- case discovery -----------------------------------------------------------------------------------

CASE_IDS = ("Brats18_A_1", "Brats18_B_1", "BraTS2021_00001", "BraTS-GLI-00001-000", "x")
KEYS = ("flair", "t1", "t1ce", "t2", "seg", "t2f", "t1n", "t1c", "t2w", "FLAIR", "T1CE", "t1ce_old", "Segm")
CONTENTS = (
    "valid",
    "valid",
    "valid",
    "empty",
    "garbage",
    "directory",
    "other_shape",
    "other_affine",
    "nan",
    "zeros",
    "four_d",
    "bad_label",
    "float_label",
)
FOLDERS = ("", "{case}", "{case}", "{case}", "other/{case}", "imagesTr", "labelsTr", "imagesTs")

entries = st.tuples(
    st.sampled_from(FOLDERS),
    st.sampled_from(CASE_IDS),
    st.sampled_from(("_", "-")),
    st.sampled_from(KEYS),
    st.sampled_from((".nii.gz", ".nii.gz", ".nii", ".NII.GZ", ".gz")),
    st.sampled_from(CONTENTS),
)


def _write_entry(root: Path, entry: tuple, rng: np.random.Generator) -> None:
    folder, case_id, sep, key, ext, content = entry
    folder = root / folder.format(case=case_id)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{case_id}.nii.gz" if folder.name in ("imagesTr", "labelsTr", "imagesTs") else f"{case_id}{sep}{key}{ext}"
    path = folder / name
    if path.exists():
        return
    shape, affine = (5, 6, 7), np.diag([-1.0, -1.0, 1.0, 1.0])
    label = key.lower() in ("seg", "segm") or folder.name == "labelsTr"
    data = (
        rng.integers(0, 3, size=shape).astype(np.uint8) if label else rng.integers(1, 500, size=shape).astype(np.int16)
    )
    if folder.name in {"imagesTr", "imagesTs"}:
        data = rng.integers(1, 500, size=(*shape, 4)).astype(np.int16)
    if content == "empty":
        path.write_bytes(b"")
        return
    if content == "garbage":
        path.write_bytes(rng.bytes(int(rng.integers(1, 600))))
        return
    if content == "directory":
        path.mkdir()
        return
    if content == "other_shape":
        data = data[:-1]
    elif content == "other_affine":
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
    elif content == "nan":
        data = data.astype(np.float32)
        data.flat[3] = np.nan
    elif content == "zeros":
        data = np.zeros_like(data)
    elif content == "four_d":
        data = np.stack([data, data], axis=-1)
    elif content == "bad_label":
        data = data.copy()
        data.flat[0] = 7
    elif content == "float_label":
        data = data.astype(np.float32) + 0.5
    image = nib.Nifti1Image(data, affine)
    if ext == ".nii":
        path.write_bytes(image.to_bytes())
    else:
        path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1))


LAYOUT_CASES = {
    "brats2018": (("Brats18_A_1", "Brats18_B_1"), "_", ("flair", "t1", "t1ce", "t2", "seg")),
    "brats2021": (("BraTS2021_00001", "BraTS2021_00002"), "_", ("flair", "t1", "t1ce", "t2", "seg")),
    "brats2023": (("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"), "-", ("t2f", "t1n", "t1c", "t2w", "seg")),
}


@st.composite
def trees(draw, max_extra: int) -> list[tuple]:
    """Whole cases of one layout (mostly valid files), then stray files of any kind."""
    tree = []
    layout = draw(st.sampled_from([*LAYOUT_CASES, "msd"]))
    for number in range(draw(st.integers(1, 3))):
        contents = st.sampled_from(("valid",) * 12 + CONTENTS)
        if layout == "msd":
            case_id = f"BRATS_00{number}"
            tree += [
                ("imagesTr", case_id, "", "", ".nii.gz", draw(contents)),
                ("labelsTr", case_id, "", "", ".nii.gz", draw(contents)),
            ]
            continue
        ids, sep, keys = LAYOUT_CASES[layout]
        case_id = ids[number % 2] if number < 2 else f"{ids[0]}{number}"
        folder = draw(st.sampled_from(("{case}",) * 4 + ("", "other/{case}")))
        ext = draw(st.sampled_from((".nii.gz",) * 4 + (".nii",)))
        tree += [
            (folder, case_id, sep, key, ext, draw(contents))
            for key in keys
            if draw(st.sampled_from([True] * 9 + [False]))
        ]
    return tree + draw(st.lists(entries, max_size=max_extra))


def _check_discovery(tree: list[tuple], seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        root.mkdir()
        for entry in tree:
            _write_entry(root, entry, rng)
        try:
            dataset = discover(root)
        except GliosegError as exc:
            refused(exc)
            return
        for problem in dataset.problems:
            refused(problem)
        assert all("\n" not in warning for warning in dataset.warnings)
        assert len({case.case_id for case in dataset.cases}) == len(dataset.cases), "a case id is used once at most"
        for case in dataset.cases:
            for modalities in (MODALITIES, tuple(case.images)):
                try:
                    loaded = load_case(case, modalities)
                except GliosegError as exc:
                    refused(exc)
                    continue
                event("loaded")
                assert loaded.image.shape[0] == len(modalities) and np.all(np.isfinite(loaded.image))
                assert loaded.label is None or set(np.unique(loaded.label)) <= {0, 1, 2, 3}


@QUICK_TREES
@given(trees(max_extra=6), st.integers(0, 2**16))
def test_discover_and_load_case_raise_only_clean_errors(tree, seed):
    _check_discovery(tree, seed)


@pytest.mark.slow
@LONG_TREES
@given(trees(max_extra=20), st.integers(0, 2**16))
def test_discover_and_load_case_raise_only_clean_errors_long(tree, seed):
    _check_discovery(tree, seed)


# --- folder trees with symbolic links: discovery always terminates and never leaves the dataset -------

NAMES = ("a", "b", "c")
MODALITY_KEYS = ("flair", "t1", "t1ce", "t2")
OUTSIDE_CASES = 3
TIME_LIMIT_S = 2.0


@st.composite
def linked_trees(
    draw, max_folders: int, max_links: int
) -> tuple[list[tuple[str, ...]], set[int], list[tuple[int, tuple]]]:
    """Folders (name tuples under the root), which of them hold a case, and links ``(folder, target)``.

    A target is ``("folder", i)`` (any folder of the tree: the root, an ancestor, itself, so cycles),
    ``("up", n)`` (``n`` levels of ``..``), ``("outside_case", k)``, ``("outside_dataset",)``,
    ``("system", path)``, ``("dangling",)`` or ``("file",)``.
    """
    folders = [
        (),
        *draw(
            st.lists(
                st.lists(st.sampled_from(NAMES), min_size=1, max_size=5).map(tuple), max_size=max_folders, unique=True
            )
        ),
    ]
    folders = sorted({prefix for f in folders for prefix in (f[:i] for i in range(len(f) + 1))})
    cases = set(draw(st.sets(st.integers(0, len(folders) - 1), max_size=len(folders))))
    target = st.one_of(
        st.tuples(st.just("folder"), st.integers(0, len(folders) - 1)),
        st.tuples(st.just("up"), st.integers(1, 4)),
        st.tuples(st.just("outside_case"), st.integers(0, OUTSIDE_CASES - 1)),
        st.just(("outside_dataset",)),
        st.tuples(st.just("system"), st.sampled_from(("/", "/usr", "/proc", "/tmp"))),
        st.just(("dangling",)),
        st.just(("file",)),
    )
    links = draw(st.lists(st.tuples(st.integers(0, len(folders) - 1), target), max_size=max_links))
    return folders, cases, links


def _write_case_files(folder: Path, case_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key in MODALITY_KEYS:
        (folder / f"{case_id}_{key}.nii.gz").write_bytes(b"\x1f\x8b")  # discovery reads names, not voxels


class _TooSlow(Exception):
    pass


def _check_linked_tree(folders, cases, links) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root, outside = tmp / "data", tmp / "outside" / "dataset"
        outside_ids = [f"Brats18_OUT_{k}_1" for k in range(OUTSIDE_CASES)]
        for case_id in outside_ids:
            _write_case_files(outside / case_id, case_id)
        _write_case_files(outside / outside_ids[0] / "nested" / "Brats18_NESTED_1", "Brats18_NESTED_1")  # below a case
        for folder in folders:
            (root.joinpath(*folder)).mkdir(parents=True, exist_ok=True)
        inside_ids = set()
        for i in sorted(cases):
            case_id = f"Brats18_IN_{i}_1"
            _write_case_files(root.joinpath(*folders[i]), case_id)
            inside_ids.add(case_id)
        expected = set(inside_ids)
        for number, (where, target) in enumerate(links):
            source = root.joinpath(*folders[where]) / f"link{number}"
            kind = target[0]
            if kind == "folder":
                destination = root.joinpath(*folders[target[1]])
            elif kind == "up":
                destination = Path(*[".."] * target[1])
            elif kind == "outside_case":
                destination = outside / outside_ids[target[1]]
                expected.add(outside_ids[target[1]])
            elif kind == "outside_dataset":
                destination = outside
            elif kind == "system":
                destination = Path(target[1])
            elif kind == "dangling":
                destination = tmp / "nowhere"
            else:
                destination = tmp / "outside" / "a_file.txt"
                destination.write_text("x")
            source.symlink_to(destination)
        # links made of ".." from a deep folder may reach the temporary folder: a case is found there only
        # through "outside_case" links (every other folder outside the root holds no case files itself)

        def too_slow(signum, frame):
            raise _TooSlow

        previous = signal.signal(signal.SIGALRM, too_slow)
        signal.setitimer(signal.ITIMER_REAL, 5 * TIME_LIMIT_S)  # a hang fails the test instead of blocking it
        started = time.perf_counter()
        try:
            dataset = discover(root) if expected else None
        except _TooSlow:
            pytest.fail(f"discovery did not finish in {5 * TIME_LIMIT_S} s")
        except GliosegError as exc:
            refused(exc)
            dataset = None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - started
        assert elapsed < TIME_LIMIT_S, elapsed
        if dataset is None:
            return
        found = [case.case_id for case in dataset.cases]
        assert len(found) == len(set(found)), "one case id once"
        assert set(found) == expected, (sorted(found), sorted(expected), dataset.problems)
        real_root = Path(os.path.realpath(root))
        for case in dataset.cases:
            real = Path(os.path.realpath(case.reference_image.parent))
            assert real_root in real.parents or real == real_root or real.parent == Path(os.path.realpath(outside)), (
                real
            )
        event(f"{len(links)} links, {len(expected)} cases")


@settings(QUICK, max_examples=80)
@given(linked_trees(max_folders=8, max_links=6))
def test_discovery_terminates_on_trees_with_symbolic_links(tree):
    _check_linked_tree(*tree)


@pytest.mark.slow
@settings(LONG, max_examples=1500)
@given(linked_trees(max_folders=20, max_links=15))
def test_discovery_terminates_on_trees_with_symbolic_links_long(tree):
    _check_linked_tree(*tree)
