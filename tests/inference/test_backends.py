"""Backends: the measured choice of ``auto``, its memory, its fallback, and glioseg without the runtimes."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.errors import GliosegError
from glioseg.inference import backends
from glioseg.inference.backends import calibrate, prepare_networks


def tiny_config():
    from glioseg.config import load_config

    return load_config(
        "cpu",
        [
            "model.name=resunet",
            "model.filters=[4,8,8]",
            "model.norm=instance",
            "train.patch_size=[16,16,16]",
            "preprocess.target_spacing=null",
        ],
    )


def save_run(folder, config, seed=0):
    import torch

    from glioseg.checkpoint import build_model, save_checkpoint

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model(config)
    save_checkpoint(folder / "best.pt", {"config": config.to_dict(), "model": model.state_dict()})
    return model

SRC = Path(__file__).resolve().parents[2] / "src"
needs_runtimes = pytest.mark.skipif(
    len(backends.available_backends()) == 1, reason="the fast runtimes are not installed"
)


def _slow(network, seconds):
    def run(x):
        time.sleep(seconds)
        return network(x)

    return run


def test_calibrate_picks_the_fastest_that_agrees_with_torch():
    reference = lambda x: x[:, :3] * 2.0  # noqa: E731 - logits of a pointwise "network"
    shifted = lambda x: x[:, :3] * 2.0 + np.array([0.5, 0.0, 0.0], np.float32).reshape(1, 3, 1, 1, 1)  # noqa: E731 - moves probabilities by up to 0.12
    close = lambda x: x[:, :3] * 2.0 + 1e-4  # noqa: E731
    shape = (1, 4, 6, 6, 6)
    chosen, report = calibrate(
        {"torch": _slow(reference, 0.05), "openvino": shifted, "onnxruntime": _slow(close, 0.02)}, shape, "regions"
    )
    assert chosen == "onnxruntime"
    assert (
        report["openvino"]["max_probability_difference"] > 0.1
        and report["onnxruntime"]["max_probability_difference"] < 1e-4
    )
    assert report["torch"]["seconds"] >= 0.05 > report["onnxruntime"]["seconds"] >= 0.02
    chosen, _ = calibrate({"torch": reference, "openvino": shifted}, shape, "classes")
    assert chosen == "torch"  # the only one that agrees


def test_unknown_and_uninstalled_backends_are_one_line_errors(monkeypatch):
    with pytest.raises(GliosegError, match="unknown backend"):
        prepare_networks(
            [Path("m.pt")], [object()], [None], backend="tensorrt", head="regions", probe_shape=(1, 4, 8, 8, 8)
        )
    monkeypatch.setattr(backends, "available_backends", lambda: ["torch"])
    with pytest.raises(GliosegError, match=r"openvino is not installed.*glioseg\[fast\]"):
        prepare_networks(
            [Path("m.pt")], [object()], [None], backend="openvino", head="regions", probe_shape=(1, 4, 8, 8, 8)
        )
    model = object()
    assert prepare_networks(
        [Path("m.pt")], [model], [None], backend="auto", head="regions", probe_shape=(1, 4, 8, 8, 8)
    ) == ("torch", [model])


@needs_runtimes
def test_auto_measures_once_per_model_and_cpu_then_remembers(tmp_path, monkeypatch):
    from glioseg.checkpoint import model_from_checkpoint

    save_run(tmp_path / "run", tiny_config())
    model, _, _ = model_from_checkpoint(tmp_path / "run")
    kwargs = dict(
        backend="auto", head="regions", probe_shape=(1, 4, 16, 16, 16), threads=1, cache_dir=tmp_path / "cache"
    )
    chosen, networks = prepare_networks([tmp_path / "run"], [model], [None], **kwargs)
    table = json.loads((tmp_path / "cache" / "backends.json").read_text())
    (key, entry), = table.items()
    assert entry["backend"] == chosen and set(entry["measured"]) == set(backends.available_backends())
    assert all(m["max_probability_difference"] <= backends.PROBABILITY_TOLERANCE for m in entry["measured"].values())
    assert backends.cpu_name() in key and "threads=1" in key and "1x4x16x16x16" in key
    assert len(list((tmp_path / "cache" / "exports").iterdir())) == 1  # the checkpoint's ONNX export, kept

    def never(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(backends, "calibrate", never)
    monkeypatch.setattr(backends, "export_model", never, raising=False)
    again, _ = prepare_networks([tmp_path / "run"], [model], [None], **kwargs)
    assert again == chosen
    x = np.random.default_rng(0).standard_normal((1, 4, 16, 16, 16)).astype(np.float32)
    ref = backends.torch_as_numpy(model)(x)
    out = networks[0](x) if chosen != "torch" else backends.torch_as_numpy(networks[0])(x)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


@needs_runtimes
def test_auto_falls_back_to_torch_when_a_runtime_fails(tmp_path, monkeypatch, caplog):
    save_run(tmp_path / "run", tiny_config())

    def broken(*args, **kwargs):
        raise RuntimeError("runtime crashed")

    monkeypatch.setattr(backends, "cached_export", broken)
    model = object()
    chosen, networks = prepare_networks(
        [tmp_path / "run"],
        [model],
        [None],
        backend="auto",
        head="regions",
        probe_shape=(1, 4, 16, 16, 16),
        cache_dir=tmp_path,
    )
    assert (chosen, networks) == ("torch", [model]) and "running on PyTorch" in caplog.text
    installed = backends.available_backends()[1]  # openvino or onnxruntime, whichever is here
    with pytest.raises(RuntimeError):  # asked for explicitly: no silent fallback
        prepare_networks(
            [tmp_path / "run"],
            [model],
            [None],
            backend=installed,
            head="regions",
            probe_shape=(1, 4, 16, 16, 16),
            cache_dir=tmp_path,
        )


BLOCKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    class _NoRuntimes:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("onnxruntime", "openvino", "onnx"):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, _NoRuntimes())
    from glioseg.cli import main
    from glioseg.inference import backends
    assert backends.available_backends() == ["torch"], backends.available_backends()
    backends.CACHE_DIR = Path(sys.argv[1])
    data, out, run = sys.argv[2:5]
    print("RESULT default", main(["predict", data, "-o", out, "--model", run, "--quiet", "--threads", "1"]))
    for backend in ("openvino", "onnxruntime"):
        args = ["predict", data, "-o", out + "2", "--model", run, "--quiet", "--backend", backend]
        print("RESULT", backend, main(args))
    print("RESULT export", main(["export", run, "-o", out + "_export"]))
    assert not any(m.split(".")[0] in ("onnxruntime", "openvino", "onnx") for m in sys.modules)
    """
)


def test_without_the_runtimes_predict_works_exactly_as_before(tmp_path, write_case):
    """``pip install glioseg`` without the ``fast`` extra: the runtimes cannot be imported."""
    from glioseg.inference.predictor import Predictor

    save_run(tmp_path / "run", tiny_config())
    write_case(tmp_path / "data", "Brats18_N_1", shape=(21, 26, 19), seed=4)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    args = [tmp_path / "cache", tmp_path / "data", tmp_path / "out", tmp_path / "run"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert results == [["default", "0"], ["openvino", "2"], ["onnxruntime", "2"], ["export", "2"]], done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and all("glioseg[fast]" in e for e in errors), done.stderr
    assert done.stderr.count(backends.RUNTIME_HINT) == 1, (
        done.stderr
    )  # the default run says once how to get the fast path

    labels = np.asarray(nib.load(str(tmp_path / "out" / "Brats18_N_1.nii.gz")).dataobj)
    predictor = Predictor.from_checkpoints([tmp_path / "run"], "cpu", backend="torch", sw_batch_size=4, threads=1)
    predictor.predict_case(predictor_case(tmp_path / "data"), tmp_path / "ref.nii.gz")
    np.testing.assert_array_equal(labels, np.asarray(nib.load(str(tmp_path / "ref.nii.gz")).dataobj))
    assert not (tmp_path / "cache").exists()  # nothing exported, measured or cached
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out_export").exists()


def predictor_case(root):
    from glioseg.data.discovery import discover

    return discover(root).cases[0]
