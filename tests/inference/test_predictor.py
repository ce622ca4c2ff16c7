"""The predictor: exact stitching, outputs on the input's grid and convention, checkpoints, the CLI."""

import dataclasses
import re

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

from glioseg.checkpoint import build_model, save_checkpoint
from glioseg.checksums import shipped_checkpoints
from glioseg.cli import main, select_part
from glioseg.config import PostprocessConfig, load_config
from glioseg.data.discovery import discover, load_case
from glioseg.data.preprocess import CropInfo, preprocess_loaded
from glioseg.data.synth import write_cohort
from glioseg.errors import GliosegError
from glioseg.heads import to_probabilities
from glioseg.inference.postprocess import postprocess
from glioseg.inference.predictor import STAGES, Predictor, read_stamp, resolve_checkpoints
from glioseg.inference.sliding import sliding_window_probabilities
from glioseg.labels import from_internal, get_convention


def tiny_config(head="classes", spacing="null", patch=(16, 16, 16)):
    return load_config(
        "cpu",
        [
            "model.name=unet", "model.filters=[4,8]", f"model.head={head}", "model.norm=none", "model.dropout=none",
            f"train.patch_size=[{','.join(map(str, patch))}]", f"preprocess.target_spacing={spacing}",
        ],
    )


class PointwiseLinear(nn.Module):
    """Logits that are a fixed linear function of the input channels at each voxel."""

    def __init__(self, in_channels=4, out_channels=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, generator=g), requires_grad=False)
        self.bias = nn.Parameter(torch.randn(out_channels, generator=g), requires_grad=False)

    def forward(self, x):
        return nn.functional.conv3d(x, self.weight[..., None, None, None], self.bias)


class Buckets(nn.Module):
    """Pointwise 'classifier' on the first channel: nearest of 4 centres wins (all classes appear)."""

    centres = torch.tensor([0.0, -1.0, 1.0, 2.0])  # background at 0 (outside the brain)

    def forward(self, x):
        return -10 * (x[:, :1] - self.centres.view(1, -1, 1, 1, 1)).abs()


# --- 3: stitching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, mirror, shape, patch",
    [
        ("classes", False, (33, 34, 35), (16, 16, 16)),
        ("regions", False, (33, 34, 35), (16, 16, 16)),
        ("classes", True, (19, 20, 21), (12, 12, 12)),
    ],
)
def test_sliding_window_equals_whole_volume_pointwise(head, mirror, shape, patch):
    model = PointwiseLinear(out_channels=4 if head == "classes" else 3)
    image = torch.randn(1, 4, *shape, generator=torch.Generator().manual_seed(1))
    stitched = sliding_window_probabilities(model, image, head=head, patch_size=patch, overlap=0.5, mirror=mirror)
    whole = to_probabilities(model(image), head)
    assert stitched.shape == whole.shape
    torch.testing.assert_close(stitched, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head, spacing", [("classes", "null"), ("regions", "[1.5,1.5,1.5]")])
def test_predictor_probabilities_equal_the_whole_volume_pipeline(tmp_path, write_case, head, spacing):
    write_case(tmp_path, "Brats18_A_1", shape=(27, 30, 25), seed=3)
    case = discover(tmp_path).cases[0]
    config = tiny_config(head, spacing)
    model = PointwiseLinear(out_channels=4 if head == "classes" else 3)
    predictor = Predictor([model], config, overlap=0.5)
    loaded = predictor.read(case)
    probs = predictor.predict_probabilities(loaded)

    pre = preprocess_loaded(load_case(case, with_label=False), config.preprocess)
    whole = to_probabilities(model(torch.from_numpy(pre.image)[None]), head)[0].numpy()
    # expected without glioseg's inverse: scipy's linear zoom (corners aligned), then a slice assignment
    factors = [c / s for c, s in zip(pre.crop.cropped_shape, pre.crop.shape, strict=True)]
    resampled = np.stack([scipy.ndimage.zoom(channel.astype(np.float64), factors, order=1) for channel in whole])
    assert resampled.shape[1:] == tuple(pre.crop.cropped_shape)
    expected = np.zeros((whole.shape[0], *loaded.shape))
    if head == "classes":
        expected[0] = 1.0  # background outside the crop; regions: zero outside, never "background = 1"
    (x0, x1), (y0, y1), (z0, z1) = pre.crop.box
    expected[:, x0:x1, y0:y1, z0:z1] = resampled
    assert probs.shape == (whole.shape[0], *loaded.shape)
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    outside = np.ones(loaded.shape, bool)
    outside[tuple(slice(a, b) for a, b in pre.crop.box)] = False
    assert outside.any()
    if head == "classes":
        assert np.all(probs[0, outside] == 1) and np.all(probs[1:, outside] == 0)
    else:
        assert np.all(probs[:, outside] == 0)


# --- the inverse mapping, against answers computed by hand ----------------------------------------


def _crop(original_shape, box, shape):
    cropped = tuple(b - a for a, b in box)
    spacing = tuple(c / s for c, s in zip(cropped, shape, strict=True))
    return CropInfo(original_shape, box, cropped, shape, (1.0, 1.0, 1.0), spacing, tuple(tuple(r) for r in np.eye(4)))


@pytest.mark.parametrize("head", ["classes", "regions"])
def test_inverse_mapping_without_resampling_puts_each_voxel_back_at_its_place(head):
    """A 3x3x3 crop at [2:5, 1:4, 3:6] of a 7x8x9 scan, checked voxel by voxel."""
    crop = _crop((7, 8, 9), ((2, 5), (1, 4), (3, 6)), (3, 3, 3))
    channels = 4 if head == "classes" else 3
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 3, 3)).transpose(3, 0, 1, 2)[:channels].astype(np.float32)
    predictor = Predictor([PointwiseLinear(out_channels=channels)], tiny_config(head))
    back = predictor.to_original_probabilities(probs, crop)
    labels = predictor.labels_from_probabilities(torch.from_numpy(probs), crop)
    assert back.shape == (channels, 7, 8, 9) and labels.shape == (7, 8, 9)
    outside_probs = np.array([1.0, 0, 0, 0] if head == "classes" else [0.0, 0, 0])
    for x, y, z in np.ndindex(7, 8, 9):
        if 2 <= x < 5 and 1 <= y < 4 and 3 <= z < 6:
            p = probs[:, x - 2, y - 1, z - 3]
            np.testing.assert_array_equal(back[:, x, y, z], p)
            if head == "classes":
                expected = int(np.argmax(p))
            else:  # nested: ET (3) inside TC (1) inside WT (2)
                expected = 3 if p[2] > 0.5 else 1 if p[1] > 0.5 else 2 if p[0] > 0.5 else 0
            assert labels[x, y, z] == expected, (x, y, z)
        else:
            np.testing.assert_array_equal(back[:, x, y, z], outside_probs)
            assert labels[x, y, z] == 0, (x, y, z)


def test_inverse_mapping_with_resampling_reproduces_linear_ramps():
    """Linear ramps on a 2 mm grid come back as the same ramps on the 1 mm grid (trilinear
    interpolation with aligned corners is exact on linear functions), inside the crop box
    [1:9, 0:6, 0:5] of a 10x6x5 scan; the labels follow the thresholds computed by hand."""
    crop = _crop((10, 6, 5), ((1, 9), (0, 6), (0, 5)), (4, 3, 5))  # 8x6x5 crop resampled to 4x3x5
    j, k = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    regions = np.zeros((3, 4, 3, 5), np.float32)
    regions[0] = (j / 3)[..., None]  # WT: 0 -> 1 along x
    regions[1] = (k / 2)[..., None]  # TC: 0 -> 1 along y
    predictor = Predictor([PointwiseLinear(out_channels=3)], tiny_config("regions"))
    back = predictor.to_original_probabilities(regions, crop)
    labels = predictor.labels_from_probabilities(torch.from_numpy(regions), crop)
    classes_predictor = Predictor([PointwiseLinear()], tiny_config("classes"))
    classes = np.stack([1 - regions[0], regions[0], np.zeros_like(regions[0]), np.zeros_like(regions[0])])
    back_classes = classes_predictor.to_original_probabilities(classes, crop)
    labels_classes = classes_predictor.labels_from_probabilities(torch.from_numpy(classes), crop)
    for x, y, z in np.ndindex(10, 6, 5):
        if 1 <= x < 9:
            wt, tc = (x - 1) / 7, y / 5
            np.testing.assert_allclose(back[:, x, y, z], [wt, tc, 0.0], atol=1e-6)
            assert labels[x, y, z] == (1 if tc > 0.5 else 2 if wt > 0.5 else 0), (x, y, z)
            np.testing.assert_allclose(back_classes[:, x, y, z], [1 - wt, wt, 0, 0], atol=1e-6)
            assert labels_classes[x, y, z] == (1 if wt > 0.5 else 0), (x, y, z)
        else:
            assert np.all(back[:, x, y, z] == 0) and labels[x, y, z] == 0
            np.testing.assert_array_equal(back_classes[:, x, y, z], [1, 0, 0, 0])
            assert labels_classes[x, y, z] == 0


def test_ensemble_averages_the_models_probabilities(tmp_path, write_case):
    write_case(tmp_path, "Brats18_A_1", shape=(20, 22, 24))
    case = discover(tmp_path).cases[0]
    config = tiny_config()
    a, b = PointwiseLinear(seed=1), PointwiseLinear(seed=2)
    loaded = Predictor([a], config).read(case)
    pa, pb = Predictor([a], config).predict_probabilities(loaded), Predictor([b], config).predict_probabilities(loaded)
    np.testing.assert_allclose(Predictor([a, b], config).predict_probabilities(loaded), (pa + pb) / 2, atol=1e-6)


# --- 1: outputs on the input's grid, in the input's convention -------------------------------------


@pytest.mark.parametrize(
    "layout, spacing, expected",
    [("brats2018", "[2.0,2.0,2.0]", {0, 1, 2, 4}), ("brats2023", "null", {0, 1, 2, 3}), ("msd", "null", {0, 1, 2, 3})],
)
def test_prediction_has_input_grid_and_convention(tmp_path, layout, spacing, expected):
    write_cohort(tmp_path / "data", 1, shape=(36, 40, 32), layout=layout, seed=0)
    case = discover(tmp_path / "data").cases[0]
    predictor = Predictor([Buckets()], tiny_config("classes", spacing, patch=(24, 24, 24)))
    out = tmp_path / "out" / f"{case.case_id}.nii.gz"
    timings = predictor.predict_case(case, out, save_probabilities=True)

    reference = nib.load(str(case.reference_image))
    written = nib.load(str(out))
    labels = np.asarray(written.dataobj)
    assert labels.shape == reference.shape[:3]
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-6)
    assert written.get_data_dtype() == np.uint8
    assert set(np.unique(labels).tolist()) == expected  # every class predicted, in the layout's numbering
    brain = np.asarray(reference.dataobj)
    brain = (brain if brain.ndim == 3 else brain[..., 0]) != 0
    box = tuple(
        slice(
            int(np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != ax)))[0]),
            int(np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 1,
        )
        for ax in range(3)
    )
    outside_box = np.ones(brain.shape, bool)
    outside_box[box] = False
    assert outside_box.any() and not np.any(labels[outside_box])  # outside the brain's crop: background
    if spacing == "null":  # no resampling blur: everything outside the brain (z-scored to 0) is background
        assert not np.any(labels[~brain])
    assert set(timings) == {*STAGES, "total"} and timings["total"] >= timings["network"] > 0
    with np.load(tmp_path / "out" / f"{case.case_id}_probabilities.npz") as saved:
        probs = saved["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (4, *labels.shape)
        np.testing.assert_allclose(probs.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)


def test_labels_option_converts_the_output_convention(tmp_path):
    write_cohort(tmp_path / "data", 1, shape=(32, 32, 32), layout="brats2023", seed=1)
    case = discover(tmp_path / "data").cases[0]
    predictor = Predictor([Buckets()], tiny_config("classes", "null", patch=(32, 32, 32)))
    out = tmp_path / "o.nii.gz"
    predictor.predict_case(case, out, labels_convention="brats2018")
    assert set(np.unique(np.asarray(nib.load(str(out)).dataobj)).tolist()) == {0, 1, 2, 4}


# --- checkpoints and the shipped model ----------------------------------------------------------------


def _save_run(folder, config, seed=0):
    torch.manual_seed(seed)
    model = build_model(config)
    save_checkpoint(folder / "best.pt", {"config": config.to_dict(), "model": model.state_dict()})
    return model


def test_from_checkpoints_matches_in_memory_and_refuses_mixed_heads(tmp_path, write_case):
    write_case(tmp_path / "data", "Brats18_A_1")
    case = discover(tmp_path / "data").cases[0]
    config = tiny_config(patch=(24, 24, 24))
    model = _save_run(tmp_path / "run_a", config)
    from_disk = Predictor.from_checkpoints([tmp_path / "run_a"], device="cpu")
    in_memory = Predictor([model], config, device="cpu")
    loaded = in_memory.read(case)
    np.testing.assert_allclose(
        from_disk.predict_probabilities(loaded), in_memory.predict_probabilities(loaded), atol=1e-6
    )
    _save_run(tmp_path / "run_b", tiny_config("regions", patch=(24, 24, 24)))
    with pytest.raises(GliosegError, match="head"):
        Predictor.from_checkpoints([tmp_path / "run_a", tmp_path / "run_b"], device="cpu")


def test_without_model_and_without_shipped_weights_a_clear_error(monkeypatch):
    import glioseg.inference.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "shipped_checkpoints", lambda: [])
    with pytest.raises(GliosegError, match="give a model"):
        resolve_checkpoints(None)
    assert resolve_checkpoints(["x/best.pt"])[0].name == "best.pt"
    assert all(p.suffix == ".pt" for p in shipped_checkpoints())


def test_select_part_splits_sorted_ids_round_robin(tmp_path, write_case):
    for i in (3, 0, 4, 1, 2):
        write_case(tmp_path, f"Brats18_C_{i}", label=False)
    cases = discover(tmp_path).cases[::-1]
    parts = [[c.case_id for c in select_part(cases, 2, i)] for i in range(2)]
    assert parts == [["Brats18_C_0", "Brats18_C_2", "Brats18_C_4"], ["Brats18_C_1", "Brats18_C_3"]]
    with pytest.raises(GliosegError):
        select_part(cases, 2, 2)


# --- 4: the CLI over many cases ---------------------------------------------------------------------


def test_cli_predict_continue_and_a_broken_case(tmp_path, write_case, capsys):
    config = tiny_config(patch=(24, 24, 24))
    _save_run(tmp_path / "run", config)
    data = tmp_path / "data"
    for i in range(3):
        write_case(data, f"Brats18_P_{i}", seed=i)
    broken = data / "Brats18_P_1" / "Brats18_P_1_t2.nii.gz"
    nan = np.ones((20, 22, 24), np.float32)
    nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(broken))
    out = tmp_path / "out"

    code = main(["predict", str(data), "-o", str(out), "--model", str(tmp_path / "run"), "--quiet"])
    captured = capsys.readouterr()
    assert code != 0
    assert sorted(p.name for p in out.iterdir()) == ["Brats18_P_0.nii.gz", "Brats18_P_2.nii.gz"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Brats18_P_1_t2.nii.gz" in errors[0] and "NaN" in errors[0]
    assert "2 predicted, 0 already done, 1 failed" in captured.out

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code = main(["predict", str(data), "-o", str(out), "--model", str(tmp_path / "run"), "--quiet", "--continue"])
    captured = capsys.readouterr()
    assert code != 0 and "0 predicted, 2 already done, 1 failed" in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    nib.save(nib.Nifti1Image(np.ones((20, 22, 24), np.int16) * 7, np.eye(4)), str(broken))  # repaired (affine differs!)
    code = main(["predict", str(data), "-o", str(out), "--model", str(tmp_path / "run"), "--quiet", "--continue"])
    assert code != 0 and "affine" in capsys.readouterr().err


def test_a_case_that_fails_now_leaves_no_label_map_of_an_earlier_run(tmp_path, write_case, capsys):
    """A case predicted before, whose image then broke: its old label map (and probabilities) went on sitting in the
    output folder beside this run's results, where a pipeline collecting OUT/*.nii.gz took it for this run's."""
    _save_run(tmp_path / "run", tiny_config(patch=(24, 24, 24)))
    data, out = tmp_path / "data", tmp_path / "out"
    for i in range(2):
        write_case(data, f"Brats18_S_{i}", seed=i)
    command = ["predict", str(data), "-o", str(out), "--model", str(tmp_path / "run"), "--quiet"]
    command.append("--save-probabilities")
    assert main(command) == 0
    assert len(list(out.iterdir())) == 4
    capsys.readouterr()
    broken = data / "Brats18_S_1" / "Brats18_S_1_flair.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated

    messages = []
    for extra in ([], ["--continue"]):
        assert main([*command, *extra]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Brats18_S_1_flair.nii.gz" in errors[0]
        assert sorted(p.name for p in out.iterdir()) == ["Brats18_S_0.nii.gz", "Brats18_S_0_probabilities.npz"]
        messages.append(errors[0])
    removed = f"its earlier output {out / 'Brats18_S_1.nii.gz'}, {out / 'Brats18_S_1_probabilities.npz'} was removed"
    assert removed in messages[0]
    assert "earlier output" not in messages[1]  # nothing was left to remove the second time


def test_continue_redoes_outputs_of_another_model_or_settings(tmp_path, write_case, capsys):
    """--continue keeps only label maps whose header stamp names this model's weights and settings."""
    config = tiny_config(patch=(24, 24, 24))
    _save_run(tmp_path / "old", config, seed=0)
    _save_run(tmp_path / "new", config, seed=1)
    data, out = tmp_path / "data", tmp_path / "out"
    for i in range(2):
        write_case(data, f"Brats18_M_{i}", seed=i)
    def predict(model, *extra):
        return main(
            ["predict", str(data), "-o", str(out), "--model", str(tmp_path / model), "--quiet", "--continue", *extra]
        )

    assert predict("old") == 0
    old_stamp = Predictor.from_checkpoints([tmp_path / "old"], device="cpu").stamp("brats2018")
    assert read_stamp(out / "Brats18_M_0.nii.gz") == old_stamp and old_stamp.startswith("glioseg model=")
    capsys.readouterr()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert predict("old") == 0 and "0 predicted, 2 already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # another model (other weights, same config and file name best.pt): both cases are redone
    (out / "Brats18_M_1.nii.gz").unlink()
    assert predict("new") == 0
    assert (
        "2 predicted (1 replacing outputs of another model or other settings), 0 already done"
        in capsys.readouterr().out
    )
    new = Predictor.from_checkpoints([tmp_path / "new"], device="cpu")
    assert new.model_checksum != Predictor.from_checkpoints([tmp_path / "old"], device="cpu").model_checksum
    assert {read_stamp(p) for p in out.glob("*.nii.gz")} == {new.stamp("brats2018")}
    case = discover(data).cases[0]
    pre = new.preprocess(new.read(case))
    expected = new.labels_from_probabilities(new.network_probabilities(pre.image), pre.crop)
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(out / "Brats18_M_0.nii.gz")).dataobj),
        from_internal(expected, get_convention("brats2018")),
    )

    # other settings of the same model: the label convention, then post-processing
    assert predict("new", "--labels", "brats2023") == 0
    assert "2 predicted (2 replacing" in capsys.readouterr().out
    assert predict("new", "--labels", "brats2023", "--min-component-size", "5") == 0
    assert "2 predicted (2 replacing" in capsys.readouterr().out
    assert predict("new", "--labels", "brats2023", "--min-component-size", "5") == 0
    assert "0 predicted, 2 already done" in capsys.readouterr().out

    # a label map without a stamp (e.g. written by another tool) is redone; probabilities carry the stamp too
    nib.save(nib.Nifti1Image(np.zeros((20, 22, 24), np.uint8), np.eye(4)), str(out / "Brats18_M_0.nii.gz"))
    assert predict("new", "--labels", "brats2023", "--min-component-size", "5", "--save-probabilities") == 0
    assert "2 predicted (2 replacing" in capsys.readouterr().out  # M_1 had no probabilities file yet
    with np.load(out / "Brats18_M_1_probabilities.npz") as arrays:
        assert str(arrays["stamp"]) == read_stamp(out / "Brats18_M_1.nii.gz")


def test_cli_predict_explicit_files_and_parts(tmp_path, write_case, capsys):
    config = tiny_config(patch=(24, 24, 24))
    _save_run(tmp_path / "run", config)
    folder = write_case(tmp_path / "data", "Brats18_F_1", label=False)
    files = [f"--{m}={folder / f'Brats18_F_1_{m}.nii.gz'}" for m in ("flair", "t1", "t1ce", "t2")]
    assert (
        main(["predict", "-o", str(tmp_path / "out"), "--model", str(tmp_path / "run" / "best.pt"), "--quiet", *files])
        == 0
    )
    assert (tmp_path / "out" / "Brats18_F_1.nii.gz").is_file()
    assert (
        main(
            [
                "predict",
                str(tmp_path / "data"),
                "-o",
                str(tmp_path / "o2"),
                "--model",
                str(tmp_path / "run"),
                "--num-parts",
                "2",
                "--part-id",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())  # the only case went to part 0
    assert re.search(r"0 predicted.*part 1 of 2", capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.real
def test_time_outside_the_network_is_small_on_a_real_case(real_data_root, tmp_path):
    """Acceptance: reading, preprocessing, stitching, post-processing and writing < 25% of the total
    for a 16-filter model at 1 mm on a real 240x240x155 case (about 1-2 minutes on 2 CPU cores)."""
    case = discover(real_data_root).cases[0]
    config = load_config("default", ["model.filters=[16,32,64,128,256]"])
    torch.manual_seed(0)
    predictor = Predictor([build_model(config)], config, device="cpu")
    timings = predictor.predict_case(case, tmp_path / f"{case.case_id}.nii.gz")
    outside = timings["total"] - timings["network"]
    assert nib.load(str(tmp_path / f"{case.case_id}.nii.gz")).shape == (240, 240, 155)
    assert outside < 0.25 * timings["total"], timings


def test_predict_region_filters_relabel_core_and_et_components(tmp_path, write_case, monkeypatch):
    """`--min-core-component-size` / `--min-et-component-size` reach the written label maps: with
    a size above any component, every tumor-core component but the largest becomes edema (the
    whole tumor unchanged), and every ET component but the largest becomes necrosis. The network
    is :class:`Buckets` (every class appears)."""
    from scipy import ndimage

    data = tmp_path / "data"
    write_case(data, "Brats18_M_0", seed=0)

    def from_checkpoints(
        cls, *args, postprocess_overrides=None, **kwargs
    ):  # the overrides are passed in, as predict does
        config = tiny_config()
        return cls(
            [Buckets()],
            config,
            device="cpu",
            postprocessing=dataclasses.replace(config.postprocess, **(postprocess_overrides or {})),
        )

    monkeypatch.setattr(Predictor, "from_checkpoints", classmethod(from_checkpoints))

    def predict(out, *extra):
        assert (
            main(
                [
                    "predict",
                    str(data),
                    "-o",
                    str(tmp_path / out),
                    "--model",
                    str(tmp_path / "unused"),
                    "--quiet",
                    *extra,
                ]
            )
            == 0
        )
        return np.asarray(nib.load(str(tmp_path / out / "Brats18_M_0.nii.gz")).dataobj)

    def all_but_largest(mask):
        components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(components.ravel())[1:]
        return mask & (components != 1 + int(np.argmax(sizes))), count

    plain = predict("plain")
    assert (plain == 1).any() and (plain == 4).any()  # BraTS 2018 labels: 1 NCR, 2 ED, 4 ET
    no_core = predict("no_core", "--min-core-component-size", str(plain.size))
    small_core, _ = all_but_largest(np.isin(plain, (1, 4)))
    np.testing.assert_array_equal(no_core, np.where(small_core, 2, plain))
    no_et = predict("no_et", "--min-et-component-size", str(plain.size))
    small_et, et_components = all_but_largest(plain == 4)
    assert et_components >= 2  # so the filter has something to relabel
    np.testing.assert_array_equal(no_et, np.where(small_et, 1, plain))
    # the relative rule at 1.0 (every component smaller than the largest) gives the same map
    np.testing.assert_array_equal(predict("no_et_relative", "--min-et-component-fraction", "1"), no_et)


def test_predict_can_lift_the_models_largest_component_only_rule(tmp_path, write_case, monkeypatch):
    """The shipped model keeps the largest whole-tumour component alone (max_components 1, which no option could
    lift: --min-component-size 0 turned the step off, --min-component-fraction turned it on with the model's limit).
    `--max-components 0` lifts it, so that a second tumour focus over 10% of the largest stays."""
    write_case(tmp_path / "data", "Brats18_M_0", seed=0)
    seen = []

    def from_checkpoints(cls, *args, postprocess_overrides=None, **kwargs):
        seen.append(postprocess_overrides)
        raise GliosegError(None, "stop here", "nothing")

    monkeypatch.setattr(Predictor, "from_checkpoints", classmethod(from_checkpoints))
    command = ["predict", str(tmp_path / "data"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "m.pt")]
    main([*command, "--min-component-size", "0", "--min-component-fraction", "0.1", "--max-components", "0"])
    main([*command, "--max-components", "2"])
    main(command)
    main([*command, "--keep-within", "5"])
    assert seen == [
        {"min_component_size": 0, "min_component_fraction": 0.1, "max_components": None},
        {"max_components": 2},
        {},
        {"keep_within_mm": 5.0},
    ]
    assert main([*command, "--keep-within", "-1"]) != 0 and len(seen) == 4  # refused before any work
    shipped_like = PostprocessConfig(min_component_size=1, max_components=1)
    lifted = dataclasses.replace(shipped_like, **seen[0])
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[2:22, 2:22, 2:22] = 2  # 8,000 voxels
    labels[28:38, 28:38, 28:38] = 2  # a second focus: 1,000 voxels, 12.5%
    assert np.count_nonzero(postprocess(labels, shipped_like)) == 8_000
    assert np.count_nonzero(postprocess(labels, lifted)) == 9_000


def test_a_rerun_without_probabilities_removes_the_earlier_runs_probabilities(tmp_path, write_case, tiny_model):
    """Before: OUT/<case>_probabilities.npz of an earlier run (another model or settings) stayed beside the new
    label map, and was silently taken for its probabilities."""
    write_case(tmp_path / "data", "Brats18_P_1", label=False)
    out = tmp_path / "out"
    common = ["predict", str(tmp_path / "data"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]
    common.append("--quiet")
    assert main([*common, "--save-probabilities"]) == 0
    earlier = out / "Brats18_P_1_probabilities.npz"
    with np.load(earlier) as saved:
        first_stamp = str(saved["stamp"])
    assert first_stamp == read_stamp(out / "Brats18_P_1.nii.gz")
    assert main([*common, "--min-component-size", "5"]) == 0  # other settings, no probabilities asked for
    assert read_stamp(out / "Brats18_P_1.nii.gz") != first_stamp
    assert sorted(p.name for p in out.iterdir()) == ["Brats18_P_1.nii.gz"]


def test_a_timings_file_named_like_a_label_map_is_refused_before_any_work(tmp_path, write_case, tiny_model, capsys):
    """Before: ``--timings OUT/<case>.nii.gz`` exited 0 with the label map replaced by the timings' JSON."""
    write_case(tmp_path / "data", "Brats18_P_1", label=False)
    out = tmp_path / "out"
    common = ["predict", str(tmp_path / "data"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]
    for timings in (out / "Brats18_P_1.nii.gz", out / "sub" / ".." / "Brats18_P_1_probabilities.npz", out):
        assert main([*common, "--quiet", "--save-probabilities", "--timings", str(timings)]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and f"error: {timings}: is " in err
        assert "Fix: give this file another name" in err
        assert not out.exists()
    assert main([*common, "--quiet", "--timings", str(out / "timings.json")]) == 0
    assert read_stamp(out / "Brats18_P_1.nii.gz") is not None and (out / "timings.json").read_text().startswith("{")
