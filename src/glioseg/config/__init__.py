"""Configuration: frozen dataclasses loaded strictly from the YAML presets in ``configs/``.

A preset has six sections; every value that changes training, inference or post-processing
is a field of one of them, and the whole :class:`Config` is written into a run folder's
``config.yaml`` and into every checkpoint:

==============  ==========================================  ===========================================
section         dataclass                                   what it sets
==============  ==========================================  ===========================================
``preprocess``  :class:`PreprocessConfig`                   modalities, normalisation, crop, spacing
``model``       :class:`ModelConfig`                        network, filters, norm, head, dropout
``augment``     :class:`AugmentConfig`                      training augmentation (all 0: none)
``train``       :class:`TrainConfig`                        sampling, loss, optimiser, schedule, precision
``inference``   :class:`InferenceConfig`                    sliding window, TTA, region threshold
``postprocess`` :class:`PostprocessConfig`                  ET rule, small components
==============  ==========================================  ===========================================

The dataclasses, their choice lists and range tables live in :mod:`glioseg.config.sections`
(imported by the modules that use them; this package imports nothing of glioseg but the ground
floor). Unknown keys are rejected, unknown choices and out-of-range numbers refused, so a typo never silently falls back
to a default. Command-line
overrides use dotted keys (``train.epochs=3``) and go through the same checks. Config dicts
written by older glioseg versions (checkpoints, run folders) are read through
:func:`migrate`, and every field they lack defaults to what that version did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from glioseg.config.sections import (
    AUGMENT_RANGES,
    INFERENCE_RANGES,
    MODEL_RANGES,
    POSTPROCESS_RANGES,
    PREPROCESS_RANGES,
    SECTION_CHOICES,
    SECTION_RANGES,
    TRAIN_RANGES,
    AugmentConfig,
    InferenceConfig,
    ModelConfig,
    PostprocessConfig,
    PreprocessConfig,
    TrainConfig,
    dropout_schedule,
)
from glioseg.errors import GliosegError
from glioseg.validation import check_choices, check_fields, refuse

PRESETS = ("paper", "default", "cpu")


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
        for section, choices in SECTION_CHOICES.items():
            check_choices(getattr(self, section), section, choices)
        if self.preprocess.soft_targets and (self.model.head != "regions" or self.train.sampling != "patch"):
            raise refuse(
                "preprocess.soft_targets",
                True,
                f"needs model.head: regions and train.sampling: patch (here {self.model.head} and "
                f"{self.train.sampling})",
                "set model.head=regions and train.sampling=patch, or preprocess.soft_targets=false",
            )
        pre = self.preprocess
        if pre.cascade_margin is not None and (pre.target_spacing is not None or pre.soft_targets):
            raise refuse(
                "preprocess.cascade_margin",
                pre.cascade_margin,
                "(a cascade stage) works on the native grid with hard targets",
                "set preprocess.target_spacing=null and preprocess.soft_targets=false for the cascade stage",
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
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args, strict=True))
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
        raise GliosegError(
            source,
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}",
            f"valid keys are {', '.join(sorted(names))}",
        )
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


FORMER_KEYS = {"train": ("augment", "sw_overlap")}
"""Keys of older versions that :func:`migrate` still reads, in a preset, a checkpoint or an override."""


def migrate(data: Mapping[str, Any], source: str = "<config>") -> dict[str, Any]:
    """Bring a config dict written by an older glioseg (or a preset) to the current sections.

    * ``train.augment: true|false`` (before the ``augment`` section): ``true`` is the
      ``augment`` section's defaults (what that flag switched on; with an ``augment`` section
      given too, e.g. by a recipe stage's ``set``, the section's values on top of them),
      ``false`` all probabilities 0.
    * ``train.sw_overlap`` (before the ``inference`` section) is ``inference.overlap``.
    * ``inference.window`` not given (every checkpoint before it was a setting of its own) is
      ``train.patch_size``, the window those versions used.
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
        enabled = _coerce(train.pop("augment"), bool, "train.augment", source)
        section = out.get("augment")
        if isinstance(section, Mapping) and not enabled:
            raise GliosegError(
                source,
                "both train.augment: false and an augment section given",
                "remove train.augment; the augment section sets augmentation",
            )
        # true with a section (a preset's flag, a stage's `set: {augment.X: ...}`): the section, on the defaults
        if not isinstance(section, Mapping):
            out["augment"] = {} if enabled else dict.fromkeys(_AUGMENT_PROBABILITIES, 0.0)
    if isinstance(train, dict) and "sw_overlap" in train:
        inference = out.setdefault("inference", {}) or {}
        if not isinstance(inference, dict) or "overlap" in inference:
            raise GliosegError(source, "both train.sw_overlap and inference.overlap given", "remove train.sw_overlap")
        inference["overlap"] = train.pop("sw_overlap")
        out["inference"] = inference
    inference = out.get("inference")
    if (inference is None or isinstance(inference, dict)) and "window" not in (inference or {}):
        patch_size = (
            train.get("patch_size", TrainConfig.patch_size) if isinstance(train, dict) else TrainConfig.patch_size
        )
        out["inference"] = {**(inference or {}), "window": patch_size}
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
        raise GliosegError(
            source, "a preset must be a mapping of sections (preprocess, model, train, ...)", "see configs/default.yaml"
        )
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise GliosegError(
            source, f"unknown section(s) {', '.join(unknown)}", f"valid sections are {', '.join(SECTIONS)}"
        )
    data = migrate(data, source)
    return Config(**{name: _build(cls, data.get(name, {}) or {}, name, source) for name, cls in SECTIONS.items()})


def preset_path(name: str) -> Path:
    """Path of a built-in preset file."""
    if name not in PRESETS:
        raise GliosegError(
            None, f"unknown preset '{name}'", f"use one of {', '.join(PRESETS)} or a path to a YAML file"
        )
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
        raise GliosegError(
            None, f"override '{item}' is not a valid YAML value ({' '.join(str(exc).split())[:120]})", fix
        ) from None


def load_config(preset: str | Path = "default", overrides: Sequence[str] = ()) -> Config:
    """Load a built-in preset (by name) or a YAML file, then apply ``section.key=value`` overrides."""
    path = Path(preset) if str(preset).endswith((".yaml", ".yml")) else preset_path(str(preset))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise GliosegError(path, f"cannot read the preset ({exc.strerror})", "check the path") from None
    except UnicodeDecodeError as exc:
        raise GliosegError(
            path,
            f"is not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})",
            "save the preset as UTF-8 YAML",
        ) from None
    except yaml.YAMLError as exc:
        raise GliosegError(path, f"invalid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from None
    if not isinstance(data, dict):
        raise GliosegError(
            path, "a preset must be a mapping of sections (preprocess, model, train, ...)", "see configs/default.yaml"
        )
    for item in overrides:
        (section, key), value = _parse_override(item)
        if section not in SECTIONS:  # named as the override's, not the preset file's (which holds no such key)
            raise GliosegError(
                None, f"override '{item}': unknown section {section}", f"valid sections are {', '.join(SECTIONS)}"
            )
        names = {f.name for f in fields(SECTIONS[section])}
        if key not in names and key not in FORMER_KEYS.get(section, ()):
            raise GliosegError(
                None, f"override '{item}': unknown key {section}.{key}", f"valid keys are {', '.join(sorted(names))}"
            )
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            data[section] = {}
        data[section][key] = value
    return config_from_dict(data, str(path))


__all__ = [
    "AUGMENT_RANGES", "INFERENCE_RANGES", "MODEL_RANGES", "POSTPROCESS_RANGES", "PREPROCESS_RANGES", "PRESETS",
    "SECTIONS", "SECTION_CHOICES", "SECTION_RANGES", "TRAIN_RANGES", "AugmentConfig", "Config", "InferenceConfig",
    "ModelConfig", "PostprocessConfig", "PreprocessConfig", "TrainConfig", "config_from_dict", "load_config",
    "migrate", "preset_path",
]
