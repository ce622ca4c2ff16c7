"""Shared fixtures: the real BraTS 2018 cases (skipped when absent) and tiny NIfTI cases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "brats2018"
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])

# The broken-input tests (test_bad_inputs.py, test_reliability.py): case ids, case shape, a tiny network.
BAD_CASE, GOOD_CASE = "Brats18_BAD_1", "Brats18_GOOD_1"
TINY_CASE_SHAPE = (20, 22, 24)
TINY_UNET = [
    "model.name=unet", "model.filters=[4,8]", "model.norm=none", "model.dropout=none",
    "train.patch_size=[16,16,16]", "preprocess.target_spacing=null",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny untrained glioseg checkpoint (:data:`TINY_UNET`: classes head, 4 modalities, native spacing)."""
    import torch

    from glioseg.checkpoint import build_model, save_checkpoint
    from glioseg.config import load_config

    torch.manual_seed(0)
    config = load_config("cpu", TINY_UNET)
    path = tmp_path_factory.mktemp("model") / "best.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": build_model(config).state_dict(), "epoch": 0})
    return path


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray = BRATS_AFFINE) -> None:
    """Write ``data`` as a NIfTI file (BraTS orientation by default)."""
    nib.save(nib.Nifti1Image(data, affine), str(path))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``glioseg ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    from glioseg.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evaluate_cli(capsys, pred, ref, out) -> tuple[int, str, str]:
    """``glioseg evaluate --pred PRED --ref REF -o OUT --quiet --workers 1``: ``(exit code, stdout, stderr)``."""
    return run_cli(capsys, "evaluate", "--pred", pred, "--ref", ref, "-o", out, "--quiet", "--workers", "1")


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The 16 real BraTS 2018 cases beside the repository, or skip."""
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data/brats2018 not found: real-data tests need the BraTS cases beside the repo")
    return REAL_DATA


def tiny_case_arrays(shape=(20, 22, 24), seed=0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random int16 modalities with a zero border and a BraTS-2018-convention label map (0, 1, 2, 4)."""
    rng = np.random.default_rng(seed)
    images = {}
    for i, m in enumerate(("flair", "t1", "t1ce", "t2")):
        data = rng.integers(100, 1000, size=shape).astype(np.int16) + 50 * i
        data[:2] = 0
        data[:, -3:] = 0
        images[m] = data
    label = np.zeros(shape, dtype=np.uint8)
    cx, cy, cz = (s // 2 for s in shape)
    label[cx - 4 : cx + 4, cy - 4 : cy + 4, cz - 4 : cz + 4] = 2
    label[cx - 2 : cx + 2, cy - 2 : cy + 2, cz - 2 : cz + 2] = 1
    label[cx - 1 : cx + 1, cy - 1 : cy + 1, cz - 2 : cz + 2] = 4
    return images, label


@pytest.fixture
def write_case() -> Callable[..., Path]:
    """Write one BraTS 2018-layout case: ``write_case(root, case_id, shape=..., seed=..., label=True)``."""

    def _write(
        root: Path,
        case_id: str = "Brats18_TEST_001_1",
        shape=(20, 22, 24),
        seed: int = 0,
        label: bool = True,
        suffix: str = ".nii.gz",
    ) -> Path:
        folder = Path(root) / case_id
        folder.mkdir(parents=True, exist_ok=True)
        images, seg = tiny_case_arrays(shape, seed)
        for m, data in images.items():
            nib.save(nib.Nifti1Image(data, BRATS_AFFINE), str(folder / f"{case_id}_{m}{suffix}"))
        if label:
            nib.save(nib.Nifti1Image(seg, BRATS_AFFINE), str(folder / f"{case_id}_seg{suffix}"))
        return folder

    return _write


@pytest.fixture(autouse=True)
def _backends(request, tmp_path_factory, monkeypatch) -> None:
    """Exports and measured backend choices (``glioseg predict --backend auto``) go to a folder of
    the test session, never to the user's ``~/.cache/glioseg``. Outside the tests of the backends
    and exports, ``auto`` runs PyTorch (as without the ``fast`` extra), which keeps them quick."""
    from glioseg.inference import backends, runtime

    monkeypatch.setattr(backends, "CACHE_DIR", tmp_path_factory.getbasetemp() / "glioseg-cache")
    monkeypatch.setattr(runtime, "CACHE_DIR", tmp_path_factory.getbasetemp() / "glioseg-cache")
    if request.module.__name__.rpartition(".")[2] not in ("test_backends", "test_export", "test_without_torch"):
        monkeypatch.setattr(backends, "RUNTIMES", ())
