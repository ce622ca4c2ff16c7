"""Validation decodes as ``glioseg predict`` does: its Dice is the Dice of the labels predict writes."""

import numpy as np
import pytest
import torch
from torch import nn

from glioseg.config import load_config
from glioseg.data.cache import load_cached, preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.synth import write_cohort
from glioseg.evaluation import evaluate
from glioseg.heads import probabilities_to_labels
from glioseg.inference.predictor import Predictor
from glioseg.labels import REGIONS, region_masks
from glioseg.losses import build_loss
from glioseg.metrics import dice
from glioseg.training.loop import validate


class Thresholds(nn.Module):
    """A fixed 'network' whose regions follow the image: WT where FLAIR is bright, TC and ET where T1ce is.

    Its labels are good but not perfect, so the grid they are decided on changes the Dice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(4, 3, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0], self.conv.bias[0] = 4.0, -4.0  # WT: FLAIR above 1 standard deviation
            self.conv.weight[1, 2], self.conv.bias[1] = 4.0, -6.0  # TC: T1ce above 1.5
            self.conv.weight[2, 2], self.conv.bias[2] = 4.0, -8.0  # ET: T1ce above 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("postprocess", [[], ["postprocess.min_et_component_size=3", "postprocess.et_threshold=5"]])
def test_validation_dice_is_the_dice_of_what_predict_writes_on_a_2mm_recipe(tmp_path, postprocess):
    write_cohort(tmp_path / "data", cases=1, shape=(40, 44, 36), layout="brats2020", seed=5)
    config = load_config(
        "cpu",
        [
            "preprocess.target_spacing=[2,2,2]",
            "model.head=regions",
            "train.patch_size=[16,16,16]",
            "model.filters=[4,8]",
            *postprocess,
        ],
    )
    cases = discover(tmp_path / "data").cases
    preprocess_dataset(cases, config.preprocess, tmp_path / "cache", progress=False)
    case = load_cached(tmp_path / "cache", cases[0].case_id, config.preprocess)
    assert case.image.shape[1:] != case.crop.cropped_shape  # resampled: 2 mm against the scans' 1 mm
    model = Thresholds()

    val = validate(model, [case], build_loss("dice_bce", head="regions"), config, torch.device("cpu"))
    Predictor([model], config, "cpu").predict_cases(cases, tmp_path / "pred", progress=False)
    (row,) = evaluate(tmp_path / "pred", tmp_path / "data", workers=1).rows
    for region in REGIONS:
        assert val[f"dice_{region}"] == pytest.approx(row[f"dice_{region}"], abs=1e-12), region
    assert 0.5 < val["dice_mean"] < 0.95  # labels good enough to score, far from perfect

    # the former rule (labels decided and scored on the 2 mm grid) gives another Dice: the test can fail
    predictor = Predictor([model], config, "cpu")
    on_grid = probabilities_to_labels(predictor.network_probabilities(case.image).numpy(), "regions", 0.5)
    former = np.mean([dice(region_masks(on_grid)[r], region_masks(case.label)[r]) for r in REGIONS])
    assert abs(former - val["dice_mean"]) > 0.05
