import json

import numpy as np
import pytest

from glioseg.data.splits import kfold_split, load_split, ratio_split, save_split
from glioseg.errors import GliosegError

IDS = [f"BraTS19_CASE_{i:03d}" for i in range(23)]


def test_ratio_split_is_deterministic_disjoint_and_complete():
    split = ratio_split(IDS, 0.25, seed=0)
    assert split == ratio_split(IDS, 0.25, seed=0)
    assert set(split["train"]).isdisjoint(split["val"])
    assert sorted(split["train"] + split["val"]) == sorted(IDS)
    assert len(split["val"]) == round(23 * 0.25) == 6
    assert split["method"] == "ratio" and split["seed"] == 0
    assert split["train"] == sorted(split["train"]) and split["val"] == sorted(split["val"])


def test_ratio_split_ignores_input_order_but_not_the_seed():
    shuffled = list(np.random.default_rng(5).permutation(IDS))
    assert ratio_split(shuffled, seed=1) == ratio_split(IDS, seed=1)
    assert ratio_split(IDS, seed=1)["val"] != ratio_split(IDS, seed=2)["val"]


def test_ratio_split_keeps_at_least_one_case_on_each_side():
    assert len(ratio_split(["a", "b"], 0.01)["val"]) == 1
    assert len(ratio_split(["a", "b"], 0.99)["train"]) == 1


def test_kfold_every_id_validated_exactly_once():
    folds = kfold_split(IDS, k=5, seed=0)
    assert len(folds) == 5
    validated = [case for fold in folds for case in fold["val"]]
    assert sorted(validated) == sorted(IDS)
    assert {len(fold["val"]) for fold in folds} <= {4, 5}
    for index, fold in enumerate(folds):
        assert fold["fold"] == index and fold["k"] == 5
        assert set(fold["train"]).isdisjoint(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(IDS)
    assert kfold_split(list(reversed(IDS)), k=5, seed=0) == folds


@pytest.mark.parametrize(
    "call",
    [
        lambda: ratio_split(["only"]),
        lambda: ratio_split(IDS, 0.0),
        lambda: ratio_split(IDS, 1.0),
        lambda: ratio_split(["a", "b", "a"]),
        lambda: kfold_split(IDS[:3], k=4),
        lambda: kfold_split(IDS, k=1),
        lambda: kfold_split(["x"], k=2),
    ],
)
def test_invalid_input_raises(call):
    with pytest.raises(GliosegError):
        call()


def test_save_and_load_round_trip(tmp_path):
    split = ratio_split(IDS, seed=3)
    path = tmp_path / "split.json"
    save_split(path, split)
    assert load_split(path) == split
    assert set(json.loads(path.read_text())) >= {"train", "val", "seed", "method"}
    fold = kfold_split(IDS, k=3)[2]
    save_split(path, fold)
    assert load_split(path) == fold


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(GliosegError, match="not found"):
        load_split(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GliosegError, match="cannot read"):
        load_split(bad)
    bad.write_text(json.dumps({"train": ["a"], "val": ["a"], "seed": 0, "method": "ratio"}))
    with pytest.raises(GliosegError, match="both train and val"):
        load_split(bad)
    bad.write_text(json.dumps({"train": ["a"], "val": ["b"]}))
    with pytest.raises(GliosegError, match="lacks"):
        load_split(bad)
