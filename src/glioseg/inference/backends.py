"""Inference backends: PyTorch eager, ONNX Runtime and OpenVINO, and choosing the fastest.

ONNX Runtime comes with ``pip install glioseg`` (a regular dependency); OpenVINO with
``pip install 'glioseg[fast]'``. Without a runtime everything runs on PyTorch as before, and
``predict`` says once how to get ONNX Runtime (:data:`RUNTIME_HINT`). A runtime network is a
callable ``(N, C, X, Y, Z) float32 array ->
(N, K, X, Y, Z) float32 logits``, like the PyTorch network: it zero-pads the spatial axes at
their end to a multiple of the network's stride and crops the logits back, as
:class:`~glioseg.networks.UNet` does inside its ``forward``.

``--backend auto`` picks, on the machine at hand, the fastest installed backend whose
probabilities match PyTorch's (:func:`calibrate`): each candidate runs the same seeded window
(after one warm-up) and the fastest within :data:`PROBABILITY_TOLERANCE` of PyTorch wins. No
CPU vendor or instruction set is assumed; the choice is measured. It is remembered per model,
CPU, thread count and window in ``~/.cache/glioseg/backends.json`` (:data:`CACHE_DIR`), next to
the ONNX exports made on the fly from checkpoints (:func:`cached_export`), so only the first
prediction with a model on a machine pays for exporting and measuring (seconds).

With a runtime, ``predict`` need not import PyTorch at all (:func:`runtime_networks_without_torch`): an
export folder, or a checkpoint whose export is already cached (checked against its checksums) and whose
remembered choice (or ``--backend``) is a runtime, gives the networks and the config from the export alone;
anything else (nothing remembered, no export yet, a damaged export, a GPU that ``--device auto`` might
take) goes the PyTorch way, as before.

This module imports neither PyTorch nor a runtime until one is used.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glioseg.errors import GliosegError
from glioseg.inference.runtime import (
    ARENA_MAX_WINDOW,
    CACHE_DIR,
    FAST_EXTRA_FIX,
    RuntimeNetwork,
    available_backends,
    build_runtime_network,  # noqa: F401  (re-exported)
)

if TYPE_CHECKING:
    from torch import nn

    from glioseg.config import Config
    from glioseg.inference.export import ExportedModel

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
"""Backends ``glioseg predict --backend`` accepts (besides ``auto``)."""

RUNTIMES = ("openvino", "onnxruntime")
"""The runtimes: OpenVINO (the ``fast`` extra), ONNX Runtime (a dependency of glioseg)."""

RUNTIME_HINT = (
    "pip install 'onnxruntime>=1.17' 'onnx>=1.15' (dependencies of glioseg: reinstall glioseg to get them)"
)
"""How to get the fast path where the runtimes are missing (said once per ``predict`` with ``--backend auto``)."""

PROBABILITY_TOLERANCE = 1e-3
"""Largest probability difference from PyTorch for a backend to count as giving the same labels."""


Network = Callable[[np.ndarray], np.ndarray]


def _checkpoint_and_export_folder(checkpoint: str | Path, cache_dir: str | Path | None) -> tuple[Path, Path]:
    """The ``.pt`` file a checkpoint path stands for, and the folder of its cached export (``exports/<sha256>``)."""
    from glioseg.checksums import sha256

    path = Path(checkpoint)
    if path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt", "model.pt") if (path / n).is_file()), path)
    if not path.is_file():
        raise GliosegError(path, "checkpoint not found", "check the path to the run folder or .pt file")
    return path, Path(cache_dir or CACHE_DIR) / "exports" / sha256(path)[:32]


def cached_export(checkpoint: str | Path, cache_dir: str | Path | None = None) -> ExportedModel:
    """The ONNX export of a checkpoint, made once and kept under ``CACHE_DIR/exports/<sha256>``.

    Returns:
        The :class:`~glioseg.inference.export.ExportedModel`.
    """
    from glioseg.inference.export import MANIFEST, export_model, is_export, load_export

    path, folder = _checkpoint_and_export_folder(checkpoint, cache_dir)
    if is_export(folder):
        try:
            return load_export(folder)
        except GliosegError as exc:
            logger.warning("cached export unusable (%s); exporting again", exc)
    elif folder.is_dir() or folder.is_file() or folder.is_symlink():  # damaged: its export.json is gone
        logger.warning("cached export %s is incomplete (no %s); exporting again", folder, MANIFEST)
        try:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
            else:
                folder.unlink()
        except OSError as exc:
            raise GliosegError(
                folder,
                f"an incomplete cached export that cannot be removed ({exc.strerror or exc})",
                "remove this folder by hand",
            ) from None
    logger.info("exporting %s to ONNX once for the fast runtimes (kept in %s)", path, folder)
    try:
        return export_model(path, folder, "onnx", overwrite=True)
    except GliosegError as exc:
        if exc.path != folder:  # e.g. the checkpoint's logits differ on the runtime
            raise
        raise GliosegError(  # the fix is not another output folder: the cache is no output the user chose
            folder, exc.problem, f"free space in {folder.parent.parent} or make it writable, or use the torch backend"
        ) from None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), for remembering measured choices."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probabilities(logits: np.ndarray, head: str) -> np.ndarray:
    if head == "classes":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def calibrate(
    networks: Mapping[str, Network],
    shape: tuple[int, ...],
    head: str,
    *,
    repeats: int = 1,
) -> tuple[str, dict[str, dict[str, float]]]:
    """Time each backend on the same seeded input and pick the fastest that agrees with PyTorch.

    Args:
        networks: backend name -> network; ``torch`` is the reference when present.
        shape: (N, C, X, Y, Z) of the probe (one sliding window).
        head: ``classes`` or ``regions`` (how logits become probabilities).
        repeats: timed runs per backend after one warm-up, interleaved; the minimum counts.

    Returns:
        ``(chosen backend, {backend: {"seconds": s, "max_probability_difference": d}})``.
    """
    probe = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outputs = {name: _probabilities(net(probe), head) for name, net in networks.items()}  # warm-up
    seconds = {name: float("inf") for name in networks}
    for _ in range(repeats):
        for name, net in networks.items():
            started = time.perf_counter()
            net(probe)
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    reference = outputs.get("torch")
    report = {}
    for name in networks:
        difference = 0.0 if reference is None else float(np.abs(outputs[name] - reference).max())
        report[name] = {"seconds": seconds[name], "max_probability_difference": difference}
    agreeing = [name for name in networks if report[name]["max_probability_difference"] <= PROBABILITY_TOLERANCE]
    chosen = min(agreeing, key=lambda name: (report[name]["seconds"], BACKENDS.index(name)))
    logger.info(
        "backend %s chosen: %s",
        chosen,
        ", ".join(
            f"{n} {r['seconds']:.2f} s (max probability difference {r['max_probability_difference']:.1e})"
            for n, r in report.items()
        ),
    )
    return chosen, report


def remembered_choice(key: str, cache_dir: str | Path | None = None) -> str | None:
    """A backend chosen earlier for ``key`` (see :func:`choice_key`), if it is still installed."""
    path = Path(cache_dir or CACHE_DIR) / "backends.json"
    try:
        choice = json.loads(path.read_text()).get(key, {}).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return choice if choice in available_backends() else None


def remember_choice(key: str, backend: str, report: dict, cache_dir: str | Path | None = None) -> None:
    """Record a calibration (best effort: an unwritable cache only costs a new measurement)."""
    from glioseg.files import write_json

    path = Path(cache_dir or CACHE_DIR) / "backends.json"
    try:
        try:
            table = json.loads(path.read_text())
            table = table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            table = {}
        table[key] = {"backend": backend, "measured": report, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(path, table)
    except (OSError, GliosegError) as exc:
        logger.debug("could not remember the backend choice in %s: %s", path, exc)


def choice_key(model_sha256: str, threads: int, shape: tuple[int, ...], candidates: Sequence[str]) -> str:
    """What a measured choice depends on: the model, the candidates, the CPU, the threads, the window batch, the
    versions."""
    versions = []
    for name in (*RUNTIMES, "torch"):
        try:
            versions.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    threads = threads or os.cpu_count() or 1
    return "|".join(
        [
            model_sha256[:32],
            "/".join(candidates),
            cpu_name(),
            f"threads={threads}",
            "x".join(map(str, shape)),
            *versions,
        ]
    )


def prepare_networks(
    paths: list[Path],
    models: list,
    exports: list,
    *,
    backend: str,
    head: str,
    probe_shape: tuple[int, ...],
    threads: int = 0,
    device_type: str = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[str, list]:
    """The networks a predictor runs, on the backend asked for (``auto``: measured, see :func:`calibrate`).

    Args:
        paths: the ``--model`` paths, one per model.
        models: per path, the PyTorch network (``None`` for an export folder).
        exports: per path, its :class:`~glioseg.inference.export.ExportedModel` (``None`` for a checkpoint).
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        head: ``classes`` or ``regions``.
        probe_shape: (1, C, X, Y, Z) of one sliding window, for measuring.
        threads: CPU threads of the runtimes (0: their default).
        device_type: the predictor's device; the runtimes run on the CPU only.
        cache_dir: where exports and choices are kept (default :data:`CACHE_DIR`).

    Returns:
        ``(backend used, networks)``: PyTorch modules, or :class:`RuntimeNetwork` objects.

    Raises:
        GliosegError: unknown or uninstalled backend, or an export folder with ``torch``.
    """
    if backend not in ("auto", *BACKENDS):
        raise GliosegError(None, f"unknown backend '{backend}'", f"use auto or one of {', '.join(BACKENDS)}")
    installed = available_backends()
    if backend != "auto" and backend not in installed:
        raise GliosegError(None, f"backend {backend} is not installed", FAST_EXTRA_FIX)
    exported_only = [p for p, m in zip(paths, models, strict=True) if m is None]
    if backend == "torch" and exported_only:
        raise GliosegError(
            exported_only[0],
            "is an exported model, which PyTorch cannot run",
            "run it with the backend auto, onnxruntime or openvino, or give the checkpoint it was exported from",
        )
    if backend != "torch" and device_type != "cpu":
        if backend != "auto":
            raise GliosegError(
                None,
                f"backend {backend} runs on the CPU only, the device asked for is {device_type}",
                "predict on the CPU, or with the torch backend",
            )
        if not exported_only:
            return "torch", list(models)
    runtimes = [name for name in RUNTIMES if name in installed]
    if backend == "auto" and not runtimes and not exported_only:
        logger.info(
            "the network runs on PyTorch because ONNX Runtime is not installed (0.73x PyTorch's time on the "
            "development machine): %s",
            RUNTIME_HINT,
        )
    if backend == "auto" and not runtimes:
        if exported_only:
            raise GliosegError(
                exported_only[0], "is an exported model and no runtime to run it is installed", FAST_EXTRA_FIX
            )
        return "torch", list(models)  # glioseg without the fast extra: exactly as before
    if backend == "torch":
        return "torch", list(models)
    if backend == "auto" and not exported_only:
        try:
            return _runtime_networks(paths, models, exports, "auto", runtimes, head, probe_shape, threads, cache_dir)
        except Exception as exc:  # noqa: BLE001 - auto must never fail where PyTorch works
            logger.warning(
                "the fast runtimes could not be used (%s: %s); running on PyTorch", type(exc).__name__, str(exc)[:200]
            )
            return "torch", list(models)
    return _runtime_networks(paths, models, exports, backend, runtimes, head, probe_shape, threads, cache_dir)


def _runtime_networks(
    paths: Sequence[Path],
    models: Sequence[nn.Module | None],
    exports: Sequence[ExportedModel | None],
    backend: str,
    runtimes: Sequence[str],
    head: str,
    probe_shape: tuple[int, ...],
    threads: int,
    cache_dir: str | Path | None,
) -> tuple[str, list]:
    """:func:`prepare_networks` once a runtime (or ``auto`` among runtimes and PyTorch) is to be used."""
    ready: list[ExportedModel] = [
        e if e is not None else cached_export(p, cache_dir) for p, e in zip(paths, exports, strict=True)
    ]
    first = models[0]  # not None where torch is a candidate
    openvino_ir = [e.folder for e in ready if e.format == "openvino"]
    if backend == "onnxruntime" and openvino_ir:
        raise GliosegError(
            openvino_ir[0],
            "is an OpenVINO export, which ONNX Runtime cannot run",
            "use the openvino (or auto) backend, or export to the onnx format",
        )
    if backend == "auto":
        candidates, key = _auto_candidates(all(m is not None for m in models), ready, runtimes, threads, probe_shape)
        remembered = remembered_choice(key, cache_dir)
        if len(candidates) == 1:
            backend = candidates[0]
        elif remembered in candidates:
            backend = remembered
            logger.info(
                "backend %s (measured earlier on this CPU, kept in %s)",
                backend,
                Path(cache_dir or CACHE_DIR) / "backends.json",
            )
        else:
            trial = {
                name: (
                    torch_as_numpy(first)
                    if name == "torch" and first is not None
                    else _runtime_network(name, ready[0], threads, probe_shape[2:])
                )
                for name in candidates
            }
            backend, report = calibrate(trial, probe_shape, head, repeats=3)  # best of 3: one run is noisy when shared
            remember_choice(key, backend, report, cache_dir)
            if backend != "torch":  # keep the network already compiled for the first model
                return backend, [
                    trial[backend],
                    *(
                        _network(backend, m, e, threads, probe_shape[2:])
                        for m, e in zip(models[1:], ready[1:], strict=True)
                    ),
                ]
    return backend, [_network(backend, m, e, threads, probe_shape[2:]) for m, e in zip(models, ready, strict=True)]


def _auto_candidates(
    with_torch: bool,
    ready: Sequence[ExportedModel],
    runtimes: Sequence[str],
    threads: int,
    probe_shape: tuple[int, ...],
) -> tuple[list[str], str]:
    """The backends ``auto`` chooses among (PyTorch only when every model is a checkpoint) and the key of the choice."""
    openvino_ir = any(e.format == "openvino" for e in ready)
    candidates = [name for name in runtimes if name == "openvino" or not openvino_ir]
    if with_torch:
        candidates.insert(0, "torch")
    key = choice_key("+".join(e.manifest.get("source_sha256", "") for e in ready), threads, probe_shape, candidates)
    return candidates, key


def gpu_possible() -> bool:
    """Whether PyTorch might find a GPU here (``--device auto``), told without importing it; when in doubt, True.

    A ``+cpu`` build of PyTorch finds none; on Linux, none without the device files of an NVIDIA or AMD
    driver (or WSL's GPU); on macOS (Apple MPS) and elsewhere, one is assumed possible.
    """
    try:
        if importlib.metadata.version("torch").endswith("+cpu"):
            return False
    except importlib.metadata.PackageNotFoundError:
        return False
    if not sys.platform.startswith("linux"):
        return True
    devices = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")
    return any(os.path.exists(device) for device in devices)


def runtime_networks_without_torch(
    paths: Sequence[Path],
    *,
    backend: str,
    device: str,
    window: Sequence[int] | None,
    threads: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[str, list[RuntimeNetwork], list[Config]] | None:
    """The runtime networks of ``paths`` and their configs, had without importing PyTorch, or ``None`` when
    PyTorch is needed (then :func:`prepare_networks` decides, as before).

    Without PyTorch: every path is an export folder, or a checkpoint whose export is cached
    (:func:`cached_export`'s folder, every file checked against its sha256) and, for ``auto``, whose
    remembered choice (:func:`remembered_choice`, the same key as :func:`prepare_networks`) is a runtime;
    the device is the CPU (``cpu``, or ``auto`` where no GPU is possible: :func:`gpu_possible`). A shipped
    checkpoint is checked against its checksum first.

    Args:
        paths: the ``--model`` paths (checkpoints, run folders, export folders), one per model.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        device: the device asked for (``auto``, ``cpu``, ...).
        window: the window asked for, or ``None`` for the first model's ``inference.window``.
        threads: CPU threads of the runtimes (0: their default).
        cache_dir: where exports and choices are kept (default :data:`CACHE_DIR`).

    Returns:
        ``(backend, networks, configs)`` or ``None``.

    Raises:
        GliosegError: as :func:`prepare_networks` and :func:`~glioseg.inference.export.load_export` for an
            export folder, or a shipped checkpoint failing its checksum.
    """
    from glioseg.checksums import is_shipped, verify_checksum
    from glioseg.inference.export import is_export, load_export

    installed = available_backends()
    runtimes = [name for name in RUNTIMES if name in installed]
    if backend not in ("auto", *RUNTIMES) or not runtimes or (backend != "auto" and backend not in installed):
        return None  # PyTorch asked for, or no runtime: the errors and the hint come from prepare_networks
    if device != "cpu" and not (device == "auto" and not gpu_possible()):
        return None
    ready: list[ExportedModel] = []
    checkpoints = 0
    for path in paths:
        if is_export(path):
            ready.append(load_export(path))
            continue
        if is_shipped(Path(path)):
            verify_checksum(path)
        try:
            _, folder = _checkpoint_and_export_folder(path, cache_dir)
            if not is_export(folder):
                return None  # not exported yet: exported (with PyTorch) by prepare_networks
            ready.append(load_export(folder))
        except GliosegError as exc:  # a damaged export (or checkpoint): prepare_networks reports or redoes it
            logger.debug("no export of %s to use without PyTorch: %s", path, exc)
            return None
        checkpoints += 1
    configs = [e.config for e in ready]
    size = tuple(window if window is not None else configs[0].inference.window)
    probe_shape = (1, configs[0].preprocess.input_channels, *size)
    if backend == "auto" and checkpoints:
        candidates, key = _auto_candidates(checkpoints == len(paths), ready, runtimes, threads, probe_shape)
        remembered = remembered_choice(key, cache_dir)
        chosen = candidates[0] if len(candidates) == 1 else remembered
        if chosen not in candidates or chosen == "torch":
            return None  # not measured yet, or PyTorch was the fastest
        try:
            networks = [_runtime_network(chosen, e, threads, size) for e in ready]
        except Exception as exc:  # noqa: BLE001 - auto must never fail where PyTorch works: prepare_networks decides
            logger.debug("the runtime %s could not load the export (%s); trying with PyTorch", chosen, exc)
            return None
        if chosen == remembered:
            table = Path(cache_dir or CACHE_DIR) / "backends.json"
            logger.info("backend %s (measured earlier on this CPU, kept in %s)", chosen, table)
        return chosen, networks, configs
    chosen, networks = _runtime_networks(
        paths, [None] * len(paths), ready, backend, runtimes, configs[0].model.head, probe_shape, threads, cache_dir
    )
    return chosen, networks, configs


def _network(
    backend: str, model: nn.Module | None, exported: ExportedModel, threads: int, window: Sequence[int]
) -> RuntimeNetwork | nn.Module | None:
    """The network of one model on ``backend`` (a PyTorch module as a numpy callable for ``torch``)."""
    if backend != "torch":
        return _runtime_network(backend, exported, threads, window)
    return model


def _runtime_network(backend: str, exported: ExportedModel, threads: int, window: Sequence[int]) -> RuntimeNetwork:
    """An exported model on a runtime, carrying its network file's checksum from the export's manifest.

    ``window`` is the sliding window it will run on (``--window``, or the model's ``inference.window``): it
    decides ONNX Runtime's memory arena (:data:`ARENA_MAX_WINDOW`).
    """
    arena = math.prod(window) <= ARENA_MAX_WINDOW
    network = RuntimeNetwork(backend, exported.network_file, stride=exported.stride, threads=threads, arena=arena)
    network.checksum = exported.manifest["files"].get(exported.network_file.name, "")  # type: ignore[attr-defined]
    return network


def torch_as_numpy(model: nn.Module) -> Network:
    """A PyTorch network as an array -> array callable (for :func:`calibrate`)."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run
