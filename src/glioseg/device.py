"""Choosing the torch device: ``auto`` (CUDA, then Apple MPS, then the CPU) or an explicit one."""

from __future__ import annotations

import torch

from glioseg.errors import GliosegError


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into a :class:`torch.device`.

    Raises:
        GliosegError: unknown name, or CUDA/MPS asked for but not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise GliosegError(None, f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise GliosegError(None, f"device {name} requested but no CUDA GPU is available", "use device cpu or auto")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise GliosegError(None, "device mps requested but Apple MPS is not available", "use device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GliosegError(None, f"invalid device '{name}'", "use auto, cpu, cuda, cuda:N or mps") from None
