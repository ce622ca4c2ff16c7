import pytest

from glioseg.config import PRESETS, load_config
from glioseg.errors import GliosegError


def test_paper_preset_holds_the_papers_settings():
    c = load_config("paper")
    assert c.preprocess.modalities == ("flair", "t1ce", "t2")
    assert c.preprocess.normalization == "minmax"
    assert c.preprocess.fixed_crop == ((56, 184), (56, 184), (13, 141))
    assert c.preprocess.min_tumor_fraction == 0.01
    assert c.train.patch_size == (128, 128, 128) and c.train.sampling == "whole"
    assert c.train.batch_size == 2 and c.train.epochs == 100
    assert c.train.optimizer == "adam" and c.train.lr == 1e-4 and c.train.schedule == "constant"
    assert c.train.loss == "dice_focal" and c.train.focal_weight == 1.0
    assert c.train.augment is False and c.train.val_fraction == 0.25
    assert c.model.filters == (16, 32, 64, 128, 256) and c.model.dropout == "paper" and c.model.norm == "batch"


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    assert load_config(preset).train.epochs > 0


def test_overrides_are_typed_and_checked():
    c = load_config("cpu", ["train.epochs=3", "model.filters=[4, 8]", "preprocess.target_spacing=null"])
    assert c.train.epochs == 3 and c.model.filters == (4, 8) and c.preprocess.target_spacing is None
    with pytest.raises(GliosegError, match="unknown key"):
        load_config("cpu", ["train.epoch=3"])
    with pytest.raises(GliosegError, match="must be an integer"):
        load_config("cpu", ["train.epochs=many"])
    with pytest.raises(GliosegError, match="unknown preset"):
        load_config("fast")


def test_yaml_file_with_unknown_section_rejected(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(GliosegError, match="unknown section"):
        load_config(path)
