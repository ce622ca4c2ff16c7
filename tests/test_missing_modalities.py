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


def _predict(capsys, data, out, model, *extra):
    """``glioseg predict DATA -o OUT --model MODEL`` on one CPU thread, quietly: ``(exit code, stdout, stderr)``."""
    return run_cli(
        capsys, "predict", data, "-o", out, "--model", model, "--device", "cpu", "--threads", "1", "--quiet", *extra
    )


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
        code, out, err = _predict(capsys, tmp_path / "data", tmp_path / "pred", run)
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
    code, _, err = _predict(capsys, tmp_path / "data", tmp_path / "pred", run)
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
    assert _predict(capsys, tmp_path / "data", tmp_path / "pred", run, "--continue")[0] == 0
    code, out, _ = _predict(capsys, tmp_path / "data", tmp_path / "pred", run, "--continue")
    assert code == 0 and "0 predicted" in out and "1 already done" in out
    shutil.copy(raw / case_id / f"{case_id}_t1.nii.gz", folder)
    code, out, _ = _predict(capsys, tmp_path / "data", tmp_path / "pred", run, "--continue")
    assert code == 0 and "1 predicted (1 replacing outputs of another model or other settings)" in out
    assert read_stamp(tmp_path / "pred" / f"{case_id}.nii.gz").endswith(" inputs=flair,t1,t1ce,t2")


def test_continue_predicts_again_a_case_that_lost_a_modality(tmp_path, cohort, capsys):
    raw, run = cohort
    case_id, folder = _case_without(raw, tmp_path / "data", [])
    assert _predict(capsys, tmp_path / "data", tmp_path / "pred", run, "--continue", "--save-probabilities")[0] == 0
    (folder / f"{case_id}_t1ce.nii.gz").unlink()
    code, out, _ = _predict(capsys, tmp_path / "data", tmp_path / "pred", run, "--continue", "--save-probabilities")
    assert code == 0 and "1 predicted (1 replacing outputs of another model or other settings)" in out
    stamp = read_stamp(tmp_path / "pred" / f"{case_id}.nii.gz")
    assert stamp is not None and stamp.endswith(" inputs=flair,t1,t2")
    import numpy as np

    with np.load(tmp_path / "pred" / f"{case_id}_probabilities.npz") as saved:
        assert str(saved["stamp"]) == stamp  # both outputs of the case are the new prediction's


def test_an_export_on_onnx_runtime_gives_pytorchs_labels_for_a_case_without_some_modalities(tmp_path, cohort, capsys):
    pytest.importorskip("onnxruntime")
    import nibabel as nib
    import numpy as np

    raw, run = cohort
    case_id, _ = _case_without(raw, tmp_path / "data", ["t1", "t2"])
    code, _, err = run_cli(capsys, "export", run, "-o", tmp_path / "export")
    assert code == 0, err
    assert _predict(capsys, tmp_path / "data", tmp_path / "torch", run, "--backend", "torch")[0] == 0
    code, _, err = _predict(
        capsys, tmp_path / "data", tmp_path / "ort", tmp_path / "export", "--backend", "onnxruntime"
    )
    assert code == 0, err
    torch_map, ort_map = (nib.load(tmp_path / name / f"{case_id}.nii.gz") for name in ("torch", "ort"))
    np.testing.assert_array_equal(np.asarray(ort_map.dataobj), np.asarray(torch_map.dataobj))
    assert str(read_stamp(tmp_path / "ort" / f"{case_id}.nii.gz")).endswith(" inputs=flair,t1ce")
    assert ort_map.shape == nib.load(raw / case_id / f"{case_id}_flair.nii.gz").shape


def test_stamped_inputs_of_a_file_glioseg_did_not_write_is_none(tmp_path, cohort):
    raw, _ = cohort
    case_id = sorted(p.name for p in raw.iterdir())[0]
    assert stamped_inputs(raw / case_id / f"{case_id}_seg.nii.gz") is None
    assert stamped_inputs(tmp_path / "missing.nii.gz") is None


def _shipped(tmp_path, monkeypatch, main_model, dropout_run, with_missing=True):
    """A shipped-weights folder like the package's: a main model and (``with_missing``) a missing-modality pack."""
    import glioseg.checksums as checksums_module
    from glioseg.checksums import PACK, PACK_FORMAT, SHIPPED_MISSING, write_checksums
    from glioseg.files import write_json

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(main_model, weights / "main.pt")
    write_checksums(weights)
    if with_missing:
        pack = weights / SHIPPED_MISSING
        pack.mkdir()
        shutil.copy(dropout_run / "last.pt", pack / "fold0.pt")
        write_checksums(pack)
        write_json(pack / PACK, {"format": PACK_FORMAT, "members": ["fold0.pt"]})
    monkeypatch.setattr(checksums_module, "shipped_weights_dir", lambda: weights)
    return weights


def test_without_model_a_complete_case_gets_the_main_model_and_an_incomplete_one_the_missing_modality_model(
    tmp_path, cohort, capsys, caplog, monkeypatch, tiny_model
):
    """No --model: each case goes to the shipped model that fits it, and its log line and header say which.

    The routed outputs are checked against the same models forced with --model (labels and stamps equal)."""
    import nibabel as nib
    import numpy as np

    from glioseg.inference.shipped import MAIN_TAG, MISSING_TAG, stamped_model

    raw, run = cohort
    weights = _shipped(tmp_path, monkeypatch, tiny_model, run)
    ids = sorted(p.name for p in raw.iterdir())
    complete, partial = ids[0], ids[1]
    shutil.copytree(raw / complete, tmp_path / "data" / complete)
    shutil.copytree(raw / partial, tmp_path / "data" / partial)
    for m in ("t1", "t2"):
        (tmp_path / "data" / partial / f"{partial}_{m}.nii.gz").unlink()
    common = ("--device", "cpu", "--threads", "1", "--quiet")
    with caplog.at_level(logging.INFO, logger="glioseg"):
        code, out, err = run_cli(capsys, "predict", tmp_path / "data", "-o", tmp_path / "auto", *common)
    assert code == 0, err
    assert "2 predicted" in out
    assert f"{complete}: model the shipped model (main.pt); modalities used: flair, t1, t1ce, t2" in caplog.text
    assert (
        f"{partial}: model the shipped missing-modality model (missing_modalities/fold0.pt); "
        "modalities used: flair, t1ce (absent: t1, t2, given as zero channels)"
    ) in caplog.text
    assert (
        "no --model: 1 case(s) with the shipped model (main.pt); 1 case(s) with the shipped missing-modality model"
    ) in caplog.text
    assert stamped_model(tmp_path / "auto" / f"{complete}.nii.gz") == MAIN_TAG
    assert stamped_model(tmp_path / "auto" / f"{partial}.nii.gz") == MISSING_TAG
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glioseg"):
        code, _, err = run_cli(
            capsys, "evaluate", "--pred", tmp_path / "auto", "--ref", tmp_path / "data", "-o", tmp_path / "eval",
            "--workers", "1", "--quiet",
        )
    assert code == 0, err
    tags = "shipped models that made them (header aux_file): glioseg shipped (1); glioseg shipped-missing (1)"
    assert tags in caplog.text

    # --model forces one model: the main one refuses the incomplete case, the dropout one takes both
    code, out, err = run_cli(
        capsys, "predict", tmp_path / "data", "-o", tmp_path / "main", "--model", weights / "main.pt", *common
    )
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "1 predicted" in out and len(errors) == 1
    assert (
        f"case {partial} has no t1, t2 image, and this model was trained on all of flair, t1, t1ce, t2 "
        "without modality dropout"
    ) in errors[0]
    code, _, err = run_cli(
        capsys, "predict", tmp_path / "data", "-o", tmp_path / "drop", "--model", weights / "missing_modalities",
        *common,
    )
    assert code == 0, err
    for case_id, forced in ((complete, "main"), (partial, "drop")):
        auto, other = tmp_path / "auto" / f"{case_id}.nii.gz", tmp_path / forced / f"{case_id}.nii.gz"
        assert read_stamp(auto) == read_stamp(other)
        np.testing.assert_array_equal(np.asarray(nib.load(auto).dataobj), np.asarray(nib.load(other).dataobj))
        assert stamped_model(other) is None  # --model: no shipped tag
    stamps = [str(read_stamp(tmp_path / "auto" / f"{case_id}.nii.gz")) for case_id in (complete, partial)]
    assert stamps[0].split()[1] != stamps[1].split()[1]  # model=: two models
    assert read_stamp(tmp_path / "auto" / f"{partial}.nii.gz").endswith(" inputs=flair,t1ce")


def test_without_a_shipped_missing_modality_model_the_main_model_refuses_an_incomplete_case(
    tmp_path, cohort, capsys, monkeypatch, tiny_model
):
    raw, run = cohort
    _shipped(tmp_path, monkeypatch, tiny_model, run, with_missing=False)
    case_id, _ = _case_without(raw, tmp_path / "data", ["t1ce"])
    code, out, err = run_cli(
        capsys, "predict", tmp_path / "data", "-o", tmp_path / "pred", "--device", "cpu", "--quiet"
    )
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "0 predicted" in out and len(errors) == 1
    assert f"case {case_id} has no t1ce image, and this model was trained on all of" in errors[0]


def test_a_damaged_shipped_missing_modality_model_is_refused_in_one_line(
    tmp_path, cohort, capsys, monkeypatch, tiny_model
):
    raw, run = cohort
    weights = _shipped(tmp_path, monkeypatch, tiny_model, run)
    with open(weights / "missing_modalities" / "fold0.pt", "ab") as handle:
        handle.write(b"\0")
    _case_without(raw, tmp_path / "data", ["t2"])
    code, _, err = run_cli(capsys, "predict", tmp_path / "data", "-o", tmp_path / "pred", "--device", "cpu", "--quiet")
    assert code == 2 and err.count("error:") == 1 and "shipped weights fold0.pt fail their checksum" in err
    assert not (tmp_path / "pred").exists()


def _train_cli(capsys, data, cache, run):
    """``glioseg train --data DATA --cache CACHE --run-dir RUN``, a tiny model, one epoch: ``(code, out, err)``."""
    tiny = ["model.filters=[4,8]", "model.norm=none", "model.dropout=none", "preprocess.target_spacing=null",
            "train.samples_per_epoch=2", "train.batch_size=2"]
    return run_cli(
        capsys, "train", "--data", data, "--cache", cache, "--run-dir", run, "--preset", "cpu", "--model", "unet",
        "--epochs", "1", "--patch-size", "16", "16", "16", "--device", "cpu", "--threads", "1", "--quiet",
        *(a for item in tiny for a in ("--set", item)),
    )


@pytest.mark.parametrize("damage", ["missing t2", "NaN in t1"])
def test_train_leaves_out_a_case_that_lost_a_modality_even_when_the_cache_holds_it(tmp_path, capsys, damage):
    """A case cached whole by an earlier run, then left without its T2 (or with a broken T1): `train` names it in
    one line and trains on the others, never on its stale cache entry (before, the error line said it was left
    out while its old entry was in the new run's split and trained on)."""
    import nibabel as nib
    import numpy as np

    ids = write_cohort(tmp_path / "data", cases=3, shape=(24, 24, 24), layout="brats2018", seed=3)
    cache = tmp_path / "cache"
    code, _, err = _train_cli(capsys, tmp_path / "data", cache, tmp_path / "run1")
    assert code == 0, err
    assert (cache / f"{ids[0]}.npz").is_file()
    folder = tmp_path / "data" / ids[0]
    if damage == "missing t2":
        (folder / f"{ids[0]}_t2.nii.gz").unlink()
    else:
        image = nib.load(str(folder / f"{ids[0]}_t1.nii.gz"))
        voxels = np.asarray(image.dataobj).astype(np.float32)
        voxels[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(voxels, image.affine), str(folder / f"{ids[0]}_t1.nii.gz"))

    code, _, err = _train_cli(capsys, tmp_path / "data", cache, tmp_path / "run2")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and ids[0] in errors[0], err
    assert ("has no t2 image" if damage == "missing t2" else "contains NaN") in errors[0]
    split = json.loads((tmp_path / "run2" / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted(ids[1:])
    assert not (cache / f"{ids[0]}.npz").exists() and not (cache / f"{ids[0]}.json").exists()
