"""The cross-validation work folder: what it was made with, and where each part lies.

::

    WORK/cv.json                      the record: dataset (roots, case ids), folds, split seed, stages
    WORK/cache-<fingerprint>/         preprocessed cases (one cache per preprocessing recipe)
    WORK/<stage>/fold<k>/             the run folder of fold k (config.yaml, split.json, last.pt, ...)
    WORK/<stage>/all/                 the model trained on all cases (``cv train --all``)
    WORK/<stage>/pred/<case>.nii.gz   out-of-fold label maps, each by the fold model that never saw the case
    WORK/<stage>/timings-fold<k>.json their read -> write times
    WORK/<stage>/scores/<case>.json   every post-processing candidate's metrics (``cv report``'s cache)
    WORK/<stage>/choice.json          ``cv report``'s choice (read by ``cv pack``)

A command given a work folder made with another dataset, fold assignment or stage settings is
refused with the difference named; a recipe that adds stages after the recorded ones extends it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioseg.cv.recipe import Recipe, Stage, differences, identity
from glioseg.data.discovery import Case, discover
from glioseg.data.splits import kfold_split
from glioseg.errors import GliosegError
from glioseg.files import check_output_path, write_json

logger = logging.getLogger(__name__)

RECORD = "cv.json"
RECORD_FORMAT = 1


def cache_dir(work: Path, fingerprint: str) -> Path:
    """The preprocessed cases of one preprocessing recipe, shared by the stages that use it."""
    return work / f"cache-{fingerprint}"


def stage_cache(work: Path, stage: Stage) -> Path:
    """The preprocessed cases a stage trains on: shared by stages of one preprocessing, a cascade stage's own."""
    fingerprint = stage.config.preprocess.fingerprint()
    return work / stage.name / f"cache-{fingerprint}" if stage.prior else cache_dir(work, fingerprint)


@dataclass(frozen=True)
class WorkFolder:
    """A work folder and its record (``cv.json``)."""

    path: Path
    record: dict[str, Any]

    @property
    def folds(self) -> int:
        return int(self.record["folds"])

    @property
    def stage_names(self) -> list[str]:
        return [stage["name"] for stage in self.record["stages"]]

    def stage_dir(self, stage: str) -> Path:
        return self.path / stage

    def run_dir(self, stage: str, fold: int | None) -> Path:
        """Fold ``fold``'s run folder of ``stage`` (``None``: the model trained on all cases)."""
        return self.path / stage / ("all" if fold is None else f"fold{fold}")

    def pred_dir(self, stage: str) -> Path:
        return self.path / stage / "pred"

    def splits(self) -> list[dict[str, Any]]:
        """The K folds' ``{"train": [...], "val": [...]}``, fixed over the recorded case ids."""
        return kfold_split(self.record["cases"], k=self.folds, seed=int(self.record["split_seed"]))

    def stage_config(self, stage: str) -> dict[str, Any]:
        for entry in self.record["stages"]:
            if entry["name"] == stage:
                return entry["config"]
        raise GliosegError(self.path, f"has no stage {stage}", f"choose one of {', '.join(self.stage_names)}")

    def stage_prior(self, stage: str) -> str | None:
        """The prior stage of a cascade stage (:mod:`glioseg.cv.recipe`), else ``None``."""
        self.stage_config(stage)
        return next(entry.get("prior") for entry in self.record["stages"] if entry["name"] == stage)

    def last_stage(self, stage: str | None = None) -> str:
        """``stage`` when given (checked), else the last recorded stage."""
        if stage is None:
            return self.stage_names[-1]
        self.stage_config(stage)
        return stage

    def cases(self) -> list[Case]:
        """The recorded cases, found again under the recorded roots."""
        roots = [Path(root) for root in self.record["roots"]]
        for root in roots:  # moved or unmounted: no option gives another path, the record holds it
            if not root.is_dir():
                raise GliosegError(
                    root,
                    f"dataset folder of this work folder ({self.path / RECORD}) not found",
                    "put the data back at that path (or mount it there): the work folder reads its references there",
                )
        return find_cases(roots, (), only=self.record["cases"])


def find_cases(roots: Sequence[Path], modalities: Sequence[str], *, only: Sequence[str] | None = None) -> list[Case]:
    """The labelled cases under ``roots`` (several dataset folders together), sorted by id.

    Cases without a label map are left out and named in a logged warning, as discovery's warnings (files accepted
    or ignored) are logged; neither again when ``only`` names a work folder's cases.

    Raises:
        GliosegError: a root holds a broken case (its problem), two roots hold the same case id,
            a case of ``only`` is not found, or no case is found.
    """
    found: dict[str, Case] = {}
    for root in roots:
        dataset = discover(root, required=modalities)
        if dataset.problems:
            raise dataset.problems[0]
        unlabelled = [case.case_id for case in dataset.cases if case.label is None]
        if only is None:  # said once, when the work folder is made or resumed
            for warning in dataset.warnings:
                logger.warning("%s", warning)
            if unlabelled:
                logger.warning(
                    "%s: %d case(s) without a label map left out of the cross-validation: %s%s",
                    root,
                    len(unlabelled),
                    ", ".join(unlabelled[:5]),
                    ", ..." if len(unlabelled) > 5 else "",
                )
        for case in dataset.cases:
            if case.label is None:
                continue
            if case.case_id in found:
                raise GliosegError(
                    case.reference_image,
                    f"case {case.case_id} is also under {found[case.case_id].reference_image.parent}",
                    "give each case once (remove one copy, or one of the dataset folders)",
                )
            found[case.case_id] = case
    if only is not None:
        missing = sorted(set(only) - set(found))
        if missing:
            raise GliosegError(
                roots[0] if roots else None,
                f"the work folder's case(s) {', '.join(missing[:5])} are no longer found",
                "give the dataset folders the work folder was made with",
            )
        found = {case_id: found[case_id] for case_id in only}
    if not found:
        raise GliosegError(
            roots[0] if roots else None,
            "holds no labelled case",
            "give dataset folders with label maps (cross-validation needs references)",
        )
    return [found[case_id] for case_id in sorted(found)]


def open_work(path: Path) -> WorkFolder:
    """An existing work folder.

    Raises:
        GliosegError: no readable ``cv.json``.
    """
    record_path = path / RECORD
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise GliosegError(
            path, "is not a cross-validation work folder (no cv.json)", "run `glioseg cv train` into it first"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GliosegError(record_path, f"cannot be read ({exc})", "choose another work folder") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not record.get("stages"):
        raise GliosegError(record_path, "is not a record written by this glioseg", "choose another work folder")
    return WorkFolder(path, record)


def prepare_work(path: Path, recipe: Recipe, roots: Sequence[Path], cases: Sequence[Case]) -> WorkFolder:
    """Create the work folder's record, or check an existing one against this recipe and dataset.

    A recipe whose stages extend the recorded ones (the same first stages, then more) adds
    them to the record.

    Raises:
        GliosegError: the folder was made with other cases, folds, split seed or stage settings
            (naming the difference), or it is a file.
    """
    if path.exists() and not path.is_dir():
        raise GliosegError(path, "is a file, not a folder", "choose a work folder")
    check_output_path(path, folder=True)  # a work folder under a file, named as such
    stages: list[dict[str, Any]] = [
        {"name": stage.name, "config": identity(stage.config), **({"prior": stage.prior} if stage.prior else {})}
        for stage in recipe.stages
    ]
    ids = [case.case_id for case in cases]
    fresh = {
        "format": RECORD_FORMAT,
        "folds": recipe.folds,
        "split_seed": recipe.split_seed,
        "cases": ids,
        "roots": [str(Path(root).resolve()) for root in roots],
        "stages": stages,
        "recipe": recipe.source,
    }
    if not (path / RECORD).exists():
        # caches alone are an earlier try whose preprocessing failed (their entries are checked against the sources)
        if path.is_dir() and any(not (p.name.startswith("cache-") and p.is_dir()) for p in path.iterdir()):
            raise GliosegError(path, "is not empty and holds no cv.json", "choose a new or empty work folder")
        write_json(path / RECORD, fresh)
        return WorkFolder(path, fresh)
    work = open_work(path)
    record = work.record
    fix = "choose another work folder (or give the recipe and data it was made with)"
    if record["cases"] != ids:
        gone, new = sorted(set(record["cases"]) - set(ids)), sorted(set(ids) - set(record["cases"]))
        raise GliosegError(
            path,
            f"was made with another dataset ({len(record['cases'])} cases; not given now: "
            f"{', '.join(gone[:3]) or 'none'}; new: {', '.join(new[:3]) or 'none'})",
            fix,
        )
    if record["folds"] != recipe.folds or record["split_seed"] != recipe.split_seed:
        raise GliosegError(
            path,
            f"was made with {record['folds']} folds (split seed {record['split_seed']}), this recipe asks for "
            f"{recipe.folds} (seed {recipe.split_seed})",
            fix,
        )
    for index, (found, wanted) in enumerate(
        zip(record["stages"], stages, strict=False), start=1
    ):  # a recipe may add stages
        if found["name"] != wanted["name"]:
            raise GliosegError(path, f"stage {index} is {found['name']} there, {wanted['name']} in this recipe", fix)
        if found.get("prior") != wanted.get("prior"):
            raise GliosegError(
                path,
                f"stage {index} ({found['name']}) has prior {found.get('prior')} there, {wanted.get('prior')} now",
                fix,
            )
        diff = differences(found["config"], wanted["config"])
        if diff:
            raise GliosegError(
                path,
                f"stage {index} ({found['name']}) was made with other settings: {'; '.join(diff)} (there vs now)",
                fix,
            )
    if len(stages) > len(record["stages"]):
        record = {**record, "stages": [*record["stages"], *stages[len(record["stages"]) :]]}
        write_json(path / RECORD, record)
    return WorkFolder(path, record)
