"""``benchmarks/missing_modalities.py`` on a tiny synthetic cohort with two tiny fold models."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.splits import load_split
from glioseg.data.synth import write_cohort
from glioseg.evaluation import evaluate
from glioseg.inference.predictor import Predictor, read_stamp
from glioseg.training.loop import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "missing_modalities.py"
spec = importlib.util.spec_from_file_location("missing_modalities", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)

TINY = [
    "preprocess.target_spacing=null", "model.name=unet", "model.filters=[4,8]", "model.norm=none", "model.dropout=none",
    "train.patch_size=[16,16,16]", "train.samples_per_epoch=4", "train.batch_size=2", "train.epochs=1",
    "train.val_every=1", "train.threads=1", "train.device=cpu", "train.folds=2",
]


def test_fifteen_subsets_largest_first():
    found = bench.subsets(("flair", "t1", "t1ce", "t2"))
    assert len(found) == len(set(found)) == 15
    assert found[0] == ("flair", "t1", "t1ce", "t2") and found[-1] == ("t2",)
    assert [len(s) for s in found] == [4, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmb")
    write_cohort(root / "raw", cases=4, shape=(24, 26, 28), layout="brats2018", seed=8)
    for dropout in ("0.5", "0"):
        config = load_config("cpu", [*TINY, f"augment.modality_dropout={dropout}"])
        preprocess_dataset(discover(root / "raw").cases, config.preprocess, root / "cache", progress=False)
        for fold in (0, 1):
            config = load_config("cpu", [*TINY, f"augment.modality_dropout={dropout}", f"train.fold={fold}"])
            train(config, root / "cache", root / f"runs_{dropout}" / f"fold{fold}", progress=False)
    return root


def test_every_case_is_scored_out_of_fold_for_every_subset(folds, tmp_path, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    assert (
        bench.main(
            ["--runs", str(folds / "runs_0.5"), "--data", str(folds / "raw"), "--work", str(work), "--out", str(out)]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "subsets.csv").read_text().splitlines()))
    assert [r["subset"] for r in rows] == [bench.subset_name(s) for s in bench.subsets(("flair", "t1", "t1ce", "t2"))]
    assert all(r["cases"] == "4" for r in rows)  # 2 folds x 2 held-out cases, each case once
    assert float(rows[0]["change_wt"]) == 0.0
    # the table's numbers are glioseg evaluate's, on predictions made without the hidden modalities
    direct = evaluate(work / "t1+t2", folds / "raw", workers=1)
    row = next(r for r in rows if r["subset"] == "t1+t2")
    assert float(row["dice_tc"]) == pytest.approx(direct.summary["dice_tc"]["mean"], abs=5e-4)
    assert all(read_stamp(p).endswith(" inputs=t1,t2") for p in (work / "t1+t2").glob("*.nii.gz"))
    per_case = list(csv.DictReader((out / "per_case.csv").read_text().splitlines()))
    assert len(per_case) == 15 * 4
    table = (out / "subsets.md").read_text()
    assert "| FLAIR, T1, T1ce, T2 | 4 |" in table and "| T1ce |" in table
    # a rerun predicts nothing again
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.nii.gz")}
    assert (
        bench.main(
            ["--runs", str(folds / "runs_0.5"), "--data", str(folds / "raw"), "--work", str(work), "--out", str(out)]
        )
        == 0
    )
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.nii.gz")} == stamps
    # one fold of the same work folder: only its own held-out cases are scored
    assert (
        bench.main(
            [
                "--runs",
                str(folds / "runs_0.5" / "fold0"),
                "--data",
                str(folds / "raw"),
                "--work",
                str(work),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {r["cases"] for r in csv.DictReader((out / "subsets.csv").read_text().splitlines())} == {"2"}


def test_a_model_without_dropout_is_scored_on_all_four_only(folds, tmp_path):
    out = tmp_path / "out"
    runs = [str(folds / "runs_0" / "fold0"), str(folds / "runs_0" / "fold1")]
    assert (
        bench.main(["--runs", *runs, "--data", str(folds / "raw"), "--work", str(tmp_path / "work"), "--out", str(out)])
        == 0
    )
    rows = list(csv.DictReader((out / "subsets.csv").read_text().splitlines()))
    assert rows[0]["cases"] == "4" and rows[0]["dice_wt"]
    assert all(r["cases"] == "0" and "without modality dropout" in r["note"] for r in rows[1:])
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["flair+t1+t1ce+t2"]
    table = (out / "subsets.md").read_text()
    assert (
        "| T1, T1ce | 0 | - |" in table
        and "Rows without scores: not predicted (fold1 was trained without modality dropout)." in table
    )


def test_a_case_held_out_twice_is_refused(folds, tmp_path):
    with pytest.raises(SystemExit, match="also held out by"):
        bench.held_out([folds / "runs_0.5" / "fold0", folds / "runs_0" / "fold0"])


def _without(case, subset):
    return dataclasses.replace(case, images={m: p for m, p in case.images.items() if m in subset})


def test_read_once_gives_each_subset_the_image_its_own_read_and_preprocessing_give(folds):
    run = folds / "runs_0.5" / "fold0"
    case = bench.load_data([folds / "raw"])[load_split(run / "split.json")["val"][0]]
    plain = Predictor.from_checkpoints([run / "last.pt"], device="cpu", threads=1)
    once = bench.load_predictor(run, bench.Settings())
    once.hold(case)
    assert once.held is not None and once.held.modalities == ("flair", "t1", "t1ce", "t2")
    for subset in bench.subsets(("flair", "t1", "t1ce", "t2"))[1:]:
        expected = plain.preprocess(plain.read(_without(case, subset)))
        got = once.preprocess(once.read(_without(case, subset)))
        assert got.crop == expected.crop and np.array_equal(got.image, expected.image), subset
        absent = [c for c, m in enumerate(("flair", "t1", "t1ce", "t2")) if m not in subset]
        assert not got.image[absent].any() and all(got.image[c].any() for c in range(4) if c not in absent)
    assert once.reused > 0  # the synthetic cases' brain is the same in every channel: the shortcut was taken
    once.release()
    assert once.held is None and once.read(_without(case, ("t2",))).modalities == ("t2",)


def test_several_dataset_folders_and_a_forced_subset(folds, tmp_path):
    names = sorted(p.name for p in (folds / "raw").iterdir() if p.is_dir())
    for part, chosen in (("a", names[:2]), ("b", names[2:])):
        for name in chosen:
            shutil.copytree(folds / "raw" / name, tmp_path / part / name)
    out, work = tmp_path / "out", tmp_path / "work"
    runs = str(folds / "runs_0")
    args = ["--runs", runs, "--data", str(tmp_path / "a"), str(tmp_path / "b"), "--work", str(work), "--out", str(out)]
    assert bench.main([*args, "--subsets", "flair+t1+t1ce+t2", "t1ce+t2", "--force-missing"]) == 0
    rows = {r["subset"]: r for r in csv.DictReader((out / "subsets.csv").read_text().splitlines())}
    assert (
        rows["flair+t1+t1ce+t2"]["cases"] == rows["t1ce+t2"]["cases"] == "4" and rows["flair+t1+t1ce+t2"]["note"] == ""
    )
    assert "forced" in rows["t1ce+t2"]["note"] and rows["t1"]["cases"] == "0"
    assert sorted(p.name for p in work.iterdir()) == ["flair+t1+t1ce+t2", "t1ce+t2"]
    whole = evaluate(work / "t1ce+t2", folds / "raw", workers=1)  # one folder holding all four references
    assert float(rows["t1ce+t2"]["dice_wt"]) == pytest.approx(whole.summary["dice_wt"]["mean"], abs=5e-4)
    assert "| T1ce, T2 (forced) | 4 |" in (out / "subsets.md").read_text()
    with pytest.raises(SystemExit, match=r"held-out case\(s\) .* not found"):  # a dataset folder left out
        bench.main([*args[:3], str(tmp_path / "a"), *args[5:], "--subsets", "t1ce+t2", "--force-missing"])


def test_the_table_dice_is_glioseg_evaluate_s(folds, tmp_path):
    work = tmp_path / "work"
    assert (
        bench.main(
            [
                "--runs",
                str(folds / "runs_0.5"),
                "--data",
                str(folds / "raw"),
                "--work",
                str(work),
                "--subsets",
                "flair",
                "--predict-only",
            ]
        )
        == 0
    )
    rows = bench.dice_rows(work / "flair", bench.load_data([folds / "raw"]), {})
    direct = {r["case"]: r for r in evaluate(work / "flair", folds / "raw", workers=1).rows}
    assert sorted(direct) == [r["case"] for r in rows] and len(rows) == 4
    for row in rows:
        assert all(row[f"dice_{r}"] == direct[row["case"]][f"dice_{r}"] for r in ("wt", "tc", "et"))
