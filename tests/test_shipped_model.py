"""The model shipped inside the package: loads safely, passes its checksum, segments real cases."""

import json

import pytest
import torch

from glioseg.checkpoint import model_from_checkpoint
from glioseg.checksums import shipped_checkpoints, verify_checksum
from glioseg.cli import main
from glioseg.inference.predictor import resolve_checkpoints


def test_shipped_model_loads_weights_only_and_checksum_holds():
    paths = shipped_checkpoints()
    assert [p.name for p in paths] == ["glioseg_cpu_resunet.pt"]
    assert paths[0].stat().st_size < 10 * 2**20
    payload = torch.load(paths[0], weights_only=True)
    assert set(payload) >= {"config", "model"}
    verify_checksum(paths[0])
    assert resolve_checkpoints(None) == paths
    model, config, _ = model_from_checkpoint(paths[0])
    assert config.model.name == "resunet" and config.preprocess.target_spacing == (2.0, 2.0, 2.0)
    with torch.no_grad():
        assert model(torch.zeros(1, 4, 24, 20, 18)).shape == (1, 3, 24, 20, 18)


@pytest.mark.slow
@pytest.mark.real
def test_shipped_model_on_the_validation_cases(real_data_root, tmp_path):
    """Acceptance: mean Dice WT >= 0.80 on the held-out cases of the real split."""
    validation = ["Brats18_CBICA_AOZ_1", "Brats18_TCIA01_499_1", "Brats18_TCIA02_370_1", "Brats18_TCIA13_623_1"]
    cases = tmp_path / "val"
    cases.mkdir()
    for case_id in validation:
        (cases / case_id).symlink_to(real_data_root / case_id)
    assert main(["predict", str(cases), "-o", str(tmp_path / "pred"), "--quiet", "--timings", str(tmp_path / "t.json")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(cases), "-o", str(tmp_path / "eval")]) == 0
    rows = (tmp_path / "eval" / "summary.csv").read_text().splitlines()
    mean = {r.split(",")[0]: float(r.split(",")[2]) for r in rows[1:]}
    assert mean["dice_wt"] >= 0.80
    assert json.loads((tmp_path / "t.json").read_text())["median_total_s"] <= 30
