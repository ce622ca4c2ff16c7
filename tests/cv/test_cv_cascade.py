"""The cascade stage (issue 22): prior channels and crop by hand, crop -> paste, the chaining, a two-stage
cascade recipe through cv train / report / pack / predict (and export), and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli
from torch import nn

from glioseg.errors import GliosegError

STAGE1 = {
    "preprocess": {"modalities": ["flair", "t1", "t1ce", "t2"], "crop": "brain", "target_spacing": [2.0, 2.0, 2.0]},
    "model": {"name": "resunet", "filters": [4, 8], "norm": "instance", "head": "regions", "dropout": "none"},
    # every voxel of the brain crop is tumour for an untrained network: a prior with a tumour in every case
    "inference": {"region_threshold": 0.01},
    "train": {
        "epochs": 1, "batch_size": 2, "sampling": "patch", "patch_size": [16, 16, 16], "samples_per_epoch": 2,
        "loss": "dice_bce", "optimizer": "adamw", "lr": 0.002, "schedule": "poly", "amp": False, "device": "cpu",
        "threads": 1, "val_every": 1,
    },
}
CASCADE_SET = {
    "preprocess.target_spacing": None,
    "preprocess.cascade_margin": 4,
    "inference.region_threshold": 0.5,
    "inference.window": [16, 16, 16],
}


def _cascade_recipe(folder: Path, stages: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(STAGE1))
    recipe = {
        "folds": 3,
        "split_seed": 7,
        "stages": stages or ["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "prior": "tiny", "set": CASCADE_SET}],
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return folder / "recipe.yaml"


# --- the input by hand ------------------------------------------------------------------------------------


def test_cascade_box_is_the_tumour_box_widened_by_the_margin_in_mm_within_the_brain():
    from glioseg.data.cascade import cascade_box

    prior = np.zeros((20, 22, 24), np.uint8)
    prior[5:8, 10:12, 3] = 2  # tumour box x 5..8, y 10..12, z 3..4 (half-open)
    prior[6, 10, 3] = 3
    whole = ((0, 20), (0, 22), (0, 24))
    assert cascade_box(prior, (1, 1, 1), 2, whole) == ((3, 10), (8, 14), (1, 6))
    # within the brain box: clipped to it
    assert cascade_box(prior, (1, 1, 1), 2, ((4, 20), (0, 22), (0, 5))) == ((4, 10), (8, 14), (1, 5))
    # 3 mm at 2 / 1 / 0.5 mm voxels: ceil(1.5) = 2, 3 and 6 voxels
    assert cascade_box(prior, (2, 1, 0.5), 3, whole) == ((3, 10), (7, 15), (0, 10))
    assert cascade_box(prior, (1, 1, 1), 0, whole) == ((5, 8), (10, 12), (3, 4))
    assert cascade_box(np.zeros_like(prior), (1, 1, 1), 2, whole) is None  # no tumour: no crop
    assert cascade_box(prior, (1, 1, 1), 0, ((10, 20), (0, 22), (0, 24))) is None  # outside the brain box


def test_cascade_input_appends_the_prior_regions_and_cuts_image_and_label_alike():
    from glioseg.data.cascade import cascade_input
    from glioseg.data.preprocess import CropInfo, PreprocessedCase

    shape = (20, 22, 24)
    brain = ((2, 18), (1, 21), (0, 24))
    inner = tuple(b - a for a, b in brain)
    image = np.arange(4 * np.prod(inner), dtype=np.float32).reshape(4, *inner)
    label = (np.arange(np.prod(inner)) % 4).astype(np.uint8).reshape(inner)
    crop = CropInfo(shape, brain, inner, inner, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), tuple(map(tuple, np.eye(4))))
    pre = PreprocessedCase("c", image, label, crop)
    prior = np.zeros(shape, np.uint8)
    prior[6:9, 4:6, 10:12] = 2
    prior[7, 4, 10] = 1  # necrosis: TC, not ET
    prior[7, 5, 11] = 3  # enhancing: TC and ET
    cut = cascade_input(pre, prior, margin_mm=1)
    assert cut is not None
    assert cut.crop.box == ((5, 10), (3, 7), (9, 13))  # the tumour box 6..9, 4..6, 10..12 plus 1 voxel
    assert cut.crop.cropped_shape == cut.crop.shape == (5, 4, 4)
    assert cut.image.shape == (7, 5, 4, 4)
    # the modalities: the same voxels of the brain crop (x - 2, y - 1, z - 0)
    assert np.array_equal(cut.image[:4], image[:, 3:8, 2:6, 9:13])
    assert np.array_equal(cut.label, label[3:8, 2:6, 9:13])
    wt, tc, et = cut.image[4], cut.image[5], cut.image[6]
    assert wt.sum() == 3 * 2 * 2 and tc.sum() == 2 and et.sum() == 1
    assert wt[1:4, 1:3, 1:3].all() and tc[2, 1, 1] == tc[2, 2, 2] == 1 and et[2, 2, 2] == 1
    assert set(np.unique(cut.image[4:])) == {0.0, 1.0}
    assert cascade_input(pre, np.zeros(shape, np.uint8), 1) is None
    with pytest.raises(GliosegError, match="not on the case's grid"):
        cascade_input(pre, np.zeros((20, 22, 23), np.uint8), 1)


def test_crop_then_paste_is_exact_and_outside_the_crop_stage_1_stands():
    from glioseg.data.cascade import paste

    rng = np.random.default_rng(0)
    stage1 = rng.integers(0, 4, (12, 13, 14)).astype(np.uint8)
    box = ((2, 9), (0, 5), (7, 14))
    slices = tuple(slice(a, b) for a, b in box)
    assert np.array_equal(paste(stage1, stage1[slices], box), stage1)  # a crop pasted back: the same map
    stage2 = rng.integers(0, 4, (7, 5, 7)).astype(np.uint8)
    out = paste(stage1, stage2, box)
    assert np.array_equal(out[slices], stage2)
    outside = np.ones(stage1.shape, bool)
    outside[slices] = False
    assert np.array_equal(out[outside], stage1[outside]) and out is not stage1


# --- the chaining -----------------------------------------------------------------------------------------


class _Enhancing(nn.Module):
    """Seven input channels, every region certain everywhere (logit 10): ET wherever it is run."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 7
        return torch.ones(x.shape[0], 3, *x.shape[2:]) * self.scale


def test_cascade_predictor_runs_stage_2_on_the_crop_only_and_keeps_stage_1_outside(tmp_path, write_case):
    from glioseg.config import load_config
    from glioseg.data.discovery import discover
    from glioseg.data.io import read_volume
    from glioseg.inference.cascade import CascadePredictor, FilePrior
    from glioseg.inference.predictor import Predictor

    root = tmp_path / "data"
    write_case(root, "Brats18_A_1_1", shape=(20, 22, 24), seed=1)
    write_case(root, "Brats18_B_1_1", shape=(20, 22, 24), seed=2)
    config = load_config(
        "cpu", ["model.head=regions", "preprocess.target_spacing=null", "preprocess.cascade_margin=2",
                "inference.window=[8,8,8]", "inference.mirror=false"],
    )
    priors = tmp_path / "priors"
    priors.mkdir()
    affine = nib.load(str(next((root / "Brats18_A_1_1").glob("*flair*")))).affine
    prior = np.zeros((20, 22, 24), np.uint8)
    prior[9:11, 8:10, 12:14] = 2  # BraTS 2018 edema
    prior[3, 3, 3] = 1  # necrosis: the tumour box is 3..11, 3..10, 3..14
    nib.save(nib.Nifti1Image(prior, affine), str(priors / "Brats18_A_1_1.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros_like(prior), affine), str(priors / "Brats18_B_1_1.nii.gz"))
    cascade = CascadePredictor(Predictor([_Enhancing()], config, "cpu"), FilePrior(priors, "stage1"))
    cases = {case.case_id: case for case in discover(root).cases}
    report = cascade.predict_cases(list(cases.values()), tmp_path / "out", progress=False)
    assert not report.failed and sorted(report.written) == ["Brats18_A_1_1", "Brats18_B_1_1"]
    out = read_volume(tmp_path / "out" / "Brats18_A_1_1.nii.gz", dtype=None).data
    # the tumour box plus 2 voxels, within the brain crop (x from 2: write_case zeroes rows 0-1): ET (4) there
    box = (slice(2, 13), slice(1, 12), slice(1, 16))
    assert (out[box] == 4).all()
    outside = np.ones(out.shape, bool)
    outside[box] = False
    assert not out[outside].any()  # stage 1 (background there) stands outside the crop
    # no tumour in stage 1: no crop, stage 1's (empty) map stands
    assert not read_volume(tmp_path / "out" / "Brats18_B_1_1.nii.gz", dtype=None).data.any()
    # a prior on another grid, a missing prior: one line naming the file
    nib.save(nib.Nifti1Image(np.zeros((20, 22, 23), np.uint8), affine), str(priors / "Brats18_B_1_1.nii.gz"))
    (priors / "Brats18_A_1_1.nii.gz").unlink()
    report = cascade.predict_cases(list(cases.values()), tmp_path / "out2", progress=False)
    assert "Brats18_A_1_1.nii.gz: is missing" in report.failed["Brats18_A_1_1"]
    assert "is on another grid" in report.failed["Brats18_B_1_1"] and "Fix:" in report.failed["Brats18_B_1_1"]


# --- recipes and their errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "prior": "nope", "set": CASCADE_SET}],
         "names prior nope, which is no stage of this recipe"),
        ([{"name": "fine", "preset": "tiny.yaml", "prior": "tiny", "set": CASCADE_SET}, "tiny.yaml"],
         "names prior tiny, which is a later stage"),
        (["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "prior": "tiny"}], "works on the native grid"),
        (["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "prior": "tiny", "set": CASCADE_SET},
          {"name": "after", "preset": "tiny.yaml"}], "follows the cascade stage fine but is not one itself"),
        (["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "set": CASCADE_SET}], "names no prior"),
        # accepted before, then `cv train` stopped at every run on the missing label maps of `fine`, and a pack
        # of it failed every case with a raw RuntimeError (stage 1 fed four channels to a seven-channel network)
        (["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "prior": "tiny", "set": CASCADE_SET},
          {"name": "finer", "preset": "tiny.yaml", "prior": "fine", "set": CASCADE_SET}],
         "names prior fine, which is a cascade stage itself"),
    ],
)
def test_a_recipe_whose_cascade_stage_names_an_unknown_or_later_prior_is_refused(tmp_path, stages, message):
    from glioseg.cv.recipe import load_recipe

    with pytest.raises(GliosegError, match=message) as caught:
        load_recipe(_cascade_recipe(tmp_path, stages))
    assert "Fix:" in str(caught.value) and "\n" not in str(caught.value)


def test_a_stage_with_a_prior_gets_the_default_margin_and_seven_input_channels(tmp_path):
    from glioseg.checkpoint import build_model
    from glioseg.cv.recipe import CASCADE_MARGIN_MM, load_recipe

    stages = ["tiny.yaml", {"name": "fine", "preset": "tiny.yaml", "prior": "tiny",
                            "set": {"preprocess.target_spacing": None}}]
    recipe = load_recipe(_cascade_recipe(tmp_path, stages))
    fine = recipe.stages[1]
    assert fine.prior == "tiny" and fine.config.preprocess.cascade_margin == CASCADE_MARGIN_MM
    assert recipe.stages[0].config.preprocess.input_channels == 4 and fine.config.preprocess.input_channels == 7
    assert next(m for m in build_model(fine.config).modules() if isinstance(m, nn.Conv3d)).in_channels == 7


def test_missing_prior_files_are_named_and_nothing_is_written(tmp_path):
    from glioseg.cv.cascade import build_cascade_cache
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.workdir import find_cases, prepare_work
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=3, shape=(24, 24, 24), layout="brats2021", seed=1)
    recipe = load_recipe(_cascade_recipe(tmp_path / "r"))
    cases = find_cases([tmp_path / "data"], recipe.modalities)
    work = prepare_work(tmp_path / "work", recipe, [tmp_path / "data"], cases)
    with pytest.raises(GliosegError, match=r"tiny/pred/.*\.nii\.gz: is missing \(and 2 more\)") as caught:
        build_cascade_cache(work, recipe.stages[1], cases)
    assert "`glioseg cv train` of every fold" in str(caught.value)
    assert not (tmp_path / "work" / "fine").exists()


def test_the_cascade_cache_crops_each_case_around_its_prior_and_drops_an_empty_prior(tmp_path):
    from glioseg.cv.cascade import build_cascade_cache
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.workdir import find_cases, prepare_work, stage_cache
    from glioseg.data.cache import cached_case_ids, load_cached
    from glioseg.data.synth import write_cohort

    write_cohort(tmp_path / "data", cases=3, shape=(24, 24, 24), layout="brats2021", seed=1)
    recipe = load_recipe(_cascade_recipe(tmp_path / "r"))
    cases = find_cases([tmp_path / "data"], recipe.modalities)
    work = prepare_work(tmp_path / "work", recipe, [tmp_path / "data"], cases)
    pred = work.pred_dir("tiny")
    pred.mkdir(parents=True)
    for k, case in enumerate(cases):
        image = nib.load(str(case.label))
        prior = np.zeros(image.shape, np.uint8)
        if k == 0:
            prior[10:13, 11:12, 12:15] = 2  # edema
        nib.save(nib.Nifti1Image(prior, image.affine), str(pred / f"{case.case_id}.nii.gz"))
    fine = recipe.stages[1]
    build_cascade_cache(work, fine, cases)
    cache = stage_cache(work.path, fine)
    assert cached_case_ids(cache, fine.config.preprocess) == [cases[0].case_id]  # empty priors: no crop
    entry = load_cached(cache, cases[0].case_id, fine.config.preprocess)
    # margin 4 mm at 1 mm voxels around 10..13, 11..12, 12..15, within the brain box
    brain = json.loads((cache / f"{cases[0].case_id}.json").read_text())["crop"]["box"]
    expected = tuple(
        (max(a - 4, lo), min(b + 4, hi)) for (a, b), (lo, hi) in zip(((10, 13), (11, 12), (12, 15)), brain, strict=True)
    )
    assert entry.crop.box == expected
    assert entry.image.shape == (7, *(b - a for a, b in expected)) and entry.label.shape == entry.image.shape[1:]
    assert entry.image[4].sum() == 9 and not entry.image[5].any()  # WT 3 x 1 x 3, no core
    reference = np.asarray(nib.load(str(cases[0].label)).dataobj)
    from glioseg.labels import to_internal

    cut = to_internal(reference, cases[0].convention)[tuple(slice(a, b) for a, b in expected)]
    assert np.array_equal(entry.label, cut)  # hard 1 mm targets of the crop


# --- end to end -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cascade_work(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished 3-fold cross-validation of a 2 mm stage and its 1 mm cascade stage: (recipe, data, work)."""
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train
    from glioseg.data.synth import write_cohort

    base = tmp_path_factory.mktemp("cascade")
    write_cohort(base / "data", cases=6, shape=(32, 32, 32), layout="brats2021", seed=3)
    recipe = _cascade_recipe(base / "recipes")
    run_cv_train(load_recipe(recipe), [base / "data"], base / "work", threads=1, progress=False)
    return recipe, base / "data", base / "work"


def test_cv_train_trains_the_cascade_on_out_of_fold_priors_and_predicts_every_case_with_both_stages(cascade_work):
    from glioseg.checkpoint import load_checkpoint
    from glioseg.cv.workdir import open_work

    _, data, work_path = cascade_work
    work = open_work(work_path)
    assert work.stage_names == ["tiny", "fine"] and work.stage_prior("fine") == "tiny"
    ids = sorted(work.record["cases"])
    for stage in ("tiny", "fine"):  # the prior stage predicts its held-out cases too
        assert sorted(p.name for p in work.pred_dir(stage).glob("*.nii.gz")) == [f"{c}.nii.gz" for c in ids]
    for fold in range(3):
        config = yaml.safe_load((work.run_dir("fine", fold) / "config.yaml").read_text())
        assert config["train"]["init_from"] is None  # fresh weights: seven input channels
        assert config["preprocess"]["cascade_margin"] == 4 and config["preprocess"]["target_spacing"] is None
        weights = load_checkpoint(work.run_dir("fine", fold) / "last.pt")["model"]
        first = next(t for name, t in weights.items() if t.ndim == 5)
        assert first.shape[1] == 7
        assert (work.run_dir("fine", fold) / "finished.json").is_file()
    # a second run skips everything
    stamps = {p: p.stat().st_mtime_ns for p in work_path.rglob("*.pt")}
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train

    run_cv_train(load_recipe(cascade_work[0]), [data], work_path, threads=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in work_path.rglob("*.pt")} == stamps


def test_report_pack_predict_and_export_of_a_cascade(cascade_work, tmp_path, capsys):
    from glioseg.data.io import read_volume
    from glioseg.inference.backends import available_backends

    _, data, work = cascade_work
    code, _, err = run_cli(capsys, "cv", "report", work, "-o", tmp_path / "report", "--workers", "1")
    assert code == 0, err
    assert json.loads((work / "fine" / "choice.json").read_text())["all_cases_setting"] is not None
    code, _, err = run_cli(capsys, "cv", "pack", work, "-o", tmp_path / "model", "--fold", "0")
    assert code == 0, err
    model = tmp_path / "model"
    manifest = json.loads((model / "pack.json").read_text())
    assert manifest["cascade"] == {"prior_stage": "tiny", "folder": "prior", "margin_mm": 4}
    assert json.loads((model / "prior" / "pack.json").read_text())["stage"] == "tiny"
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "pred", "--model", model, "--quiet",
                           "--backend", "torch")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "pred1", "--model", model / "prior", "--quiet",
                           "--backend", "torch")
    assert code == 0, err
    from glioseg.data.cascade import cascade_box
    from glioseg.data.discovery import discover, load_case
    from glioseg.data.preprocess import brain_box

    cropped = 0
    for case in discover(data).cases:
        stage1 = read_volume(tmp_path / "pred1" / f"{case.case_id}.nii.gz", dtype=None).data
        both = read_volume(tmp_path / "pred" / f"{case.case_id}.nii.gz", dtype=None).data
        assert both.shape == stage1.shape == (32, 32, 32)
        box = cascade_box(stage1, (1, 1, 1), 4, brain_box(load_case(case, with_label=False).image))
        outside = np.ones(stage1.shape, bool)
        if box is not None:
            outside[tuple(slice(a, b) for a, b in box)] = False
            cropped += 1
        assert np.array_equal(both[outside], stage1[outside])  # stage 1 stands outside the crop
    assert cropped  # stage 2 ran somewhere
    # the stamps differ: a cascade prediction is not mistaken for stage 1's
    assert nib.load(str(next((tmp_path / "pred").glob("*.nii.gz")))).header["descrip"] != nib.load(
        str(next((tmp_path / "pred1").glob("*.nii.gz")))).header["descrip"]
    if "onnxruntime" not in available_backends():
        return
    code, _, err = run_cli(capsys, "export", model, "--format", "onnx", "-o", tmp_path / "exported")
    assert code == 0, err
    assert (tmp_path / "exported" / "prior" / "pack.json").is_file()
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "onnx", "--model", tmp_path / "exported",
                           "--quiet", "--backend", "onnxruntime")
    assert code == 0, err
    for path in (tmp_path / "pred").glob("*.nii.gz"):
        a, b = read_volume(path, dtype=None).data, read_volume(tmp_path / "onnx" / path.name, dtype=None).data
        assert np.mean(a == b) > 0.999, path.name


def test_the_all_cases_cascade_trains_on_the_out_of_fold_priors_and_packs_with_the_all_cases_prior(
    cascade_work, tmp_path, capsys
):
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train

    recipe, data, work = cascade_work
    run_cv_train(load_recipe(recipe), [data], work, all_cases=True, threads=1, progress=False)
    assert (work / "tiny" / "all" / "finished.json").is_file() and (work / "fine" / "all" / "finished.json").is_file()
    split = json.loads((work / "fine" / "all" / "split.json").read_text())
    assert len(split["train"]) == 6 and split["val"] == []
    code, _, err = run_cli(capsys, "cv", "pack", work, "--all", "-o", tmp_path / "model", "--postprocess", "none")
    assert code == 0, err
    assert json.loads((tmp_path / "model" / "prior" / "pack.json").read_text())["members"] == ["all.pt"]
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "pred", "--model", tmp_path / "model", "--quiet",
                           "--backend", "torch", "--window", "24", "24", "24")
    assert code == 0, err
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 6


def test_a_shipped_cascade_runs_both_stages_without_model(cascade_work, tmp_path, capsys, monkeypatch):
    """A cascade packed into the package's weights folder is what `predict` and `export` use without --model:
    the same labels as `--model` of that folder, not stage 2 alone on the whole brain."""
    import glioseg.checksums
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import run_cv_train
    from glioseg.data.io import read_volume

    recipe, data, work = cascade_work
    run_cv_train(load_recipe(recipe), [data], work, all_cases=True, threads=1, progress=False)  # done: skipped
    code, _, err = run_cli(capsys, "cv", "pack", work, "--all", "-o", tmp_path / "weights", "--postprocess", "none")
    assert code == 0, err
    monkeypatch.setattr(glioseg.checksums, "shipped_weights_dir", lambda: tmp_path / "weights")
    common = ["--quiet", "--backend", "torch", "--window", "24", "24", "24"]
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "shipped", *common)
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "given", "--model", tmp_path / "weights", *common)
    assert code == 0, err
    for path in sorted((tmp_path / "given").glob("*.nii.gz")):
        assert np.array_equal(read_volume(tmp_path / "shipped" / path.name, dtype=None).data,
                              read_volume(path, dtype=None).data)
        stamps = [nib.load(str(folder / path.name)).header["descrip"] for folder in (tmp_path / "shipped", path.parent)]
        assert stamps[0] == stamps[1]  # the stamp names the models: both stages
    # stage 2 alone cannot run: one line naming the checkpoint and the fix, nothing written
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "stage2", "--model",
                           tmp_path / "weights" / "all.pt", *common)
    assert code != 0 and "all.pt" in err and "prior/" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "stage2").exists() or not any((tmp_path / "stage2").iterdir())
    from glioseg.inference.backends import available_backends

    if "onnxruntime" in available_backends():
        code, _, err = run_cli(capsys, "export", "--format", "onnx", "-o", tmp_path / "exported")
        assert code == 0, err
        assert (tmp_path / "exported" / "prior" / "pack.json").is_file()  # both stages exported


# --- what a damaged cascade model folder does ---------------------------------------------------------------


def _pack_fold0(capsys, work: Path, out: Path) -> Path:
    code, _, err = run_cli(capsys, "cv", "pack", work, "-o", out, "--fold", "0", "--postprocess", "none")
    assert code == 0, err
    return out


def _one_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    return lines[0]


def test_an_altered_first_stage_member_is_named_with_a_fix_for_a_model_folder(cascade_work, tmp_path, capsys):
    """Before: `shipped weights fold0.pt fail their checksum. Fix: reinstall glioseg`, for a folder `cv pack` wrote
    (reinstalling changes nothing there)."""
    _, data, work = cascade_work
    model = _pack_fold0(capsys, work, tmp_path / "model")
    member = model / "prior" / "fold0.pt"
    raw = bytearray(member.read_bytes())
    raw[-100] ^= 0xFF
    member.write_bytes(bytes(raw))
    for argv in (["predict", data, "-o", tmp_path / "pred", "--model", model, "--quiet", "--backend", "torch"],
                 ["export", model, "--format", "onnx", "-o", tmp_path / "exported"]):
        code, _, err = run_cli(capsys, *argv)
        line = _one_error(err)
        assert code == 2 and str(member) in line and "checksum" in line, line
        assert "reinstall" not in line and "shipped" not in line and "pack it again" in line, line
    assert not (tmp_path / "pred").exists() and not (tmp_path / "exported").exists()


def test_a_first_stage_folder_holding_a_cascade_stage_is_refused_before_any_case(cascade_work, tmp_path, capsys):
    """A ``prior/`` whose models are themselves a cascade stage (a cascade of a cascade, or the stage-2 models
    copied there): before, every case failed with a raw RuntimeError (four channels into seven) and exit 1."""
    from glioseg.checksums import write_checksums

    _, data, work = cascade_work
    model = _pack_fold0(capsys, work, tmp_path / "model")
    (model / "prior" / "fold0.pt").write_bytes((model / "fold0.pt").read_bytes())
    write_checksums(model / "prior")
    code, _, err = run_cli(capsys, "predict", data, "-o", tmp_path / "pred", "--model", model, "--quiet",
                           "--backend", "torch")
    line = _one_error(err)
    assert code == 2 and str(model / "prior") in line and "cascade stage" in line and "Fix:" in line, line
    assert not (tmp_path / "pred").exists()


def test_export_of_a_cascade_into_its_own_first_stage_folder_is_refused_and_leaves_it_whole(
    cascade_work, tmp_path, capsys
):
    """Before, `export MODEL -o MODEL/prior --overwrite` replaced stage 1's checkpoints by an export of the whole
    cascade: the model folder lost its first stage (its input, written over)."""
    _, _, work = cascade_work
    model = _pack_fold0(capsys, work, tmp_path / "model")
    before = {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    for out in (model / "prior", model / "inside"):
        code, _, err = run_cli(capsys, "export", model, "--format", "onnx", "-o", out, "--overwrite")
        line = _one_error(err)
        assert code == 2 and str(out) in line and "inside the model folder" in line, line
    assert {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in model.iterdir()) == ["MODEL_CARD.md", "checksums.json", "fold0.pt", "pack.json",
                                                       "prior"]


def test_a_fold_whose_training_cases_all_have_an_empty_prior_is_one_line_naming_the_prior(cascade_work, tmp_path):
    """Stage 1 found no tumour in any training case of the fold: the cascade stage has nothing to train on. Before:
    `fold 0: no cases given to the dataset. Fix: pass at least one preprocessed case`, on every run."""
    import shutil

    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import FoldsFailed, run_cv_train

    recipe, data, work = cascade_work
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    for stage in ("fine",):
        for run in (copy / stage).glob("fold*"):
            shutil.rmtree(run)
    for path in (copy / "tiny" / "pred").glob("*.nii.gz"):  # stage 1's maps, emptied (their stamps kept)
        image = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine, image.header), str(path))
    with pytest.raises(FoldsFailed) as caught:
        run_cv_train(load_recipe(recipe), [data], copy, folds=[0], threads=1, progress=False)
    (problem,) = caught.value.problems
    assert problem.startswith("fold 0: ") and "\n" not in problem, problem
    assert "tiny" in problem and "no tumour" in problem and "Fix:" in problem, problem
    assert not (copy / "fine" / "fold0" / "last.pt").exists()


def test_pack_refuses_a_recorded_cascade_of_a_cascade_before_loading_a_checkpoint(cascade_work, tmp_path, capsys):
    """A work folder recorded before recipes refused a cascade stage as a prior: its pack could never run (the
    `prior/` folder would hold a cascade stage), so `cv pack` says so in one line and writes nothing."""
    import shutil

    _, _, work = cascade_work
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    record = json.loads((copy / "cv.json").read_text())
    fine = next(entry for entry in record["stages"] if entry["name"] == "fine")
    record["stages"].append({**fine, "name": "finer", "prior": "fine"})
    (copy / "cv.json").write_text(json.dumps(record))
    shutil.copytree(copy / "fine" / "fold0", copy / "finer" / "fold0")
    code, _, err = run_cli(capsys, "cv", "pack", copy, "--stage", "finer", "--fold", "0", "--postprocess", "none",
                           "-o", tmp_path / "model")
    line = _one_error(err)
    assert code == 2 and "cv.json" in line and "prior fine, a cascade stage itself" in line, line
    assert not (tmp_path / "model").exists()
