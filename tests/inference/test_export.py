"""Exported models: logits equal PyTorch's, checksums, nothing half-written, the CLI round trip."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from glioseg.checkpoint import build_model, save_checkpoint
from glioseg.cli import main
from glioseg.config import load_config
from glioseg.errors import GliosegError
from glioseg.inference import backends, export
from glioseg.inference.export import MANIFEST, export_model, is_export, load_export

RUNTIMES = [name for name in backends.RUNTIMES if name in backends.available_backends()]
FORMATS = [fmt for fmt, runtime in (("onnx", "onnxruntime"), ("openvino", "openvino")) if runtime in RUNTIMES]
needs_runtimes = pytest.mark.skipif(
    not RUNTIMES, reason="the fast runtimes are not installed (pip install 'glioseg[fast]')"
)


def tiny_config(head="regions", norm="instance", name="resunet"):
    return load_config(
        "cpu",
        [
            f"model.name={name}",
            "model.filters=[4,8,8]",
            f"model.head={head}",
            f"model.norm={norm}",
            "model.dropout=none",
            "train.patch_size=[16,16,16]",
            "preprocess.target_spacing=null",
        ],
    )


def save_run(folder, config, seed=0):
    torch.manual_seed(seed)
    model = build_model(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "best.pt", {"config": config.to_dict(), "model": model.state_dict()})
    return model


@needs_runtimes
@pytest.mark.parametrize(
    "fmt, head, norm, name",
    [
        (f, *rest)
        for f, *rest in (
            ("onnx", "regions", "instance", "resunet"),
            ("onnx", "classes", "batch", "sa_unet"),
            ("openvino", "regions", "instance", "resunet"),
        )
        if f in FORMATS
    ],
)
def test_exported_logits_equal_torch_on_odd_shapes_and_batches(tmp_path, fmt, head, norm, name):
    config = tiny_config(head, norm, name)
    model = save_run(tmp_path / "run", config)
    exported = export_model(tmp_path / "run", tmp_path / "exp", fmt)
    assert exported.stride == 4 and exported.config == config and is_export(tmp_path / "exp")
    runtimes = ["openvino"] if fmt == "openvino" else RUNTIMES  # ONNX files run on both runtimes
    x = np.random.default_rng(1).standard_normal((2, 4, 17, 18, 23)).astype(np.float32)  # not multiples of the stride
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    for runtime in runtimes:
        network = backends.build_runtime_network(runtime, exported.network_file, stride=exported.stride, threads=1)
        got = network(x)
        assert got.shape == expected.shape == (2, 3 if head == "regions" else 4, 17, 18, 23)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(network(x[:1]), expected[:1], atol=1e-4, rtol=0)  # another batch size, same graph


@needs_runtimes
def test_export_checksums_refuse_an_altered_file_and_a_missing_one(tmp_path):
    save_run(tmp_path / "run", tiny_config())
    exported = export_model(tmp_path / "run", tmp_path / "exp", FORMATS[0])
    manifest = json.loads((tmp_path / "exp" / MANIFEST).read_text())
    assert set(manifest["files"]) >= {exported.network_file.name, "config.yaml"}
    config_file = tmp_path / "exp" / "config.yaml"
    original = config_file.read_text()
    config_file.write_text(original.replace("head: regions", "head: classes"))
    with pytest.raises(GliosegError, match=r"config\.yaml.*checksum"):
        load_export(tmp_path / "exp")
    config_file.write_text(original)
    assert load_export(tmp_path / "exp").config.model.head == "regions"
    exported.network_file.unlink()
    with pytest.raises(GliosegError, match="missing"):
        load_export(tmp_path / "exp")


@needs_runtimes
def test_export_leaves_nothing_half_written(tmp_path, monkeypatch):
    save_run(tmp_path / "run", tiny_config())
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(GliosegError, match="not an empty folder"):
        export_model(tmp_path / "run", tmp_path / "busy", FORMATS[0])
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "_export_onnx", broken)
    with pytest.raises(RuntimeError):
        export_model(tmp_path / "run", tmp_path / "exp", FORMATS[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "run"]  # no export, no staging folder


@needs_runtimes
def test_export_refuses_logits_that_differ_from_torch(tmp_path, monkeypatch):
    save_run(tmp_path / "run", tiny_config())
    real = backends.RuntimeNetwork.__call__
    monkeypatch.setattr(backends.RuntimeNetwork, "__call__", lambda self, x: real(self, x) + 0.01)
    with pytest.raises(GliosegError, match="differ from PyTorch"):
        export_model(tmp_path / "run", tmp_path / "exp", FORMATS[0])
    assert not (tmp_path / "exp").exists()


@needs_runtimes
def test_cli_export_then_predict_with_the_folder_gives_torch_labels(tmp_path, write_case, capsys):
    save_run(tmp_path / "run", tiny_config())
    write_case(tmp_path / "data", "Brats18_E_1", shape=(21, 26, 19), seed=2)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "data"),
                "-o",
                str(tmp_path / "torch"),
                "--model",
                str(tmp_path / "run"),
                "--backend",
                "torch",
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    reference = np.asarray(nib.load(str(tmp_path / "torch" / "Brats18_E_1.nii.gz")).dataobj)
    for fmt in FORMATS:
        assert main(["export", str(tmp_path / "run"), "--format", fmt, "-o", str(tmp_path / f"exp_{fmt}")]) == 0
        assert "exported" in capsys.readouterr().out
        for backend in ("auto", *(["openvino"] if fmt == "openvino" else RUNTIMES)):
            out = tmp_path / f"{fmt}_{backend}"
            assert (
                main(
                    [
                        "predict",
                        str(tmp_path / "data"),
                        "-o",
                        str(out),
                        "--model",
                        str(tmp_path / f"exp_{fmt}"),
                        "--backend",
                        backend,
                        "--quiet",
                        "--threads",
                        "1",
                    ]
                )
                == 0
            )
            np.testing.assert_array_equal(np.asarray(nib.load(str(out / "Brats18_E_1.nii.gz")).dataobj), reference)
    code = main(
        [
            "predict",
            str(tmp_path / "data"),
            "-o",
            str(tmp_path / "x"),
            "--model",
            str(tmp_path / f"exp_{FORMATS[0]}"),
            "--backend",
            "torch",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and "exported model" in err
        and "backend auto, onnxruntime or openvino" in err
        and len(err.strip().splitlines()) == 1
    )


def test_export_an_unknown_format_is_one_line(tmp_path, capsys):
    assert main(["export", "-o", str(tmp_path / "x"), "--format", "onnx", str(tmp_path / "nope.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(GliosegError, match="format"):
        export_model(tmp_path / "nope.pt", tmp_path / "x", "tflite")


@needs_runtimes
@pytest.mark.skipif("openvino" not in FORMATS or "onnxruntime" not in RUNTIMES, reason="needs both runtimes")
def test_an_openvino_export_refuses_onnxruntime_in_one_line(tmp_path):
    from glioseg.inference.predictor import Predictor

    save_run(tmp_path / "run", tiny_config())
    export_model(tmp_path / "run", tmp_path / "exp", "openvino")
    with pytest.raises(GliosegError, match=r"OpenVINO export.*openvino"):
        Predictor.from_checkpoints([tmp_path / "exp"], "cpu", backend="onnxruntime")
    assert Predictor.from_checkpoints([tmp_path / "exp"], "cpu", backend="auto", threads=1).backend == "openvino"


@pytest.mark.skipif("onnxruntime" not in RUNTIMES, reason="ONNX Runtime is not installed")
def test_the_memory_arena_stays_for_small_windows_and_goes_for_large_ones(tmp_path):
    """ONNX Runtime's arena keeps the largest call's buffers for the life of the process: 1.4 GB more for a
    1 mm cascade stage's 128^3 windows (benchmarks/ort_arena.md). It is kept up to 96^3 voxels, where it is fast."""
    from glioseg.inference.backends import _runtime_network
    from glioseg.inference.runtime import ARENA_MAX_WINDOW

    save_run(tmp_path / "run", tiny_config())
    exported = export_model(tmp_path / "run", tmp_path / "exp", "onnx")
    x = np.random.default_rng(0).normal(size=(1, 4, 16, 16, 16)).astype(np.float32)
    outputs = []
    for window, arena in (((64, 64, 64), True), ((96, 96, 96), True), ((96, 96, 97), False), ((128,) * 3, False)):
        network = _runtime_network("onnxruntime", exported, threads=1, window=window)
        assert network._session.get_session_options().enable_cpu_mem_arena is arena, window
        assert bool(np.prod(window) <= ARENA_MAX_WINDOW) is arena
        outputs.append(network(x))
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])  # where the buffers live changes no number


@pytest.mark.skipif("onnxruntime" not in RUNTIMES, reason="ONNX Runtime is not installed")
@pytest.mark.parametrize("via", ["checkpoint", "export"])
def test_the_memory_arena_follows_the_window_asked_for_not_the_models(tmp_path, via):
    """``predict --window`` runs other windows than the model's ``inference.window``: the arena follows the one run."""
    from glioseg.inference.predictor import Predictor

    save_run(tmp_path / "run", tiny_config())  # inference.window 16^3: the arena would stay
    model = tmp_path / "run" if via == "checkpoint" else export_model(tmp_path / "run", tmp_path / "exp", "onnx").folder
    for window, arena in (((16, 16, 16), True), ((128, 128, 128), False)):
        predictor = Predictor.from_checkpoints(
            [model], "cpu", backend="onnxruntime", threads=1, patch_size=window
        )
        (network,) = predictor.models
        assert network.model._session.get_session_options().enable_cpu_mem_arena is arena, window


@pytest.mark.skipif("onnxruntime" not in RUNTIMES, reason="ONNX Runtime is not installed")
def test_an_onnx_runtime_error_fails_its_case_alone_in_one_line(tmp_path, write_case, capsys, monkeypatch):
    """ONNX Runtime's errors derive from Exception alone: one on a case (say, its memory running out inside the
    runtime) ended the whole batch with a traceback; like PyTorch's, it now fails that case and the others go on."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from glioseg.inference.runtime import RuntimeNetwork

    save_run(tmp_path / "run", tiny_config())
    exported = export_model(tmp_path / "run", tmp_path / "exp", "onnx")
    network = RuntimeNetwork("onnxruntime", exported.network_file, stride=exported.stride, threads=1)
    with pytest.raises(RuntimeError, match="onnxruntime: InvalidArgument"):  # the real runtime's error: 3 channels
        network(np.zeros((1, 3, 16, 16, 16), np.float32))
    write_case(tmp_path / "data", "Brats18_A_1", shape=(21, 26, 19), seed=2)
    write_case(tmp_path / "data", "Brats18_B_1", shape=(21, 26, 19), seed=3)
    run, calls = ort.InferenceSession.run, []

    def first_call_fails(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise Fail("bad allocation")
        return run(self, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", first_call_fails)
    command = ["predict", str(tmp_path / "data"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "exp")]
    assert main([*command, "--backend", "onnxruntime", "--quiet", "--threads", "1"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "case Brats18_A_1 failed (RuntimeError: onnxruntime: Fail: bad allocation)" in errors[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Brats18_B_1.nii.gz"]


@needs_runtimes
def test_a_manifest_whose_stride_is_not_a_whole_number_is_refused_in_one_line(tmp_path):
    """Before: ``"stride": "x"`` in export.json (the one file no checksum covers) was a ValueError traceback."""
    save_run(tmp_path / "run", tiny_config())
    export_model(tmp_path / "run", tmp_path / "exp", FORMATS[0])
    path = tmp_path / "exp" / MANIFEST
    manifest = json.loads(path.read_text())
    for stride in ("x", None, 0, 2.5, True):
        path.write_text(json.dumps({**manifest, "stride": stride}))
        with pytest.raises(GliosegError, match=r"export\.json: gives the stride .* not a positive whole number"):
            load_export(tmp_path / "exp")
    path.write_text(json.dumps(manifest))
    assert load_export(tmp_path / "exp").stride == 4


@needs_runtimes
def test_a_cached_export_that_lost_its_manifest_is_exported_again(tmp_path):
    """Before: the cache folder ``exports/<sha256>`` without export.json (a clean-up cut short) made every
    ``predict --backend onnxruntime`` fail with ``exists and is not an empty folder. Fix: choose a new output
    folder``, an output the user never chose."""
    save_run(tmp_path / "run", tiny_config())
    first = backends.cached_export(tmp_path / "run", tmp_path / "cache")
    (first.folder / MANIFEST).unlink()
    (first.folder / "model.onnx").write_bytes(b"half")
    again = backends.cached_export(tmp_path / "run", tmp_path / "cache")
    assert again.folder == first.folder and is_export(again.folder) and load_export(again.folder).stride == 4
    assert sorted(p.name for p in again.folder.iterdir()) == ["config.yaml", MANIFEST, "model.onnx"]


@needs_runtimes
def test_a_cache_that_cannot_be_written_names_the_cache_and_its_fix(tmp_path):
    """Before: ``exports/<sha256>: cannot be written (Not a directory). Fix: check the output folder``, for a cache
    folder the user never chose as an output."""
    save_run(tmp_path / "run", tiny_config())
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(GliosegError) as caught:
        backends.cached_export(tmp_path / "run", tmp_path / "cache")
    assert caught.value.path is not None and caught.value.path.parent == tmp_path / "cache" / "exports"
    assert caught.value.fix == f"free space in {tmp_path / 'cache'} or make it writable, or use the torch backend"


def test_an_openvino_export_without_openvino_says_so_in_plain_words(tmp_path, monkeypatch):
    """Before: ``exporting to openvino needs openvino, neither is installed``."""
    save_run(tmp_path / "run", tiny_config())
    monkeypatch.setattr(export.runtimes, "available_backends", lambda: ("torch", "onnxruntime"))
    with pytest.raises(GliosegError, match=r"^exporting to openvino needs openvino, which is not installed\. Fix: "):
        export_model(tmp_path / "run", tmp_path / "exp", "openvino")
    monkeypatch.setattr(export.runtimes, "available_backends", lambda: ("torch",))
    with pytest.raises(GliosegError, match=r"^exporting to onnx needs onnxruntime or openvino, neither is installed"):
        export_model(tmp_path / "run", tmp_path / "exp", "onnx")
    assert not (tmp_path / "exp").exists()
