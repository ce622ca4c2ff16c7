"""Missing modalities: the zero-channel representation, modality dropout, and what the network sees."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from torch import nn

from glioseg.config import PRESETS, config_from_dict, load_config
from glioseg.data.augment import AugmentConfig, RandomModalityDropout, augment
from glioseg.data.discovery import discover
from glioseg.data.modalities import describe, drop_modalities, fill_absent, present_modalities
from glioseg.errors import GliosegError
from glioseg.inference.predictor import Predictor, read_stamp

TINY = [
    "model.name=unet",
    "model.filters=[4,8]",
    "model.norm=none",
    "model.dropout=none",
    "train.patch_size=[16,16,16]",
    "preprocess.target_spacing=null",
]


def test_drop_modalities_zeroes_exactly_the_dropped_channels():
    image = np.arange(2 * 4 * 3 * 1 * 1, dtype=np.float32).reshape(4, 2, 3, 1) - 5  # negative, zero and positive values
    out = drop_modalities(image, (True, False, True, False))
    assert np.all(out[1] == 0) and np.all(out[3] == 0)
    np.testing.assert_array_equal(out[[0, 2]], image[[0, 2]])
    assert image[1].any()  # the input is not modified
    assert drop_modalities(image, (True,) * 4) is image
    with pytest.raises(ValueError, match="3 keep flags for 4 channels"):
        drop_modalities(image, (True, True, False))


def test_fill_absent_places_the_present_channels_and_zeros():
    present = np.stack([np.full((2, 2, 2), 7.0), np.full((2, 2, 2), -3.0)]).astype(np.float32)
    out = fill_absent(present, ("t1", "t2"), ("flair", "t1", "t1ce", "t2"))
    assert out.shape == (4, 2, 2, 2) and out.dtype == np.float32
    assert [float(c.min()) for c in out] == [0.0, 7.0, 0.0, -3.0] and [float(c.max()) for c in out] == [
        0.0,
        7.0,
        0.0,
        -3.0,
    ]
    full = np.ones((4, 2, 2, 2), dtype=np.float32)
    assert fill_absent(full, ("flair", "t1", "t1ce", "t2"), ("flair", "t1", "t1ce", "t2")) is full
    with pytest.raises(ValueError, match="not a non-empty subset"):
        fill_absent(present, ("t2", "t1"), ("flair", "t1", "t1ce", "t2"))  # out of the model's order
    with pytest.raises(ValueError, match="not a non-empty subset"):
        fill_absent(np.zeros((0, 2, 2, 2), np.float32), (), ("flair", "t1"))


def test_modality_dropout_draws_every_proper_subset_uniformly_and_replays():
    transform = RandomModalityDropout(1.0)
    draws = [transform.sample_params(np.random.default_rng([5, i]), 4).keep for i in range(2800)]
    counts: dict[tuple[bool, ...], int] = {}
    for keep in draws:
        counts[keep] = counts.get(keep, 0) + 1
    assert len(counts) == 14  # 2^4 - 2: never none kept, never all kept
    assert all(any(k) and not all(k) for k in counts)
    assert all(120 <= n <= 280 for n in counts.values()), counts  # 200 expected each
    assert draws[:50] == [transform.sample_params(np.random.default_rng([5, i]), 4).keep for i in range(50)]


def test_modality_dropout_off_draws_nothing_so_old_runs_replay():
    """With modality_dropout 0 (every preset), augment() consumes the generator exactly as before it existed."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert RandomModalityDropout(0.0).sample_params(rng_a, 4).keep == ()
    assert rng_a.random() == rng_b.random()
    image = np.random.default_rng(1).standard_normal((4, 12, 12, 12)).astype(np.float32)
    label = np.zeros((12, 12, 12), np.uint8)
    config = AugmentConfig()
    out, _ = augment(image, label, config, np.random.default_rng(9))
    again, _ = augment(image, label, AugmentConfig(modality_dropout=0.0), np.random.default_rng(9))
    np.testing.assert_array_equal(out, again)


def test_dropped_channel_is_exactly_zero_after_every_other_augmentation():
    """Dropout runs last: noise, gamma and intensity never leave a trace in a dropped channel."""
    image = np.random.default_rng(2).standard_normal((4, 16, 16, 16)).astype(np.float32) + 3
    label = np.zeros((16, 16, 16), np.uint8)
    config = AugmentConfig(noise_prob=1.0, gamma_prob=1.0, intensity_prob=1.0, modality_dropout=1.0)
    seen = set()
    for seed in range(20):
        out, _ = augment(image, label, config, np.random.default_rng(seed))
        kept = tuple(bool(np.any(channel)) for channel in out)
        assert any(kept) and not all(kept)
        seen.add(kept)
    assert len(seen) > 3


def test_modality_dropout_is_range_checked_and_zero_in_every_preset():
    with pytest.raises(
        GliosegError, match=re.escape("augment.modality_dropout=1.5 is outside the allowed range ([0, 1])")
    ):
        load_config("cpu", ["augment.modality_dropout=1.5"])
    for preset in PRESETS:
        assert load_config(preset).augment.modality_dropout == 0.0
    old = load_config("cpu").to_dict()
    del old["augment"]["modality_dropout"]  # a checkpoint written before the field existed
    assert config_from_dict(old).augment.modality_dropout == 0.0
    assert not AugmentConfig.none().enabled
    assert dataclasses.replace(
        AugmentConfig.none(), modality_dropout=0.2
    ).enabled  # whole-volume training augments then


class Recorder(nn.Module):
    """Pointwise linear logits that also keep every window the predictor gives the network."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), requires_grad=False)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return nn.functional.conv3d(x, self.weight[..., None, None, None])


@pytest.mark.parametrize("absent", ["flair", "t1", "t1ce", "t2"])
def test_the_network_sees_the_full_input_with_the_absent_channel_zeroed(tmp_path, write_case, absent):
    """Hand-built check: a case without one modality reaches the network exactly as the full case
    with that channel set to 0 (the case's modalities share one brain mask, so nothing else moves)."""
    write_case(tmp_path / "full", "Brats18_F_1", shape=(20, 22, 24), seed=4)
    folder = write_case(tmp_path / "part", "Brats18_F_1", shape=(20, 22, 24), seed=4)
    (folder / f"Brats18_F_1_{absent}.nii.gz").unlink()
    config = load_config("cpu", [*TINY, "augment.modality_dropout=0.5"])
    full_model, part_model = Recorder(), Recorder()
    full_case, part_case = discover(tmp_path / "full").cases[0], discover(tmp_path / "part", required=()).cases[0]
    Predictor([full_model], config).predict_case(full_case, tmp_path / "full.nii.gz")
    part = Predictor([part_model], config)
    part.predict_case(part_case, tmp_path / "part.nii.gz")
    index = ("flair", "t1", "t1ce", "t2").index(absent)
    assert len(full_model.seen) == len(part_model.seen) > 0
    for whole, missing in zip(full_model.seen, part_model.seen, strict=True):
        expected = whole.clone()
        expected[:, index] = 0
        assert whole[:, index].abs().sum() > 0  # the full case's channel is not zero
        torch.testing.assert_close(missing, expected, rtol=0, atol=0)
    used = ",".join(m for m in ("flair", "t1", "t1ce", "t2") if m != absent)
    assert read_stamp(tmp_path / "part.nii.gz").endswith(f" inputs={used}")
    assert read_stamp(tmp_path / "full.nii.gz").endswith(" inputs=flair,t1,t1ce,t2")


def test_a_model_without_dropout_refuses_a_missing_modality_and_none_is_refused(tmp_path, write_case):
    folder = write_case(tmp_path, "Brats18_G_1", shape=(20, 22, 24))
    (folder / "Brats18_G_1_t1ce.nii.gz").unlink()
    case = discover(tmp_path, required=()).cases[0]
    plain = load_config("cpu", TINY)
    with pytest.raises(
        GliosegError,
        match="has no t1ce image, and this model was trained on all of flair, t1, t1ce, t2 without modality dropout",
    ) as info:
        present_modalities(case, plain)
    assert "Brats18_G_1" in str(
        info.value
    ) and "Fix: add the missing file(s) (expected names like Brats18_G_1_t1ce.nii.gz)" in str(info.value)
    assert present_modalities(case, load_config("cpu", [*TINY, "augment.modality_dropout=0.3"])) == (
        "flair",
        "t1",
        "t2",
    )
    paper_like = load_config("cpu", [*TINY, "augment.modality_dropout=0.3", "preprocess.modalities=[t1ce]"])
    with pytest.raises(GliosegError, match="has none of the modalities the model reads \\(t1ce\\)"):
        present_modalities(case, paper_like)
    assert (
        describe(("flair", "t2"), ("flair", "t1", "t1ce", "t2"))
        == "flair, t2 (absent: t1, t1ce, given as zero channels)"
    )
