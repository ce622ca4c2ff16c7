"""Reliability, round 2 (issue 14): never destroy an input, never hang, never write a
plausible-looking wrong answer, validate every value before work, print each problem once.

Same style as ``test_bad_inputs.py``: each test feeds one careless or hostile input to the
command-line interface (or the library function behind it) and checks the one-line error, the
exit status, and that nothing was written or overwritten. The property-based test of discovery
on random folder trees with symbolic links is in ``test_fuzz.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import typing
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
    evaluate_cli,
    run_cli,
    save_nifti,
    tiny_case_arrays,
)

from glioseg.checkpoint import build_model, save_checkpoint
from glioseg.cli import OPTION_RANGES, main
from glioseg.config import SECTION_CHOICES, SECTION_RANGES, SECTIONS, load_config
from glioseg.data.discovery import case_from_files, discover, load_case
from glioseg.data.io import check_outputs_apart, read_volume
from glioseg.data.preprocess import (
    PreprocessConfig,
    brain_box,
    brain_mask,
    minmax_scale,
    preprocess_loaded,
    zscore_in_mask,
)
from glioseg.data.synth import write_cohort
from glioseg.errors import GliosegError
from glioseg.inference.predictor import Predictor
from glioseg.validation import Range


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _one_error(err: str, *needles: str) -> str:
    """The only ``error:`` line; it names every needle and says what to do."""
    assert "Traceback" not in err, err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert "Fix:" in lines[0] and all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _predict(capsys, *argv):
    return run_cli(capsys, "predict", *argv, "--device", "cpu", "--threads", "1", "--quiet")


# --- 1. never write onto or inside an input, nor onto reference labels ------------------------------


def test_predict_explicit_files_into_their_own_folder_is_refused_before_any_work(tmp_path, capsys, tiny_model):
    """The case id falls back to the file stem ('flair'): the output would be the FLAIR itself."""
    images, _ = tiny_case_arrays(TINY_CASE_SHAPE)
    for m, data in images.items():
        save_nifti(tmp_path / f"{m}.nii.gz", data)
    before = _snapshot(tmp_path)
    files = [a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", tmp_path / f"{m}.nii.gz")]
    code, _, err = _predict(capsys, *files, "-o", tmp_path, "--model", tiny_model)
    assert code == 2
    _one_error(err, "flair.nii.gz", "would overwrite the input file")
    assert _snapshot(tmp_path) == before


def test_predict_into_the_msd_label_folder_is_refused(tmp_path, capsys, tiny_model):
    write_cohort(tmp_path / "Task01", 2, (24, 24, 24), layout="msd", seed=0)
    before = _snapshot(tmp_path / "Task01")
    code, _, err = _predict(capsys, tmp_path / "Task01", "-o", tmp_path / "Task01" / "labelsTr", "--model", tiny_model)
    assert code == 2
    line = _one_error(err, "labelsTr", "BRATS_001.nii.gz")
    assert re.search("would overwrite the input file|reference labels", line)
    assert _snapshot(tmp_path / "Task01") == before
    # a sub-folder of the label folder is refused too, though no name collides
    code, _, err = _predict(
        capsys, tmp_path / "Task01", "-o", tmp_path / "Task01" / "labelsTr" / "pred", "--model", tiny_model
    )
    assert code == 2 and "reference labels" in _one_error(err, "labelsTr")
    assert _snapshot(tmp_path / "Task01") == before


def test_predict_timings_onto_an_input_and_outputs_through_a_link_are_refused(tmp_path, capsys, write_case, tiny_model):
    folder = write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    before = _snapshot(tmp_path / "data")
    seg = folder / f"{BAD_CASE}_seg.nii.gz"
    code, _, err = _predict(capsys, tmp_path / "data", "-o", tmp_path / "out", "--model", tiny_model, "--timings", seg)
    assert code == 2 and "would overwrite the input file" in _one_error(err, str(seg))
    # another spelling of the same file (a link to the case folder) is caught too
    (tmp_path / "alias").symlink_to(folder)
    with pytest.raises(GliosegError, match="would overwrite the input file"):
        check_outputs_apart([tmp_path / "alias" / seg.name], [seg])
    with pytest.raises(GliosegError, match="inside the input file"):
        check_outputs_apart([seg / "x.csv"], [seg])
    assert _snapshot(tmp_path / "data") == before and not (tmp_path / "out").exists()


def test_evaluate_output_inside_a_prediction_file_is_refused(tmp_path, capsys, write_case):
    write_case(tmp_path / "ref", BAD_CASE, shape=TINY_CASE_SHAPE)
    (tmp_path / "pred").mkdir()
    shutil.copy(tmp_path / "ref" / BAD_CASE / f"{BAD_CASE}_seg.nii.gz", tmp_path / "pred" / f"{BAD_CASE}.nii.gz")
    before = _snapshot(tmp_path)
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--pred",
        tmp_path / "pred",
        "--ref",
        tmp_path / "ref",
        "-o",
        tmp_path / "pred" / f"{BAD_CASE}.nii.gz",
        "--quiet",
    )
    assert code == 2 and "is a file, not a folder" in _one_error(err, f"{BAD_CASE}.nii.gz")
    assert _snapshot(tmp_path) == before


def test_synth_refuses_a_folder_that_holds_cases_unless_forced(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "synth", tmp_path / "data", "--cases", "1", "--shape", "16", "16", "16")
    assert code == 0
    before = _snapshot(tmp_path / "data")
    code, _, err = run_cli(
        capsys, "synth", tmp_path / "data", "--cases", "2", "--shape", "16", "16", "16", "--seed", "5"
    )
    assert code == 2 and "--force" in _one_error(err, "already holds cases")
    assert _snapshot(tmp_path / "data") == before
    code, out, _ = run_cli(
        capsys, "synth", tmp_path / "data", "--cases", "2", "--shape", "16", "16", "16", "--seed", "5", "--force"
    )
    assert code == 0 and "wrote 2" in out and _snapshot(tmp_path / "data") != before
    # an MSD task folder (images one level down) is a folder with cases too
    write_cohort(tmp_path / "msd", 1, (16, 16, 16), layout="msd")
    with pytest.raises(GliosegError, match="already holds cases"):
        write_cohort(tmp_path / "msd", 1, (16, 16, 16), layout="msd")


# --- 2. discovery terminates on any tree, and stays inside the dataset folder ------------------------


def _tiny_file(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    save_nifti(path, rng.integers(1, 100, size=(4, 4, 4)).astype(np.int16))


def test_discovery_of_100_cases_with_symlink_traps_takes_under_2_s(tmp_path):
    root = tmp_path / "data"
    for i in range(100):
        folder = root / f"Brats18_T_{i:03d}_1"
        folder.mkdir(parents=True)
        for key in ("flair", "t1", "t1ce", "t2", "seg"):
            (folder / f"Brats18_T_{i:03d}_1_{key}.nii.gz").write_bytes(b"x")  # discovery reads no voxel
    (root / "loop_a").symlink_to(root)  # two links to the folder itself
    (root / "loop_b").symlink_to(root)
    (root / "Brats18_T_000_1" / "up").symlink_to(root / "Brats18_T_050_1" / "..")
    (root / "ring1").mkdir()
    (root / "ring2").mkdir()
    (root / "ring1" / "to2").symlink_to(root / "ring2")
    (root / "ring2" / "to1").symlink_to(root / "ring1")
    (root / "system").symlink_to("/")  # a huge tree
    (root / "usr").symlink_to("/usr")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    deep = root / "deep"
    for _ in range(60):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "back").symlink_to(root / "deep")
    started = time.perf_counter()
    dataset = discover(root)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, elapsed
    assert len(dataset.cases) == 100 and not dataset.problems
    assert all(root in case.reference_image.parents for case in dataset.cases)
    assert any("system" in w and "not followed" in w for w in dataset.warnings)


def test_a_link_leaving_the_dataset_is_followed_only_to_a_case_folder(tmp_path, write_case):
    outside = tmp_path / "elsewhere"
    write_case(outside / "dataset", "Brats18_OUT_1", shape=TINY_CASE_SHAPE)  # a dataset folder (cases below it)
    write_case(outside / "dataset" / "Brats18_OUT_1" / "nested", "Brats18_NESTED_1", shape=TINY_CASE_SHAPE)
    root = tmp_path / "data"
    write_case(root, GOOD_CASE, shape=TINY_CASE_SHAPE)
    (root / "Brats18_OUT_1").symlink_to(outside / "dataset" / "Brats18_OUT_1")  # a case folder: used
    (root / "all").symlink_to(outside / "dataset")  # not a case folder: not walked
    dataset = discover(root)
    assert [c.case_id for c in dataset.cases] == [GOOD_CASE, "Brats18_OUT_1"]  # not the case nested below it
    assert any(str(root / "all") in w and "not followed" in w for w in dataset.warnings)
    # a link to a single modality file stored elsewhere is used
    shutil.move(root / GOOD_CASE / f"{GOOD_CASE}_t2.nii.gz", outside / "t2.nii.gz")
    (root / GOOD_CASE / f"{GOOD_CASE}_t2.nii.gz").symlink_to(outside / "t2.nii.gz")
    assert GOOD_CASE in [c.case_id for c in discover(root).cases]


# --- 3. no confident wrong answer ------------------------------------------------------------------


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path, capsys, write_case):
    config = load_config("cpu", TINY_UNET)
    state = build_model(config).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", {"config": config.to_dict(), "model": state, "epoch": 0})
    write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    code, _, err = _predict(capsys, tmp_path / "data", "-o", tmp_path / "out", "--model", tmp_path / "nan.pt")
    assert code == 2 and "NaN or infinite weights" in _one_error(err, "nan.pt")
    assert not (tmp_path / "out").exists(), "refused before the output folder is made"


class _Overflowing(torch.nn.Module):
    """Finite weights, infinite logits (e.g. a model fed values it was never trained on)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 4, *x.shape[2:]), float("inf"))


def test_non_finite_model_outputs_write_no_label_map(tmp_path, write_case):
    write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    config = load_config("cpu", TINY_UNET)
    predictor = Predictor([_Overflowing()], config, "cpu")
    report = predictor.predict_cases(discover(tmp_path / "data").cases, tmp_path / "out", progress=False)
    assert report.written == [] and "NaN or infinite" in report.failed[BAD_CASE] and BAD_CASE in report.failed[BAD_CASE]
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("scale", [1e30, 1e-30], ids=["huge", "tiny"])
def test_normalisation_is_exact_for_huge_and_tiny_float32_intensities(scale):
    rng = np.random.default_rng(0)
    volume = np.zeros((12, 13, 14), dtype=np.float32)
    volume[2:10, 3:11, 2:12] = rng.uniform(100, 1000, size=(8, 8, 10))
    mask = volume != 0
    expected_z = zscore_in_mask(volume, mask)
    scaled = (volume.astype(np.float64) * scale).astype(np.float32)
    got_z = zscore_in_mask(scaled, mask)
    assert np.all(np.isfinite(got_z)) and np.abs(got_z[mask]).max() > 1  # not all zero
    np.testing.assert_allclose(got_z, expected_z, atol=1e-4)
    np.testing.assert_allclose(minmax_scale(scaled), minmax_scale(volume), atol=1e-5)
    # by hand: the z-scores inside the mask have mean 0 and std 1
    assert abs(float(got_z[mask].mean())) < 1e-5 and abs(float(got_z[mask].std()) - 1) < 1e-4


@pytest.mark.parametrize(
    "value, message", [(1e42, "exceed the float32 range"), (1e-42, "too small for float32")], ids=["1e42", "1e-42"]
)
def test_float64_intensities_outside_float32_are_named_as_such(tmp_path, value, message):
    data = np.full(TINY_CASE_SHAPE, value, dtype=np.float64)
    data[:5] = 0
    path = tmp_path / "flair.nii.gz"
    save_nifti(path, data)
    with pytest.raises(GliosegError, match=message) as info:
        read_volume(path)
    assert "NaN" not in str(info.value) and str(path) in str(info.value)
    assert read_volume(path, dtype=None).data.dtype == np.float64  # read as stored: fine


def test_normalisation_is_unchanged_by_a_constant_background_offset(tmp_path, write_case):
    folder = write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)  # noqa: F841
    loaded = load_case(discover(tmp_path / "data").cases[0])
    shifted = dataclasses.replace(
        loaded, image=loaded.image + np.array([300, 1000, 50, 7], dtype=np.float32).reshape(-1, 1, 1, 1)
    )
    config = PreprocessConfig()
    assert brain_box(shifted.image) == brain_box(loaded.image) != tuple((0, s) for s in TINY_CASE_SHAPE)
    assert np.array_equal(brain_mask(shifted.image), brain_mask(loaded.image))
    a, b = preprocess_loaded(loaded, config), preprocess_loaded(shifted, config)
    assert a.crop == b.crop
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
    # the old rule (!= 0) would have taken the whole volume as brain
    assert np.all(np.any(shifted.image != 0, axis=0))
    # an image normalised already (negative inside, 0 outside) keeps 0 as its background
    normalised = loaded.image - loaded.image.max()
    normalised[:, ~brain_mask(loaded.image)] = 0
    assert np.array_equal(brain_mask(normalised), brain_mask(loaded.image))


def test_predictions_of_a_case_shifted_by_a_constant_are_identical(tmp_path, write_case, capsys, tiny_model):
    folder = write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE, label=False)
    shifted = tmp_path / "shifted" / BAD_CASE
    shifted.mkdir(parents=True)
    for path in folder.iterdir():
        image = nib.load(str(path))
        save_nifti(shifted / path.name, (np.asarray(image.dataobj) + 1000).astype(np.int16))
    for data, out in ((tmp_path / "data", "p1"), (tmp_path / "shifted", "p2")):
        assert _predict(capsys, data, "-o", tmp_path / out, "--model", tiny_model)[0] == 0
    p1 = np.asarray(nib.load(str(tmp_path / "p1" / f"{BAD_CASE}.nii.gz")).dataobj)
    p2 = np.asarray(nib.load(str(tmp_path / "p2" / f"{BAD_CASE}.nii.gz")).dataobj)
    assert np.array_equal(p1, p2)


@pytest.mark.slow
@pytest.mark.real
def test_a_real_case_shifted_by_a_constant_scores_as_the_original(real_data_root, tmp_path):
    """Acceptance: Dice of the shipped model within 0.01 of the original on a real case + 500."""
    case_id = "Brats18_CBICA_AOZ_1"
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / case_id).symlink_to(real_data_root / case_id)
    shifted = tmp_path / "shifted" / case_id
    shifted.mkdir(parents=True)
    for path in (real_data_root / case_id).iterdir():
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
        if not path.name.endswith("_seg.nii.gz"):
            data = (data.astype(np.int32) + 500).astype(np.int16)
        nib.save(nib.Nifti1Image(data, image.affine, image.header), str(shifted / path.name))
    scores = {}
    for name in ("orig", "shifted"):
        assert main(["predict", str(tmp_path / name), "-o", str(tmp_path / f"pred_{name}"), "--quiet"]) == 0
        assert (
            main(
                [
                    "evaluate",
                    "--pred",
                    str(tmp_path / f"pred_{name}"),
                    "--ref",
                    str(tmp_path / name),
                    "-o",
                    str(tmp_path / f"eval_{name}"),
                    "--quiet",
                ]
            )
            == 0
        )
        rows = (tmp_path / f"eval_{name}" / "per_case.csv").read_text().splitlines()
        header, values = rows[0].split(","), rows[1].split(",")
        scores[name] = {k: float(v) for k, v in zip(header[1:], values[1:], strict=True)}
    for key in ("dice_wt", "dice_tc", "dice_et"):
        assert abs(scores["orig"][key] - scores["shifted"][key]) <= 0.01, (key, scores)


def test_one_file_for_several_modalities_is_refused(tmp_path, write_case, capsys, tiny_model):
    folder = write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    flair = folder / f"{BAD_CASE}_flair.nii.gz"
    with pytest.raises(GliosegError, match="the same file is given for flair"):
        case_from_files(flair, flair, flair, flair)
    code, _, err = _predict(
        capsys,
        *(a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", flair)),
        "-o",
        tmp_path / "out",
        "--model",
        tiny_model,
    )
    assert code == 2 and "the same file" in _one_error(err, str(flair))
    # a link, or a copy, of the FLAIR in place of the T1 is refused when the case is read
    t1 = folder / f"{BAD_CASE}_t1.nii.gz"
    t1.unlink()
    t1.symlink_to(flair)
    with pytest.raises(GliosegError, match="the same file is given for flair"):
        load_case(discover(tmp_path / "data").cases[0])
    t1.unlink()
    shutil.copy(flair, t1)
    with pytest.raises(GliosegError, match="t1 image is identical to the flair image") as info:
        load_case(discover(tmp_path / "data").cases[0])
    assert str(t1) in str(info.value)


def test_continue_trusts_only_outputs_that_load_on_the_case_grid(tmp_path, write_case, capsys, tiny_model):
    ids = [f"Brats18_K_{i}" for i in range(5)]
    for i, case_id in enumerate(ids):
        write_case(tmp_path / "data", case_id, shape=TINY_CASE_SHAPE, seed=i, label=False)
    out = tmp_path / "out"
    assert _predict(capsys, tmp_path / "data", "-o", out, "--model", tiny_model)[0] == 0
    good = (out / f"{ids[0]}.nii.gz").read_bytes()
    (out / f"{ids[1]}.nii.gz").write_bytes(b"")  # empty
    (out / f"{ids[2]}.nii.gz").unlink()
    (out / f"{ids[2]}.nii.gz").mkdir()  # a folder named like an output
    save_nifti(out / f"{ids[3]}.nii.gz", np.zeros((20, 22, 25), dtype=np.uint8))  # another grid
    save_nifti(
        out / f"{ids[4]}.nii.gz", np.zeros(TINY_CASE_SHAPE, dtype=np.uint8), np.diag([1.0, 1.0, 1.0, 1.0])
    )  # another affine
    code, stdout, err = _predict(capsys, tmp_path / "data", "-o", out, "--model", tiny_model, "--continue")
    assert "1 already done" in stdout and "3 predicted" in stdout and "1 failed" in stdout, stdout
    assert "a folder is in the way" in _one_error(err, f"{ids[2]}.nii.gz") and code == 1
    assert (out / f"{ids[0]}.nii.gz").read_bytes() == good
    for case_id in (ids[1], ids[3], ids[4]):
        assert read_volume(out / f"{case_id}.nii.gz", dtype=None).data.shape == TINY_CASE_SHAPE


# --- 4. every numeric value is validated before work --------------------------------------------------


def _bad_value(allowed: Range):
    """A value just outside ``allowed`` (below it when it has a lower end)."""
    if allowed.low is not None:
        return allowed.low if allowed.low_open else allowed.low - 1
    return allowed.high + 1


def _numeric_fields() -> list[tuple[str, int]]:
    """Every numeric field of every section (or tuple of numbers), found from the dataclasses
    themselves (not from the tables under test), with its tuple length in the cpu preset (0: a number)."""
    cpu = load_config("cpu")
    found = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            options = (
                [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
                if typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType)
                else [hints[f.name]]
            )
            (hint,) = options
            tuple_args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
            leaves = {a for a in tuple_args if a is not Ellipsis} or {hint}
            if leaves & {int, float} and not leaves & {str, bool}:
                value = getattr(getattr(cpu, section), f.name)
                length = (len(value) if Ellipsis in tuple_args else len(tuple_args)) if tuple_args else 0
                found.append((f"{section}.{f.name}", length))
    return found


NUMERIC_FIELDS = _numeric_fields()
STRUCTURAL = {"preprocess.fixed_crop"}  # [start, stop) pairs: a rule of its own (test_preset_values_with_other_rules)
CONFIG_KEYS = [
    (key, SECTION_RANGES[key.split(".")[0]].get(key.split(".")[1]))
    for key, _ in NUMERIC_FIELDS
    if key not in STRUCTURAL
]
TUPLE_KEYS = {key: n for key, n in NUMERIC_FIELDS if n}


def test_every_numeric_setting_has_one_range_row():
    """Found from the dataclasses: a numeric field added without a row in SECTION_RANGES fails here."""
    assert len(NUMERIC_FIELDS) > 40  # the walk found the sections' numbers (58 when written)
    assert "train.epochs" in dict(NUMERIC_FIELDS) and "inference.window" in dict(NUMERIC_FIELDS)
    missing = [
        key
        for key, allowed in CONFIG_KEYS
        if allowed is None and key.split(".")[1] not in SECTION_CHOICES.get(key.split(".")[0], {})
    ]
    assert missing == [], f"numeric settings without a range in glioseg.config.sections: {missing}"


def _as_setting(key: str, value) -> str:
    if key in TUPLE_KEYS:
        return f"{key}=[{','.join([str(value)] * TUPLE_KEYS[key])}]"
    return f"{key}={value}"


@pytest.mark.parametrize(
    "key, allowed", [(k, a) for k, a in CONFIG_KEYS if a is not None], ids=[k for k, a in CONFIG_KEYS if a is not None]
)
def test_every_preset_value_is_range_checked(key, allowed):
    value = _bad_value(allowed)
    with pytest.raises(GliosegError) as info:
        load_config("cpu", [_as_setting(key, value)])
    message = str(info.value)
    section, name = key.split(".")
    assert "\n" not in message and section in message and name in message and "Fix:" in message, message
    assert str(allowed) in message or re.search(r"at least|positive", message), (
        message
    )  # the range, or the section's own rule
    if allowed.high is not None:  # above the top end too
        with pytest.raises(GliosegError, match=re.escape(str(allowed))):
            load_config("cpu", [_as_setting(key, allowed.high * 2 + 1)])
    with pytest.raises(GliosegError, match=r"outside the allowed range|must be an integer"):  # NaN is in no range
        load_config("cpu", [_as_setting(key, ".nan")])


@pytest.mark.parametrize(
    "setting, message",
    [
        ("preprocess.modalities=[]", "distinct modalities"),
        ("preprocess.modalities=[flair,flair,t2]", "distinct modalities"),
        ("preprocess.modalities=[flair,pd]", "distinct modalities"),
        ("preprocess.fixed_crop=[[184,56],[56,184],[13,141]]", "0 <= start < stop"),
        ("preprocess.fixed_crop=[[-4,56],[56,184],[13,141]]", "0 <= start < stop"),
        ("preprocess.target_spacing=[0,1,1]", "outside the allowed range"),
        ("preprocess.target_spacing=[-1,-1,-1]", "outside the allowed range"),
        ("model.filters=[]", "at least 2 positive entries"),
        ("model.attention_kernel=4", "positive odd number"),
        ("train.folds=1", "needs 2 folds"),
        ("train.fold=5", "0..2"),
    ],
)
def test_preset_values_with_other_rules(setting, message):
    overrides = [setting, "train.folds=3"] if setting.startswith("train.fold=") else [setting]
    with pytest.raises(GliosegError, match=re.escape(message)) as info:
        load_config("cpu", overrides)
    section, name = setting.split("=")[0].split(".")
    assert section in str(info.value) and name in str(info.value) and "Fix:" in str(info.value)


COMMANDS = {  # the rest of a valid command line for each command
    "demo": [], "synth": ["o"], "preprocess": ["d", "--out", "o"], "train": ["--run-dir", "r"],
    "predict": ["d", "-o", "o"], "evaluate": ["--pred", "p", "--ref", "r", "-o", "o"], "report": ["-o", "o"],
    "cv train": ["--data", "d", "--work", "w"], "cv report": ["w", "-o", "o"], "cv pack": ["w", "-o", "o"],
}
ARITY = {
    "window": 3,
    "shape": 3,
    "patch_size": 3,
    "cv train fold": 1,
    "cv pack fold": 1,
}  # options that take a list of values
OPTIONS = [(command, dest) for command, table in OPTION_RANGES.items() for dest in table]


@pytest.mark.parametrize("command, dest", OPTIONS, ids=[f"{c}-{d}" for c, d in OPTIONS])
def test_every_numeric_option_is_range_checked_before_work(command, dest, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    option, allowed = OPTION_RANGES[command][dest]
    value = _bad_value(allowed)
    value = int(value) if float(value).is_integer() else value
    arity = ARITY.get(dest, ARITY.get(f"{command} {dest}"))
    code, _out, err = run_cli(capsys, *command.split(), *COMMANDS[command], option, *[value] * (arity or 1))
    assert code == 2
    shown = f"[{', '.join([str(value)] * arity)}]" if arity else str(value)
    line = _one_error(err, f"{option} {shown}", str(allowed))
    assert "outside the allowed range" in line
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_bad_values_from_the_issue(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, needle in [
        (["train", "--run-dir", "r", "--epochs", "0"], "--epochs 0"),
        (["train", "--run-dir", "r", "--epochs", "-1"], "--epochs -1"),
        (["train", "--run-dir", "r", "--set", "preprocess.margin=-2"], "preprocess.margin=-2"),
        (["predict", "d", "-o", "o", "--window", "0", "16", "16"], "--window [0, 16, 16]"),
        (["report", "-o", "o", "--num-cases", "-1"], "--num-cases -1"),
        (
            ["preprocess", "d", "--out", "o", "--set", "preprocess.target_spacing=[0,0,0]"],
            "preprocess.target_spacing=[0.0, 0.0, 0.0]",
        ),
    ]:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "allowed range" in _one_error(err, needle)
    assert list(tmp_path.iterdir()) == []


# --- 5. messages ------------------------------------------------------------------------------------


def test_predict_and_evaluate_problems_are_printed_once(tmp_path, write_case, capsys, caplog, tiny_model):
    write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    write_case(tmp_path / "data", GOOD_CASE, shape=TINY_CASE_SHAPE, seed=2)
    (tmp_path / "data" / BAD_CASE / f"{BAD_CASE}_t2.nii.gz").write_bytes(b"")
    with caplog.at_level(logging.DEBUG, logger="glioseg"):
        code, _, err = _predict(capsys, tmp_path / "data", "-o", tmp_path / "out", "--model", tiny_model)
    assert code == 1
    _one_error(err, f"{BAD_CASE}_t2.nii.gz", "empty")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "the error is not logged as well"
    caplog.clear()
    (tmp_path / "out" / "Brats18_STRAY_1.nii.gz").write_bytes((tmp_path / "out" / f"{GOOD_CASE}.nii.gz").read_bytes())
    with caplog.at_level(logging.DEBUG, logger="glioseg"):
        code, _, err = evaluate_cli(capsys, tmp_path / "out", tmp_path / "data", tmp_path / "eval")
    assert code == 1
    assert len([line for line in err.splitlines() if "Brats18_STRAY_1" in line]) == 1
    assert len([line for line in err.splitlines() if BAD_CASE in line]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_reference_off_its_own_images_grid_is_blamed_not_the_prediction(tmp_path, write_case, capsys):
    write_case(tmp_path / "ref", BAD_CASE, shape=TINY_CASE_SHAPE)
    write_case(tmp_path / "ref", GOOD_CASE, shape=TINY_CASE_SHAPE, seed=1)
    (tmp_path / "pred").mkdir()
    for case_id in (BAD_CASE, GOOD_CASE):
        shutil.copy(tmp_path / "ref" / case_id / f"{case_id}_seg.nii.gz", tmp_path / "pred" / f"{case_id}.nii.gz")
    seg = tmp_path / "ref" / BAD_CASE / f"{BAD_CASE}_seg.nii.gz"
    save_nifti(seg, np.asarray(nib.load(str(seg)).dataobj), np.diag([1.0, 1.0, 1.0, 1.0]))
    code, _, err = evaluate_cli(capsys, tmp_path / "pred", tmp_path / "ref", tmp_path / "eval")
    assert code == 1
    line = _one_error(err, str(seg), "differs from its own image")
    assert str(tmp_path / "pred") not in line


def test_label_fixes_name_only_options_the_command_has(tmp_path, write_case, capsys):
    folder = write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    seg = np.zeros(TINY_CASE_SHAPE, dtype=np.int16)
    seg.flat[: 600] = np.arange(600)  # an image given as a label: hundreds of values
    save_nifti(folder / f"{BAD_CASE}_seg.nii.gz", seg)
    code, _, err = run_cli(
        capsys,
        "preprocess",
        tmp_path / "data",
        "--out",
        tmp_path / "cache",
        "--quiet",
        "--workers",
        "1",
        "--set",
        "preprocess.target_spacing=null",
    )
    line = _one_error(err, f"{BAD_CASE}_seg.nii.gz", "more)")
    assert code == 2 and "--labels" not in line and len(line) < 500, line
    code, out, _ = run_cli(capsys, "inspect", tmp_path / "data")
    assert "--labels" not in out and max(len(line) for line in out.splitlines()) < 500
    # evaluate names its own settings: labels for a prediction, ref_labels for a reference
    (tmp_path / "pred").mkdir()
    save_nifti(tmp_path / "pred" / f"{BAD_CASE}.nii.gz", seg)
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--pred",
        tmp_path / "pred",
        "--ref",
        tmp_path / "data",
        "-o",
        tmp_path / "eval",
        "--quiet",
        "--labels",
        "brats2018",
    )
    assert "labels=" in _one_error(err, f"{BAD_CASE}.nii.gz", "more)")
    save_nifti(tmp_path / "pred" / f"{BAD_CASE}.nii.gz", np.zeros(TINY_CASE_SHAPE, dtype=np.uint8))
    code, _, err = run_cli(
        capsys, "evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "data", "-o", tmp_path / "eval", "--quiet"
    )
    assert "ref_labels=" in _one_error(err, f"{BAD_CASE}_seg.nii.gz")


def test_a_duplicate_prediction_fails_only_its_own_case(tmp_path, write_case, capsys):
    (tmp_path / "pred").mkdir()
    for i, case_id in enumerate((BAD_CASE, GOOD_CASE)):
        write_case(tmp_path / "ref", case_id, shape=TINY_CASE_SHAPE, seed=i)
        shutil.copy(tmp_path / "ref" / case_id / f"{case_id}_seg.nii.gz", tmp_path / "pred" / f"{case_id}.nii.gz")
    nib.save(nib.load(str(tmp_path / "pred" / f"{BAD_CASE}.nii.gz")), str(tmp_path / "pred" / f"{BAD_CASE}.nii"))
    code, _, err = evaluate_cli(capsys, tmp_path / "pred", tmp_path / "ref", tmp_path / "eval")
    assert code == 1 and "second prediction" in _one_error(err, BAD_CASE)
    rows = (tmp_path / "eval" / "per_case.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [GOOD_CASE] and rows[1].split(",")[1] == "1"


def test_msd_predict_accepts_training_images_without_a_label(tmp_path, capsys, tiny_model):
    write_cohort(tmp_path / "Task01", 2, (24, 24, 24), layout="msd", seed=0)
    (tmp_path / "Task01" / "labelsTr" / "BRATS_002.nii.gz").unlink()
    code, stdout, err = _predict(capsys, tmp_path / "Task01", "-o", tmp_path / "out", "--model", tiny_model)
    assert code == 0 and "2 predicted" in stdout and not _error_lines(err)
    assert (tmp_path / "out" / "BRATS_002.nii.gz").exists()
    assert discover(tmp_path / "Task01").problems  # training still needs the label


def test_an_absurd_voxel_size_is_named_instead_of_allocated(tmp_path, write_case, capsys):
    folder = write_case(tmp_path / "data", BAD_CASE, shape=TINY_CASE_SHAPE)
    affine = BRATS_AFFINE.copy()
    affine[0, 0] = -100.0
    for path in folder.iterdir():
        save_nifti(path, np.asarray(nib.load(str(path)).dataobj), affine)
    code, _, err = run_cli(
        capsys,
        "preprocess",
        tmp_path / "data",
        "--preset",
        "cpu",
        "--set",
        "preprocess.target_spacing=[0.5,0.5,0.5]",
        "--out",
        tmp_path / "cache",
        "--quiet",
        "--workers",
        "1",
    )
    assert code == 2
    assert "implausible" in _one_error(err, f"{BAD_CASE}_flair.nii.gz", "voxel size 100 x 1 x 1 mm")


_INTERRUPTED_POOL = """
import sys, time
from pathlib import Path
from glioseg.parallel import map_cases

def job(i):
    time.sleep(2.0 if i == 0 else 0.05)  # one long case: the other worker runs out of work and waits
    Path(sys.argv[1], f"{i}.done").write_text("")
    return i

if __name__ == "__main__":
    print("started", flush=True)
    try:
        for i in map_cases(job, list(range(4)), workers=2, desc="x", progress=False):
            pass
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_parallel_work_prints_no_traceback_and_starts_no_other_case(tmp_path):
    """The preprocess/evaluate worker pool (glioseg.parallel.map_cases) under a terminal's Ctrl-C."""
    script = tmp_path / "pool.py"
    script.write_text(_INTERRUPTED_POOL)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - single-threaded child; a runner started in the background (`cmd &`) passes SIGINT on ignored
    )
    assert process.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("*.done"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not (tmp_path / "0.done").exists(), "the long case is still running"
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert process.returncode == 130 and err.strip() == "interrupted", (process.returncode, err)
    assert (tmp_path / "0.done").exists(), "the running case was finished, not killed half-way"
