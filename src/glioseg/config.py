"""Configuration: frozen dataclasses loaded strictly from the YAML presets in ``configs/``.

A preset has six sections; every value that changes training, inference or post-processing
is a field of one of them, and the whole :class:`Config` is written into a run folder's
``config.yaml`` and into every checkpoint:

==============  ==========================================  ===========================================
section         dataclass                                   what it sets
==============  ==========================================  ===========================================
``preprocess``  :class:`~glioseg.data.preprocess.PreprocessConfig`   modalities, normalisation, crop, spacing
``model``       :class:`~glioseg.networks.ModelConfig`      network, filters, norm, head, dropout
``augment``     :class:`~glioseg.data.augment.AugmentConfig`  training augmentation (all 0: none)
``train``       :class:`TrainConfig`                        sampling, loss, optimiser, schedule, precision
``inference``   :class:`~glioseg.inference.sliding.InferenceConfig`  sliding window, TTA, region threshold
``postprocess`` :class:`~glioseg.inference.postprocess.PostprocessConfig`  ET rule, small components
==============  ==========================================  ===========================================

Unknown keys are rejected, so a typo never silently falls back to a default. Command-line
overrides use dotted keys (``train.epochs=3``) and go through the same checks. Config dicts
written by older glioseg versions (checkpoints, run folders) are read through
:func:`migrate`, and every field they lack defaults to what that version did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from glioseg.data.augment import AugmentConfig
from glioseg.data.preprocess import PreprocessConfig
from glioseg.errors import GliosegError
from glioseg.inference.postprocess import PostprocessConfig
from glioseg.inference.sliding import InferenceConfig
from glioseg.networks import ModelConfig, dropout_schedule
from glioseg.validation import Range, check_fields, refuse

PRESETS = ("paper", "default", "cpu")


# Allowed values of the numeric fields, checked when a config is built (see glioseg.validation).
# A new numeric field gets a row here.
# (preprocess has its table in glioseg.data.preprocess, beside PreprocessConfig.)
MODEL_RANGES = {
    "filters": Range(1, 4096),
    "attention_kernel": Range(1, 31),
}
AUGMENT_RANGES = {
    "max_rotation_deg": Range(0, 180),
    "scale_range": Range(0, 10, low_open=True),
    "intensity_scale_range": Range(0, 10, low_open=True),
    "intensity_shift": Range(0, 10),
    "gamma_range": Range(0, 10, low_open=True),
    "noise_std": Range(0, 10),
}
TRAIN_RANGES = {
    "epochs": Range(1, 100_000),
    "batch_size": Range(1, 4096),
    "patch_size": Range(1, 4096),
    "samples_per_epoch": Range(0),
    "foreground_fraction": Range(0, 1),
    "focal_weight": Range(0),
    "focal_alpha": Range(0, 1),
    "focal_gamma": Range(0, 10),
    "bce_weight": Range(0),
    "ce_weight": Range(0),
    "dice_smooth": Range(0, 1),
    "lr": Range(0, 10, low_open=True),
    "weight_decay": Range(0),
    "sgd_momentum": Range(0, 1, high_open=True),
    "poly_exponent": Range(0, 10, low_open=True),
    "grad_clip": Range(0),
    "val_fraction": Range(0, 1, low_open=True, high_open=True),
    "folds": Range(0, 1000),
    "fold": Range(0),
    "split_seed": Range(0),
    "val_every": Range(1),
    "seed": Range(0),
    "num_workers": Range(0, 256),
    "threads": Range(0, 4096),
    "time_limit_min": Range(0),
}
INFERENCE_RANGES = {
    "overlap": Range(0, 1, high_open=True),
    "sw_batch_size": Range(1, 4096),
    "region_threshold": Range(0, 1, low_open=True, high_open=True),
}
POSTPROCESS_RANGES = {
    "et_threshold": Range(0),
    "min_component_size": Range(0),
    "max_components": Range(1),
    "min_et_component_size": Range(0),
    "min_core_component_size": Range(0),
    "min_et_component_fraction": Range(0, 1),
    "min_core_component_fraction": Range(0, 1),
}
SECTION_RANGES = {"model": MODEL_RANGES, "augment": AUGMENT_RANGES, "train": TRAIN_RANGES, "inference": INFERENCE_RANGES, "postprocess": POSTPROCESS_RANGES}
"""Section -> field -> allowed range, checked whenever a :class:`Config` is built (presets, ``--set``, checkpoints)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over ``samples_per_epoch`` samples (the training set once for ``sampling=whole``).
        batch_size: samples per optimiser step (per process under torchrun).
        sampling: ``whole`` (whole preprocessed volumes, the paper) or ``patch`` (random patches).
        patch_size: patch size in voxels for ``sampling=patch``; also the sliding window of
            validation and prediction.
        samples_per_epoch: patches per epoch for ``sampling=patch`` (0: one per training case).
        foreground_fraction: share of patches centred on tumor (nnU-Net: 1/3).
        loss: ``dice_focal`` (the paper), ``dice_ce``, ``dice_bce``, ``bce``, ``dice``, ``focal``, ``ce``.
        focal_weight: weight of the focal term in ``dice_focal`` (the paper: 1).
        focal_alpha: focal loss class weight (segmentation_models' default 0.25).
        focal_gamma: focal loss focusing exponent (segmentation_models' default 2).
        bce_weight: weight of the BCE term in ``dice_bce``.
        ce_weight: weight of the cross-entropy term in ``dice_ce``.
        dice_include_background: soft Dice over the ``classes`` head's background channel too.
        dice_batch: one soft Dice over the whole batch (segmentation_models' ``per_image=False``)
            rather than one per sample.
        dice_smooth: added to the soft Dice's numerator and denominator.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: learning rate.
        weight_decay: L2 / decoupled weight decay.
        sgd_momentum: momentum of ``sgd`` (nnU-Net: 0.99).
        sgd_nesterov: Nesterov momentum for ``sgd``.
        schedule: ``constant`` (the paper), ``poly`` or ``cosine`` (per epoch).
        poly_exponent: exponent of the ``poly`` schedule, ``lr * (1 - epoch / epochs) ** exponent``.
        grad_clip: clip the gradients' global L2 norm to this before each step (0: no clipping).
        val_fraction: share of cases held out for validation (the paper: 0.25).
        folds: 0 for a ratio split, else k for k-fold cross-validation (then ``fold`` picks one).
        fold: which fold is validation when ``folds > 0``.
        split_seed: seed of the split.
        val_every: validate every N epochs (on whole volumes, with the ``inference`` settings).
        amp: mixed precision (float16 autocast and a gradient scaler) on CUDA.
        tf32: let CUDA convolutions and matrix products use TF32 (false: full fp32 everywhere).
        seed: seed of weights, sampling and augmentation.
        deterministic: use deterministic algorithms (slower; exact resume).
        num_workers: data-loader worker processes.
        threads: torch CPU threads (0: leave torch's default).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        time_limit_min: stop after the epoch that passes this many minutes (0: no limit),
            so presets can be compared at an equal compute budget.
        init_from: a checkpoint (``.pt`` or run folder) whose weights the network starts from
            (fine-tuning, or a second training stage); the optimiser, schedule and epochs start
            fresh. ``None``: random initial weights. The network settings must match.

    The defaults of the fields added after the first release (``grad_clip`` 12, ``poly_exponent``
    0.9, ``sgd_momentum`` 0.99, the loss options, ``tf32``) are the values the code had
    hard-wired, so older run folders and checkpoints read back as they were trained.
    """

    epochs: int = 100
    batch_size: int = 2
    sampling: str = "whole"
    patch_size: tuple[int, int, int] = (128, 128, 128)
    samples_per_epoch: int = 0
    foreground_fraction: float = 0.33
    loss: str = "dice_focal"
    focal_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    bce_weight: float = 1.0
    ce_weight: float = 1.0
    dice_include_background: bool = True
    dice_batch: bool = True
    dice_smooth: float = 1e-5
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    sgd_momentum: float = 0.99
    sgd_nesterov: bool = True
    schedule: str = "constant"
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    val_fraction: float = 0.25
    folds: int = 0
    fold: int = 0
    split_seed: int = 42
    val_every: int = 1
    amp: bool = True
    tf32: bool = True
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    threads: int = 0
    device: str = "auto"
    time_limit_min: float = 0.0
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.folds == 1:
            raise refuse("train.folds", 1, "is not a cross-validation (it needs 2 folds or more)", "give train.folds=0 for a ratio split, or 2 or more")
        if self.folds >= 2 and self.fold >= self.folds:
            raise refuse("train.fold", self.fold, f"is outside the allowed range (0..{self.folds - 1} for {self.folds} folds)", f"give train.fold a value in [0, {self.folds - 1}]")


@dataclass(frozen=True)
class Config:
    """A complete preset."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def __post_init__(self) -> None:
        for section, table in SECTION_RANGES.items():
            check_fields(getattr(self, section), section, table)
        if self.preprocess.soft_targets and (self.model.head != "regions" or self.train.sampling != "patch"):
            raise refuse(
                "preprocess.soft_targets", True, f"needs model.head: regions and train.sampling: patch (here {self.model.head} and {self.train.sampling})",
                "set model.head=regions and train.sampling=patch, or preprocess.soft_targets=false",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_plain_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with every tuple a list, recursively: what YAML and JSON write and read back."""
        return _plain(self.to_dict())


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
        if isinstance(value, bool) or not isinstance(value, (int, str)):
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
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise GliosegError(source, f"invalid {section} settings: {exc}", f"fix the {section} section") from None


SECTIONS = {
    "preprocess": PreprocessConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "inference": InferenceConfig,
    "postprocess": PostprocessConfig,
}

_AUGMENT_PROBABILITIES = ("flip_prob", "rotate_prob", "scale_prob", "intensity_prob", "gamma_prob", "noise_prob")


def migrate(data: Mapping[str, Any], source: str = "<config>") -> dict[str, Any]:
    """Bring a config dict written by an older glioseg (or a preset) to the current sections.

    * ``train.augment: true|false`` (before the ``augment`` section): ``true`` is the
      ``augment`` section's defaults (what that flag switched on), ``false`` all probabilities 0.
    * ``train.sw_overlap`` (before the ``inference`` section) is ``inference.overlap``.
    * ``model.dropout`` given by name is expanded to its rates for the preset's depth
      (:func:`~glioseg.networks.dropout_schedule`); ``paper``, the name older versions gave
      the origin tutorial's schedule, is read as ``tutorial``.

    Sections missing from the dict get their defaults, which are what older versions did.

    Raises:
        GliosegError: the dict uses an old and a new form of the same setting at once.
    """
    out = {name: dict(section) if isinstance(section, Mapping) else section for name, section in data.items()}
    train = out.get("train")
    if isinstance(train, dict) and "augment" in train:
        if isinstance(out.get("augment"), Mapping):
            raise GliosegError(source, "both train.augment and an augment section given", "remove train.augment; the augment section sets augmentation")
        enabled = train.pop("augment")
        out["augment"] = {} if _coerce(enabled, bool, "train.augment", source) else dict.fromkeys(_AUGMENT_PROBABILITIES, 0.0)
    if isinstance(train, dict) and "sw_overlap" in train:
        inference = out.setdefault("inference", {}) or {}
        if not isinstance(inference, dict) or "overlap" in inference:
            raise GliosegError(source, "both train.sw_overlap and inference.overlap given", "remove train.sw_overlap")
        inference["overlap"] = train.pop("sw_overlap")
        out["inference"] = inference
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("dropout"), str):
        name = "tutorial" if model["dropout"] == "paper" else model["dropout"]
        filters = _coerce(model.get("filters", ModelConfig.filters), tuple[int, ...], "model.filters", source)
        try:
            model["dropout"] = list(dropout_schedule(name, len(filters) - 1))
        except ValueError as exc:
            raise GliosegError(source, f"model.dropout: {exc}", "name a schedule or list the rates") from None
    return out


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from nested dicts (a preset, or a checkpoint's ``config``).

    Unknown sections and keys are rejected; older forms are read through :func:`migrate`.
    """
    if not isinstance(data, Mapping):
        raise GliosegError(source, "a preset must be a mapping of sections (preprocess, model, train, ...)", "see configs/default.yaml")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise GliosegError(source, f"unknown section(s) {', '.join(unknown)}", f"valid sections are {', '.join(SECTIONS)}")
    data = migrate(data, source)
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
    fix = "write a plain value, e.g. train.epochs=3, train.patch_size=[64,64,64] or model.dropout=none"
    try:
        tokens = list(yaml.scan(raw))
        if any(isinstance(token, (yaml.TagToken, yaml.AnchorToken, yaml.AliasToken)) for token in tokens):
            raise GliosegError(None, f"override '{item}' uses a YAML tag, anchor or alias", fix)
        return parts, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise GliosegError(None, f"override '{item}' is not a valid YAML value ({' '.join(str(exc).split())[:120]})", fix) from None


def load_config(preset: str | Path = "default", overrides: Sequence[str] = ()) -> Config:
    """Load a built-in preset (by name) or a YAML file, then apply ``section.key=value`` overrides."""
    path = Path(preset) if str(preset).endswith((".yaml", ".yml")) else preset_path(str(preset))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise GliosegError(path, f"cannot read the preset ({exc.strerror})", "check the path") from None
    except UnicodeDecodeError as exc:
        raise GliosegError(path, f"is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})", "save the preset as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise GliosegError(path, f"invalid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from None
    if not isinstance(data, dict):
        raise GliosegError(path, "a preset must be a mapping of sections (preprocess, model, train, ...)", "see configs/default.yaml")
    for item in overrides:
        (section, key), value = _parse_override(item)
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            data[section] = {}
        data[section][key] = value
    return config_from_dict(data, str(path))
