"""Configuration: frozen dataclasses loaded strictly from the YAML presets in ``configs/``.

A preset has three sections, ``preprocess``, ``model`` and ``train``. Unknown keys are
rejected, so a typo never silently falls back to a default. Command-line overrides use dotted
keys (``train.epochs=3``) and go through the same checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from glioseg.data.preprocess import PreprocessConfig
from glioseg.errors import GliosegError

PRESETS = ("paper", "default", "cpu")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build (see :mod:`glioseg.networks`).

    Attributes:
        name: ``unet``, ``resunet`` or ``sa_unet``.
        filters: feature maps per level, top to bottom (its length sets the depth).
        norm: ``none``, ``batch``, ``instance`` or ``group``.
        head: ``classes`` (4-class softmax, the paper) or ``regions`` (WT/TC/ET sigmoids).
        dropout: ``paper`` (0.1-0.3 schedule of the origin tutorial) or ``none``.
        attention_kernel: kernel size of the spatial-attention convolution.
    """

    name: str = "sa_unet"
    filters: tuple[int, ...] = (16, 32, 64, 128, 256)
    norm: str = "batch"
    head: str = "classes"
    dropout: str = "paper"
    attention_kernel: int = 7


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over ``samples_per_epoch`` samples (the training set once for ``sampling=whole``).
        batch_size: samples per optimiser step (per process under torchrun).
        sampling: ``whole`` (whole preprocessed volumes, the paper) or ``patch`` (random patches).
        patch_size: patch size in voxels for ``sampling=patch``.
        samples_per_epoch: patches per epoch for ``sampling=patch`` (0: one per training case).
        foreground_fraction: share of patches centred on tumor (nnU-Net: 1/3).
        augment: apply flips, rotation, scaling, intensity, gamma and noise augmentation.
        loss: ``dice_focal`` (the paper), ``dice_ce``, ``dice_bce``, ``bce``, ``dice``, ``focal``.
        focal_weight: weight of the focal term in ``dice_focal`` (the paper: 1).
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: learning rate.
        weight_decay: L2 / decoupled weight decay.
        schedule: ``constant`` (the paper), ``poly`` or ``cosine``.
        val_fraction: share of cases held out for validation (the paper: 0.25).
        folds: 0 for a ratio split, else k for k-fold cross-validation (then ``fold`` picks one).
        fold: which fold is validation when ``folds > 0``.
        split_seed: seed of the split.
        val_every: validate every N epochs (on whole volumes, sliding window).
        amp: mixed precision on CUDA.
        seed: seed of weights, sampling and augmentation.
        deterministic: use deterministic algorithms (slower; exact resume).
        num_workers: data-loader worker processes.
        threads: torch CPU threads (0: leave torch's default).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        sw_overlap: sliding-window overlap during validation.
        time_limit_min: stop after the epoch that passes this many minutes (0: no limit),
            so presets can be compared at an equal compute budget.
    """

    epochs: int = 100
    batch_size: int = 2
    sampling: str = "whole"
    patch_size: tuple[int, int, int] = (128, 128, 128)
    samples_per_epoch: int = 0
    foreground_fraction: float = 0.33
    augment: bool = False
    loss: str = "dice_focal"
    focal_weight: float = 1.0
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "constant"
    val_fraction: float = 0.25
    folds: int = 0
    fold: int = 0
    split_seed: int = 42
    val_every: int = 1
    amp: bool = True
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    threads: int = 0
    device: str = "auto"
    sw_overlap: float = 0.5
    time_limit_min: float = 0.0


@dataclass(frozen=True)
class Config:
    """A complete preset."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Convert a YAML value to the dataclass field's type, or raise a clear error."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is None and hint is type(None):
        if value is None:
            return None
        raise GliosegError(source, f"{key} must be null", "remove the value")
    if origin in (Union, UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GliosegError(source, f"{key} must be a list, got {value!r}", "write it as [a, b, c]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, source) for v in value)
        if len(value) != len(args):
            raise GliosegError(source, f"{key} needs {len(args)} values, got {len(value)}", "fix the list length")
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise GliosegError(source, f"{key} must be true or false, got {value!r}", "use true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, float) and not value.is_integer()):
            raise GliosegError(source, f"{key} must be an integer, got {value!r}", "give a whole number")
        try:
            return int(value)
        except ValueError:
            raise GliosegError(source, f"{key} must be an integer, got {value!r}", "give a whole number") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise GliosegError(source, f"{key} must be a number, got {value!r}", "give a number") from None
    if hint is str:
        if not isinstance(value, str):
            raise GliosegError(source, f"{key} must be a string, got {value!r}", "quote the value")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], section: str, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise GliosegError(source, f"section '{section}' must be a mapping", "indent its keys under it")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GliosegError(source, f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}", f"valid keys are {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}", source) for k, v in data.items()}
    return cls(**kwargs)


SECTIONS = {"preprocess": PreprocessConfig, "model": ModelConfig, "train": TrainConfig}


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown sections and keys."""
    if not isinstance(data, Mapping):
        raise GliosegError(source, "a preset must be a mapping with preprocess/model/train sections", "see configs/default.yaml")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise GliosegError(source, f"unknown section(s) {', '.join(unknown)}", f"valid sections are {', '.join(SECTIONS)}")
    return Config(**{name: _build(cls, data.get(name, {}) or {}, name, source) for name, cls in SECTIONS.items()})


def preset_path(name: str) -> Path:
    """Path of a built-in preset file."""
    if name not in PRESETS:
        raise GliosegError(None, f"unknown preset '{name}'", f"use one of {', '.join(PRESETS)} or a path to a YAML file")
    return Path(str(resources.files("glioseg") / "configs" / f"{name}.yaml"))


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise GliosegError(None, f"override '{item}' is not KEY=VALUE", "write e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise GliosegError(None, f"override key '{key}' must be section.key", "write e.g. train.epochs=3")
    return parts, yaml.safe_load(raw)


def load_config(preset: str | Path = "default", overrides: Sequence[str] = ()) -> Config:
    """Load a built-in preset (by name) or a YAML file, then apply ``section.key=value`` overrides."""
    path = Path(preset) if str(preset).endswith((".yaml", ".yml")) else preset_path(str(preset))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise GliosegError(path, f"cannot read the preset ({exc.strerror})", "check the path") from None
    except yaml.YAMLError as exc:
        raise GliosegError(path, f"invalid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from None
    if not isinstance(data, dict):
        raise GliosegError(path, "a preset must be a mapping with preprocess/model/train sections", "see configs/default.yaml")
    for item in overrides:
        (section, key), value = _parse_override(item)
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            data[section] = {}
        data[section][key] = value
    return config_from_dict(data, str(path))
