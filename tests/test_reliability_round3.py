"""Reliability, round 3 (issue 25): the newer commands (view, report, evaluate's lesion-wise rules,
synth) keep the promises predict keeps.

Same style as ``test_reliability.py``: each test feeds one careless or hostile input to the
command-line interface (or the library function behind it) and checks the one-line error, the
exit status, and that nothing was written or overwritten. Signals are in ``test_signals.py``, the
lesion-wise worst case in ``test_metrics_lesionwise.py``, hostile names in ``test_hostile_names.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import evaluate_cli, run_cli

from glioseg.data import synth
from glioseg.data.io import write_label_map
from glioseg.data.synth import write_cohort
from glioseg.errors import GliosegError


def _one_error(err: str, *needles: str) -> str:
    """The only ``error:`` line, with no traceback; it names every needle and says what to do."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Fix:" in lines[0] and all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. view never writes over what it reads -------------------------------------------------------


@pytest.mark.parametrize("target", ["seg", "flair", "pred", "msd_label", "msd_labels_folder"])
def test_view_refuses_to_write_over_its_inputs(tmp_path, write_case, capsys, target):
    if target.startswith("msd"):
        write_cohort(tmp_path / "data", cases=1, shape=(24, 24, 24), layout="msd")
        case, argv = tmp_path / "data", ["--case-id", "BRATS_001"]
        out = tmp_path / "data" / "labelsTr" / ("BRATS_001.nii.gz" if target == "msd_label" else "page.html")
    else:
        case = write_case(tmp_path / "data", "Brats18_V_1")
        pred = tmp_path / "pred.nii.gz"
        shutil.copy(case / "Brats18_V_1_seg.nii.gz", pred)
        argv = ["--pred", f"model={pred}"]
        out = pred if target == "pred" else case / f"Brats18_V_1_{target}.nii.gz"
    before = _snapshot(tmp_path)
    code, _, err = run_cli(capsys, "view", case, *argv, "-o", out)
    assert code == 2
    _one_error(err, str(out), "would")
    assert _snapshot(tmp_path) == before  # the label map (or scan) is untouched, no page anywhere


@pytest.mark.parametrize("where", ["folder", "under_file"])
def test_view_refuses_a_bad_output_path_before_reading_the_case(tmp_path, write_case, capsys, where):
    case = write_case(tmp_path / "data", "Brats18_V_1")
    (case / "Brats18_V_1_t1.nii.gz").write_bytes(b"broken")  # reading the case would fail: it is not read
    out = tmp_path / "data" if where == "folder" else case / "Brats18_V_1_seg.nii.gz" / "page.html"
    code, _, err = run_cli(capsys, "view", case, "-o", out)
    assert code == 2
    _one_error(err, str(out), "is a folder" if where == "folder" else "lies inside")


# --- 2. a case id is a name, never a path ----------------------------------------------------------


HOSTILE_IDS = ["../victim/Brats18_V_1_seg", "..", ".", "/tmp/abs", "a/b", ".hidden", "x" * 300]


@pytest.mark.parametrize("case_id", HOSTILE_IDS)
def test_predict_refuses_a_case_id_that_is_a_path(tmp_path, write_case, capsys, tiny_model, case_id):
    """The issue's case: `predict ... --case-id ../victim/<id>_seg -o out` overwrote a file outside -o."""
    case = write_case(tmp_path / "data", "Brats18_V_1")
    victim = write_case(tmp_path / "victim", "Brats18_V_1")
    before = _snapshot(tmp_path)
    files = [a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", case / f"Brats18_V_1_{m}.nii.gz")]
    code, _, err = run_cli(
        capsys,
        "predict",
        *files,
        "--case-id",
        case_id,
        "-o",
        tmp_path / "out",
        "--model",
        tiny_model,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    )
    assert code == 2
    _one_error(err, "case id")
    assert _snapshot(tmp_path) == before and victim.is_dir()


@pytest.mark.parametrize("model", ["missing.pt", None])
def test_predict_refuses_a_bad_case_id_before_loading_the_model(tmp_path, write_case, capsys, monkeypatch, model):
    """`predict --case-id ../victim` was refused only after the model was loaded (5.5 s with the shipped
    models on the 2-core machine), and a --model that does not exist was named instead of the case id."""
    from glioseg.inference.predictor import Predictor

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the case id was checked")

    monkeypatch.setattr(Predictor, "from_checkpoints", no_model)
    case = write_case(tmp_path / "data", "Brats18_V_1")
    files = [a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", case / f"Brats18_V_1_{m}.nii.gz")]
    model_args = [] if model is None else ["--model", tmp_path / model]
    code, _, err = run_cli(
        capsys, "predict", *files, "--case-id", "../victim", "-o", tmp_path / "out", *model_args, "--quiet"
    )
    assert code == 2
    _one_error(err, "case id '../victim'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["preprocess", "view", "inspect", "prepare"])
@pytest.mark.parametrize("case_id", ["../escaped", "/tmp/abs", ".."])
def test_every_command_with_a_case_id_refuses_a_path(tmp_path, write_case, capsys, command, case_id):
    """prepare (OUT/<case id>/) wrote outside its -o with `--case-id ../escaped` before."""
    case = write_case(tmp_path / "data", "Brats18_V_1")
    files = [a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", case / f"Brats18_V_1_{m}.nii.gz")]
    out = {
        "preprocess": ["--out", tmp_path / "cache", "--preset", "cpu", "--quiet"],
        "view": ["-o", tmp_path / "page.html"],
        "inspect": [],
        "prepare": ["-o", tmp_path / "cache", "--no-brain-extraction"],
    }[command]
    before = _snapshot(tmp_path)
    code, _, err = run_cli(capsys, command, *files, "--case-id", case_id, *out)
    assert code == 2
    _one_error(err, "case id")
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "escaped.npz").exists() and not (tmp_path / "cache").exists()


def test_a_plain_case_id_still_names_the_outputs(tmp_path, write_case, capsys, tiny_model):
    case = write_case(tmp_path / "data", "Brats18_V_1")
    files = [a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", case / f"Brats18_V_1_{m}.nii.gz")]
    code, _, err = run_cli(
        capsys,
        "predict",
        *files,
        "--case-id",
        "patient 7 (é)",
        "-o",
        tmp_path / "out",
        "--model",
        tiny_model,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["patient 7 (é).nii.gz"]


# --- 4. MSD label maps: geometry checked like every layout -----------------------------------------


def _reoriented_msd_label(root: Path) -> Path:
    """MSD case whose label is saved reoriented: the same world voxels, array flipped along x and the
    affine flipped with it (so only the shape agrees with the image)."""
    write_cohort(root, cases=1, shape=(24, 26, 22), layout="msd")
    label = root / "labelsTr" / "BRATS_001.nii.gz"
    image = nib.load(str(label))
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 1
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[::-1].copy(), image.affine @ flip), str(label))
    return label


def test_evaluate_refuses_a_reoriented_msd_label(tmp_path, capsys):
    """The issue's case: scored Dice 0.13 / 0.13 / 0.10 with exit 0; the same file in a BraTS layout was refused."""
    label = _reoriented_msd_label(tmp_path / "msd")
    pred = tmp_path / "pred"
    pred.mkdir()
    image = nib.load(str(tmp_path / "msd" / "imagesTr" / "BRATS_001.nii.gz"))
    flipped = np.asarray(nib.load(str(label)).dataobj)[::-1]  # the label on the image's grid: a perfect prediction
    write_label_map(pred / "BRATS_001.nii.gz", flipped, image.affine)
    code, _, err = evaluate_cli(capsys, pred, tmp_path / "msd", tmp_path / "eval")
    assert code != 0
    _one_error(err, str(label), "affine (orientation/spacing/origin)", "0.001 mm")
    assert not (tmp_path / "eval" / "per_case.csv").read_text().count("BRATS_001")


@pytest.mark.parametrize("command", ["view", "preprocess"])
def test_view_and_preprocess_refuse_a_reoriented_msd_label(tmp_path, capsys, command):
    label = _reoriented_msd_label(tmp_path / "msd")
    out = (
        ["-o", tmp_path / "page.html", "--case-id", "BRATS_001"]
        if command == "view"
        else ["--out", tmp_path / "cache", "--preset", "cpu", "--quiet", "--workers", "1"]
    )
    code, _, err = run_cli(capsys, command, tmp_path / "msd", *out)
    assert code == 2
    _one_error(err, str(label), "affine (orientation/spacing/origin)")
    assert not (tmp_path / "page.html").exists() and not list((tmp_path / "cache").glob("BRATS_001*"))


def test_an_msd_label_within_the_tolerance_is_accepted(tmp_path, capsys):
    write_cohort(tmp_path / "msd", cases=1, shape=(24, 26, 22), layout="msd")
    label = tmp_path / "msd" / "labelsTr" / "BRATS_001.nii.gz"
    image = nib.load(str(label))
    nudged = image.affine.copy()
    nudged[:3, 3] += 0.0004  # a rounding difference, under AFFINE_TOLERANCE (0.001 mm)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), nudged), str(label))
    code, _, err = run_cli(capsys, "view", tmp_path / "msd", "--case-id", "BRATS_001", "-o", tmp_path / "page.html")
    assert code == 0, err


# --- 6, 7. report: one file per name, one name per prediction folder ------------------------------


def _history(folder: Path, losses: list[float]) -> None:
    folder.mkdir(parents=True)
    folder.joinpath("metrics.csv").write_text(
        "epoch,train_loss\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(losses))
    )


@pytest.mark.parametrize("names", [("α", "β"), ("u net", "u_net"), ("A", "a")])
def test_report_gives_each_run_its_own_curves_file(tmp_path, capsys, names):
    _history(tmp_path / "one", [1.0, 0.5, 0.2])
    _history(tmp_path / "two", [3.0, 2.9, 2.8, 2.7, 2.6])
    code, _, err = run_cli(
        capsys, "report", f"{names[0]}={tmp_path / 'one'}", f"{names[1]}={tmp_path / 'two'}", "-o", tmp_path / "out"
    )
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    shown = [part.split('"')[0] for part in page.split('<img src="')[1:]]
    assert len(shown) == 2 and len({name.lower() for name in shown}) == 2, shown
    first, second = ((tmp_path / "out" / name).read_bytes() for name in shown)
    assert first != second  # each holds its own run's curves


def test_report_refuses_two_prediction_folders_with_one_name(tmp_path, write_case, capsys):
    """The issue's case: `--pred m=A --pred m=B` showed B's labels under m."""
    write_case(tmp_path / "cases", "Brats18_R_1")
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
    code, _, err = run_cli(
        capsys,
        "report",
        "-o",
        tmp_path / "out",
        "--cases",
        tmp_path / "cases",
        "--pred",
        f"m={tmp_path / 'A'}",
        "--pred",
        f"m={tmp_path / 'B'}",
    )
    assert code == 2
    _one_error(err, "two prediction folders share a name (m)", "NAME=DIR")
    assert not (tmp_path / "out").exists()


# --- 9. synth: a case appears whole or not at all ---------------------------------------------------


def _disk_full_on_the_second_label(monkeypatch) -> list[Path]:
    """``synth``'s second label map meets a full disk; returns the label paths written or tried."""
    real = synth.write_label_map
    calls = []

    def full_on_the_second_label(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise GliosegError(path, "no space left on device while writing", "free disk space")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(synth, "write_label_map", full_on_the_second_label)
    return calls


@pytest.mark.parametrize("layout", ["brats2018", "msd"])
def test_synth_on_a_full_disk_leaves_no_case_without_its_label(tmp_path, capsys, monkeypatch, layout):
    """The issue's case: a full disk left a folder with four modalities and no label (rc 2)."""
    calls = _disk_full_on_the_second_label(monkeypatch)
    code, _, err = run_cli(
        capsys, "synth", tmp_path / "out", "--cases", "3", "--shape", "24", "24", "24", "--layout", layout
    )
    assert code == 2
    _one_error(err, "no space left")
    if layout == "brats2018":  # the file is named where it would have been, not in the staging folder removed since
        assert err.startswith(f"error: {tmp_path / 'out' / calls[1].parent.name.split('.')[1] / calls[1].name}: "), err
    from glioseg.data.discovery import discover

    dataset = discover(tmp_path / "out", required=())
    assert [case.label is not None for case in dataset.cases] == [True] and not dataset.problems
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")] == []  # no staging left


def test_synth_force_replaces_a_case_whole(tmp_path, capsys):
    write_cohort(tmp_path / "out", cases=1, shape=(24, 24, 24), layout="brats2018", seed=1)
    folder = tmp_path / "out" / "Brats18_SYN_001_1"
    before = (folder / "Brats18_SYN_001_1_seg.nii.gz").read_bytes()
    write_cohort(tmp_path / "out", cases=1, shape=(24, 24, 24), layout="brats2018", seed=2, force=True)
    assert (folder / "Brats18_SYN_001_1_seg.nii.gz").read_bytes() != before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Brats18_SYN_001_1"]


# --- also weak: float labels, --init-from, -o checked first, export.json, --set, preset encoding -----


def test_a_float_label_near_an_integer_is_named_as_it_is(tmp_path, write_case, capsys):
    """The issue's case: 3.9999 was reported as '3' (a BraTS 2023 ET) with a fix (--labels) that did not apply."""
    case = write_case(tmp_path / "ref", "Brats18_V_1")
    seg = nib.load(str(case / "Brats18_V_1_seg.nii.gz"))
    data = np.asarray(seg.dataobj).astype(np.float32)
    data[data == 4] = 3.9999
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(data, seg.affine), str(tmp_path / "pred" / "Brats18_V_1.nii.gz"))
    code, _, err = evaluate_cli(capsys, tmp_path / "pred", tmp_path / "ref", tmp_path / "eval")
    assert code != 0
    line = _one_error(err, "non-integer values [3.9999]", "round it")
    assert "brats2023" not in line and "labels" not in line.split("Fix:")[1]


def test_train_init_from_a_bad_checkpoint_leaves_no_run_folder_files(tmp_path, capsys):
    from test_bad_inputs import _train_args

    bad = tmp_path / "hostile.pt"
    bad.write_bytes(b"not a checkpoint at all")
    cache = tmp_path / "cache"
    _tiny_cache(cache)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *_train_args(cache, run, "--init-from", bad))
    assert code == 2
    _one_error(err, str(bad))
    assert not run.exists() or list(run.iterdir()) == [], list(run.iterdir())


def _tiny_cache(cache: Path) -> None:
    from conftest import TINY_CASE_SHAPE, TINY_UNET, save_nifti, tiny_case_arrays

    from glioseg.config import load_config
    from glioseg.data.cache import preprocess_dataset
    from glioseg.data.discovery import discover

    raw = cache.parent / "raw"
    for i in range(3):
        folder = raw / f"Brats18_T_{i}"
        folder.mkdir(parents=True)
        images, seg = tiny_case_arrays(TINY_CASE_SHAPE, seed=i)
        for m, data in {**images, "seg": seg}.items():
            save_nifti(folder / f"Brats18_T_{i}_{m}.nii.gz", data)
    preprocess_dataset(discover(raw).cases, load_config("cpu", TINY_UNET).preprocess, cache, progress=False)


@pytest.mark.parametrize(
    ("command", "bad_output"),
    [
        ("predict", "-o"), ("predict", "--timings"), ("report", "-o"), ("export", "-o"), ("train", "--run-dir"),
        ("preprocess", "--out"), ("evaluate", "-o"), ("cv report", "-o"),
    ],
)
def test_output_path_errors_come_before_any_work(tmp_path, capsys, command, bad_output):
    """An output under a file (or, for --timings, a folder) is named first: the model, data and
    run folders below do not exist, and would be the error if any work started."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path if bad_output == "--timings" else blocker / "out"
    missing = tmp_path / "missing"
    argv = {
        "predict": [
            "predict",
            missing,
            "--model",
            missing / "m.pt",
            "-o",
            tmp_path / "preds" if bad_output == "--timings" else out,
            *(["--timings", out] if bad_output == "--timings" else []),
        ],
        "report": ["report", missing, "-o", out],
        "export": ["export", missing / "m.pt", "-o", out],
        "train": ["train", "--cache", missing, "--run-dir", out],
        "preprocess": ["preprocess", missing, "--out", out],
        "evaluate": ["evaluate", "--pred", missing, "--ref", missing, "-o", out],
        "cv report": ["cv", "report", missing, "-o", out],
    }[command]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    _one_error(err, str(out), "is a folder" if bad_output == "--timings" else "lies inside")


def test_an_export_manifest_that_lists_no_files_is_refused(tmp_path):
    from glioseg.inference.export import load_export

    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(
        Path(__file__).resolve().parents[1] / "src" / "glioseg" / "configs" / "cpu.yaml", folder / "config.yaml"
    )
    (folder / "model.onnx").write_bytes(b"tampered")
    (folder / "export.json").write_text(json.dumps({"format": "onnx", "files": {}, "stride": 8}))
    with pytest.raises(
        GliosegError, match=r"export.json: lists the files \[\], not the onnx export's \['config.yaml', 'model.onnx'\]"
    ):
        load_export(folder)


@pytest.mark.parametrize(
    "value", ["!!python/object/apply:os.system ['true']", "&anchor 3", "*alias", "[1, 2", "!!binary aGk="]
)
def test_set_with_yaml_tags_anchors_or_bad_syntax_is_one_line(tmp_path, capsys, value):
    code, _, err = run_cli(
        capsys, "preprocess", tmp_path / "missing", "--out", tmp_path / "cache", "--set", f"train.epochs={value}"
    )
    assert code == 2
    _one_error(err, "train.epochs=")
    assert not (tmp_path / "cache").exists()


def test_a_preset_that_is_not_utf8_is_one_line(tmp_path, capsys):
    preset = tmp_path / "latin1.yaml"
    preset.write_bytes("train:\n  loss: dice  # réglé\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "preprocess", tmp_path / "missing", "--out", tmp_path / "cache", "--preset", preset)
    assert code == 2
    _one_error(err, str(preset), "not UTF-8")


def test_check_output_path_directly(tmp_path):
    from glioseg.data.io import check_output_path

    (tmp_path / "f").write_text("")
    check_output_path(tmp_path / "new" / "deeper", folder=True)
    check_output_path(tmp_path / "new.html", folder=False)
    with pytest.raises(GliosegError, match="is a file, not a folder"):
        check_output_path(tmp_path / "f", folder=True)
    with pytest.raises(GliosegError, match="is a folder, not a file"):
        check_output_path(tmp_path, folder=False)
    with pytest.raises(GliosegError, match="lies inside"):
        check_output_path(tmp_path / "f" / "x" / "y.html", folder=False)
    assert os.listdir(tmp_path) == ["f"]


def test_a_full_disk_mid_case_leaves_no_staging_folder(tmp_path, monkeypatch):
    from glioseg.data import io

    real = os.replace

    def no_space(src, dst):
        if Path(dst).name == "Brats18_SYN_001_1":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", no_space)
    with pytest.raises(GliosegError, match="no space left"):
        write_cohort(tmp_path / "out", cases=1, shape=(24, 24, 24), layout="brats2018")
    assert list((tmp_path / "out").iterdir()) == []


def test_train_init_from_a_checkpoint_of_the_run_folder_itself_is_refused(tmp_path, capsys, tiny_model):
    """Training would write best.pt over the checkpoint it starts from."""
    from test_bad_inputs import _train_args

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_model, run / "best.pt")
    before = _snapshot(run)
    cache = tmp_path / "cache"
    _tiny_cache(cache)
    code, _, err = run_cli(capsys, *_train_args(cache, run, "--init-from", run / "best.pt"))
    assert code == 2
    _one_error(err, "best.pt", "would overwrite the input file")
    assert _snapshot(run) == before


def test_synth_refuses_an_output_that_is_a_file_or_lies_under_one(tmp_path, capsys):
    from conftest import run_cli

    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    for out in (blocker, blocker / "sub"):
        code, _, err = run_cli(capsys, "synth", out, "--cases", "1", "--shape", "24", "24", "24")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "afile" in err and "Fix:" in err
    assert blocker.read_text() == "keep"


# --- export: the checkpoint being exported is never inside the folder it writes --------------------


def _no_runtime(monkeypatch) -> None:
    """As on CI, where the ``fast`` extra (ONNX Runtime, OpenVINO) is not installed."""
    from glioseg.inference import backends, runtime

    monkeypatch.setattr(backends, "available_backends", lambda: [])
    monkeypatch.setattr(runtime, "available_backends", lambda: [])  # export asks the runtime module


def test_export_refuses_a_checkpoint_inside_its_output_without_any_runtime(tmp_path, capsys, monkeypatch, tiny_model):
    _no_runtime(monkeypatch)
    out = tmp_path / "export"  # an earlier export, into which the run was copied
    out.mkdir()
    (out / "export.json").write_text("{}")
    shutil.copy(tiny_model, out / "best.pt")
    before = _snapshot(tmp_path)
    for model in (out, out / "best.pt"):
        code, _, err = run_cli(capsys, "export", model, "-o", out, "--overwrite")
        assert code == 2
        _one_error(err, str(out), "holds the checkpoint being exported (best.pt)")
    assert _snapshot(tmp_path) == before
    # Without a runtime, an export that could go ahead says what to install, in one line.
    code, _, err = run_cli(capsys, "export", tiny_model, "-o", tmp_path / "new")
    assert code == 2
    _one_error(err, "neither is installed")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["itself", "its_parent"])
def test_export_refuses_an_output_that_holds_the_model_folder(tmp_path, capsys, monkeypatch, tiny_model, where):
    from glioseg.checksums import write_checksums
    from glioseg.cv.pack import PACK, PACK_FORMAT

    _no_runtime(monkeypatch)
    pack = tmp_path / "models" / "pack"
    pack.mkdir(parents=True)
    shutil.copy(tiny_model, pack / "fold0.pt")
    write_checksums(pack)
    (pack / PACK).write_text(json.dumps({"format": PACK_FORMAT, "members": ["fold0.pt"]}))
    if where == "its_parent":
        (tmp_path / "models" / PACK).write_text(
            json.dumps({"format": PACK_FORMAT, "members": ["x.pt"]})
        )  # an earlier export
    out = pack if where == "itself" else tmp_path / "models"
    before = _snapshot(tmp_path)
    code, _, err = run_cli(capsys, "export", pack, "-o", out, "--overwrite")
    assert code == 2
    _one_error(err, str(out), "holds the model folder being exported")
    assert _snapshot(tmp_path) == before


# --- report never writes onto a table or a label map it reads ---------------------------------------


@pytest.mark.parametrize(
    "target", ["metrics.csv", "summary.csv", "per_case.csv", "prediction", "page_linked_to_a_table", "inside_a_table"]
)
def test_report_refuses_to_write_onto_what_it_reads(tmp_path, write_case, capsys, target):
    _history(tmp_path / "run", [1.0, 0.5])
    case = write_case(tmp_path / "cases", "Brats18_R_1")
    (tmp_path / "pred").mkdir()
    shutil.copy(case / "Brats18_R_1_seg.nii.gz", tmp_path / "pred" / "Brats18_R_1.nii.gz")
    evaluation = tmp_path / "eval"
    assert (
        run_cli(capsys, "evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "cases", "-o", evaluation)[0] == 0
    )
    out = {
        "metrics.csv": tmp_path / "run" / "metrics.csv",
        "summary.csv": evaluation / "summary.csv",
        "per_case.csv": evaluation / "per_case.csv",
        "prediction": tmp_path / "pred" / "Brats18_R_1.nii.gz",
        "page_linked_to_a_table": tmp_path / "out",
        "inside_a_table": tmp_path / "run" / "metrics.csv" / "report",
    }[target]
    if target == "page_linked_to_a_table":  # a report.html that is a link to the run's table
        out.mkdir()
        (out / "report.html").symlink_to(tmp_path / "run" / "metrics.csv")
    before = _snapshot(tmp_path)
    argv = [
        "report",
        f"m={tmp_path / 'run'}",
        "--eval",
        f"m:test={evaluation}",
        "--cases",
        tmp_path / "cases",
        "--pred",
        f"m={tmp_path / 'pred'}",
        "-o",
        out,
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    _one_error(err, str(out))
    assert _snapshot(tmp_path) == before  # every table and label map as it was, no figure anywhere
    # The library function behind it refuses the same outputs (it is called by demo and by scripts).
    from glioseg.reporting.report import build_report

    with pytest.raises(GliosegError, match="would"):
        build_report(
            [("m", tmp_path / "run")],
            out,
            evaluations={("m", "test"): evaluation},
            cases_root=tmp_path / "cases",
            predictions=[("m", tmp_path / "pred")],
        )
    assert _snapshot(tmp_path) == before


def test_report_into_its_run_folder_leaves_the_tables_as_they_were(tmp_path, capsys):
    _history(tmp_path / "run", [1.0, 0.5])
    table = (tmp_path / "run" / "metrics.csv").read_bytes()
    code, _, err = run_cli(capsys, "report", f"m={tmp_path / 'run'}", "-o", tmp_path / "run")
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == table
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "curves_m.png",
        "metrics.csv",
        "report.html",
        "report.md",
    ]


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_prepare_refuses_an_output_that_is_or_lies_under_a_file_before_reading_anything(tmp_path, capsys, where):
    """Checked before the series are read and before the `prepare` extra is needed (CI lacks it)."""
    blocker = tmp_path / "taken.nii.gz"
    blocker.write_bytes(b"not an image, and not to be touched")
    out = blocker if where == "file" else blocker / "prepared"
    series = [arg for m in ("flair", "t1", "t1ce", "t2") for arg in (f"--{m}", tmp_path / f"absent_{m}.nii.gz")]
    code, _, err = run_cli(capsys, "prepare", *series, "-o", out)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and str(out) in lines[0] and "Fix:" in lines[0], err
    assert "absent_" not in lines[0] and "pip install" not in lines[0]  # the output was checked first
    assert blocker.read_bytes() == b"not an image, and not to be touched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.nii.gz"]


def test_synth_names_the_file_at_fault_never_a_hidden_one(tmp_path, capsys, monkeypatch):
    """Seen by hand: `synth afile/s` named `afile/s/<case>: cannot be written (Not a directory)`, and an MSD cohort
    on a full disk named its hidden staging file `imagesTr/.BRATS_006.staged.nii.gz`, which is removed."""
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    code, _, err = run_cli(capsys, "synth", blocker / "sub", "--cases", "1", "--shape", "24", "24", "24")
    assert code == 2
    _one_error(err, f"{blocker / 'sub'}: lies inside {blocker}, which is a file")

    _disk_full_on_the_second_label(monkeypatch)
    out = tmp_path / "msd"
    code, _, err = run_cli(capsys, "synth", out, "--cases", "3", "--shape", "24", "24", "24", "--layout", "msd")
    assert code == 2
    assert _one_error(err, "no space left").startswith(f"error: {out / 'labelsTr' / 'BRATS_002.nii.gz'}: "), err
