"""The cross-validation benchmark's own script (``benchmarks/cv/resolution_ceiling.py``); the
cross-validation itself is ``glioseg cv``, tested in ``tests/cv``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CV = Path(__file__).resolve().parents[1] / "benchmarks" / "cv"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"cv_{name}", CV / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_resolution_ceiling_is_exact_on_the_native_grid_and_costs_the_small_region_most_at_2_mm(tmp_path, write_case):
    from glioseg.config import load_config
    from glioseg.data.discovery import discover

    ceiling = _module("resolution_ceiling").ceiling
    write_case(tmp_path / "data", shape=(24, 26, 28))
    case = discover(tmp_path / "data").cases[0]
    native = load_config("default", ["preprocess.target_spacing=[1.0, 1.0, 1.0]"]).preprocess
    assert ceiling(case, native) == {f"{r}_{kind}": 1.0 for kind in ("hard", "soft") for r in ("wt", "tc", "et")}
    coarse = ceiling(case, load_config("default", ["preprocess.target_spacing=[2.0, 2.0, 2.0]"]).preprocess)
    # the smaller the region, the more 2 mm voxels cost it: 8^3 whole tumour, 4^3 core, 2 x 2 x 4 ET
    assert coarse["et_hard"] < coarse["tc_hard"] < coarse["wt_hard"] < 1.0 and coarse["wt_hard"] > 0.8
    # the footprint fractions give back more of every region than the hard resampled labels
    # footprint fractions give back at least as much of the 8^3 whole tumour (on grid-aligned cubes
    # they erode the corners of the smallest regions; spheres: tests/data/test_soft_targets.py)
    assert coarse["wt_soft"] >= coarse["wt_hard"]
