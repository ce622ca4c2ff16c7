"""Presets: every knob a Config field, old config dicts read as they were trained, strict loading."""

import dataclasses
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from glioseg.config import PRESETS, SECTIONS, TrainConfig, config_from_dict, load_config, preset_path
from glioseg.data.augment import AugmentConfig
from glioseg.data.discovery import discover
from glioseg.data.preprocess import preprocess_case
from glioseg.errors import GliosegError
from glioseg.inference.postprocess import PostprocessConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "glioseg"

# The config dict the shipped model's checkpoint holds (written before the augment, inference
# and postprocess sections existed): it must read back as it was trained.
OLD_CPU_CONFIG = {
    "preprocess": {
        "modalities": ["flair", "t1", "t1ce", "t2"],
        "normalization": "zscore",
        "crop": "brain",
        "fixed_crop": [[56, 184], [56, 184], [13, 141]],
        "margin": 0,
        "target_spacing": [2.0, 2.0, 2.0],
        "min_tumor_fraction": 0.0,
        "image_dtype": "float16",
    },
    "model": {
        "name": "resunet",
        "filters": [16, 32, 64, 128],
        "norm": "instance",
        "head": "regions",
        "dropout": "none",
        "attention_kernel": 7,
    },
    "train": {
        "epochs": 60,
        "batch_size": 2,
        "sampling": "patch",
        "patch_size": [64, 64, 64],
        "samples_per_epoch": 24,
        "foreground_fraction": 0.33,
        "augment": True,
        "loss": "dice_bce",
        "focal_weight": 1.0,
        "optimizer": "adamw",
        "lr": 0.002,
        "weight_decay": 3e-05,
        "schedule": "poly",
        "val_fraction": 0.25,
        "folds": 0,
        "fold": 0,
        "split_seed": 42,
        "val_every": 5,
        "amp": False,
        "seed": 0,
        "deterministic": False,
        "num_workers": 0,
        "threads": 0,
        "device": "auto",
        "sw_overlap": 0.5,
        "time_limit_min": 0.0,
    },
}


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
    assert c.train.grad_clip == 0 and c.train.amp is False and c.train.tf32 is False
    assert not c.augment.enabled and c.train.val_fraction == 0.25
    assert c.model.filters == (16, 32, 64, 128, 256) and c.model.norm == "batch" and c.model.head == "classes"
    # Table II: "Dropout 0.1 - 0.2"; the tutorial's 0.3 at the bottleneck is not in that range
    assert c.model.dropout == (0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1)
    assert load_config("paper", ["model.dropout=tutorial"]).model.dropout[4] == 0.3


def test_paper_preset_and_readme_state_each_choice_between_the_reports_contradictions():
    text = preset_path("paper").read_text()
    readme = (SRC.parents[1] / "README.md").read_text()
    for topic in ("128^3", "binary cross-entropy", "softmax", "encoding and decoding", "0.1-0.2", "clipping", "fp32"):
        assert topic in text, topic
        assert topic in readme, topic


def _leaves(value, prefix=""):
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _leaves(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    else:
        yield prefix, value


def test_paper_preset_preprocesses_as_the_report_says(tmp_path):
    """What the preset does to a BraTS-sized scan, computed by hand: FLAIR, T1ce, T2 in that
    order, each min-max scaled over its whole volume, then the fixed crop [56:184, 56:184, 13:141];
    a case is kept only when more than 1% of the crop is tumor."""
    shape = (190, 190, 145)  # the fixed crop needs at least 184 x 184 x 141
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volumes = {"flair": x, "t1": y, "t1ce": z, "t2": x + y}  # each modality its own ramp
    config = load_config("paper").preprocess
    for case_id, edge, kept in (("Brats18_BIG_1", 30, True), ("Brats18_SMALL_1", 20, False)):  # 1.29% / 0.38% of 128^3
        folder = tmp_path / case_id
        folder.mkdir()
        for name, volume in volumes.items():
            nib.save(nib.Nifti1Image(volume.astype(np.int16), np.eye(4)), str(folder / f"{case_id}_{name}.nii"))
        label = np.zeros(shape, np.uint8)
        label[100 : 100 + edge, 100 : 100 + edge, 60 : 60 + edge] = 4
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(folder / f"{case_id}_seg.nii"))
        result = preprocess_case(next(c for c in discover(tmp_path).cases if c.case_id == case_id), config)
        assert result.kept is kept
        assert result.image.shape == (3, 128, 128, 128)
        crop = (slice(56, 184), slice(56, 184), slice(13, 141))
        np.testing.assert_allclose(result.image[0], (x / 189)[crop], atol=1e-6)  # FLAIR
        np.testing.assert_allclose(result.image[1], (z / 144)[crop], atol=1e-6)  # T1ce
        np.testing.assert_allclose(result.image[2], ((x + y) / 378)[crop], atol=1e-6)  # T2
        assert result.tumor_fraction == pytest.approx(edge**3 / 128**3)
        assert np.count_nonzero(result.label == 3) == edge**3  # BraTS 4 -> internal 3


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_sets_every_section_and_round_trips_through_yaml(preset, tmp_path):
    raw = yaml.safe_load(preset_path(preset).read_text())
    assert set(raw) == set(SECTIONS), "every preset states every section"
    config = load_config(preset)
    # the run folder's config.yaml and the checkpoint's dict read back to the same Config
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path) == config
    assert config_from_dict(config.to_dict()) == config
    # every leaf of the Config is reachable as section.key from the command line
    for key, value in _leaves(config):
        if "." in key and not isinstance(value, tuple) and value is not None:
            assert load_config(preset, [f"{key}={yaml.safe_dump(value).splitlines()[0]}"]) == config, key


def test_the_trainer_validation_and_predictor_use_the_configs_numbers(tmp_path, monkeypatch):
    """Numbers a user might change are Config fields, and the code uses the values given (not
    hard-wired ones): non-default values go in, and reach the optimiser, the schedule, the
    gradient clipping, validation's and the predictor's sliding window and the post-processing."""
    import numpy as np
    import torch

    import glioseg.inference.predictor as predictor_module
    from glioseg.checkpoint import build_model
    from glioseg.data.dataset import WholeVolumeDataset
    from glioseg.data.preprocess import CropInfo, PreprocessedCase
    from glioseg.inference.predictor import Predictor
    from glioseg.training import loop

    config = load_config(
        "cpu",
        [
            "model.filters=[2,4]",
            "train.optimizer=sgd",
            "train.sgd_momentum=0.5",
            "train.sgd_nesterov=false",
            "train.lr=0.1",
            "train.schedule=poly",
            "train.poly_exponent=2",
            "train.epochs=4",
            "train.grad_clip=3.5",
            "train.batch_size=1",
            "train.amp=false",
            "inference.overlap=0.3",
            "inference.sw_batch_size=3",
            "inference.window=[8,8,8]",
            "postprocess.et_threshold=7",
        ],
    )
    model = build_model(config)
    optimizer = loop.make_optimizer(model, config)
    assert optimizer.param_groups[0]["momentum"] == 0.5 and optimizer.param_groups[0]["nesterov"] is False
    scheduler = loop.make_scheduler(optimizer, config)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 1 / 4) ** 2)

    clipped, windows = [], []
    monkeypatch.setattr(loop.nn.utils, "clip_grad_norm_", lambda params, max_norm: clipped.append(max_norm))
    real_window = loop.sliding_window_probabilities
    monkeypatch.setattr(loop, "sliding_window_probabilities", lambda *a, **k: windows.append(k) or real_window(*a, **k))
    monkeypatch.setattr(
        predictor_module, "sliding_window_probabilities", lambda *a, **k: windows.append(k) or real_window(*a, **k)
    )
    image = np.random.default_rng(0).standard_normal((4, 8, 8, 8)).astype(np.float32)
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 2
    crop = CropInfo(
        (8, 8, 8),
        ((0, 8), (0, 8), (0, 8)),
        (8, 8, 8),
        (8, 8, 8),
        (1.0,) * 3,
        (1.0,) * 3,
        tuple(tuple(r) for r in np.eye(4).tolist()),
    )
    trainer = loop.Trainer(
        config=config,
        run_dir=tmp_path,
        model=model,
        loss_fn=loop.make_loss(config),
        optimizer=optimizer,
        scheduler=scheduler,
        train_dataset=WholeVolumeDataset([image], [label], None, 0),
        val_cases=[],
        device=torch.device("cpu"),
        progress=False,
    )
    trainer.train_epoch()
    assert clipped == [3.5]
    loop.validate(model, [PreprocessedCase("a", image, label, crop)], trainer.loss_fn, config, torch.device("cpu"))
    predictor = Predictor([model], config, "cpu")
    predictor.network_probabilities(image)
    for used in windows:
        assert (tuple(used["patch_size"]), used["overlap"], used["sw_batch_size"]) == ((8, 8, 8), 0.3, 3), used
    assert len(windows) == 2 and predictor.postprocessing.et_threshold == 7
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for knob in ("grad_clip", "sgd_momentum", "sgd_nesterov", "poly_exponent", "focal_alpha", "focal_gamma",
                 "dice_include_background", "dice_batch", "dice_smooth", "bce_weight", "ce_weight", "amp", "tf32"):
        assert knob in fields, knob


def test_train_augment_true_with_an_augment_section_is_the_defaults_with_the_section_on_top():
    """A preset's `train.augment: true` and a recipe stage's `set: {augment.lowres_prob: 0.3}` were refused as two
    forms of one setting; `false` beside a section still is (which one would be meant?)."""
    c = config_from_dict({"train": {"augment": True}, "augment": {"lowres_prob": 0.3, "noise_prob": 0.0}})
    assert c.augment == dataclasses.replace(AugmentConfig(), lowres_prob=0.3, noise_prob=0.0)
    with pytest.raises(GliosegError, match=r"train\.augment: false and an augment section"):
        config_from_dict({"train": {"augment": False}, "augment": {"lowres_prob": 0.3}})


def test_old_config_dicts_read_as_the_old_code_trained_them():
    c = config_from_dict(OLD_CPU_CONFIG)
    assert c.augment == AugmentConfig()  # train.augment: true switched on these defaults
    assert c.inference.overlap == 0.5 and c.postprocess == PostprocessConfig()
    assert c.train.grad_clip == 12.0 and c.train.poly_exponent == 0.9 and c.train.sgd_momentum == 0.99
    assert c.train.focal_alpha == 0.25 and c.train.focal_gamma == 2.0 and c.train.amp is False
    assert c.model.dropout == (0.0,) * 7
    assert c.inference.window == (64, 64, 64)  # its patch size: the window it was validated and shipped with
    old_paper = {
        "model": {"filters": [16, 32, 64, 128, 256], "dropout": "paper"},
        "train": {"augment": False, "sw_overlap": 0.25},
    }
    p = config_from_dict(old_paper)
    assert p.model.dropout == (0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1)  # the old "paper" was the tutorial's
    assert not p.augment.enabled and p.inference.overlap == 0.25
    assert p.train.grad_clip == 12.0 and p.train.amp is True  # what the old code did for every preset
    # train.augment beside an augment section: test_train_augment_true_with_an_augment_section_is_the_defaults_...


def test_an_old_checkpoint_without_an_inference_window_gets_its_patch_size():
    """``inference.window`` is a setting of its own; before, ``train.patch_size`` was the window."""
    old = config_from_dict({"train": {"patch_size": [48, 56, 64]}, "inference": {"overlap": 0.25}})
    assert old.inference.window == (48, 56, 64) and old.inference.overlap == 0.25
    assert config_from_dict({"train": {"patch_size": [40, 40, 40]}}).inference.window == (
        40,
        40,
        40,
    )  # no inference section
    assert config_from_dict({}).inference.window == TrainConfig().patch_size
    # given, the window is independent of the patch size, and it reads back as written
    new = load_config("cpu", ["train.patch_size=[32,32,32]", "inference.window=[80,96,112]"])
    assert new.train.patch_size == (32, 32, 32) and new.inference.window == (80, 96, 112)
    assert config_from_dict(new.to_dict()) == new
    with pytest.raises(GliosegError, match=re.escape("inference.window=[0, 96, 112] is outside the allowed range")):
        load_config("cpu", ["inference.window=[0,96,112]"])


def test_choice_settings_are_refused_when_the_config_loads():
    """A misspelt loss, optimizer, schedule or sampling is refused at load, not after the cache is read."""
    for key, value in (("train.loss", "dice_focall"), ("train.optimizer", "adamax"), ("train.schedule", "step"),
                       ("train.sampling", "slices")):
        with pytest.raises(GliosegError, match=re.escape(f"{key}={value} is not one of")):
            load_config("cpu", [f"{key}={value}"])


@pytest.mark.parametrize("preset", ["cpu", "default"])
def test_cpu_and_default_presets_train_as_before(preset):
    c = load_config(preset)
    assert c.train.grad_clip == 12.0 and c.train.poly_exponent == 0.9 and c.augment == AugmentConfig()
    assert c.model.dropout == (0.0,) * (2 * c.model.depth + 1)


def test_overrides_are_typed_and_checked():
    c = load_config(
        "cpu", ["train.epochs=3", "model.filters=[4, 8]", "preprocess.target_spacing=null", "model.dropout=tutorial"]
    )
    assert c.train.epochs == 3 and c.model.filters == (4, 8) and c.preprocess.target_spacing is None
    assert c.model.dropout == (0.1, 0.3, 0.1)  # the schedule expanded for the overridden depth
    with pytest.raises(GliosegError, match="unknown key"):
        load_config("cpu", ["train.epoch=3"])
    with pytest.raises(GliosegError, match="must be an integer"):
        load_config("cpu", ["train.epochs=many"])
    with pytest.raises(GliosegError, match="unknown preset"):
        load_config("fast")
    with pytest.raises(GliosegError, match=r"invalid model settings.*dropout needs 7 rates"):
        load_config("cpu", ["model.dropout=[0.1]"])
    with pytest.raises(GliosegError, match=re.escape("inference.overlap=1.5 is outside the allowed range ([0, 1))")):
        load_config("cpu", ["inference.overlap=1.5"])


def test_yaml_file_with_unknown_section_rejected(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(GliosegError, match="unknown section"):
        load_config(path)
