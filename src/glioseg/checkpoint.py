"""Checkpoints that hold tensors and plain data only, and the model they describe.

Below both training (which writes them) and inference (which reads them).

A checkpoint is a dict saved with :func:`torch.save`:

* ``format`` (int), ``config`` (the :class:`~glioseg.config.Config` as plain nested dicts),
* ``model`` (state dict), ``optimizer``, ``scheduler``, ``scaler`` (state dicts or ``None``),
* ``epoch`` (epochs completed), ``best_metric`` (float), ``rng`` (torch RNG states as tensors),
* ``history`` (list of per-epoch dicts of floats).

It is always read with ``torch.load(weights_only=True)``: a file that needs anything more
(a pickled object) is refused, without running its code.
"""

from __future__ import annotations

import errno
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg.config import Config, config_from_dict
from glioseg.errors import GliosegError
from glioseg.files import atomic_path
from glioseg.networks import build_network

CHECKPOINT_FORMAT = 1


def build_model(config: Config) -> nn.Module:
    """Build the network a preset describes, with fresh weights (one input channel per modality, plus the prior's
    three region channels for a cascade stage)."""
    return build_network(config.model, in_channels=config.preprocess.input_channels)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash mid-write keeps the previous file)."""
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (e.g. a full disk) this way
            full = shutil.disk_usage(tmp.parent).free < 1 << 20
            raise OSError(
                errno.ENOSPC if full else errno.EIO, f"torch.save failed: {str(exc).splitlines()[0][:200]}"
            ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        GliosegError: missing, corrupt, or carrying pickled objects (refused, never executed).
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt", "model.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            if (path / "cv.json").is_file():  # glioseg.cv.workdir.RECORD: its fold models are packed into a model
                raise GliosegError(
                    path,
                    "is a cross-validation work folder, not a model",
                    f"pack its models first (`glioseg cv pack {path} -o MODEL`), then give that MODEL folder",
                )
            raise GliosegError(
                path, "folder holds no best.pt, last.pt or model.pt", "point to a run folder or a checkpoint file"
            )
    if not path.is_file():
        raise GliosegError(path, "checkpoint not found", "check the path to the run folder or .pt file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsupported = re.search(r"unsupported global[^\n]*", str(exc), re.IGNORECASE)
        if unsupported is None:  # not a pickled object: random bytes, another file format
            raise GliosegError(
                path,
                "corrupt checkpoint or not a PyTorch file (it cannot be unpickled)",
                "re-download it or use last.pt of the run",
            ) from None
        needs = unsupported.group(0).strip()[:120]
        raise GliosegError(
            path,
            f"checkpoint refused: it needs more than tensors and plain data ({needs})",
            "only load checkpoints written by glioseg; never load untrusted pickles",
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        MemoryError,
        zipfile.BadZipFile,
    ) as exc:
        raise GliosegError(
            path,
            f"corrupt checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})",
            "re-download it or use last.pt of the run",
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise GliosegError(
            path, "not a glioseg checkpoint (no model/config)", "point to a checkpoint written by `glioseg train`"
        )
    return payload


def model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the network of a checkpoint with its weights (in eval mode).

    Returns:
        ``(model, config, payload)``.
    """
    payload = load_checkpoint(path, map_location)
    config = config_from_dict(payload["config"], str(path))
    model = build_model(config)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise GliosegError(
            path,
            f"its weights do not fit the network its config describes ({' '.join(str(exc).split())[:160]})",
            "use the checkpoint as `glioseg train` wrote it",
        ) from None
    model.eval()
    return model, config, payload
