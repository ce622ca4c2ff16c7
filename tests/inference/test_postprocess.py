"""Post-processing on small hand-made label maps (internal convention 0 bg, 1 NCR, 2 ED, 3 ET)."""

import numpy as np
import pytest

from glioseg.inference.postprocess import (
    PostprocessConfig,
    apply_et_threshold,
    choose_et_threshold,
    postprocess,
    remove_small_components,
)


def _blob(shape=(12, 12, 12)):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:8, 2:8, 2:8] = 2  # 216 voxels of WT
    labels[4:6, 4:6, 4:6] = 3  # 8 voxels of ET
    return labels


def test_et_rule_relabels_small_et_as_necrosis_and_keeps_large_et():
    labels = _blob()
    before = labels.copy()
    out = apply_et_threshold(labels, threshold=9)
    assert np.count_nonzero(out == 3) == 0
    assert np.count_nonzero(out == 1) == 8  # exactly the former ET voxels
    assert np.array_equal(labels, before)  # input untouched
    assert np.array_equal(apply_et_threshold(labels, threshold=8), labels)  # 8 voxels is not < 8
    assert np.array_equal(apply_et_threshold(labels, threshold=0), labels)  # off


def test_small_components_removed_largest_and_big_ones_kept():
    labels = _blob((20, 12, 12))
    labels[12:15, 2:5, 2:5] = 2  # 27 voxels, separate
    labels[18, 10, 10] = 3  # 1 voxel, separate
    out = remove_small_components(labels, min_size=10)
    assert out[18, 10, 10] == 0
    assert np.array_equal(out[12:15, 2:5, 2:5], labels[12:15, 2:5, 2:5])
    assert np.array_equal(out[:10], labels[:10])
    only_largest = remove_small_components(labels, min_size=10, max_components=1)
    assert np.count_nonzero(only_largest) == 216
    # the largest is kept even when smaller than min_size
    assert np.count_nonzero(remove_small_components(labels, min_size=10_000)) == 216


def test_connectivity_decides_what_is_one_component():
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 2
    labels[3, 3, 3] = 1  # touches the cube only by a corner
    assert remove_small_components(labels, 2, connectivity=26)[3, 3, 3] == 1
    assert remove_small_components(labels, 2, connectivity=6)[3, 3, 3] == 0


def test_postprocess_applies_both_steps_and_is_off_by_default():
    labels = _blob((20, 12, 12))
    labels[15, 5, 5] = 3  # stray ET voxel -> removed as a component, then ET count is 8
    assert not PostprocessConfig().active
    assert np.array_equal(postprocess(labels, PostprocessConfig()), labels)
    out = postprocess(labels, PostprocessConfig(et_threshold=9, min_component_size=5))
    assert out[15, 5, 5] == 0 and np.count_nonzero(out == 3) == 0 and np.count_nonzero(out == 1) == 8
    with pytest.raises(ValueError):
        PostprocessConfig(et_threshold=-1)


def test_choose_et_threshold_maximises_mean_et_dice_with_brats_empty_rule():
    shape = (10, 10, 10)
    # case A: no ET in the reference, a 5-voxel false-positive ET -> rule (>5) turns Dice 0 into 1
    ref_a = np.zeros(shape, np.uint8)
    ref_a[2:6, 2:6, 2:6] = 1
    pred_a = ref_a.copy()
    pred_a[2, 2, 2:7] = 3
    # case B: a true 20-voxel ET predicted correctly -> rule with threshold > 20 destroys it
    ref_b = np.zeros(shape, np.uint8)
    ref_b[1:3, 1:3, 1:6] = 3
    pred_b = ref_b.copy()
    best, scores = choose_et_threshold([pred_a, pred_b], [ref_a, ref_b], candidates=[0, 3, 6, 10, 21, 50])
    assert scores[0] == pytest.approx(0.5) and scores[3] == pytest.approx(0.5)
    assert scores[6] == pytest.approx(1.0) and scores[10] == pytest.approx(1.0)
    assert scores[21] == pytest.approx(0.5)  # B's ET (20 voxels) removed -> Dice 0, A still 1
    assert best == 6  # smallest of the tied best
    # consistent with actually applying the rule
    applied = [apply_et_threshold(p, best) for p in (pred_a, pred_b)]
    assert not np.any(applied[0] == 3) and np.array_equal(applied[1], pred_b)
