"""``glioseg cv train / report / pack`` end to end on synthetic cohorts, and what they refuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

TINY_STAGE = {
    "preprocess": {
        "modalities": ["flair", "t1", "t1ce", "t2"],
        "normalization": "zscore",
        "crop": "brain",
        "target_spacing": [2.0, 2.0, 2.0],
    },
    "model": {"name": "resunet", "filters": [4, 8], "norm": "instance", "head": "regions", "dropout": "none"},
    "train": {
        "epochs": 1,
        "batch_size": 2,
        "sampling": "patch",
        "patch_size": [16, 16, 16],
        "samples_per_epoch": 2,
        "loss": "dice_bce",
        "optimizer": "adamw",
        "lr": 0.002,
        "schedule": "poly",
        "amp": False,
        "device": "cpu",
        "threads": 1,
    },
}


def _recipe(folder: Path, *, lr2: float = 0.001, epochs: int = 1) -> Path:
    """A two-stage recipe file: a tiny residual U-Net, then the same from its weights at ``lr2``."""
    folder.mkdir(parents=True, exist_ok=True)
    stage = {**TINY_STAGE, "train": {**TINY_STAGE["train"], "epochs": epochs}}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(stage))
    recipe = {
        "folds": 3,
        "split_seed": 7,
        "stages": ["tiny.yaml", {"name": "second", "preset": "tiny.yaml", "set": {"train.lr": lr2}}],
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return folder / "recipe.yaml"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from glioseg.data.synth import write_cohort

    root = tmp_path_factory.mktemp("cv") / "data"
    write_cohort(root, cases=6, shape=(32, 32, 32), layout="brats2021", seed=3)
    return root


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 3-fold, two-stage cross-validation of the cohort: ``(recipe, work folder)``."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train

    base = tmp_path_factory.mktemp("cvwork")
    recipe = _recipe(base / "recipes")
    run_cv_train(load_recipe(recipe), [cohort], base / "work", threads=1, progress=False)
    return recipe, base / "work"


def test_cv_train_trains_every_fold_of_both_stages_and_predicts_each_held_out_case_once(trained, cohort):
    from glioseg.checkpoint import load_checkpoint
    from glioseg.cv.workdir import open_work
    from glioseg.data.io import read_volume

    _, work_path = trained
    work = open_work(work_path)
    assert work.stage_names == ["tiny", "second"] and work.folds == 3
    held_out = []
    for fold, split in enumerate(work.splits()):
        for stage in ("tiny", "second"):
            run = work.run_dir(stage, fold)
            assert (run / "finished.json").is_file()
            assert (
                json.loads((run / "split.json").read_text())["val"] == split["val"]
            )  # the folds are the work folder's
        # the second stage started from the first stage's weights of the same fold
        config = yaml.safe_load((work.run_dir("second", fold) / "config.yaml").read_text())
        assert config["train"]["init_from"] == str(work.run_dir("tiny", fold) / "last.pt")
        assert config["train"]["lr"] == 0.001 and config["train"]["fold"] == fold
        held_out += split["val"]
    assert sorted(held_out) == sorted(p.name for p in cohort.iterdir())  # every case held out exactly once
    predictions = sorted(p.name for p in work.pred_dir("second").glob("*.nii.gz"))
    assert predictions == sorted(f"{c}.nii.gz" for c in held_out)
    # on the case's own grid
    case = sorted(cohort.iterdir())[0]
    assert read_volume(work.pred_dir("second") / f"{case.name}.nii.gz").data.shape == (32, 32, 32)
    assert load_checkpoint(work.run_dir("second", 0) / "last.pt")["epoch"] == 1
    assert not work.pred_dir("tiny").exists()  # only the last stage predicts


def test_a_second_cv_train_skips_finished_folds(trained, cohort, capsys):
    recipe, work = trained
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("last.pt")}
    code, _out, err = run_cli(
        capsys, "cv", "train", "--preset", recipe, "--data", cohort, "--work", work, "--quiet", "--threads", "1"
    )
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in work.rglob("last.pt")} == stamps


def test_an_interrupted_fold_continues_from_its_last_checkpoint(cohort, tmp_path, monkeypatch):
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train
    from glioseg.training import loop

    recipe = load_recipe(_recipe(tmp_path / "recipes", epochs=2))
    original, calls = loop.Trainer.train_epoch, []

    def interrupted(self):
        calls.append(self.epoch)
        if len(calls) == 2:  # the second epoch of the first stage: epoch 1 is saved in last.pt
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(loop.Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cv_train(recipe, [cohort], tmp_path / "work", folds=[0], threads=1, progress=False)
    run = tmp_path / "work" / "tiny" / "fold0"
    assert (run / "last.pt").is_file() and not (run / "finished.json").exists()
    monkeypatch.setattr(loop.Trainer, "train_epoch", original)
    resumed = []
    monkeypatch.setattr(
        loop.Trainer,
        "load_state",
        lambda self, state, _orig=loop.Trainer.load_state: (resumed.append(state["epoch"]), _orig(self, state))[1],
    )
    run_cv_train(recipe, [cohort], tmp_path / "work", folds=[0], threads=1, progress=False)
    assert resumed == [1]  # continued after epoch 1, not from scratch
    history = [row["epoch"] for row in yaml.safe_load(json.dumps(_csv_rows(run / "metrics.csv")))]
    assert history == ["1", "2"]
    assert json.loads((run / "finished.json").read_text())["epochs"] == 2


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_work_folder_of_another_recipe_or_dataset_is_refused_naming_the_difference(trained, cohort, tmp_path, capsys):
    from glioseg.data.synth import write_cohort

    recipe, work = trained
    other = _recipe(tmp_path / "other", lr2=0.0003)
    code, _, err = run_cli(capsys, "cv", "train", "--preset", other, "--data", cohort, "--work", work, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "stage 2 (second)" in err and "train.lr 0.001 vs 0.0003" in err and "Fix:" in err
    more = tmp_path / "more"
    write_cohort(more, cases=7, shape=(32, 32, 32), layout="brats2021", seed=3)
    code, _, err = run_cli(capsys, "cv", "train", "--preset", recipe, "--data", more, "--work", work, "--quiet")
    assert code == 2 and "another dataset" in err and "BraTS2021_00006" in err
    code, _, err = run_cli(
        capsys, "cv", "train", "--preset", recipe, "--data", cohort, "--work", work, "--folds", "2", "--quiet"
    )
    assert code == 2 and "3 folds" in err and "2" in err


def test_a_work_folder_inside_the_data_is_refused_before_any_work(cohort, tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    before = sorted(p.name for p in cohort.iterdir())
    code, _, err = run_cli(
        capsys, "cv", "train", "--preset", recipe, "--data", cohort, "--work", cohort / "work", "--quiet"
    )
    assert code == 2 and "inside the dataset folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in cohort.iterdir()) == before


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_a_work_folder_that_is_or_lies_under_a_file_is_refused_naming_it(cohort, tmp_path, capsys, where):
    """Before: a work folder under a file was refused through its record
    (`WORK/cv.json: cannot be written (Not a directory)`)."""
    recipe = _recipe(tmp_path / "r")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    work = blocker if where == "file" else blocker / "work"
    code, _, err = run_cli(capsys, "cv", "train", "--preset", recipe, "--data", cohort, "--work", work, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    problem = "is a file" if where == "file" else f"lies inside {blocker}, which is a file"
    assert err.startswith(f"error: {work}: {problem}"), err
    assert blocker.read_text() == "x"


def test_report_scores_out_of_fold_with_a_nested_choice_and_writes_its_files(trained, tmp_path, capsys):
    from glioseg.cv.report import load_candidates, setting_key
    from glioseg.cv.workdir import open_work

    _, work = trained
    candidates = tmp_path / "candidates.yaml"
    candidates.write_text(
        "candidates:\n  nothing: {}\n  top1: {min_component_size: 1, max_components: 1}\n  et-rule: {et_threshold: "
        "50}\n"
    )
    code, _out, err = run_cli(
        capsys, "cv", "report", work, "-o", tmp_path / "report", "--candidates", candidates, "--workers", "1"
    )
    assert code == 0, err
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert files == {"per_case.csv", "summary.md", "summary.csv", "choice.json", "dice_per_case.png"}
    choice = json.loads((tmp_path / "report" / "choice.json").read_text())
    assert set(choice["nested"]) == {"0", "1", "2"} and choice["all_cases"] in {"nothing", "top1", "et-rule"}
    # the per-case table's post-processed scores are those of the candidate chosen for the case's fold
    rows = _csv_rows(tmp_path / "report" / "per_case.csv")
    assert len(rows) == 6
    table = load_candidates(candidates)
    work_folder = open_work(work)
    for row in rows:
        cached = json.loads((work_folder.stage_dir("second") / "scores" / f"{row['case']}.json").read_text())["scores"]
        chosen = table[choice["nested"][row["fold"]]]
        assert float(row["pp_dice_wt"]) == pytest.approx(cached[setting_key(chosen)]["dice_wt"], abs=1e-5)
        assert float(row["raw_dice_wt"]) == pytest.approx(cached[setting_key(table["nothing"])]["dice_wt"], abs=1e-5)
        assert row["postprocessing"] == choice["nested"][row["fold"]]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "never saw it" in summary and "nested" in summary and "lesion-wise `brats2023-gli`" in summary


def test_report_matches_glioseg_evaluate_on_the_raw_predictions(trained, tmp_path, capsys):
    """The report's raw scores (computed on a crop around the tumours) are evaluate's (on the whole volume)."""
    _, work = trained
    code, _, err = run_cli(capsys, "cv", "report", work, "-o", tmp_path / "report", "--workers", "1")
    assert code == 0, err
    data = Path(json.loads((work / "cv.json").read_text())["roots"][0])
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--pred",
        work / "second" / "pred",
        "--ref",
        data,
        "-o",
        tmp_path / "eval",
        "--workers",
        "1",
        "--quiet",
    )
    assert code == 0, err
    ours = {row["case"]: row for row in _csv_rows(tmp_path / "report" / "per_case.csv")}
    theirs = {row["case"]: row for row in _csv_rows(tmp_path / "eval" / "per_case.csv")}
    assert set(ours) == set(theirs)
    for case, row in theirs.items():
        for key in (
            "dice_wt",
            "dice_tc",
            "dice_et",
            "hd95_wt",
            "hd95_et",
            "sensitivity_tc",
            "lesion_dice_wt",
            "lesion_dice_et",
            "lesion_hd95_tc",
        ):
            assert float(ours[case][f"raw_{key}"]) == pytest.approx(float(row[key]), rel=1e-4, abs=1e-4), (case, key)


def test_report_refuses_a_work_folder_whose_folds_have_not_all_predicted(cohort, tmp_path, capsys):
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train

    run_cv_train(
        load_recipe(_recipe(tmp_path / "r")), [cohort], tmp_path / "work", folds=[1], threads=1, progress=False
    )
    code, _, err = run_cli(capsys, "cv", "report", tmp_path / "work", "-o", tmp_path / "report")
    assert code == 2 and "no out-of-fold prediction of 4 case(s)" in err and "folds 0, 2" in err and "cv train" in err
    assert not (tmp_path / "report").exists()


def test_pack_holds_the_folds_and_the_chosen_post_processing_and_predict_runs_it_as_an_ensemble(
    trained, cohort, tmp_path, capsys
):
    from glioseg.checkpoint import load_checkpoint
    from glioseg.data.io import read_volume
    from glioseg.inference.predictor import Predictor, resolve_checkpoints

    _, work = trained
    assert run_cli(capsys, "cv", "report", work, "-o", tmp_path / "report", "--workers", "1")[0] == 0
    code, _out, err = run_cli(capsys, "cv", "pack", work, "-o", tmp_path / "model")
    assert code == 0, err
    model = tmp_path / "model"
    assert sorted(p.name for p in model.iterdir()) == [
        "MODEL_CARD.md",
        "checksums.json",
        "fold0.pt",
        "fold1.pt",
        "fold2.pt",
        "pack.json",
    ]
    choice = json.loads((tmp_path / "report" / "choice.json").read_text())
    for member in ("fold0.pt", "fold2.pt"):
        payload = load_checkpoint(model / member)
        assert payload["config"]["postprocess"] == choice["all_cases_setting"]
        assert payload["config"]["train"]["init_from"] is None
        assert all(
            t.dtype.is_floating_point is False or t.dtype == __import__("torch").float16
            for t in payload["model"].values()
        )
    card = (model / "MODEL_CARD.md").read_text()
    assert "an ensemble of 3 fold models" in card and "6 cases, 3 folds" in card and "Out-of-fold" in card
    # predict --model FOLDER: the three members, averaged
    assert [p.name for p in resolve_checkpoints([model])] == ["fold0.pt", "fold1.pt", "fold2.pt"]
    code, _, err = run_cli(
        capsys, "predict", cohort, "-o", tmp_path / "pred", "--model", model, "--quiet", "--backend", "torch"
    )
    assert code == 0, err
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 6
    predictor = Predictor.from_checkpoints(resolve_checkpoints([model]), "cpu", backend="torch")
    assert len(predictor.models) == 3
    case = sorted(cohort.iterdir())[0].name
    assert read_volume(tmp_path / "pred" / f"{case}.nii.gz").data.shape == (32, 32, 32)


def test_export_of_a_pack_exports_every_member_and_predicts_the_same_labels(trained, cohort, tmp_path, capsys):
    from glioseg.inference.backends import available_backends

    if "openvino" not in available_backends():
        pytest.skip("OpenVINO is not installed")
    _, work = trained
    assert (
        run_cli(capsys, "cv", "pack", work, "-o", tmp_path / "model", "--postprocess", "none", "--fold", "0", "1")[0]
        == 0
    )
    code, _, err = run_cli(capsys, "export", tmp_path / "model", "--format", "openvino", "-o", tmp_path / "exported")
    assert code == 0, err
    manifest = json.loads((tmp_path / "exported" / "pack.json").read_text())
    assert manifest["members"] == ["fold0", "fold1"] and (tmp_path / "exported" / "fold1" / "export.json").is_file()
    for model, out in ((tmp_path / "model", "torch"), (tmp_path / "exported", "openvino")):
        code, _, err = run_cli(
            capsys, "predict", cohort, "-o", tmp_path / out, "--model", model, "--quiet", "--backend", out
        )
        assert code == 0, err
    from glioseg.data.io import read_volume

    for path in (tmp_path / "torch").glob("*.nii.gz"):
        a, b = read_volume(path, dtype=None).data, read_volume(tmp_path / "openvino" / path.name, dtype=None).data
        assert np.mean(a == b) > 0.999, path.name


def test_a_pack_with_an_altered_member_or_an_unlisted_checkpoint_is_refused(trained, tmp_path, capsys):
    _, work = trained
    assert (
        run_cli(capsys, "cv", "pack", work, "-o", tmp_path / "model", "--postprocess", "none", "--fold", "0", "1")[0]
        == 0
    )
    model = tmp_path / "model"
    data = bytearray((model / "fold1.pt").read_bytes())
    data[-100] ^= 0xFF
    (model / "fold1.pt").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "predict", work, "-o", tmp_path / "pred", "--model", model)
    assert code == 2 and "fold1.pt" in err and "checksum" in err
    assert not (tmp_path / "pred").exists()
    assert (
        run_cli(capsys, "cv", "pack", work, "-o", model, "--postprocess", "none", "--fold", "0", "--overwrite")[0] == 0
    )
    (model / "stray.pt").write_bytes((model / "fold0.pt").read_bytes())
    code, _, err = run_cli(capsys, "predict", work, "-o", tmp_path / "pred", "--model", model)
    assert code == 2 and "stray.pt" in err and "not listed" in err


def test_pack_overwrites_only_a_model_folder(trained, tmp_path, capsys):
    _, work = trained
    data = tmp_path / "not_a_model"
    data.mkdir()
    (data / "keep.txt").write_text("keep")
    code, _, err = run_cli(
        capsys, "cv", "pack", work, "-o", data, "--postprocess", "none", "--fold", "0", "--overwrite"
    )
    assert code == 2 and "is not a model folder" in err
    assert (data / "keep.txt").read_text() == "keep"
    assert run_cli(capsys, "cv", "pack", work, "-o", tmp_path / "model", "--postprocess", "none", "--fold", "0")[0] == 0
    assert (
        run_cli(
            capsys, "cv", "pack", work, "-o", tmp_path / "model", "--postprocess", "none", "--fold", "1", "--overwrite"
        )[0]
        == 0
    )
    assert json.loads((tmp_path / "model" / "pack.json").read_text())["members"] == ["fold1.pt"]


def test_pack_refuses_an_output_under_a_file_before_loading_a_checkpoint(trained, tmp_path, capsys, monkeypatch):
    """Before: it was refused only when the staging folder was made, after every checkpoint was loaded."""
    import glioseg.checkpoint

    _, work = trained
    loaded = lambda *args, **kwargs: pytest.fail("a checkpoint was loaded")  # noqa: E731
    monkeypatch.setattr(glioseg.checkpoint, "load_checkpoint", loaded)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "model"
    code, _, err = run_cli(capsys, "cv", "pack", work, "-o", out, "--postprocess", "none", "--fold", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {out}: lies inside {blocker}, which is a file"), err
    assert blocker.read_text() == "x"


def test_pack_refuses_unfinished_folds_and_a_missing_report(cohort, trained, tmp_path, capsys):
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train

    run_cv_train(
        load_recipe(_recipe(tmp_path / "r")), [cohort], tmp_path / "work", folds=[0], threads=1, progress=False
    )
    code, _, err = run_cli(capsys, "cv", "pack", tmp_path / "work", "-o", tmp_path / "model", "--postprocess", "none")
    assert code == 2 and "fold1" in err and "not finished" in err
    code, _, err = run_cli(capsys, "cv", "pack", tmp_path / "work", "-o", tmp_path / "model", "--fold", "0")
    assert code == 2 and "cv report" in err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("layout", ["brats2023", "msd"])
def test_other_layouts_run_through_cv_train_and_cv_report(layout, tmp_path, capsys):
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=4, shape=(32, 32, 32), layout=layout, seed=5)
    recipe = _recipe(tmp_path / "recipes")
    recipe.write_text(recipe.read_text().replace("folds: 3", "folds: 2"))
    code, _, err = run_cli(
        capsys,
        "cv",
        "train",
        "--preset",
        recipe,
        "--data",
        tmp_path / "data",
        "--work",
        tmp_path / "work",
        "--quiet",
        "--threads",
        "1",
    )
    assert code == 0, err
    code, _out, err = run_cli(capsys, "cv", "report", tmp_path / "work", "-o", tmp_path / "report", "--workers", "1")
    assert code == 0, err
    choice = json.loads((tmp_path / "report" / "choice.json").read_text())
    assert choice["rules"] == "brats2023-gli"
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert ("lesion-wise first" in summary) == (layout == "brats2023")
    # predictions in the source's label convention: ET is 3 in BraTS 2023 and MSD files, never 4
    preds = list((tmp_path / "work" / "second" / "pred").glob("*.nii.gz"))
    assert len(preds) == 4
    from glioseg.data.io import read_volume

    values = set(np.unique(np.concatenate([np.unique(read_volume(p, dtype=None).data) for p in preds])).tolist())
    assert 4 not in values


def test_the_model_trained_on_all_cases_packs_alone(cohort, trained, tmp_path, capsys):
    recipe = _recipe(tmp_path / "r")
    code, _, err = run_cli(
        capsys,
        "cv",
        "train",
        "--preset",
        recipe,
        "--data",
        cohort,
        "--work",
        tmp_path / "work",
        "--all",
        "--quiet",
        "--threads",
        "1",
    )
    assert code == 0, err
    split = json.loads((tmp_path / "work" / "second" / "all" / "split.json").read_text())
    assert len(split["train"]) == 6 and split["val"] == []
    code, _, err = run_cli(
        capsys, "cv", "pack", tmp_path / "work", "--all", "-o", tmp_path / "model", "--postprocess", "none"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "model" / "pack.json").read_text())["members"] == ["all.pt"]
    # the work folder of --all holds no folds: the choice and the scores come from the folds' report (--report),
    # as when they were trained elsewhere or their folder was lost
    code, _, err = run_cli(capsys, "cv", "pack", tmp_path / "work", "--all", "-o", tmp_path / "m2")
    assert code != 0 and "no cross-validation report" in err and "--report" in err
    _, folds_work = trained
    report = tmp_path / "report"
    assert run_cli(capsys, "cv", "report", folds_work, "-o", report, "--workers", "1")[0] == 0
    code, _, err = run_cli(capsys, "cv", "pack", tmp_path / "work", "--all", "-o", tmp_path / "m2", "--report", report)
    assert code == 0, err
    manifest = json.loads((tmp_path / "m2" / "pack.json").read_text())
    choice = json.loads((report / "choice.json").read_text())
    summary = json.loads((folds_work / "second" / "summary.json").read_text())  # what a pack in the folds' folder reads
    assert manifest["members"] == ["all.pt"] and manifest["postprocess"] == choice["all_cases_setting"]
    assert manifest["postprocess_choice"] == choice["all_cases"] and manifest["rules"] == summary["rules"]
    for key in ("out_of_fold", "out_of_fold_raw"):
        section = summary["postprocessed" if key == "out_of_fold" else "raw"]
        assert manifest[key].keys() == section.keys()
        assert all(manifest[key][k] == pytest.approx(v, rel=1e-5, abs=1e-9) for k, v in section.items())
    assert "Out-of-fold" in (tmp_path / "m2" / "MODEL_CARD.md").read_text()


def test_pack_refuses_a_report_of_another_stage_or_other_cases_naming_its_file(trained, tmp_path, capsys):
    _, work = trained
    report = tmp_path / "report"
    assert run_cli(capsys, "cv", "report", work, "-o", report, "--workers", "1")[0] == 0
    pack = ["cv", "pack", work, "-o", tmp_path / "model", "--fold", "0"]
    choice = json.loads((report / "choice.json").read_text())
    (report / "choice.json").write_text(json.dumps({**choice, "stage": "tiny"}))  # a report of the first stage
    code, _, err = run_cli(capsys, *pack, "--report", report)  # packs the last stage, 'second'
    assert code != 0 and str(report / "choice.json") in err and "reports stage tiny, not second" in err
    assert not (tmp_path / "model").exists()
    (report / "choice.json").write_text(json.dumps(choice))
    assert run_cli(capsys, *pack, "--report", report)[0] == 0
    rows = (report / "per_case.csv").read_text().splitlines()
    (report / "per_case.csv").write_text("\n".join(rows[:-1]) + "\n")  # one case left out
    code, _, err = run_cli(capsys, *pack, "--report", report, "--overwrite")
    assert code != 0 and str(report / "per_case.csv") in err and "1 not scored" in err
    (report / "summary.csv").unlink()
    code, _, err = run_cli(capsys, *pack, "--report", report, "--overwrite")
    assert code != 0 and str(report / "summary.csv") in err and "is missing" in err
    code, _, err = run_cli(capsys, *pack, "--report", report, "--postprocess", "none")
    assert code != 0 and "without the report folder" in err


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_sigterm_ends_the_fold_workers_and_leaves_no_temporary_file(cohort, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    recipe = _recipe(tmp_path / "r", epochs=200)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glioseg",
            "cv",
            "train",
            "--preset",
            str(recipe),
            "--data",
            str(cohort),
            "--work",
            str(tmp_path / "work"),
            "--workers",
            "2",
            "--threads",
            "1",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "work").glob("tiny/fold*/last.pt")):
        time.sleep(0.2)  # the workers are training
    workers = _children(process.pid)
    assert len(workers) >= 2, workers  # the two fold workers (and multiprocessing's resource tracker)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0
    time.sleep(0.5)
    alive = [
        w
        for w in workers
        if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0]
    ]
    assert alive == [], f"workers left running: {alive}"
    assert not [p for p in (tmp_path / "work").rglob("*") if ".tmp" in p.name], "a temporary file was left"
    assert "Traceback" not in err


def test_a_model_folder_whose_members_disagree_on_inputs_or_outputs_is_refused(trained, tiny_model, tmp_path, capsys):
    """A folder holding a regions-head fold model and a classes-head model (e.g. copied together by hand)."""
    import shutil

    from glioseg.checksums import write_checksums
    from glioseg.cv.pack import PACK

    _, work = trained
    assert run_cli(capsys, "cv", "pack", work, "-o", tmp_path / "model", "--postprocess", "none", "--fold", "0")[0] == 0
    model = tmp_path / "model"
    shutil.copy(tiny_model, model / "other.pt")
    manifest = json.loads((model / PACK).read_text())
    (model / PACK).write_text(json.dumps({**manifest, "members": ["fold0.pt", "other.pt"]}))
    write_checksums(model)
    code, _, err = run_cli(capsys, "predict", work, "-o", tmp_path / "pred", "--model", model)
    assert code == 2 and "other.pt" in err and ("head" in err or "preprocessing" in err)
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("workers", [2, pytest.param(1, marks=pytest.mark.slow)])
def test_a_failing_fold_lets_the_other_folds_finish_then_one_line_per_failure(cohort, tmp_path, capsys, workers):
    """Fold 0 cannot resume (its last.pt is damaged). Before, with --workers 2 its process stopped
    there, so fold 2 (the same process's next fold) was never trained, and the error named folds
    0 and 2; with one worker, folds 1 and 2 were never trained."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.workdir import find_cases, prepare_work

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "tiny.yaml").write_text(yaml.safe_dump(TINY_STAGE))
    (tmp_path / "r" / "recipe.yaml").write_text(yaml.safe_dump({"folds": 3, "split_seed": 7, "stages": ["tiny.yaml"]}))
    recipe = load_recipe(tmp_path / "r" / "recipe.yaml")
    work = prepare_work(tmp_path / "work", recipe, [cohort], find_cases([cohort], recipe.modalities))
    broken = work.run_dir("tiny", 0) / "last.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(
        capsys,
        "cv",
        "train",
        "--preset",
        tmp_path / "r" / "recipe.yaml",
        "--data",
        cohort,
        "--work",
        tmp_path / "work",
        "--workers",
        workers,
        "--threads",
        "1",
        "--quiet",
    )
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and errors[0].startswith("error: fold 0: ")
        and str(broken.parent) in errors[0]
        and "Fix:" in errors[0]
    ), err
    assert err.strip().splitlines()[-1].startswith("1 fold(s) failed, the others were trained"), err
    for fold in (1, 2):  # trained, and their held-out cases predicted
        assert (work.run_dir("tiny", fold) / "finished.json").is_file()
    held_out = [case for fold in (1, 2) for case in work.splits()[fold]["val"]]
    assert sorted(p.name for p in work.pred_dir("tiny").glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in held_out)
    assert broken.read_bytes() == b"not a checkpoint"


def test_pack_takes_folds_whose_configs_differ_only_by_a_key_added_since_and_refuses_a_real_difference(
    trained, tmp_path, capsys
):
    """A fold trained before a preprocess key existed (its config lacks it) and one resumed after (the key at its
    default) are one recipe (seen: the dropout run's folds 0-1 without ``soft_targets``, 2-3 with it at false)."""
    import shutil

    from glioseg.checkpoint import load_checkpoint, save_checkpoint

    _, work = trained
    shutil.copytree(work, tmp_path / "work")
    old = tmp_path / "work" / "second" / "fold0" / "last.pt"
    payload = load_checkpoint(old)
    assert payload["config"]["preprocess"].pop("soft_targets") is False  # as written before the key existed
    save_checkpoint(old, payload)
    code, out, err = run_cli(capsys, "cv", "pack", tmp_path / "work", "-o", tmp_path / "model", "--postprocess", "none")
    assert code == 0, err
    assert "packed 3 model(s)" in out
    payload["config"]["preprocess"]["normalization"] = "minmax"  # a real difference in the inputs
    save_checkpoint(old, payload)
    code, _, err = run_cli(capsys, "cv", "pack", tmp_path / "work", "-o", tmp_path / "model2", "--postprocess", "none")
    assert code == 2 and err.count("error:") == 1 and "disagrees with" in err and "on preprocess" in err


def test_a_case_that_cannot_be_preprocessed_is_one_line_with_one_fix(tmp_path, capsys):
    """Seen by hand: `error: <t1>: contains NaN or infinite values. Fix: repair the image ... Fix: fix or remove
    that case, then run the command again` (the case's own line wrapped in a second Fix)."""
    import nibabel as nib

    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=4, shape=(24, 24, 24), layout="brats2018", seed=7)
    broken = tmp_path / "data" / "Brats18_SYN_002_1" / "Brats18_SYN_002_1_t1.nii.gz"
    image = nib.load(str(broken))
    data = np.asarray(image.dataobj).astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(broken))
    recipe = _recipe(tmp_path / "recipes")
    code, _, err = run_cli(
        capsys, "cv", "train", "--preset", recipe, "--data", tmp_path / "data", "--work", tmp_path / "work", "--quiet"
    )
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].count("Fix:") == 1, lines
    assert lines[0].startswith(f"error: {broken}: contains NaN") and "remove that case" in lines[0], lines


def test_a_fold_out_of_range_is_refused_before_the_work_folder_is_made(cohort, tmp_path, capsys):
    """Before: `--fold 7` was refused after `WORK/cv.json` was written, recording a work folder nothing was done in."""
    recipe = _recipe(tmp_path / "r")
    code, _, err = run_cli(
        capsys, "cv", "train", "--preset", recipe, "--data", cohort, "--work", tmp_path / "work", "--fold", "7"
    )
    assert code == 2 and not (tmp_path / "work").exists()
    assert len(err.strip().splitlines()) == 1 and "fold 7 is outside 0..2" in err and "--fold" in err, err


def test_after_a_case_fails_preprocessing_the_fix_it_names_works(tmp_path, capsys):
    """Before: the first run recorded the broken case in `WORK/cv.json`, so removing the case as the error said was
    refused: `was made with another dataset (4 cases; not given now: ...)`."""
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=4, shape=(24, 24, 24), layout="brats2021", seed=7)
    broken = tmp_path / "data" / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # a truncated download
    _recipe(tmp_path / "recipes")
    argv = ["cv", "train", "--preset", tmp_path / "recipes" / "tiny.yaml", "--folds", "2", "--fold", "0"]
    argv += ["--data", tmp_path / "data", "--work", tmp_path / "work", "--quiet", "--threads", "1"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and f"error: {broken}:" in err and "remove that case" in err, err
    shutil.rmtree(broken.parent)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((tmp_path / "work" / "cv.json").read_text())["cases"] == [
        "BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"
    ]


def test_a_case_without_a_label_and_an_ignored_file_are_said_not_silently_left_out(tmp_path, caplog):
    """Before: `cv train` trained on 3 of 4 cases without a word when one case lacked its label map, and dropped
    discovery's warnings (a file it ignores)."""
    import logging

    from glioseg.cv.workdir import find_cases
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=4, shape=(24, 24, 24), layout="brats2021", seed=7)
    (tmp_path / "data" / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    stray = tmp_path / "data" / "BraTS2021_00002" / "BraTS2021_00002_t1_old.nii.gz"
    stray.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="glioseg.cv.workdir"):
        cases = find_cases([tmp_path / "data"], ("flair", "t1", "t1ce", "t2"))
    assert [c.case_id for c in cases] == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 case(s) without a label map left out" in w and "BraTS2021_00001" in w for w in warnings), warnings
    assert any(str(stray) in w and "ignored" in w for w in warnings), warnings


def test_pack_names_a_fold_the_work_folder_lacks_and_the_option_of_each_fix(tmp_path, capsys):
    """Before: `cv pack --fold 5` of a 2-fold work folder said `fold5 of stage cpu has not finished training. Fix: run
    glioseg cv train until its folds finish` (no training makes a fold 5); the fixes for a missing all-cases model
    and an existing output named no option."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.workdir import find_cases, prepare_work
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=3, shape=(24, 24, 24), layout="brats2021", seed=7)
    recipe = load_recipe("cpu", folds=2)
    prepare_work(tmp_path / "work", recipe, [tmp_path / "data"], find_cases([tmp_path / "data"], recipe.modalities))
    pack = ["cv", "pack", tmp_path / "work", "-o", tmp_path / "model", "--postprocess", "none"]
    code, _, err = run_cli(capsys, *pack, "--fold", "5")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "has 2 folds (0..1), not fold 5" in err and "--fold" in err and "not finished" not in err
    code, _, err = run_cli(capsys, *pack, "--all")
    assert code == 2 and "`glioseg cv train --all`" in err, err
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "x.txt").write_text("x")
    code, _, err = run_cli(capsys, *pack, "--fold", "0")
    assert code == 2 and "already exists" in err and "(--overwrite)" in err, err
    assert not (tmp_path / "work" / "cpu").exists()


def test_predict_given_the_work_folder_instead_of_its_pack_says_to_pack_it(tmp_path, capsys):
    """Before: `predict --model WORK` said `folder holds no best.pt, last.pt or model.pt. Fix: point to a run folder
    or a checkpoint file`, not that the work folder's models are run once `cv pack` made a model folder of them."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.workdir import find_cases, prepare_work
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=2, shape=(24, 24, 24), layout="brats2021", seed=7)
    recipe = load_recipe("cpu", folds=2)
    prepare_work(tmp_path / "work", recipe, [tmp_path / "data"], find_cases([tmp_path / "data"], recipe.modalities))
    code, _, err = run_cli(capsys, "predict", tmp_path / "data", "-o", tmp_path / "pred", "--model", tmp_path / "work")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "is a cross-validation work folder, not a model" in lines[0] and "glioseg cv pack" in lines[0]
    assert not (tmp_path / "pred").exists()


def test_a_fold_given_twice_is_trained_once_not_by_two_workers_at_once(cohort, tmp_path, monkeypatch):
    """Before: `--fold 0 0 --workers 2` started two processes that trained fold 0 into the same run folder at once."""
    from glioseg.cv import train
    from glioseg.cv.recipe import load_recipe

    jobs: list[tuple] = []
    monkeypatch.setattr(train, "_run_job", lambda job: jobs.append(job.folds) or [])
    monkeypatch.setattr(train, "_run_in_processes", lambda many: [jobs.append(job.folds) for job in many] and [])
    recipe = load_recipe(_recipe(tmp_path / "r"))
    train.run_cv_train(recipe, [cohort], tmp_path / "work", folds=[0, 0, 2], workers=2, threads=1, progress=False)
    assert sorted(f for folds in jobs for f in folds) == [0, 2]


def test_a_fold_given_twice_to_pack_is_one_member(trained, tmp_path, capsys):
    """Before: `cv pack --fold 0 1 0` packed fold 0 twice, so the ensemble weighted it double and the model card
    called it an ensemble of 3 fold models."""
    _, work = trained
    code, _, err = run_cli(
        capsys, "cv", "pack", work, "-o", tmp_path / "model", "--postprocess", "none", "--fold", "0", "1", "0"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "model" / "pack.json").read_text())["members"] == ["fold0.pt", "fold1.pt"]
    assert "ensemble of 2 fold models" in (tmp_path / "model" / "MODEL_CARD.md").read_text()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_device_the_machine_lacks_is_one_line_before_any_work(cohort, tmp_path, capsys):
    """Before: `--device cuda` without a GPU preprocessed every case, then printed one error per fold and `2 fold(s)
    failed, the others were trained` (none was)."""
    recipe = _recipe(tmp_path / "r")
    code, _, err = run_cli(
        capsys, "cv", "train", "--preset", recipe, "--data", cohort, "--work", tmp_path / "work", "--device", "cuda"
    )
    assert code == 2 and err.strip().splitlines() == [
        "error: device cuda requested but no CUDA GPU is available. Fix: use device cpu or auto"
    ], err
    assert not (tmp_path / "work").exists()


def test_report_of_a_work_folder_whose_data_moved_says_where_the_record_expects_it(tmp_path, capsys):
    """Before: `error: DATA: folder not found. Fix: check the path to your BraTS data`, though `cv report` takes no
    path to the data: it reads the references where `cv.json` recorded them."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.workdir import find_cases, prepare_work
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=2, shape=(24, 24, 24), layout="brats2021", seed=7)
    recipe = load_recipe("cpu", folds=2)
    cases = find_cases([tmp_path / "data"], recipe.modalities)
    prepare_work(tmp_path / "work", recipe, [tmp_path / "data"], cases)
    (tmp_path / "work" / "cpu" / "pred").mkdir(parents=True)
    for case in cases:  # out-of-fold label maps as cv train leaves them
        shutil.copyfile(case.label, tmp_path / "work" / "cpu" / "pred" / f"{case.case_id}.nii.gz")
    (tmp_path / "data").rename(tmp_path / "moved")
    code, _, err = run_cli(capsys, "cv", "report", tmp_path / "work", "-o", tmp_path / "report")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {tmp_path / 'data'}: dataset folder of this work folder") and "cv.json" in err, err
    assert "put the data back" in err and not (tmp_path / "report").exists()
