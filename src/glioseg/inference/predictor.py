"""The predictor: from a case on disk to a label map on the patient's original grid.

Build it from checkpoints (run folders or ``.pt`` files) or from objects in memory::

    predictor = Predictor.from_checkpoints(["runs/sa_unet"], device="auto")
    predictor = Predictor([model], config, device="cpu")          # e.g. in a test or a notebook

    timings = predictor.predict_case(case, "out/BraTS-GLI-00000-000.nii.gz")
    report = predictor.predict_cases(dataset.cases, "out/", resume=True)

Per case: read the images (:func:`~glioseg.data.discovery.load_case`, no label), preprocess them
with the checkpoint's own ``config.preprocess``, run MONAI's sliding window (Gaussian blending,
windows of ``config.inference.window``) with each model, average the models' probabilities,
optionally average over the 8 axis flips (``mirror``), map back to the original grid (labels:
argmax or nested region thresholds, then :mod:`~glioseg.inference.postprocess`), and write a
``uint8`` label map in the case's own label convention (or the one asked for), with the
reference image's affine and header. Several models must share the head and the preprocessing.

Without a model given, the model shipped in the package's ``glioseg/weights/`` folder is used; each
of its checkpoints is checked against the sha256 recorded in ``glioseg/weights/checksums.json``
(:mod:`glioseg.checksums`) and refused if it differs.

Every label map records in its NIfTI header (``descrip``) which prediction wrote it:
``glioseg model=<sha256 of the models' weights> settings=<sha256 of everything else that changes
the labels> inputs=<the modalities read, e.g. flair,t1ce,t2>`` (:meth:`Predictor.stamp`; the
probabilities file holds the same stamp). With ``resume`` (``predict --continue``) an existing
output is kept only when its stamp is this predictor's, so a label map written by another model
or other settings, or from other modalities, is predicted again.

A model trained with ``augment.modality_dropout > 0`` accepts a case with any non-empty subset of
its modalities: the absent ones are given to the network as zero channels, as in training
(:mod:`glioseg.data.modalities`), and the log names the modalities used. Any other model
refuses such a case with one line naming it.

``backend`` (``Predictor.from_checkpoints``, ``glioseg predict --backend``) runs the networks on
PyTorch or, with the ``fast`` extra, on ONNX Runtime or OpenVINO, the model given as a checkpoint
or as a folder written by ``glioseg export`` (:mod:`glioseg.inference.backends`,
:mod:`glioseg.inference.export`); ``auto`` takes the fastest that matches PyTorch here.
With a runtime, everything around the network runs on numpy (the sliding window, the resampling, the
activations: the ``*_numpy`` functions, equal to PyTorch's to float rounding), and where the export
and the choice need no PyTorch either (:func:`~glioseg.inference.backends.runtime_networks_without_torch`)
a prediction never imports it.

Every call of :meth:`Predictor.predict_case` returns (and logs) the time spent in each stage, in
seconds: ``read``, ``preprocess``, ``network`` (inside the models' forward passes only),
``stitch`` (the rest of the sliding window: padding, Gaussian blending, flips, model averaging),
``postprocess`` (back to the original grid, labels, post-processing), ``write`` and ``total``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from glioseg.checksums import is_pack, pack_members, shipped_checkpoints
from glioseg.config import Config
from glioseg.data.discovery import Case, LoadedCase, load_case
from glioseg.data.io import AFFINE_TOLERANCE, read_header, read_volume, write_label_map
from glioseg.data.modalities import accepts_missing, describe, fill_absent, present_modalities
from glioseg.data.preprocess import (
    CropInfo,
    PreprocessedCase,
    Resize,
    invert_probabilities,
    preprocess_loaded,
    resize_image,
    resize_image_numpy,
)
from glioseg.errors import GliosegError
from glioseg.files import atomic_path, check_outputs_apart
from glioseg.heads import channel_names, has_background_channel, is_tensor
from glioseg.inference.decode import decode, to_labels
from glioseg.inference.postprocess import PostprocessConfig
from glioseg.inference.sliding import sliding_window_probabilities, sliding_window_probabilities_numpy
from glioseg.labels import from_internal, get_convention
from glioseg.timing import StageClock

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

STAGES = ("read", "preprocess", "network", "stitch", "postprocess", "write")
"""The stages timed per case, in order (plus ``total``)."""

def resolve_checkpoints(paths: Sequence[str | Path] | None) -> list[Path]:
    """The checkpoints to use: ``paths`` when given, else the shipped model.

    A model folder written by ``glioseg cv pack`` stands for its members (checked against its checksums).

    Raises:
        GliosegError: nothing given and no model shipped with the package, or a model folder
            with missing or altered members.
    """
    if paths:
        return [member for p in paths for member in (pack_members(p) if is_pack(p) else [Path(p)])]
    shipped = shipped_checkpoints()
    if not shipped:
        raise GliosegError(
            None,
            "no model given and this glioseg installation ships no trained model (glioseg/weights/ is empty)",
            "give a model: a run folder written by `glioseg train`, or its best.pt",
        )
    return shipped


def output_path(out_dir: str | Path, case_id: str) -> Path:
    """Where the label map of ``case_id`` is written: ``OUT/<case>.nii.gz``."""
    return Path(out_dir) / f"{case_id}.nii.gz"


def probabilities_path(out_dir: str | Path, case_id: str) -> Path:
    """Where the probabilities of ``case_id`` are written: ``OUT/<case>_probabilities.npz``."""
    return Path(out_dir) / f"{case_id}_probabilities.npz"


def remove_earlier_outputs(out_dir: str | Path, case_id: str, *, label_map: bool = True) -> list[Path]:
    """Remove the label map and probabilities of ``case_id`` that an earlier run left in ``out_dir``.

    Called when the case failed in this run: a label map left from before (another model, other
    settings, or the images before they changed) would otherwise sit in the output folder beside
    this run's results, and a pipeline that collects ``OUT/*.nii.gz`` would take it for one. With
    ``label_map=False``, the probabilities only: after this run wrote the label map without them.

    Returns:
        the files removed (none when nothing was there or a file could not be removed).
    """
    removed = []
    paths = [output_path(out_dir, case_id)] if label_map else []
    for path in [*paths, probabilities_path(out_dir, case_id)]:
        with contextlib.suppress(OSError):  # a folder in the way, or no right to remove: left, as before
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
    return removed


def weights_checksum(models: Sequence[nn.Module]) -> str:
    """sha256 (hex) of the models' weights: every state-dict entry's name, dtype, shape and bytes, in order."""
    import torch

    digest = hashlib.sha256()
    for model in models:
        for name, entry in model.state_dict().items():
            tensor = entry.detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(
                tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            )  # 0-dim: reshape first
        digest.update(b"#")  # model boundary
    return digest.hexdigest()


def read_stamp(path: str | Path) -> str | None:
    """The prediction stamp in a label map's header (``descrip``), or ``None`` if it has none or cannot be read."""
    try:
        raw = nib.load(str(path)).header["descrip"]  # type: ignore[index]  # a NIfTI header
    except (OSError, ValueError, EOFError, ImageFileError):  # an unreadable output is simply predicted again
        return None
    text = bytes(np.asarray(raw).item()).decode("ascii", "replace").strip("\x00 ") if raw is not None else ""
    return text if text.startswith("glioseg ") else None


def _probabilities_stamp(path: Path) -> str | None:
    try:
        with np.load(path) as arrays:
            return str(arrays["stamp"]) if "stamp" in arrays else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # unreadable: predicted again
        return None


def check_prediction_outputs(
    cases: Sequence[Case],
    out_dir: str | Path,
    *,
    save_probabilities: bool = False,
    protected: Sequence[str | Path] = (),
    extra_outputs: Sequence[str | Path] = (),
) -> None:
    """Refuse, before any work, outputs that would overwrite an input or a dataset's reference labels.

    The inputs are every image and label file of ``cases``; the outputs are ``out_dir``, the
    label maps (and probabilities) of ``cases`` and ``extra_outputs``; nothing may be written
    into ``protected`` folders nor into the folder of an MSD case's label (``labelsTr``), and an
    extra output may not be ``out_dir`` or a case's output.

    Raises:
        GliosegError: naming the output and the input it would overwrite.
    """
    inputs = [p for case in cases for p in (*case.images.values(), *([case.label] if case.label is not None else []))]
    outputs: list[Path] = [Path(out_dir)]
    for case in cases:
        outputs.append(output_path(out_dir, case.case_id))
        if save_probabilities:
            outputs.append(probabilities_path(out_dir, case.case_id))
    protected = [*protected, *{case.label.parent for case in cases if case.layout == "msd" and case.label is not None}]
    check_outputs_apart([*outputs, *extra_outputs], inputs, protected)
    written = {Path(os.path.realpath(p)): p for p in outputs}
    for extra in extra_outputs:  # e.g. the timings file given the name of a label map: it would replace it
        clash = written.get(Path(os.path.realpath(extra)))
        if clash is not None:
            raise GliosegError(
                extra,
                "is the output folder of the label maps" if clash == outputs[0]
                else f"is where this command writes a case's output ({clash.name}), which this file would replace",
                "give this file another name",
            )


def trusted_output(case: Case, out_dir: str | Path, save_probabilities: bool = False) -> bool:
    """True if ``case``'s outputs in ``out_dir`` exist, load, and lie on the case's grid (for ``--continue``).

    The label map must read fully and have the shape and affine of the case's reference image;
    with ``save_probabilities`` the probabilities file must load with that shape too.
    """
    try:
        reference = read_header(case.reference_image)
        output = read_volume(output_path(out_dir, case.case_id), dtype=None)
    except GliosegError:
        return False
    shape = tuple(int(n) for n in reference.shape[:3])
    if output.data.shape != shape or not np.allclose(output.affine, reference.affine, atol=AFFINE_TOLERANCE):
        return False
    if save_probabilities:
        try:
            with np.load(probabilities_path(out_dir, case.case_id)) as saved:
                return tuple(saved["probabilities"].shape[1:]) == shape
        except Exception:  # noqa: BLE001 - any unreadable file is simply predicted again
            return False
    return True


def _as_array(probabilities: Any) -> np.ndarray:
    """Probabilities as a numpy array (a tensor is copied to the CPU)."""
    return probabilities.cpu().numpy() if is_tensor(probabilities) else np.asarray(probabilities)


def is_module(model: object) -> bool:
    """Whether ``model`` is a PyTorch module, without importing PyTorch (no module exists before it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class _TimedForward:
    """Wraps a network (a PyTorch module on tensors, or a runtime's on numpy arrays) to add the time spent in
    its forward passes to ``seconds``, and to refuse non-finite logits (a sigmoid turns an infinite logit into
    a confident, plausible 1).

    Args:
        model: the network.
        device: the PyTorch module's device (CUDA is synchronised around each pass); ``None`` for an array network.
    """

    def __init__(self, model: Callable[[Any], Any], device: torch.device | None = None) -> None:
        self.model = model
        self.device = device
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def __call__(self, x: Any) -> Any:
        self._sync()
        started = time.perf_counter()
        out = self.model(x)
        self._sync()
        self.seconds += time.perf_counter() - started
        finite = bool(np.isfinite(out).all()) if isinstance(out, np.ndarray) else bool(out.isfinite().all())
        if not finite:  # softmax/sigmoid would hide an infinite logit
            raise GliosegError(
                None, "the model's output is NaN or infinite on this case; no label map is written",
                "check the model (a damaged checkpoint or diverged training) and this case's images",
            )
        return out


def _check_ensemble(paths: Sequence[str | Path], configs: Sequence[Config]) -> None:
    """Refuse models that differ in head or preprocessing from the first; say when their windows differ.

    Raises:
        GliosegError: naming the model that differs.
    """
    first = configs[0]
    for path, config in zip(paths[1:], configs[1:], strict=True):
        if config.model.head != first.model.head:
            raise GliosegError(
                path,
                f"has a '{config.model.head}' head, {paths[0]} a '{first.model.head}' head",
                "ensemble only models with the same head",
            )
        if config.preprocess != first.preprocess:
            raise GliosegError(
                path,
                f"was trained with other preprocessing than {paths[0]}",
                "ensemble only models trained with the same preprocessing preset",
            )
        if tuple(config.inference.window) != tuple(first.inference.window):
            logger.info(
                "%s has a %s window; all models use %s windows",
                path,
                config.inference.window,
                first.inference.window,
            )


def _load_with_torch(
    paths: Sequence[str | Path],
    device: str | torch.device,
    patch_size: Sequence[int] | None,
    threads: int,
    backend: str,
) -> tuple[str, list, list[Config], torch.device]:
    """:meth:`Predictor.from_checkpoints` with PyTorch: the checkpoints' networks (checked for NaN or infinite
    weights), then :func:`~glioseg.inference.backends.prepare_networks` (which may export and measure).

    Returns:
        ``(backend, networks, configs, device)``.
    """
    import torch

    from glioseg.checkpoint import model_from_checkpoint
    from glioseg.checksums import is_shipped, verify_checksum
    from glioseg.device import resolve_device
    from glioseg.inference.backends import prepare_networks
    from glioseg.inference.export import is_export, load_export

    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    models, configs, exports = [], [], []  # type: ignore[var-annotated]
    for path in paths:
        if is_export(path):
            exported = load_export(path)
            models.append(None)  # type: ignore[arg-type]
            configs.append(exported.config)
            exports.append(exported)
            continue
        if is_shipped(Path(path)):
            verify_checksum(path)
        model, config, _ = model_from_checkpoint(path, map_location=resolved)
        broken = [
            name
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()
        ]
        if broken:
            raise GliosegError(
                path,
                f"holds NaN or infinite weights ({len(broken)} tensor(s), e.g. {broken[0]}); its predictions would "
                "be meaningless",
                "use another checkpoint (training may have diverged: use an earlier one, or retrain with a lower "
                "learning rate)",
            )
        models.append(model)
        configs.append(config)
        exports.append(None)  # type: ignore[arg-type]
    _check_ensemble(paths, configs)
    first = configs[0]
    if threads > 0:  # before the backends are measured against each other
        torch.set_num_threads(threads)
    window = tuple(patch_size if patch_size is not None else first.inference.window)
    backend, models = prepare_networks(
        [Path(p) for p in paths], models, exports, backend=backend, head=first.model.head,
        probe_shape=(1, first.preprocess.input_channels, *window), threads=threads, device_type=resolved.type,
    )
    return backend, models, configs, resolved if backend == "torch" else torch.device("cpu")


@dataclass
class PredictionReport:
    """Outcome of :meth:`Predictor.predict_cases`.

    Attributes:
        written: ids whose label map was written in this run.
        skipped: ids whose output already existed with this predictor's stamp (``resume``).
        redone: ids (also in ``written``) whose existing output came from another model or
            other settings and was predicted again (``resume``).
        failed: id -> one-line error, for cases that could not be predicted.
        timings: id -> stage -> seconds (see :data:`STAGES`), for the written cases.
    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)


class Predictor:
    """Segments cases with one model or an ensemble, on the original image grid.

    Args:
        models: networks returning logits (N, K, X, Y, Z); all with the head ``config.model.head``: PyTorch
            modules, or callables on numpy arrays (a runtime's, see :mod:`glioseg.inference.backends`), which
            run on the CPU with everything around them on numpy (no PyTorch).
        config: the preset they were trained with: ``preprocess`` is applied to every case,
            ``model.head`` says how to read the logits, ``inference`` sets the sliding window
            (``inference.window``) and ``postprocess`` the post-processing.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a ``torch.device`` (array networks: the CPU).
        overlap: overlap of neighbouring windows (fraction of the window); ``None``: the config's.
        sw_batch_size: windows per forward pass; ``None``: the config's.
        mirror: average over the 8 axis flips (8 times slower); ``None``: the config's.
        patch_size: window size; ``None`` uses ``config.inference.window``.
        postprocessing: post-processing of the label maps; ``None``: the config's.
        threads: torch CPU threads; 0 leaves torch's default (one per physical core).

    The settings in use are those of :attr:`config` (the given config with the overrides applied).
    :attr:`name`, when set, names the model in the log line of every case (``CASE: model NAME;
    modalities used: ...``), and :attr:`tag` (at most 24 ASCII characters) is written to the label
    map's header field ``aux_file`` beside the stamp, as ``glioseg predict`` does for the shipped
    models (``glioseg shipped``, ``glioseg shipped-missing``).
    """

    def __init__(
        self,
        models: Sequence[nn.Module | Callable[[np.ndarray], np.ndarray]],
        config: Config,
        device: str | torch.device = "cpu",
        *,
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        mirror: bool | None = None,
        patch_size: Sequence[int] | None = None,
        postprocessing: PostprocessConfig | None = None,
        threads: int = 0,
    ) -> None:
        if not models:
            raise GliosegError(None, "no model given to the predictor", "pass at least one model or checkpoint")
        if patch_size is not None and (len(patch_size) != 3 or any(int(n) != n or n < 1 for n in patch_size)):
            raise GliosegError(
                None,
                f"window {list(patch_size)} is not three sizes of at least 1 voxel",
                "give a window of three sizes >= 1",
            )
        window = None if patch_size is None else tuple(int(n) for n in patch_size)
        given = {"overlap": overlap, "sw_batch_size": sw_batch_size, "mirror": mirror, "window": window}
        try:
            inference = dataclasses.replace(config.inference, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
        except ValueError as exc:
            raise GliosegError(None, f"invalid inference setting: {exc}", "give values in the ranges stated") from None
        config = dataclasses.replace(config, inference=inference, postprocess=postprocessing or config.postprocess)
        modules = [is_module(model) for model in models]
        if any(modules) and not all(modules):
            raise GliosegError(
                None, "the models mix PyTorch modules and runtime networks", "give models of one kind"
            )
        self.backend = "torch" if all(modules) else getattr(models[0], "backend", "runtime")
        self._device: torch.device | None = None  # array networks: the CPU, without PyTorch
        if self.backend == "torch":
            import torch

            from glioseg.device import resolve_device

            if threads > 0:
                torch.set_num_threads(threads)
            self._device = device if isinstance(device, torch.device) else resolve_device(str(device))
        self.config = config
        self.head = config.model.head
        self.inference = config.inference
        self.patch_size = tuple(int(s) for s in config.inference.window)
        self.models = [
            _TimedForward(model.to(self._device).eval(), self._device)  # type: ignore[union-attr]  # modules here
            if self._device is not None
            else _TimedForward(model)
            for model in models
        ]
        self.name: str | None = None
        self.tag: str | None = None
        if self.backend == "torch":
            self.model_checksum = weights_checksum(models)  # type: ignore[arg-type]  # all modules here
        else:  # the exported networks' files (see glioseg.inference.export)
            self.model_checksum = hashlib.sha256(
                "#".join(getattr(m, "checksum", "") for m in models).encode()
            ).hexdigest()

    @property
    def device(self) -> torch.device:
        """The device of the PyTorch networks (array networks run on the CPU: PyTorch is imported to say so)."""
        if self._device is None:
            import torch

            return torch.device("cpu")
        return self._device

    @property
    def _resize(self) -> Resize:
        """The trilinear resampling around the network: PyTorch's, or numpy's with array networks."""
        return resize_image if self._device is not None else resize_image_numpy

    @property
    def postprocessing(self) -> PostprocessConfig:
        """The post-processing in use (``config.postprocess``); give another one when building the predictor."""
        return self.config.postprocess

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        device: str | torch.device = "auto",
        *,
        overlap: float | None = None,
        sw_batch_size: int | None = None,
        mirror: bool | None = None,
        patch_size: Sequence[int] | None = None,
        postprocessing: PostprocessConfig | None = None,
        postprocess_overrides: Mapping[str, Any] | None = None,
        threads: int = 0,
        backend: str = "torch",
    ) -> Predictor:
        """Load one model per checkpoint (run folder -> its best.pt, last.pt or model.pt) or export folder.

        ``backend`` (``torch``, ``onnxruntime``, ``openvino`` or ``auto``, the fastest installed
        that matches PyTorch) runs the networks; see :func:`glioseg.inference.backends.prepare_networks`.
        Where a runtime runs them and nothing else needs PyTorch
        (:func:`glioseg.inference.backends.runtime_networks_without_torch`), PyTorch is not imported.

        The first checkpoint's config supplies the settings not given here (window, inference,
        post-processing); ``postprocess_overrides`` (field -> value) replaces single fields of its
        ``postprocess`` section (``glioseg predict --et-threshold`` etc.).

        Raises:
            GliosegError: a checkpoint is unreadable, the models differ in head or preprocessing,
                or the backend cannot run them.
        """
        from glioseg.inference.backends import runtime_networks_without_torch

        if not paths:
            raise GliosegError(None, "no checkpoint given", "give a model: a run folder or a .pt file")
        without_torch = (
            runtime_networks_without_torch(
                [Path(p) for p in paths], backend=backend, device=device, window=patch_size, threads=threads
            )
            if isinstance(device, str)
            else None
        )
        if without_torch is not None:
            backend, models, configs = without_torch
            _check_ensemble(paths, configs)
            where: str | torch.device = "cpu"
        else:
            backend, models, configs, where = _load_with_torch(paths, device, patch_size, threads, backend)
        logger.info("loaded %d model(s) on %s (%s): %s", len(models), where, backend, ", ".join(str(p) for p in paths))
        first = configs[0]
        if postprocess_overrides:
            try:
                postprocessing = dataclasses.replace(postprocessing or first.postprocess, **postprocess_overrides)
            except ValueError as exc:
                raise GliosegError(
                    None, f"invalid post-processing setting: {exc}", "give values in the ranges stated"
                ) from None
        return cls(
            models, first, where, overlap=overlap, sw_batch_size=sw_batch_size, mirror=mirror,
            patch_size=patch_size, postprocessing=postprocessing, threads=threads,
        )

    def stamp(self, labels_convention: str, modalities: Sequence[str] | None = None) -> str:
        """What a label map written by this predictor records in its header (at most 80 characters).

        ``glioseg model=<16 hex> settings=<12 hex> inputs=<modalities>``: the first digits of
        :attr:`model_checksum` (the sha256 of the weights) and of the settings that change the
        labels (preprocessing, head, window, the inference settings but the window batch size,
        post-processing, ``labels_convention``), then the modalities the case was segmented from
        (``None``: all of the model's).
        """
        inputs = ",".join(self.config.preprocess.modalities if modalities is None else modalities)
        settings = json.dumps(
            {
                "preprocess": self.config.preprocess.fingerprint(),
                "head": self.head,
                "window": list(self.patch_size),
                "inference": {
                    k: v for k, v in dataclasses.asdict(self.inference).items() if k not in ("sw_batch_size", "window")
                },
                "postprocessing": dataclasses.asdict(self.postprocessing),
                "convention": labels_convention,
            },
            sort_keys=True,
        )
        settings_hash = hashlib.sha256(settings.encode()).hexdigest()[:12]
        return f"glioseg model={self.model_checksum[:16]} settings={settings_hash} inputs={inputs}"

    def is_done(
        self, case: Case, out_dir: str | Path, labels_convention: str | None = None, save_probabilities: bool = False
    ) -> bool:
        """True when ``case``'s outputs in ``out_dir`` exist and were written by this predictor
        with these settings (their stamp matches), so ``resume`` may skip it."""
        present = [m for m in self.config.preprocess.modalities if m in case.images]
        expected = self.stamp(get_convention(labels_convention or case.convention).name, present)
        if read_stamp(output_path(out_dir, case.case_id)) != expected:
            return False
        return not save_probabilities or _probabilities_stamp(probabilities_path(out_dir, case.case_id)) == expected

    # --- the stages -------------------------------------------------------------------------

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the probability channels: the 4 classes or the regions WT, TC, ET."""
        return channel_names(self.head)

    @property
    def accepts_missing(self) -> bool:
        """Whether the models learned to segment without some of their modalities (modality dropout)."""
        return accepts_missing(self.config)

    def modalities_of(self, case: Case) -> tuple[str, ...]:
        """The models' modalities that ``case`` has, in their order.

        Raises:
            GliosegError: the case has none of them, or lacks one and the models cannot do
                without it (see :func:`glioseg.data.modalities.present_modalities`).
        """
        return present_modalities(case, self.config)

    def usable_cases(self, cases: Sequence[Case]) -> tuple[list[Case], list[GliosegError]]:
        """``cases`` split into those the models can segment and one error per case they cannot
        (:meth:`modalities_of`), both in the given order."""
        usable, refused = [], []
        for case in cases:
            try:
                self.modalities_of(case)
            except GliosegError as exc:
                refused.append(exc)
            else:
                usable.append(case)
        return usable, refused

    def read(self, case: Case) -> LoadedCase:
        """Read the modalities the models need that the case has (:meth:`modalities_of`; no label)."""
        return load_case(case, self.modalities_of(case), with_label=False)

    def preprocess(self, loaded: LoadedCase) -> PreprocessedCase:
        """Apply the models' preprocessing (the label, if any, is ignored).

        Modalities the case lacks become zero channels of the preprocessed image
        (:func:`glioseg.data.modalities.fill_absent`), so ``image`` always has the models' channels.
        """
        if loaded.label is not None:
            loaded = dataclasses.replace(loaded, label=None)
        expected = tuple(self.config.preprocess.modalities)
        present = tuple(loaded.modalities)
        subset = bool(present) and tuple(m for m in expected if m in present) == present
        if present != expected and not (self.accepts_missing and subset):
            raise GliosegError(
                loaded.case.reference_image,
                f"case was loaded with modalities {list(loaded.modalities)}, the model needs "
                f"{list(self.config.preprocess.modalities)}",
                "load it with Predictor.read",
            )
        pre = preprocess_loaded(loaded, self.config.preprocess, resize=self._resize)
        return dataclasses.replace(pre, image=fill_absent(pre.image, present, expected))

    def network_probabilities(self, image: np.ndarray) -> Any:
        """Sliding-window probabilities of a preprocessed image, averaged over the models.

        Args:
            image: (C, X, Y, Z) float32 preprocessed image.

        Returns:
            (K, X, Y, Z) float32 probabilities: a tensor on the predictor's device with PyTorch networks,
            a numpy array with a runtime's (:func:`~glioseg.inference.sliding.sliding_window_probabilities_numpy`).
        """
        settings = {
            "head": self.head, "patch_size": self.patch_size, "overlap": self.inference.overlap,
            "sw_batch_size": self.inference.sw_batch_size, "mirror": self.inference.mirror,
            "blend": self.inference.blend,
        }
        if self._device is None:
            array = np.ascontiguousarray(image, dtype=np.float32)[None]
            summed: np.ndarray | None = None
            for model in self.models:
                out = sliding_window_probabilities_numpy(model, array, **settings)[0]  # type: ignore[arg-type]
                summed = out if summed is None else np.add(summed, out, out=summed)
            assert summed is not None  # the constructor refuses an empty list of models
            if len(self.models) > 1:
                summed = np.divide(summed, len(self.models), out=summed)
            finite = bool(np.isfinite(summed).all())
            total: Any = summed
        else:
            import torch

            with torch.inference_mode():
                tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(self._device)
                for model in self.models:
                    probs = sliding_window_probabilities(model, tensor, **settings)[0]  # type: ignore[arg-type]
                    total = probs if model is self.models[0] else total.add_(probs)
                if len(self.models) > 1:
                    total = total.div_(len(self.models))
                finite = bool(torch.isfinite(total).all())
        if not finite:
            raise GliosegError(
                None, "the model's output is NaN or infinite on this case; no label map is written",
                "check the model (a damaged checkpoint or diverged training) and this case's images",
            )
        return total

    def to_original_probabilities(self, probabilities: np.ndarray, crop: CropInfo) -> np.ndarray:
        """(K, *crop.shape) probabilities -> (K, *crop.original_shape) float32.

        Outside the crop: background probability 1 (``classes``), every region 0 (``regions``).
        """
        return invert_probabilities(
            probabilities, crop, background=has_background_channel(self.head), resize=self._resize
        )

    def labels_from_probabilities(self, probabilities: torch.Tensor | np.ndarray, crop: CropInfo) -> np.ndarray:
        """(K, *crop.shape) probabilities -> post-processed internal labels on the original grid.

        The decode step validation uses too (:func:`glioseg.inference.decode.decode`): labels
        are decided on the crop at the original resolution, then pasted into a background
        volume; post-processing also runs on the crop (outside it all is background).
        """
        return decode(probabilities, crop, self.config)

    def labels(
        self, probabilities: torch.Tensor | np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ) -> np.ndarray:
        """(K, X, Y, Z) probabilities -> post-processed internal labels (X, Y, Z) ``uint8`` on the same grid, of
        voxel size ``spacing`` (mm) (:func:`glioseg.inference.decode.to_labels` with the
        ``inference.region_threshold`` and the ``postprocess`` section)."""
        return to_labels(probabilities, self.head, self.inference.region_threshold, self.postprocessing, spacing)

    # --- public entry points ----------------------------------------------------------------

    def predict_probabilities(self, loaded: LoadedCase) -> np.ndarray:
        """Probabilities on the case's original grid.

        Args:
            loaded: a case read with :meth:`read` (or ``load_case`` with the model's modalities).

        Returns:
            (K, X, Y, Z) float32: 4 class probabilities (``classes`` head) or WT/TC/ET
            probabilities (``regions`` head), see :attr:`channel_names`.
        """
        pre = self.preprocess(loaded)
        probabilities = self.network_probabilities(pre.image)
        return self.to_original_probabilities(_as_array(probabilities), pre.crop)

    def predict_case(
        self,
        case: Case,
        out_path: str | Path,
        labels_convention: str | None = None,
        save_probabilities: bool = False,
    ) -> dict[str, float]:
        """Predict one case from disk and write its label map atomically.

        Args:
            case: the case (its images; a label, if any, is not read).
            out_path: the ``.nii.gz`` to write.
            labels_convention: convention of the written labels; ``None`` uses ``case.convention``.
            save_probabilities: also write ``<case>_probabilities.npz`` beside ``out_path``
                (``probabilities`` (K, X, Y, Z) float16 on the original grid, ``channels`` names).

        Returns:
            Seconds per stage (:data:`STAGES`) and ``total``.
        """
        convention = get_convention(labels_convention or case.convention)
        out_path = Path(out_path)
        clock = StageClock(STAGES)
        timings, lap = clock.seconds, clock.lap

        loaded = self.read(case)
        used = describe(loaded.modalities, self.config.preprocess.modalities)
        logger.info("%s: %smodalities used: %s", case.case_id, f"model {self.name}; " if self.name else "", used)
        lap("read")
        pre = self.preprocess(loaded)
        lap("preprocess")
        for model in self.models:
            model.seconds = 0.0
        probabilities = self.network_probabilities(pre.image)
        if self._device is not None and self._device.type == "cuda":
            import torch

            torch.cuda.synchronize(self._device)
        lap("stitch")
        network = sum(model.seconds for model in self.models)
        timings["network"], timings["stitch"] = network, max(timings["stitch"] - network, 0.0)
        labels = from_internal(self.labels_from_probabilities(probabilities, pre.crop), convention)
        full = self.to_original_probabilities(_as_array(probabilities), pre.crop) if save_probabilities else None
        lap("postprocess")
        header = nib.load(str(case.reference_image)).header.copy()
        stamp = self.stamp(convention.name, loaded.modalities)
        header["descrip"] = stamp.encode("ascii")  # type: ignore[index]  # a NIfTI header
        if self.tag:
            header["aux_file"] = self.tag.encode("ascii")[:24]  # type: ignore[index]  # which model, by name
        target = probabilities_path(out_path.parent, case.case_id)
        try:  # both outputs of the case, or neither
            if full is not None:
                with atomic_path(target) as tmp, open(tmp, "wb") as handle:
                    np.savez_compressed(
                        handle,
                        probabilities=full.astype(np.float16),
                        channels=np.array(self.channel_names),
                        stamp=np.array(stamp),
                    )
            write_label_map(out_path, labels, loaded.affine, header)  # type: ignore[arg-type]  # a NIfTI header
        except BaseException:
            if full is not None:
                with contextlib.suppress(OSError):  # a name too long to exist cannot be removed either
                    target.unlink(missing_ok=True)
            raise
        lap("write")
        timings["total"] = clock.total()
        outside = timings["total"] - timings["network"]
        logger.info(
            "%s: %s | outside the network %.1f%%",
            case.case_id,
            ", ".join(f"{stage} {timings[stage]:.2f} s" for stage in (*STAGES, "total")),
            100 * outside / max(timings["total"], 1e-9),
        )
        return timings

    def predict_cases(
        self,
        cases: Sequence[Case],
        out_dir: str | Path,
        *,
        labels_convention: str | None = None,
        save_probabilities: bool = False,
        resume: bool = False,
        progress: bool = True,
    ) -> PredictionReport:
        """Predict many cases into ``out_dir``; a failing case is reported and the others go on.

        Args:
            cases: the cases, predicted in the given order.
            out_dir: output folder (``<case>.nii.gz`` per case).
            labels_convention: convention of the written labels (``None``: each case's own).
            save_probabilities: also write ``<case>_probabilities.npz`` (without it, one that an earlier run left
                beside a label map written now is removed: it is not that label map's).
            resume: skip cases whose outputs already exist, carry this predictor's stamp
                (:meth:`is_done`), load, and lie on the case's grid (:func:`trusted_output`);
                any other output is predicted again.
            progress: show a tqdm progress bar.
        """
        from tqdm.auto import tqdm

        check_prediction_outputs(cases, out_dir, save_probabilities=save_probabilities)
        report = PredictionReport()
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GliosegError(
                out_dir,
                f"cannot create the output folder ({exc.strerror or exc})",
                "choose an output folder you can write to",
            ) from None
        bar = tqdm(cases, desc="predict", unit="case", disable=not progress or not cases)
        for case in bar:
            target = output_path(out_dir, case.case_id)
            stale = False
            if resume and target.exists():
                if self.is_done(case, out_dir, labels_convention, save_probabilities) and trusted_output(
                    case, out_dir, save_probabilities
                ):
                    report.skipped.append(case.case_id)
                    logger.debug("%s: %s exists, skipped", case.case_id, target)
                    continue
                stale = True
                logger.info(
                    "%s: %s was written by another model or with other settings, or does not load on the case's grid; "
                    "predicting it again",
                    case.case_id,
                    target,
                )
            try:
                if target.is_dir():
                    raise GliosegError(
                        target, "a folder is in the way of this case's label map", "move or remove the folder"
                    )
                report.timings[case.case_id] = self.predict_case(case, target, labels_convention, save_probabilities)
            except GliosegError as exc:
                report.failed[case.case_id] = str(exc.located(case.reference_image.parent, f"case {case.case_id}"))
            except (RuntimeError, ValueError, OSError, MemoryError) as exc:
                logger.debug("%s failed", case.case_id, exc_info=True)
                error = GliosegError(
                    case.reference_image.parent, f"case {case.case_id} failed ({type(exc).__name__}: {str(exc)[:300]})",
                    "check this case's images; if they look fine, rerun with -v and report the error",
                )
                report.failed[case.case_id] = str(error)
            else:
                report.written.append(case.case_id)
                if stale:
                    report.redone.append(case.case_id)
                if not save_probabilities:  # an earlier run's probabilities (another model, settings, images)
                    for earlier in remove_earlier_outputs(out_dir, case.case_id, label_map=False):
                        logger.warning("%s: removed %s, an earlier run's probabilities", case.case_id, earlier)
            if case.case_id in report.failed:  # the caller shows it (the CLI prints it once)
                removed = remove_earlier_outputs(out_dir, case.case_id)
                if removed:
                    report.failed[case.case_id] += (
                        f" (its earlier output {', '.join(str(p) for p in removed)} was removed: it was not this "
                        "run's result)"
                    )
                logger.debug("%s", report.failed[case.case_id])
        bar.close()
        return report
