"""End to end on a synthetic cohort: a case missing each modality through predict, evaluate, view and report,
with a tiny model trained 2 iterations with modality dropout; the refusals are one line each."""

import csv
import json
import logging
import re
import shutil

import pytest
from conftest import run_cli

from glioseg.checkpoint import load_checkpoint
from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.modalities import stamped_inputs
from glioseg.data.synth import write_cohort
from glioseg.inference.predictor import read_stamp
from glioseg.training.loop import train

MODALITIES = ("flair", "t1", "t1ce", "t2")
TINY = [
    "preprocess.target_spacing=null", "model.name=unet", "model.filters=[4,8]", "model.norm=none", "model.dropout=none",
    "train.patch_size=[16,16,16]", "train.samples_per_epoch=4", "train.batch_size=2", "train.epochs=1",
    "train.val_every=1", "train.threads=1", "train.device=cpu", "augment.modality_dropout=0.5",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """(raw cohort folder, a run trained 2 iterations with modality dropout 0.5)."""
    root = tmp_path_factory.mktemp("mm")
    write_cohort(root / "raw", cases=4, shape=(24, 26, 28), layout="brats2018", seed=5)
    config = load_config("cpu", TINY)
    preprocess_dataset(discover(root / "raw").cases, config.preprocess, root / "cache", progress=False)
    history = train(config, root / "cache", root / "run", progress=False)
    assert len(history) == 1
    assert load_checkpoint(root / "run" / "last.pt")["config"]["augment"]["modality_dropout"] == 0.5
    return root / "raw", root / "run"


def _payload(page: str) -> dict:
    match = re.search(r'<script id="glioseg-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert match
    return json.loads(match.group(1))


def _case_without(raw, dest, absent):
    """A copy of the cohort's first case without the ``absent`` modalities' files."""
    case_id = sorted(p.name for p in raw.iterdir())[0]
    folder = dest / case_id
    shutil.copytree(raw / case_id, folder)
    for m in absent:
        (folder / f"{case_id}_{m}.nii.gz").unlink()
    return case_id, folder


@pytest.mark.parametrize("absent", MODALITIES)
def test_a_case_missing_one_modality_runs_through_predict_evaluate_and_view(tmp_path, cohort, capsys, caplog, absent):
    raw, run = cohort
    case_id, folder = _case_without(raw, tmp_path / "data", [absent])
    used = [m for m in MODALITIES if m != absent]
    with caplog.at_level(logging.INFO, logger="glioseg"):
        code, out, err = run_cli(
            capsys,
            "predict",
            tmp_path / "data",
            "-o",
            tmp_path / "pred",
            "--model",
            run,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--quiet",
        )
    assert code == 0, err
    assert "1 predicted" in out
    assert f"{case_id}: modalities used: {', '.join(used)} (absent: {absent}, given as zero channel)" in caplog.text
    assert read_stamp(tmp_path / "pred" / f"{case_id}.nii.gz").endswith(f" inputs={','.join(used)}")

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glioseg"):
        code, out, err = run_cli(
            capsys,
            "evaluate",
            "--pred",
            tmp_path / "pred",
            "--ref",
            tmp_path / "data",
            "-o",
            tmp_path / "eval",
            "--workers",
            "1",
            "--quiet",
        )
    assert code == 0, err
    assert f"modalities the predictions were made from (header stamps): {','.join(used)} (1)" in caplog.text
    rows = list(csv.DictReader((tmp_path / "eval" / "per_case.csv").read_text().splitlines()))
    assert [r["case"] for r in rows] == [case_id] and 0.0 <= float(rows[0]["dice_wt"]) <= 1.0

    code, out, err = run_cli(
        capsys,
        "view",
        folder,
        "--pred",
        f"model={tmp_path / 'pred' / f'{case_id}.nii.gz'}",
        "-o",
        tmp_path / "page.html",
    )
    assert code == 0, err
    data = _payload((tmp_path / "page.html").read_text())
    assert [m["name"] for m in data["modalities"]] == used  # the absent scan is no volume (not a black one)
    assert data["absent_modalities"] == [
        {"name": absent, "label": {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}[absent]}
    ]
    assert [lm["name"] for lm in data["labelmaps"]] == ["reference", "model"]


def test_explicit_files_with_some_left_out(tmp_path, cohort, capsys):
    raw, run = cohort
    case_id, folder = _case_without(raw, tmp_path / "data", [])
    code, _out, err = run_cli(
        capsys, "predict", "--flair", folder / f"{case_id}_flair.nii.gz", "--t1ce", folder / f"{case_id}_t1ce.nii.gz",
        "-o", tmp_path / "pred", "--model", run, "--device", "cpu", "--threads", "1", "--quiet",
    )
    assert code == 0, err
    assert read_stamp(tmp_path / "pred" / f"{case_id}.nii.gz").endswith(" inputs=flair,t1ce")


def test_refusals_are_one_line(tmp_path, cohort, capsys, tiny_model):
    """A model trained without dropout refuses a missing modality; a case with no scan is refused; one line each."""
    raw, run = cohort
    case_id, folder = _case_without(raw, tmp_path / "data", ["t2"])
    code, out, err = run_cli(
        capsys,
        "predict",
        tmp_path / "data",
        "-o",
        tmp_path / "pred",
        "--model",
        tiny_model,
        "--device",
        "cpu",
        "--quiet",
    )
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "0 predicted" in out
    assert (
        f"{folder}: case {case_id} has no t2 image, and this model was trained on all of flair, t1, t1ce, t2 without "
        "modality dropout"
        in errors[0]
    )
    assert "Fix: add the missing file(s)" in errors[0] and "augment.modality_dropout > 0" in errors[0]
    assert not (tmp_path / "pred" / f"{case_id}.nii.gz").exists()
    # explicit files: the command stops before any work (exit 2)
    code, _, err = run_cli(
        capsys,
        "predict",
        "--flair",
        folder / f"{case_id}_flair.nii.gz",
        "-o",
        tmp_path / "pred2",
        "--model",
        tiny_model,
        "--device",
        "cpu",
    )
    assert code == 2 and err.count("error:") == 1 and "has no t1, t1ce, t2 image" in err
    # no scan at all: the label alone
    _, _empty = _case_without(raw, tmp_path / "empty", MODALITIES)
    code, out, err = run_cli(
        capsys, "predict", tmp_path / "empty", "-o", tmp_path / "pred3", "--model", run, "--device", "cpu", "--quiet"
    )
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "has no images beside it" in errors[0] and "Fix:" in errors[0]


def test_report_draws_a_case_without_flair_over_its_t2_and_says_so(tmp_path, cohort, capsys):
    raw, run = cohort
    case_id, _ = _case_without(raw, tmp_path / "data", ["flair", "t1"])
    code, _, err = run_cli(
        capsys,
        "predict",
        tmp_path / "data",
        "-o",
        tmp_path / "pred",
        "--model",
        run,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys,
        "report",
        run,
        "-o",
        tmp_path / "report",
        "--cases",
        tmp_path / "data",
        "--pred",
        f"tiny={tmp_path / 'pred'}",
    )
    assert code == 0, err
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert (
        f"{case_id}: T2, reference and predictions (NCR red, ED green, ET yellow); this case has no FLAIR, T1 scan"
        in markdown
    )
    data = _payload((tmp_path / "report" / f"viewer_{case_id}.html").read_text())
    assert [m["name"] for m in data["modalities"]] == ["t1ce", "t2"]
    assert [m["name"] for m in data["absent_modalities"]] == ["flair", "t1"]


def test_continue_predicts_again_a_case_whose_missing_modality_was_added(tmp_path, cohort, capsys):
    raw, run = cohort
    case_id, folder = _case_without(raw, tmp_path / "data", ["t1"])
    args = (
        "predict",
        tmp_path / "data",
        "-o",
        tmp_path / "pred",
        "--model",
        run,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
        "--continue",
    )
    assert run_cli(capsys, *args)[0] == 0
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "0 predicted" in out and "1 already done" in out
    shutil.copy(raw / case_id / f"{case_id}_t1.nii.gz", folder)
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "1 predicted (1 replacing outputs of another model or other settings)" in out
    assert read_stamp(tmp_path / "pred" / f"{case_id}.nii.gz").endswith(" inputs=flair,t1,t1ce,t2")


def test_stamped_inputs_of_a_file_glioseg_did_not_write_is_none(tmp_path, cohort):
    raw, _ = cohort
    case_id = sorted(p.name for p in raw.iterdir())[0]
    assert stamped_inputs(raw / case_id / f"{case_id}_seg.nii.gz") is None
    assert stamped_inputs(tmp_path / "missing.nii.gz") is None
