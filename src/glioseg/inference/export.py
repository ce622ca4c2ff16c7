"""Exported models: a network as ONNX or OpenVINO IR, with its preprocessing recipe and checksums.

``glioseg export MODEL --format onnx -o DIR`` writes::

    DIR/
      model.onnx                 the network (``onnx``), or model.xml + model.bin (``openvino``)
      config.yaml                the preset it was trained with (preprocessing, head, window)
      export.json                format, stride, channels, the source checkpoint's sha256 and
                                 the sha256 of every file above (checked on every load)

The exported graph is the network's ``forward`` for inputs whose spatial sizes are multiples of
its stride (``2**depth``): batch and spatial axes are dynamic, and the zero-padding that
:class:`~glioseg.networks.UNet` does inside is done by the runtime wrappers of
:mod:`glioseg.inference.backends` instead. Weights stay float32 (no fp16 compression). Every
export is checked before it is written: the runtime's logits on a seeded input must match
PyTorch's to :data:`EXPORT_TOLERANCE`.

Loading an export (:func:`load_export`) needs neither PyTorch nor the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from glioseg import __version__
from glioseg.checksums import sha256
from glioseg.errors import GliosegError
from glioseg.files import atomic_folder, write_json, write_text
from glioseg.inference import runtime as runtimes
from glioseg.inference.runtime import FAST_EXTRA_FIX

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "openvino")
"""Formats :func:`export_model` writes."""

MANIFEST = "export.json"
"""The file that marks a folder as an exported model."""

MODEL_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
"""The network's files per format (the first is the one a runtime opens)."""

ONNX_OPSET = 17
"""ONNX opset of exported graphs (InstanceNormalization, ConvTranspose, all in ONNX Runtime and OpenVINO)."""

EXPORT_TOLERANCE = 1e-3
"""Largest absolute difference of logits between the runtime and PyTorch accepted at export."""



@dataclass(frozen=True)
class ExportedModel:
    """An exported model folder, checked.

    Attributes:
        folder: the export folder.
        format: ``onnx`` or ``openvino``.
        network_file: the file a runtime opens (``model.onnx`` or ``model.xml``).
        config: the preset the model was trained with (:class:`~glioseg.config.Config`).
        stride: spatial sizes given to the network must be multiples of it.
        manifest: the parsed ``export.json``.
    """

    folder: Path
    format: str
    network_file: Path
    config: Any
    stride: int
    manifest: dict


def is_export(path: str | Path) -> bool:
    """True for a folder written by :func:`export_model` (it holds ``export.json``)."""
    return (Path(path) / MANIFEST).is_file()


def load_export(folder: str | Path) -> ExportedModel:
    """Read and check an export folder (every file against the sha256 in ``export.json``).

    Raises:
        GliosegError: the folder is not an export, a file is missing or fails its checksum,
            or the config is invalid.
    """
    from glioseg.config import load_config

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise GliosegError(
            manifest_path,
            f"unreadable export manifest ({type(exc).__name__})",
            "export the model again with `glioseg export`",
        ) from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt not in EXPORT_FORMATS or not isinstance(manifest.get("files"), dict):
        raise GliosegError(
            manifest_path, "not a glioseg export manifest", "export the model again with `glioseg export`"
        )
    expected_files = {*MODEL_FILES[fmt], "config.yaml"}
    if set(manifest["files"]) != expected_files:  # e.g. "files": {} would check nothing
        listed = sorted(str(name) for name in manifest["files"])
        raise GliosegError(
            manifest_path,
            f"lists the files {listed}, not the {fmt} export's {sorted(expected_files)} with their checksums",
            "export the model again with `glioseg export`",
        )
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise GliosegError(
                path, "missing from the exported model", "copy the whole export folder, or export the model again"
            )
        if sha256(path) != expected:
            raise GliosegError(
                path,
                "fails its checksum in export.json (damaged or altered)",
                "export the model again with `glioseg export`",
            )
    stride = manifest.get("stride", 1)
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise GliosegError(
            manifest_path, f"gives the stride {stride!r}, not a positive whole number",
            "export the model again with `glioseg export`",
        )
    config = load_config(folder / "config.yaml")
    return ExportedModel(
        folder=folder, format=fmt, network_file=folder / MODEL_FILES[fmt][0], config=config,
        stride=stride, manifest=manifest,
    )




def _export_onnx(model: Any, in_channels: int, patch_size: tuple[int, ...], path: Path) -> None:
    """Trace ``model`` (eval mode) into an ONNX file with dynamic batch and spatial axes."""
    import torch

    dummy = torch.zeros(1, in_channels, *patch_size)
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about the padding branch, which is not exported
        torch.onnx.export(
            model, (dummy,), str(path), dynamo=False, opset_version=ONNX_OPSET, input_names=["image"],
            output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
        )


def _checkpoint_file(source: Path) -> Path:
    """The ``.pt`` file a run folder or checkpoint path stands for (the file ``model_from_checkpoint`` reads)."""
    if source.is_dir():
        return next((source / n for n in ("best.pt", "last.pt", "model.pt") if (source / n).is_file()), source)
    return source


def export_model(
    checkpoint: str | Path, out_dir: str | Path, fmt: str = "onnx", *, overwrite: bool = False
) -> ExportedModel:
    """Export a checkpoint's network with its preset and checksums.

    Args:
        checkpoint: a run folder or ``.pt`` file (as ``glioseg predict --model`` takes).
        out_dir: the folder to write; it must not exist (or be empty) unless ``overwrite``.
        fmt: ``onnx`` or ``openvino``.
        overwrite: replace an existing export folder.

    Returns:
        The written export, as :func:`load_export` reads it.

    Raises:
        GliosegError: unknown format, runtime not installed, output folder in the way, or the
            exported network's logits differ from PyTorch's by more than :data:`EXPORT_TOLERANCE`.
    """
    if fmt not in EXPORT_FORMATS:
        raise GliosegError(None, f"unknown export format '{fmt}'", f"use one of {', '.join(EXPORT_FORMATS)}")
    # The output folder is checked first, with no runtime and no checkpoint loaded: a refusal
    # must not depend on what is installed.
    out_dir = Path(out_dir)
    if out_dir.exists() and not (
        out_dir.is_dir() and ((overwrite and is_export(out_dir)) or not any(out_dir.iterdir()))
    ):
        raise GliosegError(
            out_dir, "exists and is not an empty folder", "choose a new output folder (or overwrite an earlier export)"
        )
    source = Path(checkpoint)
    source_file = _checkpoint_file(source)
    real_out = Path(os.path.realpath(out_dir))
    if real_out == Path(os.path.realpath(source_file)) or real_out in Path(os.path.realpath(source_file)).parents:
        raise GliosegError(
            out_dir,
            f"holds the checkpoint being exported ({source_file.name}), which overwriting it would delete",
            "choose another output folder",
        )
    installed = runtimes.available_backends()
    runtime = (
        "onnxruntime" if fmt == "onnx" and "onnxruntime" in installed else "openvino"
    )  # OpenVINO reads ONNX files too
    if runtime not in installed:
        raise GliosegError(
            None,
            f"exporting to {fmt} needs "
            f"{'onnxruntime or openvino, neither is' if fmt == 'onnx' else 'openvino, which is not'} installed",
            FAST_EXTRA_FIX,
        )

    import torch

    from glioseg.checkpoint import model_from_checkpoint
    from glioseg.checksums import is_shipped, verify_checksum

    if is_shipped(source):
        verify_checksum(source)
    model, config, _ = model_from_checkpoint(source, map_location="cpu")
    stride = int(getattr(model, "stride", 1))
    in_channels = config.preprocess.input_channels
    patch = tuple(-(-int(s) // stride) * stride for s in config.inference.window)

    with atomic_folder(out_dir) as staging:  # written whole, then renamed into place
        onnx_path = staging / "model.onnx"
        _export_onnx(model, in_channels, patch, onnx_path)
        if fmt == "openvino":
            import openvino as ov

            ov.save_model(ov.convert_model(str(onnx_path)), str(staging / "model.xml"), compress_to_fp16=False)
            onnx_path.unlink()
        # Check the export before anything is published: the runtime against PyTorch on a seeded input.
        probe = np.random.default_rng(0).standard_normal((1, in_channels, *patch)).astype(np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(probe)).numpy()
        network = runtimes.build_runtime_network(runtime, staging / MODEL_FILES[fmt][0], stride=stride, threads=0)
        difference = float(np.abs(network(probe) - expected).max())
        if not difference <= EXPORT_TOLERANCE:
            raise GliosegError(
                source, f"the {fmt} export's logits differ from PyTorch's by {difference:.2g} (> {EXPORT_TOLERANCE})",
                "report this model and runtime version; predict with the torch backend meanwhile",
            )
        write_text(staging / "config.yaml", yaml.safe_dump(config.to_plain_dict(), sort_keys=False))
        files = {name: sha256(staging / name) for name in (*MODEL_FILES[fmt], "config.yaml")}
        manifest = {
            "format": fmt, "files": files, "stride": stride, "in_channels": in_channels,
            "out_channels": int(expected.shape[1]), "head": config.model.head, "window": list(patch),
            "opset": ONNX_OPSET, "source": source_file.name, "source_sha256": sha256(source_file),
            "max_logit_difference_vs_torch": difference, "glioseg": __version__, "torch": torch.__version__,
        }
        write_json(staging / MANIFEST, manifest)
        for path in staging.iterdir():
            os.chmod(path, 0o644)
    logger.info("exported %s to %s (%s; logits within %.1g of PyTorch)", source, out_dir, fmt, difference)
    return load_export(out_dir)
