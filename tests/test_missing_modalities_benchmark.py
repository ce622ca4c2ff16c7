"""``benchmarks/missing_modalities.py`` on a tiny synthetic cohort with two tiny fold models."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.synth import write_cohort
from glioseg.evaluation import evaluate
from glioseg.inference.predictor import read_stamp
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
    assert bench.main(["--runs", str(folds / "runs_0.5"), "--data", str(folds / "raw"), "--work", str(work), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "subsets.csv")))
    assert [r["subset"] for r in rows] == [bench.subset_name(s) for s in bench.subsets(("flair", "t1", "t1ce", "t2"))]
    assert all(r["cases"] == "4" for r in rows)  # 2 folds x 2 held-out cases, each case once
    assert float(rows[0]["change_wt"]) == 0.0
    # the table's numbers are glioseg evaluate's, on predictions made without the hidden modalities
    direct = evaluate(work / "t1+t2", folds / "raw", workers=1)
    row = next(r for r in rows if r["subset"] == "t1+t2")
    assert float(row["dice_tc"]) == pytest.approx(direct.summary["dice_tc"]["mean"], abs=5e-4)
    assert all(read_stamp(p).endswith(" inputs=t1,t2") for p in (work / "t1+t2").glob("*.nii.gz"))
    per_case = list(csv.DictReader(open(out / "per_case.csv")))
    assert len(per_case) == 15 * 4
    table = (out / "subsets.md").read_text()
    assert "| FLAIR, T1, T1ce, T2 | 4 |" in table and "| T1ce |" in table
    # a rerun predicts nothing again
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.nii.gz")}
    assert bench.main(["--runs", str(folds / "runs_0.5"), "--data", str(folds / "raw"), "--work", str(work), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.nii.gz")} == stamps


def test_a_model_without_dropout_is_scored_on_all_four_only(folds, tmp_path):
    out = tmp_path / "out"
    runs = [str(folds / "runs_0" / "fold0"), str(folds / "runs_0" / "fold1")]
    assert bench.main(["--runs", *runs, "--data", str(folds / "raw"), "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "subsets.csv")))
    assert rows[0]["cases"] == "4" and rows[0]["dice_wt"]
    assert all(r["cases"] == "0" and "without modality dropout" in r["note"] for r in rows[1:])
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["flair+t1+t1ce+t2"]
    table = (out / "subsets.md").read_text()
    assert "| T1, T1ce | 0 | - |" in table and "Rows without scores: not predicted (fold1 was trained without modality dropout)." in table


def test_a_case_held_out_twice_is_refused(folds, tmp_path):
    with pytest.raises(SystemExit, match="also held out by"):
        bench.held_out([folds / "runs_0.5" / "fold0", folds / "runs_0" / "fold0"])
