"""``glioseg cv pack``: a model folder that ``glioseg predict --model FOLDER`` runs.

::

    MODEL/
      pack.json        members, recipe and stage, training cases, folds, post-processing,
                       out-of-fold scores, training cost (what the model card says, as data)
      fold0.pt ...     the fold models' last-epoch weights (float16; inference runs in float32),
                       each with its config, whose postprocess section is the chosen one
                       (or all.pt: the model trained on all cases)
      checksums.json   sha256 of every member, checked on every load
      MODEL_CARD.md    generated from pack.json

A cascade stage's folder (issue 22) also holds ``prior/``, the model folder of its prior stage (the same
folds, or the all-cases model), packed with the post-processing it was trained with, and ``pack.json``
names it under ``cascade``: ``predict`` runs stage 1, then stage 2 on the crop around its tumour
(:mod:`glioseg.inference.cascade`).

Several members are an ensemble: ``predict`` averages their probabilities, then decides labels
once. A folder whose checksums fail, whose members are missing, or whose members disagree on
their inputs (preprocessing) or outputs (head) is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glioseg import __version__
from glioseg.checksums import PACK, PACK_FORMAT, is_pack, pack_members, read_pack
from glioseg.errors import GliosegError

if TYPE_CHECKING:
    from glioseg.cv.workdir import WorkFolder


def slim_checkpoint(payload: dict[str, Any], postprocess: dict[str, Any] | None) -> dict[str, Any]:
    """Config + float16 weights + epoch; ``postprocess`` (when given) replaces the config's section.

    The config goes through this glioseg's :class:`~glioseg.config.Config`, so an older
    checkpoint gains today's sections with the defaults that reproduce how it was trained.
    ``train.init_from`` (a path on the training machine) is dropped.
    """
    from glioseg.config import config_from_dict

    config = config_from_dict(payload["config"], "checkpoint").to_dict()
    if postprocess is not None:
        config["postprocess"] = dict(postprocess)
    config["train"]["init_from"] = None
    config_from_dict(config, "packed config")  # the values are valid
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in payload["model"].items()}
    return {"config": config, "model": weights, "epoch": payload["epoch"]}


def pack_models(
    work_path: Path,
    out: Path,
    *,
    stage: str | None = None,
    folds: Sequence[int] | None = None,
    all_cases: bool = False,
    postprocess: str = "chosen",
    report: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Pack fold models (or the all-cases model) of a work folder into ``out``.

    Args:
        work_path: a ``glioseg cv train`` work folder.
        out: the model folder to write (written whole, then renamed into place).
        stage: the stage to pack (default: the last recorded).
        folds: folds to pack (default: all); ignored with ``all_cases``.
        all_cases: pack the model trained on all cases (``cv train --all``).
        postprocess: ``chosen`` (the candidate ``cv report`` chose on all cases), ``none``, or ``trained``
            (each checkpoint's own section: a cascade's prior stage).
        report: a ``cv report`` folder (``choice.json``, ``summary.csv``, ``per_case.csv``) to take the choice and
            the out-of-fold scores from, instead of the work folder's stage: the all-cases model can be packed in a
            work folder that holds no folds (they were trained, reported and committed elsewhere, or lost).
        overwrite: replace an existing model folder.

    Raises:
        GliosegError: a fold not finished, no report (for ``chosen``), members that disagree,
            ``out`` not empty without ``overwrite``, or ``out`` inside the work folder's inputs.
    """
    from glioseg.checkpoint import load_checkpoint, save_checkpoint
    from glioseg.checksums import write_checksums
    from glioseg.cv.train import FINISHED
    from glioseg.cv.workdir import open_work
    from glioseg.files import atomic_folder, check_output_path, write_json, write_text

    if report is not None and postprocess != "chosen":  # options that contradict each other: before any file
        raise GliosegError(
            report,
            "gives the chosen post-processing",
            "pack with the chosen post-processing, or without the report folder",
        )
    check_output_path(out, folder=True)  # a file, or a path under one: named before any checkpoint is loaded
    work = open_work(work_path)
    stage = work.last_stage(stage)
    prior = work.stage_prior(stage)
    if prior is not None and work.stage_prior(prior) is not None:  # recorded before recipes refused it
        raise GliosegError(
            work.path / "cv.json",
            f"records stage {stage} with prior {prior}, a cascade stage itself: its model folder could not run",
            f"pack stage {prior} (a cascade of two stages), or train the recipe again with a prior that is no "
            "cascade stage",
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise GliosegError(
                out, "already exists and is not empty", "choose a new folder, or allow overwriting it (--overwrite)"
            )
        if not (is_pack(out) or (out / "checksums.json").is_file()):  # only a model folder is ever replaced
            raise GliosegError(
                out,
                "is not a model folder (no pack.json or checksums.json); overwriting would delete it",
                "choose a new folder",
            )
    if Path(os.path.realpath(out)) in (Path(os.path.realpath(work.path)), *Path(os.path.realpath(work.path)).parents):
        raise GliosegError(
            out,
            "would replace the work folder (or a folder holding it)",
            "choose an output folder outside the work folder",
        )
    asked = folds if folds is not None else range(work.folds)
    chosen_folds: list[int | None] = [None] if all_cases else list(dict.fromkeys(asked))  # a fold given twice: once
    for fold in chosen_folds:  # not 'has not finished training': no training makes it
        if fold is not None and not 0 <= fold < work.folds:
            raise GliosegError(
                work.path,
                f"has {work.folds} folds (0..{work.folds - 1}), not fold {fold}",
                f"give folds (--fold) between 0 and {work.folds - 1}",
            )
    runs = [work.run_dir(stage, fold) for fold in chosen_folds]
    for run in runs:
        if not (run / FINISHED).is_file():
            what = "the all-cases model" if run.name == "all" else run.name
            hint = (
                "train the all-cases model first (`glioseg cv train --all` with the same recipe and data)"
                if run.name == "all"
                else "run `glioseg cv train` until its folds finish"
            )
            raise GliosegError(run, f"{what} of stage {stage} has not finished training", hint)
    setting, choice, summary = _postprocess_and_scores(work, stage, postprocess, report)

    from glioseg.config import config_from_dict

    payloads = [load_checkpoint(run / "last.pt") for run in runs]
    # compared as this glioseg reads them: a key added since (with the default that reproduces the
    # older runs) is no difference between a fold trained before and one resumed after it
    configs = [config_from_dict(payload["config"], "checkpoint").to_dict() for payload in payloads]
    first = payloads[0]["config"]
    for run, config in zip(runs[1:], configs[1:], strict=True):
        for section, key in (("preprocess", None), ("model", "head"), ("model", "name")):
            a, b = (
                configs[0][section] if key is None else configs[0][section][key],
                config[section] if key is None else config[section][key],
            )
            if a != b:
                raise GliosegError(
                    run / "last.pt",
                    f"disagrees with {runs[0] / 'last.pt'} on {section}{'.' + key if key else ''}",
                    "pack models of one recipe only",
                )
    names = ["all.pt" if fold is None else f"fold{fold}.pt" for fold in chosen_folds]
    margin = configs[0]["preprocess"].get("cascade_margin")
    finished = [json.loads((run / FINISHED).read_text()) for run in runs]
    stages = work.stage_names[: work.stage_names.index(stage) + 1]
    all_stages_minutes = [
        sum(
            json.loads(meta.read_text())["train_s"] / 60
            for meta in (work.run_dir(s, f) / FINISHED for s in stages)
            if meta.is_file()
        )
        for f in chosen_folds
    ]
    manifest = {
        "format": PACK_FORMAT,
        "glioseg": __version__,
        "members": names,
        "stage": stage,
        "stages": stages,
        "recipe": work.record.get("recipe"),
        "folds": work.folds,
        "packed_folds": ["all" if f is None else f for f in chosen_folds],
        "split_seed": work.record["split_seed"],
        "training_cases": work.record["cases"],
        "postprocess": setting,
        "postprocess_choice": choice.get("all_cases", "none" if postprocess != "trained" else "as trained"),
        **({"cascade": {"prior_stage": prior, "folder": "prior", "margin_mm": margin}} if prior else {}),
        "out_of_fold": summary.get("postprocessed"),
        "out_of_fold_raw": summary.get("raw"),
        "rules": summary.get("rules"),
        "train_minutes": [f["train_s"] / 60 for f in finished],
        "train_minutes_all_stages": all_stages_minutes,
        "train_threads": [f.get("threads") for f in finished],
        "train_device": [f.get("device") for f in finished],
        "epochs": [f["epochs"] for f in finished],
        "config": first,
    }
    with atomic_folder(out) as staging:
        for name, payload in zip(names, payloads, strict=True):
            save_checkpoint(staging / name, slim_checkpoint(payload, setting))
        write_checksums(staging)
        if prior:  # stage 1 of the cascade, as its out-of-fold label maps were made: no chosen post-processing
            pack_models(
                work_path, staging / "prior", stage=prior, folds=folds, all_cases=all_cases, postprocess="trained"
            )
        write_json(staging / PACK, manifest)
        write_text(staging / "MODEL_CARD.md", model_card(manifest))
    return out


def _postprocess_and_scores(
    work: WorkFolder, stage: str, postprocess: str, report: Path | None
) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """The post-processing section the members get, the ``cv report`` choice, and the out-of-fold scores."""
    if report is not None:
        choice, summary = _read_report(report, stage, work.record["cases"])
        return choice["all_cases_setting"], choice, summary
    summary_path, choice_path = work.stage_dir(stage) / "summary.json", work.stage_dir(stage) / "choice.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if postprocess == "chosen":
        if not choice_path.is_file():
            raise GliosegError(
                work.path,
                f"stage {stage} has no cross-validation report",
                "run `glioseg cv report` first, give the report folder of its folds (--report), or pack without "
                "post-processing (--postprocess none)",
            )
        choice = json.loads(choice_path.read_text())
        return choice["all_cases_setting"], choice, summary
    if postprocess == "none":
        from dataclasses import asdict

        from glioseg.inference.postprocess import PostprocessConfig

        return asdict(PostprocessConfig()), {}, summary
    if postprocess == "trained":
        return None, {}, summary
    raise GliosegError(None, f"post-processing {postprocess!r} is not chosen or none", "give chosen or none")


def _read_report(report: Path, stage: str, cases: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The choice and the out-of-fold means (as ``summary.json`` holds them) of a ``cv report`` folder.

    Refused: a file missing or unreadable, a report of another stage, or one whose cases are not the work
    folder's (its scores would describe another model's data).
    """
    import csv

    files = {name: report / name for name in ("choice.json", "summary.csv", "per_case.csv")}
    for path in files.values():
        if not path.is_file():
            raise GliosegError(
                path, "is missing: not a `glioseg cv report` folder", "give the folder cv report wrote (-o)"
            )
    try:
        choice = json.loads(files["choice.json"].read_text())
        setting = choice["all_cases_setting"]
        with files["summary.csv"].open(newline="") as f:
            rows = list(csv.DictReader(f))
        means = {
            key: {row["metric"]: float(row[f"{key}_mean"]) for row in rows} for key in ("raw", "postprocessed")
        }
        with files["per_case.csv"].open(newline="") as f:
            reported = sorted({row["case"] for row in csv.DictReader(f)})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GliosegError(
            report, f"cannot be read as a cv report ({exc})", "write it again with `glioseg cv report`"
        ) from exc
    if not isinstance(setting, dict):
        raise GliosegError(files["choice.json"], "has no all_cases_setting", "write it again with `glioseg cv report`")
    if choice.get("stage") != stage:
        raise GliosegError(
            files["choice.json"],
            f"reports stage {choice.get('stage')}, not {stage}",
            f"give the report of stage {stage}, or pack stage {choice.get('stage')} (--stage)",
        )
    if reported != sorted(cases):
        missing, extra = sorted(set(cases) - set(reported)), sorted(set(reported) - set(cases))
        raise GliosegError(
            files["per_case.csv"],
            f"scores other cases than the work folder trained on ({len(missing)} not scored, e.g. "
            f"{(missing or ['-'])[0]}; {len(extra)} not trained on, e.g. {(extra or ['-'])[0]})",
            "give the report of a cross-validation over the same cases",
        )
    return choice, {"cases": reported, "rules": choice.get("rules"), **means}


def model_card(manifest: dict[str, Any]) -> str:
    """The text of ``MODEL_CARD.md``, from ``pack.json``."""
    config = manifest["config"]
    pre, model, train = config["preprocess"], config["model"], config["train"]
    members = manifest["members"]
    kind = (
        "the model trained on all cases"
        if members == ["all.pt"]
        else (
            f"an ensemble of {len(members)} fold models (probabilities averaged)"
            if len(members) > 1
            else f"one fold model ({members[0]})"
        )
    )
    lines = [
        f"# Model card: {manifest['stage']} ({kind})",
        "",
        f"Packed by `glioseg cv pack` (glioseg {manifest['glioseg']}). Research use only; not a medical device.",
        "",
        "## Recipe",
        "",
        f"- Stages: {' -> '.join(manifest['stages'])} (recipe `{manifest.get('recipe')}`)"
        + ("; each later stage starts from the same fold of the stage before." if len(manifest["stages"]) > 1 else "."),
        f"- Network: `{model['name']}`, filters {model['filters']}, {model['norm']} norm, `{model['head']}` head.",
        *(
            [
                f"- Cascade: `{manifest['cascade']['prior_stage']}` (in `{manifest['cascade']['folder']}/`) first, "
                "then "
                f"this stage on the crop around its tumour + {manifest['cascade']['margin_mm']} mm, its input the "
                "modalities and stage 1's WT/TC/ET; stage 1's labels stand outside the crop."
            ]
            if manifest.get("cascade")
            else []
        ),
        f"- Inputs: {', '.join(pre['modalities'])}; {pre['normalization']} intensities, crop `{pre['crop']}`, grid "
        f"{pre.get('target_spacing') or 'native'} mm.",
        f"- Last stage: {train['epochs']} epochs of {train.get('samples_per_epoch')} {train['sampling']} samples "
        f"({train.get('patch_size')}), batch {train['batch_size']}, "
        f"{train['optimizer']} lr {train['lr']} ({train['schedule']}), loss `{train['loss']}`; the last epoch's "
        "weights (nothing chosen on held-out cases).",
        (
            "- Post-processing: none (packed with `--postprocess none`: raw labels)."
            if manifest["postprocess_choice"] == "none"
            else f"- Post-processing: `{manifest['postprocess_choice']}` = "
            f"{json.dumps({k: v for k, v in (manifest['postprocess'] or {}).items() if v})}, "
            "chosen by `glioseg cv report` on all training cases."
        ),
        "",
        "## Training data",
        "",
        f"{len(manifest['training_cases'])} cases, {manifest['folds']} folds (split seed {manifest['split_seed']}); "
        f"packed: {', '.join(map(str, manifest['packed_folds']))}.",
        "",
        "## Out-of-fold scores",
        "",
    ]
    oof, raw = manifest.get("out_of_fold"), manifest.get("out_of_fold_raw")
    if oof:
        lines += [
            "Each case scored by the fold model that never saw it, post-processing chosen nested (on the other folds' "
            "cases);",
            "an ensemble of fold models, or a model trained on all cases, is not itself scored (every case was seen by "
            "all but one fold model).",
            "",
            "| | Dice WT | Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, values in (("raw", raw), ("post-processed (nested)", oof)):
            if values:
                cells = [f"{values.get(k, float('nan')):.3f}" for k in ("dice_wt", "dice_tc", "dice_et")] + [
                    f"{values.get(k, float('nan')):.1f}" for k in ("hd95_wt", "hd95_tc", "hd95_et")
                ]
                lines.append(f"| {label} | {' | '.join(cells)} |")
        if any(k.startswith("lesion_dice_") for k in oof):
            lines += [
                "",
                f"Lesion-wise ({manifest.get('rules')}), post-processed: "
                + " / ".join(f"{oof[f'lesion_dice_{r}']:.3f}" for r in ("wt", "tc", "et"))
                + " (WT / TC / ET).",
            ]
    else:
        lines.append("Not measured: `glioseg cv report` had not run when this model was packed.")
    minutes, total = manifest["train_minutes"], manifest.get("train_minutes_all_stages") or manifest["train_minutes"]
    setups = sorted(
        {f"{d} with {t} thread(s)" for d, t in zip(manifest["train_device"], manifest["train_threads"], strict=True)}
    )
    lines += [
        "",
        "## Cost",
        "",
        f"Training per packed model: last stage {', '.join(f'{m:.1f}' for m in minutes)} min; all stages "
        f"{', '.join(f'{m:.1f}' for m in total)} min "
        f"({', '.join(setups)}).",
        "",
        "## Limits",
        "",
        f"- Trained and scored on {len(manifest['training_cases'])} cases only; scores on other scanners and "
        "populations may be lower.",
        "- Expects skull-stripped, co-registered scans of the listed modalities on one grid (as BraTS provides).",
        f"- Predicts on a {pre.get('target_spacing') or 'native'} mm grid: regions thinner than a voxel of that grid "
        "are beyond it.",
    ]
    return "\n".join(lines) + "\n"


def export_pack(pack: Path, out: Path, fmt: str, *, overwrite: bool = False) -> Path:
    """Export every member of a model folder (``OUT/<member>/``, see :func:`glioseg.inference.export.export_model`)
    with the folder's ``pack.json`` and model card, so ``predict --model OUT`` runs the exported ensemble.

    Raises:
        GliosegError: a member that fails its checksum or cannot be exported, or ``out`` in the way.
    """
    from glioseg.files import atomic_folder, write_json
    from glioseg.inference.export import export_model

    real_pack, real_out = Path(os.path.realpath(pack)), Path(os.path.realpath(out))
    if real_out == real_pack or real_out in real_pack.parents:  # replacing it would delete the checkpoints being read
        raise GliosegError(
            out,
            f"holds the model folder being exported ({pack}), which overwriting it would delete",
            "choose another output folder",
        )
    if real_pack in real_out.parents:  # e.g. a cascade's prior/: its first stage's models, replaced by the export
        raise GliosegError(
            out,
            f"lies inside the model folder being exported ({pack}), whose files it would replace or mix with",
            "choose an output folder outside the model folder",
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (overwrite and is_pack(out)):
        raise GliosegError(
            out,
            "exists and is not an empty folder",
            "choose a new output folder (or allow overwriting an earlier export)",
        )
    members = pack_members(pack)
    if any(member.suffix != ".pt" for member in members):
        raise GliosegError(pack, "is already an exported model folder", "export the folder `glioseg cv pack` wrote")
    manifest = read_pack(pack)
    with atomic_folder(out) as staging:
        for member in members:
            export_model(member, staging / member.stem, fmt)
        if manifest.get("cascade"):  # a cascade's first stage, exported alike
            folder = str(manifest["cascade"].get("folder", "prior"))
            export_pack(pack / folder, staging / folder, fmt)
        write_json(staging / PACK, {**manifest, "members": [member.stem for member in members], "exported_as": fmt})
        if (pack / "MODEL_CARD.md").is_file():
            shutil.copyfile(pack / "MODEL_CARD.md", staging / "MODEL_CARD.md")
    return out
