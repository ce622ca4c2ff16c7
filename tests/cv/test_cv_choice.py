"""The nested post-processing choice, the selection score, the candidates file, the far-voxel
count and ensembles' probability averaging: hand-built inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from glioseg.cv.report import far_voxels, load_candidates, nested_choice, score


def _row(value: float) -> dict[str, float]:
    return {f"{kind}dice_{region}": value for kind in ("", "lesion_") for region in ("wt", "tc", "et")}


def test_nested_choice_never_lets_a_fold_choose_on_its_own_cases():
    folds = {0: ["a0", "b0"], 1: ["a1", "b1"], 2: ["a2", "b2"]}
    # "good_on_0" wins only on fold 0's cases, by far; "steady" wins on the others
    tables = {
        "good_on_0": {c: _row(1.0 if c.endswith("0") else 0.5) for ids in folds.values() for c in ids},
        "steady": {c: _row(0.6) for ids in folds.values() for c in ids},
    }
    # on all 6 cases "good_on_0" has the higher mean (0.667 vs 0.6) ...
    assert np.mean([score(tables["good_on_0"][c]) for ids in folds.values() for c in ids]) > 0.6
    chosen = nested_choice(tables, folds, inactive=())
    # ... but fold 0 may not see its own cases, so it takes "steady"; folds 1 and 2 see fold 0's
    # cases among the others: (1.0 + 1.0 + 0.5 + 0.5) / 4 = 0.75 > 0.6
    assert chosen == {0: "steady", 1: "good_on_0", 2: "good_on_0"}


def test_ties_go_to_the_candidate_that_changes_nothing():
    folds = {0: ["a"], 1: ["b"]}
    tables = {"filter": {"a": _row(0.5), "b": _row(0.5)}, "none": {"a": _row(0.5), "b": _row(0.5)}}
    assert nested_choice(tables, folds, inactive=("none",)) == {0: "none", 1: "none"}


def test_selection_score_averages_legacy_and_lesion_wise_dice():
    row = {
        "dice_wt": 0.9,
        "dice_tc": 0.6,
        "dice_et": 0.3,
        "lesion_dice_wt": 0.3,
        "lesion_dice_tc": 0.3,
        "lesion_dice_et": 0.3,
    }
    assert score(row) == pytest.approx((0.6 + 0.3) / 2)
    legacy_only = {k: v for k, v in row.items() if not k.startswith("lesion_")}
    assert score(legacy_only) == pytest.approx(0.6)


def test_far_voxels_counts_predicted_tumour_over_10_mm_from_the_reference():
    ref = np.zeros((40, 20, 20), bool)
    ref[5:10, 5:10, 5:10] = True
    pred = ref.copy()
    pred[21:23, 5:7, 5:7] = True  # 8 voxels, 12-13 voxels beyond the reference's last slice (x = 9)
    pred[19, 5, 5] = True  # exactly 10 voxels away: not far
    assert far_voxels(pred, ref, (1.0, 1.0, 1.0)) == (125 + 9, 125, 8)
    # at 0.5 mm voxels the same voxels are 5-6.5 mm away: none is far
    assert far_voxels(pred, ref, (0.5, 1.0, 1.0)) == (134, 125, 0)
    # at 2 mm along x, the voxel 10 voxels away is 20 mm away
    assert far_voxels(pred, ref, (2.0, 1.0, 1.0)) == (134, 125, 9)
    assert far_voxels(pred, np.zeros_like(ref), (1.0, 1.0, 1.0)) == (134, 0, 134)  # no reference tumour: all far


def test_candidates_file_grid_and_names_and_its_errors(tmp_path, capsys):
    from glioseg.errors import GliosegError

    path = tmp_path / "c.yaml"
    path.write_text(
        "grid:\n  min_component_size: [0, 500]\n  et_threshold: [0, 200]\ncandidates:\n  top1: {min_component_size: 1, "
        "max_components: 1}\n"
    )
    candidates = load_candidates(path)
    # the all-off grid point changes nothing: it is the raw baseline, named as in the file
    assert list(candidates) == ["top1", "min_component_size=0,et_threshold=0", "min_component_size=0,et_threshold=200",
                                "min_component_size=500,et_threshold=0", "min_component_size=500,et_threshold=200"]
    assert not candidates["min_component_size=0,et_threshold=0"].active
    assert candidates["min_component_size=500,et_threshold=200"].et_threshold == 200
    path.write_text("candidates:\n  big: {min_component_size: 500}\n")
    assert list(load_candidates(path)) == ["none", "big"]  # a file without an inactive one gains `none`
    path.write_text("candidates:\n  bad: {min_component_sise: 500}\n")
    with pytest.raises(GliosegError, match="min_component_sise"):
        load_candidates(path)
    path.write_text("candidates:\n  bad: {min_et_component_fraction: 2}\n")
    with pytest.raises(GliosegError, match="min_et_component_fraction"):
        load_candidates(path)
    shipped = load_candidates()
    assert "none" in shipped and len(shipped) >= 20
    # no shipped candidate deletes a region outright by size: region rules are relative or keep the largest
    assert all(s.et_threshold <= 200 for s in shipped.values())



@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("candidates: [big, small]\n", "candidates: is not a mapping of name -> postprocess settings"),
        ("candidates:\n  big: {min_component_size: -5}\n", "candidate big: postprocess.min_component_size=-5 is"),
        ("grid:\n  min_et_component_fraction: [0, 2]\n", "candidate min_et_component_fraction=2: postprocess.min_et"),
    ],
)
def test_a_candidates_file_that_is_a_list_or_out_of_range_is_one_line_naming_the_file(tmp_path, text, message):
    """Before: a list under candidates: was a traceback (AttributeError), and a value out of range named its key
    only (`error: postprocess.min_component_size=-5 is outside ...`), not the file nor the candidate."""
    from glioseg.errors import GliosegError

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(GliosegError) as caught:
        load_candidates(path)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value
    assert "\n" not in str(caught.value) and "Fix: " in str(caught.value)


def test_cached_scores_are_not_reused_once_the_reference_changed(tmp_path):
    """Before: the score cache was keyed by the prediction alone, so a corrected reference label map kept its old
    scores in every later `cv report`."""
    from glioseg.cv.report import ScoreJob, score_case
    from glioseg.data.io import write_label_map
    from glioseg.inference.postprocess import PostprocessConfig

    pred = np.zeros((20, 20, 20), np.uint8)
    pred[5:12, 5:12, 5:12] = 2
    pred[7:10, 7:10, 7:10] = 4
    affine = np.eye(4)
    write_label_map(tmp_path / "pred.nii.gz", pred, affine)
    write_label_map(tmp_path / "ref.nii.gz", pred, affine)
    job = ScoreJob(
        "c", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", "brats2018", "brats2023-gli", (PostprocessConfig(),),
        tmp_path / "scores" / "c.json",
    )
    assert next(iter(score_case(job).values()))["dice_wt"] == pytest.approx(1.0)
    moved = np.roll(pred, 4, axis=0)  # the reference corrected: the tumour lies elsewhere
    write_label_map(tmp_path / "ref.nii.gz", moved, affine)
    assert next(iter(score_case(job).values()))["dice_wt"] < 0.9

class _Constant(nn.Module):
    """A network whose logits are ``value`` everywhere (3 region channels)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, *x.shape[2:]) + self.value


def test_an_ensemble_averages_probabilities_not_logits_or_labels():
    from glioseg.config import load_config
    from glioseg.inference.predictor import Predictor

    config = load_config("cpu", ["model.head=regions", "train.patch_size=[8,8,8]", "preprocess.target_spacing=null"])
    predictor = Predictor([_Constant(2.0), _Constant(-1.0)], config, "cpu")
    probabilities = predictor.network_probabilities(np.zeros((4, 12, 12, 12), np.float32))
    expected = (
        1 / (1 + np.exp(-2.0)) + 1 / (1 + np.exp(1.0))
    ) / 2  # 0.5749; averaged logits would give sigmoid(0.5) = 0.6225
    assert probabilities.shape == (3, 12, 12, 12)
    assert np.allclose(probabilities.numpy(), expected, atol=1e-5)
    # one model whose WT probability is 0.4 and one at 0.7: the average (0.55) is tumour
    low, high = np.log(0.4 / 0.6), np.log(0.7 / 0.3)
    labels = predictor.labels(
        Predictor([_Constant(low), _Constant(high)], config, "cpu").network_probabilities(
            np.zeros((4, 8, 8, 8), np.float32)
        )
    )
    assert np.all(labels > 0)
