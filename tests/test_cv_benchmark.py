"""The cross-validation benchmark's own logic (``benchmarks/cv``): which stages a recipe trains
first, the nested post-processing choice that keeps every reported score out-of-fold, and the
count of false positives away from the tumour."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

CV = Path(__file__).resolve().parents[1] / "benchmarks" / "cv"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"cv_{name}", CV / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _module("report")
run = _module("run")


def test_a_third_stage_trains_its_two_earlier_stages_first_in_order(tmp_path):
    work = tmp_path / "recipe_c"
    assert run.first_stages(CV / "recipe_c.yaml", work) == [
        (CV / "recipe_a.yaml", tmp_path / "recipe_a"),
        (CV / "recipe_b.yaml", tmp_path / "recipe_b"),
    ]
    assert run.first_stage(CV / "recipe_c.yaml", work, 3) == (CV / "recipe_b.yaml", tmp_path / "recipe_b", tmp_path / "recipe_b" / "runs" / "fold3" / "last.pt")
    assert run.first_stages(CV / "recipe_a.yaml", tmp_path / "recipe_a") == []  # a first stage starts from scratch
    assert run.first_stage(CV / "recipe_c_whole.yaml", tmp_path / "recipe_c_whole", 1) == (CV / "recipe_b.yaml", tmp_path / "recipe_b", tmp_path / "recipe_b" / "runs" / "fold1" / "last.pt")


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
    assert np.mean([report.score(tables["good_on_0"][c]) for ids in folds.values() for c in ids]) > 0.6
    chosen = report.nested_choice(tables, folds)
    # ... but fold 0 may not see its own cases, so it takes "steady"; folds 1 and 2 see fold 0's
    # cases among the others: (1.0 + 1.0 + 0.5 + 0.5) / 4 = 0.75 > 0.6
    assert chosen == {0: "steady", 1: "good_on_0", 2: "good_on_0"}


def test_selection_score_averages_legacy_and_lesion_wise_dice():
    row = {"dice_wt": 0.9, "dice_tc": 0.6, "dice_et": 0.3, "lesion_dice_wt": 0.3, "lesion_dice_tc": 0.3, "lesion_dice_et": 0.3}
    assert report.score(row) == pytest.approx((0.6 + 0.3) / 2)
    legacy_only = {k: v for k, v in row.items() if not k.startswith("lesion_")}
    assert report.score(legacy_only) == pytest.approx(0.6)


def test_far_voxels_counts_predicted_tumour_over_10_mm_from_the_reference():
    ref = np.zeros((40, 20, 20), bool)
    ref[5:10, 5:10, 5:10] = True
    pred = ref.copy()
    pred[21:23, 5:7, 5:7] = True  # 8 voxels, 12-13 voxels beyond the reference's last slice (x = 9)
    pred[19, 5, 5] = True  # exactly 10 voxels away: not far
    assert report.far_voxels(pred, ref, (1.0, 1.0, 1.0)) == (125 + 9, 125, 8)
    # at 0.5 mm voxels the same voxels are 5-6.5 mm away: none is far
    assert report.far_voxels(pred, ref, (0.5, 1.0, 1.0)) == (134, 125, 0)
    # at 2 mm along x, the voxel 10 voxels away is 20 mm away
    assert report.far_voxels(pred, ref, (2.0, 1.0, 1.0)) == (134, 125, 9)
    assert report.far_voxels(pred, np.zeros_like(ref), (1.0, 1.0, 1.0)) == (134, 0, 134)  # no reference tumour: all far


def test_resolution_ceiling_is_exact_on_the_native_grid_and_costs_the_small_region_most_at_2_mm(tmp_path, write_case):
    from glioseg.config import load_config
    from glioseg.data.discovery import discover

    ceiling = _module("resolution_ceiling").ceiling
    write_case(tmp_path / "data", shape=(24, 26, 28))
    case = discover(tmp_path / "data").cases[0]
    native = load_config("default", ["preprocess.target_spacing=[1.0, 1.0, 1.0]"]).preprocess
    assert ceiling(case, native) == {"wt": 1.0, "tc": 1.0, "et": 1.0}
    coarse = ceiling(case, load_config("default", ["preprocess.target_spacing=[2.0, 2.0, 2.0]"]).preprocess)
    # the smaller the region, the more 2 mm voxels cost it: 8^3 whole tumour, 4^3 core, 2 x 2 x 4 ET
    assert coarse["et"] < coarse["tc"] < coarse["wt"] < 1.0 and coarse["wt"] > 0.8
