"""The fast runtimes' side of a network: an exported network run by ONNX Runtime or OpenVINO.

:mod:`glioseg.inference.export` checks every export with it, and
:mod:`glioseg.inference.backends` chooses among PyTorch and these runtimes; this module imports
neither, so the two do not import each other. No runtime is imported until one is used.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from glioseg.errors import GliosegError

logger = logging.getLogger(__name__)

CACHE_DIR = Path.home() / ".cache" / "glioseg"
"""Exports of checkpoints made on the fly, the measured backend choices and OpenVINO's compiled networks."""

FAST_EXTRA_FIX = "install the runtimes: pip install 'glioseg[fast]'"
"""The fix of every error that a missing runtime causes."""


def available_backends() -> list[str]:
    """The backends importable here: ``torch`` always, then the installed runtimes."""
    found = ["torch"]
    for name in ("onnxruntime", "openvino"):
        try:  # found, not imported: importing ONNX Runtime costs about 0.1 s that a run on OpenVINO does not need
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


def _pad_to_stride(x: np.ndarray, stride: int) -> np.ndarray:
    extra = [(-s) % stride for s in x.shape[2:]]
    if not any(extra):
        return x
    return np.pad(x, [(0, 0), (0, 0), *[(0, e) for e in extra]])


ARENA_MAX_WINDOW = 96**3
"""The largest window (voxels) whose ONNX Runtime session keeps its CPU memory arena.

The arena keeps, for the life of the process, the buffers of the largest call it has served, and
saves allocations on the many equal calls of a 2 mm sliding window. A 1 mm cascade stage's windows of
128^3 made it hold 1.4 GB more than without it: 3 cases in one ``predict`` of both cascade stages
peaked at 2.70 GB with the arena and 1.29 GB without, at 5.47 against 4.89 s per case; recipe D's 64^3
windows, 1.23 against 0.76 GB at 2.57 against 2.81 s (``benchmarks/ort_arena.md``). So the arena
stays where it is fast and small, and goes where it is large."""


class RuntimeNetwork:
    """An exported network run by ONNX Runtime or OpenVINO on the CPU.

    Args:
        backend: ``onnxruntime`` or ``openvino``.
        path: ``model.onnx`` (both runtimes) or ``model.xml`` (OpenVINO).
        stride: the network's total down-sampling; inputs are zero-padded to a multiple of it.
        threads: CPU threads of the runtime; 0 leaves the runtime's default (all cores).
        arena: ONNX Runtime's CPU memory arena (see :data:`ARENA_MAX_WINDOW`).

    Calling it maps (N, C, X, Y, Z) float32 to (N, K, X, Y, Z) float32 logits.
    """

    def __init__(self, backend: str, path: str | Path, *, stride: int, threads: int = 0, arena: bool = True) -> None:
        self.backend = backend
        self.stride = int(stride)
        if backend == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.enable_cpu_mem_arena = arena
            if threads > 0:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
            self._run = lambda x: self._session.run(None, {self._input: x})[0]
        elif backend == "openvino":
            import openvino as ov

            config = {"INFERENCE_PRECISION_HINT": "f32"}  # never bf16/fp16: the labels must match PyTorch's
            if threads > 0:
                config["INFERENCE_NUM_THREADS"] = threads  # type: ignore[assignment]
            core = ov.Core()
            try:  # OpenVINO keeps the compiled network there: later processes load it in a quarter of the time
                core.set_property({"CACHE_DIR": str(CACHE_DIR / "openvino")})
            except Exception as exc:  # noqa: BLE001 - the cache is only a speed-up
                logger.debug("no OpenVINO model cache: %s", exc)
            compiled = core.compile_model(str(path), "CPU", config)
            self._request = compiled.create_infer_request()
            self._run = lambda x: self._request.infer({0: x})[0].copy()
        else:
            raise GliosegError(None, f"unknown runtime '{backend}'", "use one of openvino, onnxruntime")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        spatial = x.shape[2:]
        try:
            logits = self._run(np.ascontiguousarray(_pad_to_stride(x, self.stride), dtype=np.float32))
        except (RuntimeError, MemoryError):
            raise
        except Exception as exc:  # ONNX Runtime's errors (Fail, InvalidArgument, ...) derive from Exception alone:
            # as a RuntimeError, a case it fails on fails alone, as with PyTorch, not the whole batch
            raise RuntimeError(f"{self.backend}: {type(exc).__name__}: {exc}") from exc
        return logits[(..., *(slice(0, s) for s in spatial))]


def build_runtime_network(backend: str, path: str | Path, *, stride: int, threads: int = 0) -> RuntimeNetwork:
    """A :class:`RuntimeNetwork`, with a one-line error when the runtime is not installed."""
    if backend not in available_backends():
        raise GliosegError(None, f"backend {backend} is not installed", FAST_EXTRA_FIX)
    return RuntimeNetwork(backend, path, stride=stride, threads=threads)
