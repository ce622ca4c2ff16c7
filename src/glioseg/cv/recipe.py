"""Cross-validation recipes: one preset, or stages trained one after the other.

A recipe is either a preset (a name such as ``cpu`` or a preset YAML file: one stage), or a
recipe file, a YAML mapping with a ``stages`` list::

    # recipe C: recipe A, then two more stages from the same fold's last weights
    folds: 4                      # optional (default: the first stage's train.folds, else 5)
    stages:
      - recipe_a.yaml             # a preset name or file (relative to this file) ...
      - {name: recipe_b, preset: recipe_a.yaml, set: {train.lr: 0.001}}   # ... or a preset with overrides
      - {name: recipe_c, preset: recipe_a.yaml, set: {train.lr: 0.0005}}

Every stage after the first starts from the last weights of the same fold of the stage before
(which never saw that fold's held-out cases), with a fresh optimiser and schedule.

A **cascade stage** names an earlier stage as its ``prior`` (issue 22)::

      - {name: recipe_e, preset: recipe_a_short.yaml, prior: recipe_d,
         set: {preprocess.target_spacing: null, preprocess.cascade_margin: 16, train.patch_size: [80, 80, 80]}}

Its input is the case at its native grid (1 mm for BraTS) plus the prior stage's label map as WT/TC/ET
channels, cropped to the prior's tumour box widened by ``preprocess.cascade_margin`` mm (default
:data:`CASCADE_MARGIN_MM`) within the brain (:mod:`glioseg.data.cascade`). For every case, in every fold and
for the model trained on all cases, the prior is the prior stage's **out-of-fold** label map
(``WORK/<prior>/pred/<case>.nii.gz``), so ``cv train`` trains every asked fold of the stages up to the
cascade stage first, and the prior stage predicts its held-out cases. A cascade stage starts from fresh
weights (its network has three more input channels), or from the stage before it when that is a cascade
stage of the same prior; a stage after a cascade stage must itself be one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from glioseg.config import Config, config_from_dict, load_config, migrate
from glioseg.data.discovery import MAX_CASE_ID_BYTES
from glioseg.errors import GliosegError

DEFAULT_FOLDS = 5

# Settings that say where or how fast a fold runs, not what it learns: they may differ between
# runs of one work folder (and are filled in per fold).
CASCADE_MARGIN_MM = 16.0
"""``preprocess.cascade_margin`` of a stage with a ``prior`` that does not set it: mm around the prior's tumour box."""

RUN_SETTINGS = ("fold", "folds", "split_seed", "threads", "device", "num_workers", "init_from", "time_limit_min")


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Attributes:
        name: the stage's name (its folder in the work folder).
        config: the resolved preset (run settings such as the fold are filled in per fold).
        prior: for a cascade stage, the earlier stage whose out-of-fold label maps are its extra input.
    """

    name: str
    config: Config
    prior: str | None = None


@dataclass(frozen=True)
class Recipe:
    """What ``glioseg cv train`` trains.

    Attributes:
        stages: trained in order; stage ``s`` starts from stage ``s - 1``'s weights of the same fold.
        folds: K, the number of folds.
        split_seed: seed of the fold assignment.
        source: the preset name or file it was read from.
    """

    stages: tuple[Stage, ...]
    folds: int
    split_seed: int
    source: str

    @property
    def modalities(self) -> tuple[str, ...]:
        """Every modality some stage reads."""
        return tuple(dict.fromkeys(m for stage in self.stages for m in stage.config.preprocess.modalities))


def identity(config: Config) -> dict[str, Any]:
    """The settings of a stage that decide what it learns (``config`` without :data:`RUN_SETTINGS`), as plain data."""
    data = config.to_plain_dict()
    for key in RUN_SETTINGS:
        data["train"].pop(key, None)
    return data


def differences(found: dict[str, Any], expected: dict[str, Any], limit: int = 3) -> list[str]:
    """``section.key found vs expected`` for the first ``limit`` settings that differ between two identities.

    Both sides are first brought to the current sections (:func:`~glioseg.config.migrate`: a record
    without ``inference.window`` used ``train.patch_size``); a setting still missing from one side (a
    work folder recorded before glioseg had it) counts at its default, the behaviour every run had
    before the setting existed.
    """
    found, expected = migrate(found), migrate(expected)
    defaults = Config().to_plain_dict()
    out = []
    for section in sorted(set(found) | set(expected)):
        a, b, base = found.get(section) or {}, expected.get(section) or {}, defaults.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key, base.get(key)) != b.get(key, base.get(key)):
                out.append(f"{section}.{key} {a.get(key)!r} vs {b.get(key)!r}")
    return out[:limit]




def _is_recipe_file(spec: str) -> bool:
    if not spec.endswith((".yaml", ".yml")):
        return False
    try:
        data = yaml.safe_load(Path(spec).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # load_config names the problem
    return isinstance(data, dict) and "stages" in data


def load_recipe(spec: str | Path, overrides: Sequence[str] = (), folds: int | None = None) -> Recipe:
    """Read a preset (one stage) or a recipe file (``stages``); ``overrides`` apply to every stage.

    Args:
        spec: a preset name, a preset YAML file or a recipe YAML file.
        overrides: ``section.key=value`` items (``--set``).
        folds: K; ``None``: the recipe file's ``folds``, else the first stage's ``train.folds``
            when it is 2 or more, else :data:`DEFAULT_FOLDS`.

    Raises:
        GliosegError: an unreadable or invalid file, a later stage that sets ``train.init_from``,
            two stages of one name, fewer than 2 folds.
    """
    spec = str(spec)
    if _is_recipe_file(spec):
        path = Path(spec)
        data = yaml.safe_load(path.read_text())
        unknown = sorted(set(data) - {"stages", "folds", "split_seed"})
        if unknown:
            raise GliosegError(
                path,
                f"unknown recipe key(s) {', '.join(unknown)}",
                "a recipe file holds stages, and optionally folds and split_seed",
            )
        entries = data["stages"]
        if not isinstance(entries, list) or not entries:
            raise GliosegError(path, "stages is not a non-empty list", "list the stages' presets under stages:")
        stages = [_stage(entry, path, overrides) for entry in entries]
        file_folds, file_seed = data.get("folds"), data.get("split_seed")
    else:
        config = load_config(spec, overrides)
        stages = [Stage(Path(spec).stem if spec.endswith((".yaml", ".yml")) else spec, config)]
        file_folds, file_seed = None, None
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise GliosegError(spec, f"two stages are named alike ({', '.join(names)})", "give each stage its own name")
    _check_cascade(stages, spec)
    for stage in stages[1:]:
        if stage.config.train.init_from:
            raise GliosegError(
                spec,
                f"stage {stage.name} sets train.init_from; a later stage starts from the stage before it",
                "remove train.init_from from that stage",
            )
    first = stages[0].config.train
    k = (
        folds
        if folds is not None
        else file_folds
        if file_folds is not None
        else first.folds
        if first.folds >= 2
        else DEFAULT_FOLDS
    )
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise GliosegError(spec, f"{k!r} folds is not a cross-validation", "give K >= 2 folds")
    if file_seed is not None and (isinstance(file_seed, bool) or not isinstance(file_seed, int) or file_seed < 0):
        raise GliosegError(spec, f"split_seed {file_seed!r} is not a whole number >= 0", "give e.g. split_seed: 0")
    seed = file_seed if file_seed is not None else first.split_seed
    return Recipe(stages=tuple(stages), folds=k, split_seed=int(seed), source=spec)


def _check_cascade(stages: Sequence[Stage], spec: str) -> None:
    """A prior names an earlier stage that is no cascade stage; a cascade stage has a margin; after a cascade stage
    only cascade stages."""
    for index, stage in enumerate(stages):
        earlier = [s.name for s in stages[:index]]
        if stage.prior is not None and stage.prior not in earlier:
            where = "a later stage" if stage.prior in {s.name for s in stages} else "no stage of this recipe"
            raise GliosegError(
                spec,
                f"stage {stage.name} names prior {stage.prior}, which is {where}",
                f"name an earlier stage as its prior ({', '.join(earlier) or 'none before it'})",
            )
        if stage.prior is not None and next(s for s in stages if s.name == stage.prior).prior is not None:
            firsts = [s.name for s in stages[:index] if s.prior is None]
            raise GliosegError(
                spec,
                f"stage {stage.name} names prior {stage.prior}, which is a cascade stage itself (a cascade has two "
                "stages: the first reads the modalities alone)",
                f"name a stage that is not a cascade stage as its prior ({', '.join(firsts)})",
            )
        if stage.prior is None and stage.config.preprocess.cascade_margin is not None:
            raise GliosegError(
                spec,
                f"stage {stage.name} sets preprocess.cascade_margin but names no prior",
                "add prior: <an earlier stage> to that stage, or remove preprocess.cascade_margin",
            )
        if index and stages[index - 1].prior is not None and stage.prior is None:
            raise GliosegError(
                spec,
                f"stage {stage.name} follows the cascade stage {stages[index - 1].name} but is not one itself",
                f"give it prior: {stages[index - 1].prior}, or move it before the cascade stage",
            )


def _stage(entry: Any, recipe: Path, overrides: Sequence[str]) -> Stage:
    if isinstance(entry, str):
        entry = {"preset": entry}
    if not isinstance(entry, dict) or "preset" not in entry or set(entry) - {"name", "preset", "set", "prior"}:
        raise GliosegError(
            recipe,
            f"stage {entry!r} is not a preset or {{name, preset, set, prior}}",
            "write a preset name or file, or {name: N, preset: P, set: {train.lr: 0.001}} (prior: S for a cascade)",
        )
    preset = str(entry["preset"])
    if preset.endswith((".yaml", ".yml")) and not Path(preset).is_absolute():
        preset = str(recipe.parent / preset)
    extra = entry.get("set") or {}
    if not isinstance(extra, dict):
        raise GliosegError(
            recipe,
            f"stage {entry.get('name', preset)}: set is not a mapping of section.key: value",
            "write set: {train.lr: 0.001}",
        )
    items = [
        f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for key, value in extra.items()
    ]
    prior = entry.get("prior")
    if prior is not None and not isinstance(prior, str):
        raise GliosegError(recipe, f"stage {entry.get('name', preset)}: prior {prior!r} is not a stage name",
                           "write prior: <the name of an earlier stage>")
    if prior is not None and "preprocess.cascade_margin" not in extra:
        items.insert(0, f"preprocess.cascade_margin={CASCADE_MARGIN_MM}")
    name = str(entry.get("name") or Path(preset).stem)
    try:  # the stage's preset and set alone: a key or value of its set (or its preset's name) is named with the stage
        load_config(preset, items)
    except GliosegError as exc:  # the preset file's own problem names that file; the rest names the recipe
        raise exc.located(recipe, f"stage {name}") from None
    config = load_config(preset, [*items, *overrides])
    too_long = len(name.encode("utf-8", "surrogateescape")) > MAX_CASE_ID_BYTES
    if not name or any(c in name for c in "/\\\0") or name.startswith(".") or too_long:  # names WORK/<stage>/
        shown = name[:60] + ("..." if len(name) > 60 else "")
        raise GliosegError(
            recipe, f"stage name {shown!r} cannot be a folder name", "name the stage with letters, digits, - and _"
        )
    return Stage(name, config, prior)


def fold_config(
    stage: Stage, recipe: Recipe, fold: int | None, *, threads: int, device: str | None, init_from: Path | None
) -> Config:
    """The config one fold of a stage trains with (``fold=None``: the model trained on all cases)."""
    train = dataclasses.replace(
        stage.config.train,
        folds=0 if fold is None else recipe.folds,
        fold=fold or 0,
        split_seed=recipe.split_seed,
        threads=threads,
        device=device or stage.config.train.device,
        init_from=str(init_from) if init_from else stage.config.train.init_from,
    )
    return config_from_dict({**stage.config.to_dict(), "train": dataclasses.asdict(train)}, f"stage {stage.name}")
