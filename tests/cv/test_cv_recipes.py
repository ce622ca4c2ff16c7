"""The recipe files under ``benchmarks/cv`` and work folders recorded by older glioseg versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glioseg.cv.recipe import load_recipe
from glioseg.cv.workdir import RECORD, find_cases, prepare_work
from glioseg.errors import GliosegError

CV = Path(__file__).resolve().parents[2] / "benchmarks" / "cv"


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from glioseg.data.synth import write_cohort

    root = tmp_path_factory.mktemp("recipes") / "data"
    write_cohort(root, cases=4, shape=(24, 24, 24), layout="brats2021", seed=1)
    return root, find_cases([root], ("flair", "t1", "t1ce", "t2"))


def test_recipe_d_continues_the_work_folder_of_d_short_and_a_short_cannot(cases, tmp_path):
    root, found = cases
    short, full = load_recipe(CV / "recipe_d_short.yaml"), load_recipe(CV / "recipe_d.yaml")
    assert [s.name for s in full.stages] == ["recipe_d_short", "recipe_d_mid", "recipe_d"]
    steps = [s.config.train.epochs * s.config.train.samples_per_epoch // s.config.train.batch_size for s in full.stages]
    assert steps == [96, 432, 264] and sum(steps) == 792  # recipe C's total budget
    assert all(s.config.preprocess.soft_targets for s in full.stages)
    prepare_work(tmp_path / "work", short, [root], found)
    work = prepare_work(tmp_path / "work", full, [root], found)
    assert [s["name"] for s in work.record["stages"]] == ["recipe_d_short", "recipe_d_mid", "recipe_d"]
    a_short = load_recipe(CV / "recipe_a_short.yaml")
    with pytest.raises(GliosegError, match="stage 1 is recipe_d_short there"):
        prepare_work(tmp_path / "work", a_short, [root], found)
    # D-short is A-short with soft targets and nothing else
    d_stage, a_stage = short.stages[0].config, a_short.stages[0].config
    assert d_stage.preprocess.soft_targets and not a_stage.preprocess.soft_targets
    assert d_stage.train == a_stage.train and d_stage.model == a_stage.model and d_stage.augment == a_stage.augment


def test_a_work_folder_recorded_before_a_setting_existed_opens_while_it_holds_its_default(cases, tmp_path):
    """A record without ``augment.modality_dropout`` (added later) was made with the default 0: the same
    recipe continues it; a record that set it otherwise is refused, naming it."""
    root, found = cases
    recipe = load_recipe(CV / "recipe_a_short.yaml")
    prepare_work(tmp_path / "work", recipe, [root], found)
    record_path = tmp_path / "work" / RECORD
    record = json.loads(record_path.read_text())
    del record["stages"][0]["config"]["augment"]["modality_dropout"]
    del record["stages"][0]["config"]["preprocess"]["soft_targets"]
    record_path.write_text(json.dumps(record))
    prepare_work(tmp_path / "work", recipe, [root], found)
    record["stages"][0]["config"]["augment"]["modality_dropout"] = 0.5
    record_path.write_text(json.dumps(record))
    with pytest.raises(GliosegError, match=r"augment.modality_dropout 0.5 vs 0.0 \(there vs now\)"):
        prepare_work(tmp_path / "work", recipe, [root], found)


def test_a_work_folder_recorded_before_inference_window_opens_with_the_window_it_used(cases, tmp_path):
    """Before ``inference.window`` was a setting, the window was ``train.patch_size``: a record without
    it continues under a recipe whose window is its patch size, and is refused under another window."""
    root, found = cases
    recipe = load_recipe(CV / "recipe_d_short.yaml")
    assert recipe.stages[0].config.inference.window == recipe.stages[0].config.train.patch_size == (64, 64, 64)
    prepare_work(tmp_path / "work", recipe, [root], found)
    record_path = tmp_path / "work" / RECORD
    record = json.loads(record_path.read_text())
    del record["stages"][0]["config"]["inference"]["window"]
    record_path.write_text(json.dumps(record))
    work = prepare_work(tmp_path / "work", load_recipe(CV / "recipe_d.yaml"), [root], found)
    assert [s["name"] for s in work.record["stages"]] == ["recipe_d_short", "recipe_d_mid", "recipe_d"]
    wider = load_recipe(CV / "recipe_d.yaml", overrides=["inference.window=[96,96,96]"])
    with pytest.raises(GliosegError, match=r"inference.window \[64, 64, 64\] vs \[96, 96, 96\] \(there vs now\)"):
        prepare_work(tmp_path / "work", wider, [root], found)


@pytest.mark.parametrize(
    ("name", "kept"),
    [("../x", False), (".hidden", False), ("a/b", False), ("a\\b", False), ("a\0b", False), ("x" * 300, False),
     ("..", False), ("<!--<script>", True), ("line\u2028sep", True), ("quote \" and '", True)],
)
def test_a_stage_name_is_a_folder_name_or_refused_in_one_line(tmp_path, name, kept):
    """A stage name names WORK/<stage>/: before, a backslash, a NUL byte (a traceback later) and 300 characters
    (a folder name too long, found only when the fold's folder was made) were accepted."""
    import yaml

    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"folds": 3, "stages": [{"name": name, "preset": "cpu"}]}))
    if kept:
        assert [stage.name for stage in load_recipe(tmp_path / "recipe.yaml").stages] == [name]
    else:
        with pytest.raises(GliosegError, match="cannot be a folder name") as caught:
            load_recipe(tmp_path / "recipe.yaml")
        assert "\n" not in str(caught.value)


def test_recipe_e_continues_recipe_d_with_a_1_mm_cascade_stage_of_186_steps(cases, tmp_path):
    root, found = cases
    d, e = load_recipe(CV / "recipe_d.yaml"), load_recipe(CV / "recipe_e.yaml")
    assert [s.name for s in e.stages] == ["recipe_d_short", "recipe_d_mid", "recipe_d", "recipe_e"]
    assert all(a == b for a, b in zip(d.stages, e.stages[:3], strict=False))  # D's stages, unchanged
    cascade = e.stages[3]
    assert cascade.prior == "recipe_d" and all(s.prior is None for s in e.stages[:3])
    pre, train = cascade.config.preprocess, cascade.config.train
    assert pre.cascade_margin == 16 and pre.target_spacing is None and not pre.soft_targets
    assert pre.input_channels == 7 and train.patch_size == (80, 80, 80) and train.batch_size == 2
    assert train.epochs * train.samples_per_epoch // train.batch_size == 186  # 264 / 1.42 (the recipe's arithmetic)
    prepare_work(tmp_path / "work", d, [root], found)
    work = prepare_work(tmp_path / "work", e, [root], found)  # extends a work folder of recipe D
    assert work.stage_prior("recipe_e") == "recipe_d" and work.stage_prior("recipe_d") is None


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("  - cpu\n  - {name: b, preset: cpu, set: {train.lrr: 0.001}}\n", "stage b: override 'train.lrr=0.001': "
         "unknown key train.lrr"),
        ("  - cpux\n", "stage cpux: unknown preset 'cpux'"),
        ("  - {name: a, preset: cpu, set: {train.epochs: 0}}\n", "stage a: train.epochs=0 is outside the allowed"),
        ("  - {name: a, preset: cpu}\n  - {name: a, preset: cpu, set: {train.lr: 0.001}}\n", "two stages are named "
         "alike (a, a)"),
    ],
)
def test_a_recipe_stage_with_a_typo_an_unknown_preset_or_a_repeated_name_is_named_in_one_line(
    tmp_path, stages, message
):
    """Before: a typo in a stage's set blamed the package's preset file (`.../glioseg/configs/cpu.yaml: unknown
    key(s) train.lrr`), and an unknown preset or a value out of range named neither the recipe nor the stage."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"folds: 2\nstages:\n{stages}")
    with pytest.raises(GliosegError) as caught:
        load_recipe(recipe)
    assert str(caught.value).startswith(f"{recipe}: {message}"), caught.value
    assert "\n" not in str(caught.value) and "configs/cpu.yaml" not in str(caught.value)


def test_a_typo_in_set_is_named_as_the_override_not_as_the_preset_file():
    """Before: `--set train.lrr=1` was `error: .../glioseg/configs/cpu.yaml: unknown key(s) train.lrr`, sending the
    user to edit the installed preset."""
    for item, message in (("train.lrr=1", "unknown key train.lrr"), ("tran.lr=1", "unknown section tran")):
        with pytest.raises(GliosegError) as caught:
            load_recipe("cpu", [item])
        assert caught.value.path is None and str(caught.value).startswith(f"override '{item}': {message}")
    assert load_recipe("cpu", ["train.augment=true"]).stages  # a key of older versions is still read (migrate)


@pytest.mark.parametrize("seed", ["abc", "-3", "true"])
def test_a_recipe_split_seed_that_is_not_a_whole_number_is_refused_in_one_line(tmp_path, seed):
    """Before: `split_seed: abc` was a traceback (ValueError from int()); -3 a traceback after preprocessing
    (numpy: expected non-negative integer), its work folder recorded."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"folds: 2\nsplit_seed: {seed}\nstages:\n  - cpu\n")
    with pytest.raises(GliosegError, match=r"split_seed .* is not a whole number >= 0"):
        load_recipe(recipe)
