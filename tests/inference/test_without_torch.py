"""``glioseg predict`` on a runtime imports neither PyTorch nor MONAI, and writes the labels of the PyTorch path.

The runtime path needs a cached export (made, with PyTorch, by the first prediction) and, for ``auto``, a
remembered runtime choice; a damaged cached export is detected and made again (with PyTorch), never used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.cli import main
from glioseg.errors import GliosegError
from glioseg.inference import backends

SRC = Path(__file__).resolve().parents[2] / "src"
pytestmark = pytest.mark.skipif(
    "onnxruntime" not in backends.available_backends(), reason="ONNX Runtime is not installed"
)

PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from glioseg.cli import main
    from glioseg.inference import backends
    backends.CACHE_DIR = Path(sys.argv[1])
    code = main(sys.argv[2:])
    imported = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai"))
    print(json.dumps({"code": code, "imported": imported}))
    """
)


def _predict_in_a_fresh_process(cache: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(cache), "predict", *args, "--quiet", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _stamp(path: Path) -> str:
    from glioseg.inference.predictor import read_stamp

    stamp = read_stamp(path)
    assert stamp is not None
    return stamp


@pytest.fixture()
def model_and_case(tmp_path, write_case):
    """A tiny checkpoint whose recipe resamples (to 1.6 mm: the numpy resize runs both ways) and one case."""
    import torch

    from glioseg.checkpoint import build_model, save_checkpoint
    from glioseg.config import load_config

    config = load_config(
        "cpu",
        [
            "model.name=resunet", "model.filters=[4,8,8]", "model.norm=instance", "train.patch_size=[16,16,16]",
            "inference.window=[16,16,16]", "preprocess.target_spacing=[1.6,1.6,1.6]",
        ],
    )
    torch.manual_seed(0)
    (tmp_path / "run").mkdir()
    model = build_model(config)
    save_checkpoint(tmp_path / "run" / "best.pt", {"config": config.to_dict(), "model": model.state_dict()})
    write_case(tmp_path / "data", "Brats18_W_1", shape=(29, 33, 27), seed=6)
    return tmp_path / "run", tmp_path / "data"


def test_runtime_predict_imports_no_torch_and_writes_the_torch_labels(tmp_path, model_and_case, monkeypatch):
    run, data = model_and_case
    cache = tmp_path / "cache"
    common = [str(data), "--model", str(run), "--quiet", "--threads", "1"]
    torch_run = ["predict", *common[:1], "-o", str(tmp_path / "torch"), *common[1:], "--backend", "torch"]
    assert main([*torch_run, "--save-probabilities"]) == 0
    reference = _labels(tmp_path / "torch" / "Brats18_W_1.nii.gz")

    # the first prediction with auto exports the checkpoint and measures (here: ONNX Runtime is made the choice)
    with monkeypatch.context() as patch:
        patch.setattr(backends, "CACHE_DIR", cache)
        patch.setattr(backends, "calibrate", lambda networks, *a, **k: ("onnxruntime", {n: {} for n in networks}))
        assert main(["predict", *common[:1], "-o", str(tmp_path / "first"), *common[1:]]) == 0
    (export_folder,) = (cache / "exports").iterdir()

    # later predictions: no PyTorch, no MONAI; the same labels and the same stamp
    later = _predict_in_a_fresh_process(cache, [str(data), "-o", str(tmp_path / "later"), "--model", str(run)])
    assert later == {"code": 0, "imported": []}
    explicit = _predict_in_a_fresh_process(
        cache,
        [str(data), "-o", str(tmp_path / "explicit"), "--model", str(run), "--backend", "onnxruntime",
         "--save-probabilities"],
    )
    assert explicit == {"code": 0, "imported": []}
    exported = _predict_in_a_fresh_process(cache, [str(data), "-o", str(tmp_path / "folder"), "--model",
                                                   str(export_folder)])
    assert exported == {"code": 0, "imported": []}
    for name in ("first", "later", "explicit", "folder"):
        np.testing.assert_array_equal(_labels(tmp_path / name / "Brats18_W_1.nii.gz"), reference)
    assert _stamp(tmp_path / "later" / "Brats18_W_1.nii.gz") == _stamp(tmp_path / "first" / "Brats18_W_1.nii.gz")
    assert reference.any()  # a prediction with tumour in it, not an empty map that would match anything
    with np.load(tmp_path / "torch" / "Brats18_W_1_probabilities.npz") as on_torch, np.load(
        tmp_path / "explicit" / "Brats18_W_1_probabilities.npz"
    ) as on_runtime:  # on the original grid (the numpy resize), float16
        np.testing.assert_allclose(
            on_torch["probabilities"].astype(np.float32), on_runtime["probabilities"].astype(np.float32), atol=1e-3
        )



def test_a_damaged_cached_export_is_exported_again_not_used(tmp_path, model_and_case, monkeypatch):
    from glioseg.inference.export import load_export

    run, data = model_and_case
    cache = tmp_path / "cache"
    options = ["--model", str(run), "--quiet", "--threads", "1"]  # the threads of the fresh process below
    with monkeypatch.context() as patch:
        patch.setattr(backends, "CACHE_DIR", cache)
        patch.setattr(backends, "calibrate", lambda networks, *a, **k: ("onnxruntime", {n: {} for n in networks}))
        assert main(["predict", str(data), "-o", str(tmp_path / "first"), *options]) == 0
    (folder,) = (cache / "exports").iterdir()
    with open(folder / "model.onnx", "ab") as handle:
        handle.write(b"\0")  # damaged: fails its checksum
    with pytest.raises(GliosegError, match="fails its checksum"):
        load_export(folder)
    assert backends.runtime_networks_without_torch([run], backend="auto", device="cpu", window=None, threads=1,
                                                   cache_dir=cache) is None  # left to the PyTorch path
    with monkeypatch.context() as patch:
        patch.setattr(backends, "CACHE_DIR", cache)
        assert main(["predict", str(data), "-o", str(tmp_path / "again"), *options]) == 0
    load_export(folder)  # exported again: every file passes its checksum
    np.testing.assert_array_equal(
        _labels(tmp_path / "again" / "Brats18_W_1.nii.gz"), _labels(tmp_path / "first" / "Brats18_W_1.nii.gz")
    )
    later = _predict_in_a_fresh_process(cache, [str(data), "-o", str(tmp_path / "later"), "--model", str(run)])
    assert later == {"code": 0, "imported": []}


def test_without_a_remembered_choice_or_on_a_gpu_pytorch_decides(tmp_path, model_and_case, monkeypatch):
    run, _ = model_and_case
    kwargs = {"window": None, "threads": 1, "cache_dir": tmp_path / "cache"}
    monkeypatch.setattr(backends, "calibrate", lambda networks, *a, **k: ("onnxruntime", {n: {} for n in networks}))
    assert backends.runtime_networks_without_torch([run], backend="auto", device="cpu", **kwargs) is None  # no export
    backends.cached_export(run, tmp_path / "cache")
    assert backends.runtime_networks_without_torch([run], backend="auto", device="cpu", **kwargs) is None  # not chosen
    monkeypatch.setattr(backends, "remembered_choice", lambda key, cache_dir=None: "onnxruntime")
    chosen, _, _ = backends.runtime_networks_without_torch([run], backend="auto", device="cpu", **kwargs)
    assert chosen == "onnxruntime"

    def broken(*args: object) -> None:
        raise RuntimeError("the runtime cannot load this export")

    with monkeypatch.context() as patch:  # a runtime that fails to load: auto leaves it to the PyTorch path
        patch.setattr(backends, "_runtime_network", broken)
        assert backends.runtime_networks_without_torch([run], backend="auto", device="cpu", **kwargs) is None
    monkeypatch.setattr(backends, "remembered_choice", lambda key, cache_dir=None: "torch")
    assert backends.runtime_networks_without_torch([run], backend="auto", device="cpu", **kwargs) is None
    chosen, networks, (config,) = backends.runtime_networks_without_torch(
        [run], backend="onnxruntime", device="cpu", **kwargs
    )
    assert chosen == "onnxruntime" and len(networks) == 1 and config.model.head == "regions"
    assert backends.runtime_networks_without_torch([run], backend="onnxruntime", device="cuda", **kwargs) is None
    monkeypatch.setattr(backends, "gpu_possible", lambda: True)
    assert backends.runtime_networks_without_torch([run], backend="onnxruntime", device="auto", **kwargs) is None
    assert backends.runtime_networks_without_torch([run], backend="torch", device="cpu", **kwargs) is None
