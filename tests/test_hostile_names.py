"""Hostile names through every command that writes a page, a file name or a table (issue 25).

Names with quotes, ``<!--``, ``</script>``, ``..``, U+2028 and 300 characters are given where a
user can give a name: case folders of a dataset, ``--case-id``, ``NAME=`` of runs and prediction
folders, ``MODEL:SPLIT=`` of evaluations. Each command either refuses the name in one line (a name
that cannot be a file name: a path, ``..``, over 200 bytes) or keeps it exactly: the output file is
``<name>.<suffix>`` inside the output folder, a CSV reads back to the same name, a page holds it as
text only (no ``<!--``, no extra ``</script``, no raw U+2028 in a script). Nothing is ever written
outside the named output. Tiny synthetic cases; a few seconds. The same names in a real browser:
``tests/reporting/test_viewer.py::test_hostile_names_leave_the_page_working_in_headless_chromium``.
"""

from __future__ import annotations

import csv
import html.parser
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from glioseg.evaluation import read_per_case

QUOTES = "quote \" and ' "
COMMENT = "<!--<script>"
SEPARATOR = "line\u2028sep\u2029"
PUNCTUATION = "a,b;c|d=e"
LONG_VALID = "y" * 190  # the longest kind a case folder can hold: <id>_flair.nii.gz fits 255 bytes
SCRIPT_END = "</script><b>"
DOTDOT = ".."
LONG = "x" * 300

FILE_NAMES = [QUOTES, COMMENT, SEPARATOR, PUNCTUATION, LONG_VALID]
"""Names that can be a file or folder name: kept exactly."""

NOT_FILE_NAMES = [SCRIPT_END, DOTDOT, LONG]
"""Names that cannot (a '/', '..', over 200 bytes): refused wherever they would name a file."""

VIEWER_SCRIPTS = (
    (Path(__file__).resolve().parents[1] / "src/glioseg/reporting/assets/viewer.html").read_text().count("</script")
)
"""Script elements of the viewer page's template."""


def _errors(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A BraTS 2018-layout dataset whose case folders carry the hostile names that can be file names."""
    from conftest import BRATS_AFFINE, save_nifti, tiny_case_arrays

    root = tmp_path_factory.mktemp("hostile") / "data"
    for seed, case_id in enumerate(FILE_NAMES):
        folder = root / case_id
        folder.mkdir(parents=True)
        images, seg = tiny_case_arrays((20, 22, 24), seed)
        for key, data in {**images, "seg": seg}.items():
            save_nifti(folder / f"{case_id}_{key}.nii.gz", data, BRATS_AFFINE)
    return root


def _page_is_inert(page: str, scripts: int, names: list[str] = ()) -> None:
    """No name changes the page's structure: no comment, exactly the template's ``scripts`` script
    elements, no raw U+2028 in a script; each of ``names`` shows as text (HTML-escaped)."""
    assert "<!--" not in page
    assert page.lower().count("</script") == scripts
    for script in re.findall(r"<script[^>]*>(.*?)</script>", page, re.DOTALL):
        assert "\u2028" not in script and "\u2029" not in script
    texts: list[str] = []

    class Text(html.parser.HTMLParser):
        def handle_data(self, data: str) -> None:
            texts.append(data)

    Text(convert_charrefs=True).feed(page)
    text = "".join(texts)
    for name in names:
        assert name in text, name


def test_predict_and_preprocess_keep_a_name_or_refuse_it_in_one_line(tmp_path, dataset, capsys, tiny_model):
    first = dataset / FILE_NAMES[0]
    files = [a for m in ("flair", "t1", "t1ce", "t2") for a in (f"--{m}", first / f"{FILE_NAMES[0]}_{m}.nii.gz")]
    before = _tree(dataset)
    for name in FILE_NAMES + NOT_FILE_NAMES:
        out, cache = tmp_path / "out", tmp_path / "cache"
        code, _, err = run_cli(
            capsys,
            "predict",
            *files,
            "--case-id",
            name,
            "-o",
            out,
            "--model",
            tiny_model,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--quiet",
        )
        code2, _, err2 = run_cli(
            capsys,
            "preprocess",
            *files,
            "--case-id",
            name,
            "--out",
            cache,
            "--preset",
            "cpu",
            "--set",
            "preprocess.target_spacing=null",
            "--quiet",
            "--workers",
            "1",
        )
        if name in NOT_FILE_NAMES:
            assert (
                code == code2 == 2
                and len(_errors(err)) == len(_errors(err2)) == 1
                and "case id" in err
                and "case id" in err2
            )
            assert not out.exists() and not cache.exists()
        else:
            assert code == code2 == 0, (err, err2)
            assert sorted(p.name for p in out.iterdir()) == [f"{name}.nii.gz"]
            assert sorted(p.name for p in cache.iterdir()) == sorted([f"{name}.json", f"{name}.npz", "preset.json"])
            assert json.loads((cache / f"{name}.json").read_text())["case_id"] == name
            shutil.rmtree(out)
            shutil.rmtree(cache)
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "written outside the output"
    assert _tree(dataset) == before


def test_evaluate_report_view_and_inspect_keep_every_name(tmp_path, dataset, capsys, tiny_model):
    before = _tree(dataset)
    preds = tmp_path / "preds"
    code, _, err = run_cli(
        capsys, "predict", dataset, "-o", preds, "--model", tiny_model, "--device", "cpu", "--threads", "1", "--quiet"
    )
    assert code == 0, err
    assert sorted(p.name for p in preds.iterdir()) == sorted(f"{n}.nii.gz" for n in FILE_NAMES)

    # evaluate: the table reads back to the same case ids
    evaluation = tmp_path / "eval"
    code, out, err = run_cli(
        capsys, "evaluate", "--pred", preds, "--ref", dataset, "-o", evaluation, "--workers", "1", "--quiet"
    )
    assert code == 0, err
    assert sorted(row["case"] for row in read_per_case(evaluation / "per_case.csv")) == sorted(FILE_NAMES)

    # inspect: one line per case count, the names printed as they are
    code, out, err = run_cli(capsys, "inspect", dataset)
    assert code == 0 and "Traceback" not in err and f"cases:       {len(FILE_NAMES)}" in out

    # report: hostile run, prediction and split names, and the hostile case ids of --cases
    runs = []
    for i, given in enumerate([*FILE_NAMES, SCRIPT_END.replace("/", "|"), DOTDOT, LONG]):
        name = given.replace("=", "-")  # NAME=RUN: no '/' or '=' in NAME
        run = tmp_path / "runs" / f"run{i}"
        run.mkdir(parents=True)
        run.joinpath("metrics.csv").write_text("epoch,train_loss\n1,1.0\n2,0.5\n")
        runs.append(f"{name}={run}")
    report = tmp_path / "report"
    code, _, err = run_cli(
        capsys, "report", *runs, "-o", report, "--cases", dataset, "--num-cases", str(len(FILE_NAMES)),
        "--pred", f"{COMMENT}={preds}", "--pred", f"{SEPARATOR}={preds}", "--eval", f"{QUOTES}:{LONG}={evaluation}",
    )
    assert code == 0, err
    page = (report / "report.html").read_text()
    _page_is_inert(page, 0, [*FILE_NAMES, SCRIPT_END.replace("/", "|"), LONG])
    written = sorted(p.name for p in report.iterdir())
    assert all(len(n.encode()) <= 120 and re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in written), written
    assert len([n for n in written if n.startswith("curves_")]) == len(runs)  # one file per run
    assert len([n for n in written if n.startswith("viewer_")]) == len(FILE_NAMES)  # one per case, none shared
    markdown = (report / "report.md").read_text()
    assert "<!--" not in markdown and "<script" not in markdown and "\u2028" not in markdown
    for viewer in report.glob("viewer_*.html"):
        _page_is_inert(viewer.read_text(), VIEWER_SCRIPTS)

    # view: every NAME= that can be given on the command line (a '/' makes it a path), and a title
    pred_file = next(preds.iterdir())
    names = [QUOTES, COMMENT, SEPARATOR, DOTDOT, LONG, "<img src onerror>"]  # NAME=FILE: no "/" or "=" in NAME
    page_path = tmp_path / "page.html"
    code, _, err = run_cli(
        capsys, "view", dataset / COMMENT, *(a for n in names for a in ("--pred", f"{n}={pred_file}")), "-o", page_path
    )
    assert code == 0, err
    view_page = page_path.read_text()
    _page_is_inert(view_page, VIEWER_SCRIPTS, [COMMENT])  # the case id is the page's title
    data = json.loads(
        re.search(r'<script id="glioseg-data" type="application/json">(.*?)</script>', view_page, re.DOTALL).group(1)
    )
    assert [layer["name"] for layer in data["labelmaps"]] == ["reference", *names]
    assert _tree(dataset) == before  # no input touched


LONGEST_FOLDER_ID = "L" * 239
"""The longest case id a BraTS case folder can hold (``<id>_flair.nii.gz`` is 255 bytes)."""


def test_train_and_cv_train_keep_every_case_id(tmp_path, dataset, capsys):
    """Hostile case folders through ``train --data`` and ``cv train`` + ``cv report``: the cache holds
    ``<id>.npz``/``<id>.json``, the split and the out-of-fold table name each case as it is, the predictions are
    ``<id>.nii.gz``, and nothing is written outside the named folders. ``</script>``, ``..`` and 300 characters
    cannot be case folders (a '/', a parent link, a name over 255 bytes), so the longest name a folder can hold
    stands in for them: its cache write failed on the temporary name ('File name too long') and the case was left
    out of training. Tiny network, 1 epoch of 16^3 patches, 2 folds; about 15 s on 2 busy cores."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    donor = data / FILE_NAMES[0]
    (data / LONGEST_FOLDER_ID).mkdir()
    for file in donor.iterdir():
        shutil.copy(file, data / LONGEST_FOLDER_ID / file.name.replace(FILE_NAMES[0], LONGEST_FOLDER_ID))
    names = sorted([*FILE_NAMES, LONGEST_FOLDER_ID])
    before = _tree(data)
    tiny = [
        "model.filters=[4,8]", "model.norm=none", "model.dropout=none", "preprocess.target_spacing=null",
        "train.samples_per_epoch=2", "train.batch_size=2",
    ]
    code, _, err = run_cli(
        capsys, "train", "--data", data, "--cache", tmp_path / "cache", "--run-dir", tmp_path / "run", "--preset",
        "cpu", "--model", "unet", "--epochs", "1", "--patch-size", "16", "16", "16", "--device", "cpu", "--threads",
        "1", "--quiet", *(a for item in tiny for a in ("--set", item)),
    )
    assert code == 0 and _errors(err) == [], err
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == sorted([*(f"{n}.npz" for n in names), *(f"{n}.json" for n in names), "preset.json"])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == names

    stage = tmp_path / "stage.yaml"
    stage.write_text(
        "preprocess: {modalities: [flair, t1, t1ce, t2], normalization: zscore, crop: brain, target_spacing: null}\n"
        "model: {name: unet, filters: [4, 8], norm: none, head: regions, dropout: none}\n"
        "train: {epochs: 1, batch_size: 2, sampling: patch, patch_size: [16, 16, 16], samples_per_epoch: 2, "
        "loss: dice_bce, optimizer: adamw, lr: 0.002, schedule: poly, amp: false, device: cpu, threads: 1}\n"
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("folds: 2\nsplit_seed: 7\nstages: [stage.yaml]\n")
    work = tmp_path / "work"
    code, _, err = run_cli(capsys, "cv", "train", "--preset", recipe, "--data", data, "--work", work, "--quiet")
    assert code == 0 and _errors(err) == [], err
    assert sorted(p.name for p in (work / "stage" / "pred").iterdir()) == sorted(f"{n}.nii.gz" for n in names)
    code, _, err = run_cli(capsys, "cv", "report", work, "-o", tmp_path / "cvreport", "--workers", "1")
    assert code == 0, err
    with (tmp_path / "cvreport" / "per_case.csv").open(newline="", encoding="utf-8") as table:
        assert sorted(row["case"] for row in csv.DictReader(table)) == names  # its columns are not all numbers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["data", "cache", "run", "stage.yaml", "recipe.yaml", "work", "cvreport"]
    )
    assert [p for p in tmp_path.rglob(".*")] == []  # no temporary file or staging folder left
    assert _tree(data) == before


def test_predict_names_a_case_whose_probabilities_file_name_is_too_long(tmp_path, dataset, capsys, tiny_model):
    """`<239 characters>_probabilities.npz` is 257 bytes: the case failed with a raw `OSError: [Errno 36]` from the
    clean-up, and a fix that sends the user to their images; now its own line says what is wrong, the other
    case is written, and nothing of the long one is left."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copytree(dataset / FILE_NAMES[0], data / FILE_NAMES[0])
    (data / LONGEST_FOLDER_ID).mkdir()
    for file in (dataset / FILE_NAMES[0]).iterdir():
        shutil.copy(file, data / LONGEST_FOLDER_ID / file.name.replace(FILE_NAMES[0], LONGEST_FOLDER_ID))
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "predict", data, "-o", out, "--model", tiny_model, "--save-probabilities", "--device", "cpu",
        "--threads", "1", "--quiet",
    )
    assert code == 1
    [line] = _errors(err)
    assert f"{LONGEST_FOLDER_ID}_probabilities.npz: cannot be written: its name of 257 bytes is too long" in line
    assert line.count("Fix:") == 1 and "rename its folder to a shorter case id" in line
    kept = FILE_NAMES[0]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{kept}.nii.gz", f"{kept}_probabilities.npz"])
