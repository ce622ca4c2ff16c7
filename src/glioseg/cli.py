"""Command-line entry points: thin wrappers that parse arguments and call the library.

Every user-facing problem surfaces as ``error: <file>: <problem>. Fix: <what to do>`` on
stderr with exit status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from glioseg import __version__
from glioseg.config.sections import (
    DEVICES,
    INFERENCE_RANGES,
    LOSS_NAMES,
    MODALITIES,
    NETWORKS,
    OPTIMIZERS,
    POSTPROCESS_RANGES,
    SCHEDULES,
    TRAIN_RANGES,
)
from glioseg.errors import GliosegError
from glioseg.interrupts import EXIT_TERMINATED, Terminated, sigterm_raises
from glioseg.labels import CONVENTIONS
from glioseg.validation import Range, check_value

if TYPE_CHECKING:
    from glioseg.data.discovery import Case, Dataset

logger = logging.getLogger("glioseg")

EXIT_ERROR = 2


class _RuleNames:
    """The names of :data:`glioseg.metrics.SCORING_RULES` as ``evaluate --rules`` choices, read only
    when argparse checks a value or shows ``evaluate --help`` (with a ``metavar``, building the
    parser does not list them): importing glioseg.metrics loads SciPy, about half of the start
    of every command (``glioseg --help`` included)."""

    def __iter__(self) -> Iterator[str]:
        from glioseg.metrics import SCORING_RULES

        return iter(SCORING_RULES)

    def __contains__(self, name: object) -> bool:
        from glioseg.metrics import SCORING_RULES

        return name in SCORING_RULES


# Allowed values of the numeric command-line options: command -> destination -> (option, range).
# An option that sets a preset value takes its range from glioseg.config.sections (one table per
# setting); the others have theirs here. Checked before the command runs; a new numeric option gets a row here.
_THREADS = ("--threads", Range(0, 4096))
_WORKERS = ("--workers", Range(1, 256))
OPTION_RANGES = {
    "demo": {"threads": _THREADS},
    "synth": {
        "cases": ("--cases", Range(1, 100_000)),
        "shape": ("--shape", Range(16, 1024)),
        "seed": ("--seed", Range(0)),
    },
    "preprocess": {"workers": _WORKERS},
    "train": {
        "epochs": ("--epochs", TRAIN_RANGES["epochs"]),
        "batch_size": ("--batch-size", TRAIN_RANGES["batch_size"]),
        "patch_size": ("--patch-size", TRAIN_RANGES["patch_size"]),
        "lr": ("--lr", TRAIN_RANGES["lr"]),
        "seed": ("--seed", TRAIN_RANGES["seed"]),
        "threads": _THREADS,
        "fold": ("--fold", TRAIN_RANGES["fold"]),
        "time_limit": ("--time-limit", TRAIN_RANGES["time_limit_min"]),
        "workers": _WORKERS,
    },
    "predict": {
        "overlap": ("--overlap", INFERENCE_RANGES["overlap"]),
        "sw_batch_size": ("--sw-batch-size", INFERENCE_RANGES["sw_batch_size"]),
        "window": ("--window", INFERENCE_RANGES["window"]),
        "et_threshold": ("--et-threshold", POSTPROCESS_RANGES["et_threshold"]),
        "min_component_size": ("--min-component-size", POSTPROCESS_RANGES["min_component_size"]),
        "num_parts": ("--num-parts", Range(1)),
        "min_et_component_size": ("--min-et-component-size", POSTPROCESS_RANGES["min_et_component_size"]),
        "min_core_component_size": ("--min-core-component-size", POSTPROCESS_RANGES["min_core_component_size"]),
        "part_id": ("--part-id", Range(0)),
        "threads": _THREADS,
        "min_component_fraction": ("--min-component-fraction", POSTPROCESS_RANGES["min_component_fraction"]),
        "max_components": ("--max-components", Range(0)),
        "keep_within_mm": ("--keep-within", POSTPROCESS_RANGES["keep_within_mm"]),
        "min_et_component_fraction": ("--min-et-component-fraction", POSTPROCESS_RANGES["min_et_component_fraction"]),
        "min_core_component_fraction": (
            "--min-core-component-fraction",
            POSTPROCESS_RANGES["min_core_component_fraction"],
        ),
    },
    "evaluate": {"workers": _WORKERS},
    "report": {"num_cases": ("--num-cases", Range(0, 1000))},
    "cv train": {
        "folds": ("--folds", Range(2, 1000)),
        "fold": ("--fold", Range(0)),
        "workers": _WORKERS,
        "threads": _THREADS,
    },
    "cv report": {"workers": _WORKERS},
    "cv pack": {"fold": ("--fold", Range(0))},
}


def check_options(args: argparse.Namespace) -> None:
    """Refuse an out-of-range numeric option (see :data:`OPTION_RANGES`) before any work."""
    for dest, (option, allowed) in OPTION_RANGES.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            check_value(option, value, allowed)


def _dataset_or_files(
    args: argparse.Namespace, required: Sequence[str], *, show_warnings: bool = True, require_labels: bool = True
) -> Dataset:
    """Discover cases from ``args.root`` or build one from explicit ``--flair/--t1/--t1ce/--t2`` files.

    Discovery's warnings (files accepted or ignored) go to stderr unless ``show_warnings`` is off.
    """
    from glioseg.data.discovery import Dataset, case_from_files, check_case_id, discover

    if getattr(args, "case_id", None) is not None:
        check_case_id(args.case_id)  # it names output files: never a path (issue 25)
    explicit = [getattr(args, m, None) for m in MODALITIES]
    if any(explicit):
        if args.root is not None:
            raise GliosegError(
                args.root, "both a folder and explicit files given", "pass either ROOT or --flair/--t1/--t1ce/--t2"
            )
        case = case_from_files(*explicit, seg=args.seg, case_id=args.case_id)  # type: ignore[misc]
        case.require(required)
        return Dataset(root=case.reference_image.parent, layout="files", cases=[case])
    if args.root is None:
        raise GliosegError(None, "no input given", "pass a dataset folder, or --flair/--t1/--t1ce/--t2 files")
    dataset = discover(args.root, required=required, require_labels=require_labels)
    if show_warnings:
        for warning in dataset.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return dataset


def select_part(cases: Sequence[Case], num_parts: int, part_id: int) -> list[Case]:
    """Split a dataset for parallel jobs: case ``i`` of the sorted ids goes to part ``i % num_parts``.

    Raises:
        GliosegError: ``num_parts < 1`` or ``part_id`` outside ``[0, num_parts)``.
    """
    if num_parts < 1:
        raise GliosegError(None, f"--num-parts {num_parts} must be at least 1", "give --num-parts K with K >= 1")
    if not 0 <= part_id < num_parts:
        raise GliosegError(
            None, f"--part-id {part_id} is outside 0..{num_parts - 1}", f"give --part-id between 0 and {num_parts - 1}"
        )
    ordered = sorted(cases, key=lambda c: c.case_id)
    return [case for i, case in enumerate(ordered) if i % num_parts == part_id]


def _check_output_folder(folder: Path) -> None:
    """Refuse an output folder that is an existing file or lies inside one, before any work."""
    for path in (folder, *folder.absolute().parents):
        if path.exists():
            if not path.is_dir():
                where = "is" if path == folder else f"lies inside {path}, which is"
                raise GliosegError(folder, f"{where} a file, not a folder", "choose an output folder")
            return


def _add_files_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("explicit files for one case (instead of ROOT)")
    for m in ("flair", "t1", "t1ce", "t2", "seg"):
        group.add_argument(f"--{m}", type=Path, metavar="FILE")
    group.add_argument("--case-id", help="case id for explicit files (default: from the file name)")


def _add_raw_options(parser: argparse.ArgumentParser, *, in_predict: bool) -> None:
    group = parser.add_argument_group("series from the scanner (glioseg[prepare])")
    if in_predict:
        group.add_argument(
            "--raw",
            action="store_true",
            help=(
                "the --flair/--t1/--t1ce/--t2 series come from the scanner (DICOM folders or NIfTI, any grids, "
                "with the skull): `glioseg prepare` them into OUT/prepared/ first, and write the label map on the "
                "reference series' grid too"
            ),
        )
        group.add_argument(
            "--on-series",
            nargs="+",
            choices=MODALITIES,
            metavar="MODALITY",
            help="with --raw: also write the label map on these series' own grids",
        )
    group.add_argument(
        "--reference",
        default="t1ce",
        choices=MODALITIES,
        help="the series the others are registered to and whose field of view is kept (default: t1ce)",
    )
    group.add_argument(
        "--no-brain-extraction", action="store_true", help="the series are already skull-stripped: skip HD-BET"
    )
    group.add_argument(
        "--interpolation",
        default="linear",
        choices=("linear", "bspline"),
        help="how the series are resampled onto the 1 mm grid (default: linear)",
    )
    group.add_argument(
        "--pose", default="atlas", choices=("atlas", "scanner"),
        help="the 1 mm grid's axes: the head turned as in BraTS's atlas space (default), or the scanner's axes",
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from glioseg.data.inspect import summarise

    dataset = _dataset_or_files(args, required=(), show_warnings=False)  # the summary lists them
    summary = summarise(dataset, deep=args.deep)
    for line in summary.lines():
        print(line)
    return 1 if summary.problems else 0


def cmd_synth(args: argparse.Namespace) -> int:
    from glioseg.data.synth import CasesExist, write_cohort

    started = time.perf_counter()
    try:
        ids = write_cohort(
            args.out,
            cases=args.cases,
            shape=tuple(args.shape),
            layout=args.layout,
            seed=args.seed,
            with_labels=not args.no_labels,
            force=args.force,
        )
    except CasesExist as exc:
        raise GliosegError(
            exc.path, exc.problem, "choose an empty or new folder, or pass --force to write into it"
        ) from None
    print(f"wrote {len(ids)} synthetic {args.layout} cases to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from glioseg.config import load_config
    from glioseg.data.cache import preprocess_dataset

    config = load_config(args.preset, args.set or ())
    _check_output_folder(args.out)
    # a case folder lacking a modality is refused by preprocess_dataset (the same line), which drops its stale entry
    dataset = _dataset_or_files(args, required=())
    if dataset.layout == "files":
        dataset.cases[0].require(config.preprocess.modalities)  # explicit files: before any work
    for problem in dataset.problems:
        print(f"error: {problem}", file=sys.stderr)
    started = time.perf_counter()
    report = preprocess_dataset(
        dataset.cases, config.preprocess, args.out, workers=args.workers, progress=not args.quiet
    )
    elapsed = time.perf_counter() - started
    print(
        f"{len(report.done)} preprocessed, {len(report.cached)} already cached, "
        f"{len(report.dropped)} dropped, {len(report.failed) + len(dataset.problems)} failed "
        f"-> {args.out} ({elapsed:.1f} s)"
    )
    for case_id, fraction in sorted(report.dropped.items()):
        print(
            f"dropped {case_id}: tumor is {100 * fraction:.2f}% of the crop (needs > "
            f"{100 * config.preprocess.min_tumor_fraction:g}%)"
        )
    for message in report.failed:
        print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR if report.failed or dataset.problems else 0


def cmd_train(args: argparse.Namespace) -> int:
    from glioseg.config import load_config
    from glioseg.training.runs import continue_run, finished_line, start_run

    main_process = int(os.environ.get("RANK", "0")) == 0
    unusable = 0  # cases named in an error line and left out of training
    if args.resume is not None:
        history = continue_run(args.resume, progress=not args.quiet)
    else:
        if args.run is None:
            raise GliosegError(None, "no run folder given", "pass --run-dir DIR (or --resume DIR to continue one)")
        from glioseg.files import check_output_path

        check_output_path(args.run, folder=True)
        if args.cache is not None:
            check_output_path(args.cache, folder=True)
        overrides = list(args.set or ())
        for key, value in (
            ("model.name", args.model), ("train.epochs", args.epochs), ("train.batch_size", args.batch_size),
            ("train.loss", args.loss), ("train.optimizer", args.optimizer), ("train.lr", args.lr),
            ("train.schedule", args.schedule), ("train.seed", args.seed), ("train.device", args.device),
            ("train.threads", args.threads), ("train.folds", args.folds), ("train.fold", args.fold),
            ("train.time_limit_min", args.time_limit), ("train.init_from", args.init_from),
        ):
            if value is not None:
                overrides.append(f"{key}={value}")
        if args.patch_size is not None:
            overrides.append(f"train.patch_size=[{','.join(map(str, args.patch_size))}]")
        config = load_config(args.preset, overrides)
        if args.fold is not None and config.train.folds == 0:
            raise GliosegError(
                None,
                f"--fold {args.fold} given but the preset makes a ratio split (train.folds is 0)",
                "add --folds K (e.g. --folds 4) for k-fold cross-validation",
            )
        if args.cache is None and args.data is None:
            raise GliosegError(
                None, "no data given", "pass --data ROOT (raw BraTS folder) or --cache DIR (from `glioseg preprocess`)"
            )
        if (args.run / "last.pt").exists():
            raise GliosegError(
                args.run, "already holds a run", "pass --resume to continue it, or choose another --run folder"
            )
        cases = None
        if args.data is not None and main_process:  # the main process preprocesses (torchrun)
            # a case lacking a modality is named by preprocessing (Case.require's line), which also drops its entry
            # of earlier files from the cache: the error line says it is left out, and it is
            dataset = _dataset_or_files(argparse.Namespace(root=args.data), required=())
            for problem in dataset.problems:
                print(f"error: {problem}", file=sys.stderr)
            unusable += len(dataset.problems)
            cases = dataset.cases

        def failed(message: str) -> None:
            nonlocal unusable
            unusable += 1
            print(f"error: {message}", file=sys.stderr)

        history = start_run(
            config, args.run, cache=args.cache, cases=cases, workers=args.workers, progress=not args.quiet,
            on_failed=failed,
        )
    if history and main_process:
        print(finished_line(history, args.resume or args.run))
    return 1 if unusable else 0  # as predict: trained on the usable cases, each other one named above


def cmd_prepare(args: argparse.Namespace) -> int:
    from glioseg.prepare.pipeline import prepare_case

    series = {m: getattr(args, m) for m in ("flair", "t1", "t1ce", "t2")}
    prepared = prepare_case(
        series, args.out, case_id=args.case_id, reference=args.reference, brain_extraction=not args.no_brain_extraction,
        interpolation=args.interpolation, pose=args.pose,
    )
    quality = ", ".join(
        f"{m} {s['rotation_degrees']:.1f} deg NMI {s['nmi']:.3f} (mirrored {s['mirror_nmi']:.3f})"
        for m, s in prepared.info["series"].items()
        if s["nmi"] is not None
    )
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in prepared.timings.items())
    print(
        f"prepared {prepared.case_id} -> {prepared.folder} (brain {prepared.info['brain_volume_ml']:.0f} ml; "
        f"registered to {args.reference}: {quality}; {steps})"
    )
    return 0


def _check_raw(args: argparse.Namespace) -> None:
    """``predict --raw``, before any work: the series given one by one, and no output onto or inside a series."""
    from glioseg.files import check_outputs_apart
    from glioseg.inference.predictor import output_path, probabilities_path
    from glioseg.prepare.pipeline import check_series_paths

    if args.root is not None:
        raise GliosegError(
            args.root,
            "--raw takes the four series as --flair/--t1/--t1ce/--t2, not a folder",
            "give each series (NIfTI file or DICOM folder) with its option",
        )
    check_series_paths({m: getattr(args, m) for m in MODALITIES})
    case_id = args.case_id or "case"
    outputs = [
        args.out / "prepared" / case_id, output_path(args.out, case_id),
        *(args.out / f"{case_id}_on_{m}.nii.gz" for m in dict.fromkeys([args.reference, *(args.on_series or ())])),
        *([probabilities_path(args.out, case_id)] if args.save_probabilities else []),
        *([args.timings] if args.timings is not None else []),
    ]
    check_outputs_apart(outputs, [getattr(args, m) for m in MODALITIES if getattr(args, m) is not None])


def _prepare_raw(args: argparse.Namespace) -> tuple[Path, str]:
    """``predict --raw``: prepare the explicit series into OUT/prepared/<case> and point the files options at the
    result."""
    from glioseg.prepare.pipeline import prepare_case

    case_id = args.case_id or "case"
    series = {m: getattr(args, m) for m in ("flair", "t1", "t1ce", "t2")}
    prepared = prepare_case(
        series, args.out / "prepared", case_id=case_id, reference=args.reference,
        brain_extraction=not args.no_brain_extraction, interpolation=args.interpolation, pose=args.pose,
    )
    print(
        f"prepared {case_id} -> {prepared.folder} ({', '.join(f'{k} {v:.1f} s' for k, v in prepared.timings.items())})"
    )
    for m in series:
        setattr(args, m, prepared.image(m))
    args.case_id = case_id
    return prepared.folder, case_id


def cmd_predict(args: argparse.Namespace) -> int:
    import functools

    from glioseg.checksums import shipped_weights_dir
    from glioseg.files import check_output_path
    from glioseg.inference.predictor import Predictor, check_prediction_outputs, resolve_checkpoints
    from glioseg.inference.shipped import ShippedModels, shipped_models
    from glioseg.labels import get_convention

    if args.case_id is not None:
        from glioseg.data.discovery import check_case_id

        check_case_id(args.case_id)  # before any model is loaded or series prepared (issue 25)
    if args.raw:
        from glioseg.prepare import require

        require(not args.no_brain_extraction, atlas=args.pose == "atlas")
        _check_raw(args)
    if args.labels is not None:
        get_convention(args.labels)
    check_output_path(args.out, folder=True)
    if args.timings is not None:
        check_output_path(args.timings, folder=False)
    # the value ranges of these options are checked by check_options (OPTION_RANGES) before this runs
    given = {
        "et_threshold": args.et_threshold,
        "min_component_size": args.min_component_size,
        "min_et_component_size": args.min_et_component_size,
        "min_core_component_size": args.min_core_component_size,
        "min_component_fraction": args.min_component_fraction,
        "keep_within_mm": args.keep_within_mm,
        "min_et_component_fraction": args.min_et_component_fraction,
        "min_core_component_fraction": args.min_core_component_fraction,
    }
    make_predictor = functools.partial(
        Predictor.from_checkpoints, device=args.device, overlap=args.overlap, sw_batch_size=args.sw_batch_size,
        mirror=args.mirror, patch_size=args.window, threads=args.threads, backend=args.backend,
        postprocess_overrides={
            **{k: v for k, v in given.items() if v is not None},
            **({"max_components": args.max_components or None} if args.max_components is not None else {}),
        },
    )
    # without --model, the shipped models: the missing-modality one for a case that lacks a modality
    first = make_predictor(resolve_checkpoints(args.model))
    # a cascade stage's model folder, given or shipped: stage 1, then stage 2 (issue 22)
    from glioseg.inference.cascade import CascadePredictor, cascade_from_pack, is_cascade_pack

    folder = (args.model[0] if len(args.model) == 1 else None) if args.model else shipped_weights_dir()
    if folder is not None and is_cascade_pack(folder):
        first = cascade_from_pack(folder, first, make_predictor)
    if first.config.preprocess.cascade_margin is not None and not isinstance(first, CascadePredictor):
        raise GliosegError(
            (args.model or [folder])[0],
            "is the second stage of a cascade: it needs its first stage's label map as input",
            "give the cascade's model folder as `glioseg cv pack` wrote it (the one holding prior/)",
        )
    predictor: Predictor | ShippedModels = first if args.model else shipped_models(first, make_predictor)
    # --raw: the series are prepared (minutes) only once every option and the model have been checked (a missing
    # --model was named after the preparation, and the OUT/prepared/<case> left behind then refused the rerun)
    prepared = _prepare_raw(args) if args.raw else None
    dataset = _dataset_or_files(args, required=(), require_labels=False)
    usable, refused = predictor.usable_cases(dataset.cases)  # a case lacking a modality the model cannot miss
    if refused and dataset.layout == "files":
        raise refused[0]
    dataset.cases, dataset.problems = usable, [*dataset.problems, *refused]
    cases = select_part(dataset.cases, args.num_parts, args.part_id)
    check_prediction_outputs(
        dataset.cases, args.out, save_probabilities=args.save_probabilities,
        protected=[dataset.root / "labelsTr"] if dataset.layout == "msd" else [],
        extra_outputs=[args.timings] if args.timings is not None else [],
    )
    problems = [str(p) for p in dataset.problems]
    started = time.perf_counter()
    report = predictor.predict_cases(
        cases, args.out, labels_convention=args.labels, save_probabilities=args.save_probabilities,
        resume=args.resume, progress=not args.quiet,
    )
    elapsed = time.perf_counter() - started
    for message in [*problems, *report.failed.values()]:
        print(f"error: {message}", file=sys.stderr)
    if report.timings:
        import statistics

        totals = [t["total"] for t in report.timings.values()]
        print(f"time per case: median {statistics.median(totals):.1f} s (read -> write, {len(totals)} cases)")
        if args.timings is not None:
            from glioseg.files import write_json

            write_json(args.timings, {"median_total_s": statistics.median(totals), "cases": report.timings})
    part = f" (part {args.part_id} of {args.num_parts})" if args.num_parts > 1 else ""
    print(
        f"{len(report.written)} predicted"
        f"{f' ({len(report.redone)} replacing outputs of another model or other settings)' if report.redone else ''}, "
        f"{len(report.skipped)} already done, "
        f"{len(report.failed) + len(problems)} failed{part} -> {args.out} ({elapsed:.1f} s)"
    )
    if report.failed or problems:
        if prepared is not None:  # the series' label maps of an earlier run went with the case's (predict_cases)
            for modality in dict.fromkeys([args.reference, *(args.on_series or ())]):
                earlier = args.out / f"{prepared[1]}_on_{modality}.nii.gz"
                if earlier.is_file():
                    earlier.unlink()
                    print(f"removed {earlier}: an earlier run's label map, not this run's result", file=sys.stderr)
        return 1
    if prepared is not None:
        from glioseg.prepare.pipeline import labels_to_series

        folder, case_id = prepared
        for modality in dict.fromkeys([args.reference, *(args.on_series or ())]):
            written = labels_to_series(
                args.out / f"{case_id}.nii.gz", folder, modality, args.out / f"{case_id}_on_{modality}.nii.gz"
            )
            print(f"label map on the {modality} series' own grid -> {written}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from glioseg.checksums import shipped_weights_dir
    from glioseg.cv.pack import export_pack, is_pack
    from glioseg.files import check_output_path
    from glioseg.inference.cascade import is_cascade_pack
    from glioseg.inference.export import export_model
    from glioseg.inference.predictor import resolve_checkpoints

    check_output_path(args.out, folder=True)
    if args.model is None and is_cascade_pack(shipped_weights_dir()):  # both stages of a shipped cascade
        args.model = shipped_weights_dir()
    if args.model is not None and is_pack(args.model):
        out = export_pack(args.model, args.out, args.format, overwrite=args.overwrite)
        print(
            f"exported the models of {args.model} -> {out} ({args.format}; run it: glioseg predict CASES -o OUT "
            f"--model {out})"
        )
        return 0
    checkpoint = resolve_checkpoints([args.model] if args.model else None)[0]
    exported = export_model(checkpoint, args.out, args.format, overwrite=args.overwrite)
    print(
        f"exported {checkpoint} -> {exported.folder} ({exported.format}, logits within "
        f"{exported.manifest['max_logit_difference_vs_torch']:.1g} of PyTorch)"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from glioseg.evaluation import evaluate, prediction_files, rules_lines, write_evaluation
    from glioseg.files import check_outputs_apart

    _check_output_folder(args.out)
    tables = [args.out / name for name in ("per_case.csv", "summary.csv", "summary.md")]
    check_outputs_apart([args.out, *tables], prediction_files(args.pred).values())
    result = evaluate(
        args.pred,
        args.ref,
        labels=args.labels,
        ref_labels=args.ref_labels,
        rules=args.rules,
        workers=args.workers,
        progress=not args.quiet,
    )
    files = write_evaluation(result, args.out)
    predictions = prediction_files(args.pred)
    for case_id in result.predictions_without_reference:
        unmatched = GliosegError(
            predictions[case_id],
            f"prediction has no labelled reference case {case_id} under {args.ref}",
            "check the case id, or pass the --ref folder that holds this case",
        )
        print(f"warning: {unmatched}", file=sys.stderr)
    for case_id in result.references_without_prediction:
        unmatched = GliosegError(
            Path(args.pred) / f"{case_id}.nii.gz",
            f"missing: reference case {case_id} has no prediction",
            "predict it (`glioseg predict --continue` fills in missing cases)",
        )
        print(f"warning: {unmatched}", file=sys.stderr)
    for message in result.failed.values():
        print(f"error: {message}", file=sys.stderr)
    if result.summary:
        for line in rules_lines(result):
            print(line)
        prefix = "lesion_" if result.primary == "lesion-wise" else ""
        means = ", ".join(
            f"{prefix}{k} {result.summary[prefix + k]['mean']:.4f}" for k in ("dice_wt", "dice_tc", "dice_et")
        )
        print(f"{len(result.rows)} cases evaluated: mean {means} -> {files[0].parent}")
    else:
        print(f"no case evaluated -> {files[0].parent}")
    return 0 if result.complete else 1


def cmd_report(args: argparse.Namespace) -> int:
    from glioseg.files import check_output_path
    from glioseg.reporting.report import build_report, parse_named

    check_output_path(args.out, folder=True)
    evaluations = {}
    for item in args.eval or ():
        name, folder = parse_named(item)
        model, sep, split = (name or "").partition(":")
        if not (sep and model and split):
            raise GliosegError(
                None, f"--eval '{item}' is not MODEL:SPLIT=DIR", "write e.g. --eval sa_unet:test=eval/sa_unet_test"
            )
        evaluations[(model, split)] = folder
    path = build_report(
        [parse_named(r) for r in args.runs], args.out, cases_root=args.cases,
        predictions=[parse_named(p) for p in args.pred or ()], evaluations=evaluations, num_cases=args.num_cases,
    )
    print(f"report written to {path}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from glioseg.files import check_output_path, check_outputs_apart
    from glioseg.labels import ConventionMismatch
    from glioseg.reporting.report import parse_named
    from glioseg.reporting.viewer import case_viewer, prediction_names, viewer_inputs

    check_output_path(args.out, folder=False)
    dataset = _dataset_or_files(args, required=())
    cases = dataset.cases
    if args.case_id is not None and not any(getattr(args, m) for m in MODALITIES):
        cases = [case for case in cases if case.case_id == args.case_id]
    if len(cases) != 1:
        if dataset.problems and not cases:
            raise dataset.problems[0]
        found = (
            f"{len(cases)} cases ({', '.join(c.case_id for c in cases[:4])}{', ...' if len(cases) > 4 else ''})"
            if cases
            else f"no case {args.case_id}"
        )
        raise GliosegError(args.root, f"holds {found}", "pass one case folder, or choose one with --case-id ID")
    case = cases[0]
    predictions = prediction_names(case, [parse_named(p) for p in args.pred or ()])
    check_outputs_apart([args.out], *viewer_inputs(case, predictions))
    try:
        page = case_viewer(case, args.out, predictions=predictions, labels=args.labels)
    except ConventionMismatch as exc:  # its fix speaks of evaluating; here the flag is --labels
        raise GliosegError(
            exc.path,
            exc.problem.replace("refusing to score it", "not shown"),
            "pass --labels with the convention of the --pred files",
        ) from None
    print(
        f"viewer page of {case.case_id} written to {page.path} ({page.size / 1e6:.1f} MB; label maps: "
        f"{', '.join(page.labelmaps) or 'none'})"
    )
    return 0


def cmd_cv_train(args: argparse.Namespace) -> int:
    from glioseg.cv.recipe import load_recipe
    from glioseg.cv.train import FoldsFailed, run_cv_train

    recipe = load_recipe(args.preset, args.set or (), folds=args.folds)
    started = time.perf_counter()
    try:
        work = run_cv_train(
            recipe,
            args.data,
            args.work,
            folds=args.fold,
            all_cases=args.all,
            workers=args.workers,
            threads=args.threads,
            device=args.device,
            progress=not args.quiet,
        )
    except FoldsFailed as exc:  # the other folds were trained: one line per failed fold, then what to do
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(
            f"{len(exc.folds)} fold(s) failed, the others were trained -> {args.work}. Fix: {exc.fix}", file=sys.stderr
        )
        return EXIT_ERROR
    folds = ", ".join(map(str, dict.fromkeys(args.fold or range(recipe.folds))))
    what = "the all-cases model" if args.all else f"fold(s) {folds}"
    print(
        f"cross-validation {recipe.source}: {what} of {len(recipe.stages)} stage(s) trained"
        f"{'' if args.all else ' and held-out cases predicted'} -> {work.path} ({time.perf_counter() - started:.0f} s)"
    )
    return 0


def cmd_cv_report(args: argparse.Namespace) -> int:
    from glioseg.cv.report import write_cv_report
    from glioseg.cv.workdir import open_work

    _check_output_folder(args.out)
    report = write_cv_report(
        open_work(args.work),
        args.out,
        stage=args.stage,
        candidates_file=args.candidates,
        rules=args.rules,
        workers=args.workers,
    )
    raw, post = report.raw, report.postprocessed
    means = "  ".join(
        f"{r.upper()} {sum(raw[c][f'dice_{r}'] for c in report.cases) / len(report.cases):.3f} -> "
        f"{sum(post[c][f'dice_{r}'] for c in report.cases) / len(report.cases):.3f}"
        for r in ("wt", "tc", "et")
    )
    print(f"{len(report.cases)} cases out-of-fold, Dice raw -> post-processed (nested): {means}")
    print(
        f"nested choice: {', '.join(f'fold {f}: {n}' for f, n in sorted(report.nested.items()))}; chosen on all cases "
        f"(for cv pack): {report.all_cases}"
    )
    print(f"report written to {args.out}")
    return 0


def cmd_cv_pack(args: argparse.Namespace) -> int:
    from glioseg.cv.pack import pack_members, pack_models

    out = pack_models(
        args.work,
        args.out,
        stage=args.stage,
        folds=args.fold,
        all_cases=args.all,
        postprocess=args.postprocess,
        report=args.report,
        overwrite=args.overwrite,
    )
    members = pack_members(out)
    print(
        f"packed {len(members)} model(s) ({', '.join(m.name for m in members)}) -> {out} (run it: glioseg predict "
        f"CASES -o OUT --model {out})"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from glioseg.demo import run_demo

    started = time.perf_counter()
    path = run_demo(args.out, quick=args.quick, threads=args.threads, progress=not args.quiet)
    print(f"demo finished in {time.perf_counter() - started:.0f} s; open the report: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glioseg", description="Brain glioma segmentation in multi-modal MRI (BraTS)."
    )
    parser.add_argument("--version", action="version", version=f"glioseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="synthetic data -> train the three networks -> predict -> evaluate -> report")
    p.add_argument("--out", type=Path, default=Path("glioseg-demo"), help="output folder (default: ./glioseg-demo)")
    p.add_argument("--quick", action="store_true", help="about one minute instead of about ten")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: the cores that other processes leave idle)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("inspect", help="list the cases of a dataset and check them")
    p.add_argument("root", nargs="?", type=Path, help="dataset folder (any BraTS layout or MSD Task01)")
    p.add_argument("--deep", action="store_true", help="read every image fully (NaN, empty modalities)")
    _add_files_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("synth", help="write a synthetic BraTS-like cohort")
    p.add_argument("out", type=Path)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3, default=(96, 96, 96), metavar=("X", "Y", "Z"))
    p.add_argument("--layout", default="brats2020", choices=("brats2018", "brats2020", "brats2021", "brats2023", "msd"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-labels", action="store_true", help="write images only (inference cases)")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a folder that already holds cases (replacing those of the same ids)",
    )
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("preprocess", help="preprocess a dataset into a cache")
    p.add_argument("root", nargs="?", type=Path)
    p.add_argument("--preset", default="default", help="paper, default, cpu or a YAML file")
    p.add_argument("--out", type=Path, required=True, help="cache folder")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a preset value")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_files_options(p)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train a model (also under torchrun for several GPUs)")
    p.add_argument("--preset", default="cpu", help="paper, default, cpu or a YAML file")
    p.add_argument("--data", type=Path, help="raw dataset folder (preprocessed into --cache first)")
    p.add_argument("--cache", type=Path, help="preprocessed cache (default: beside the run, per preset)")
    p.add_argument("--run-dir", dest="run", type=Path, help="run folder to create")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run exactly")
    p.add_argument("--model", choices=NETWORKS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--loss", choices=LOSS_NAMES)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--folds", type=int, metavar="K", help="k-fold cross-validation: split the cases into K folds (train.folds)"
    )
    p.add_argument(
        "--fold",
        type=int,
        metavar="I",
        help="the fold held out for validation, 0..K-1 (train.fold; needs --folds or a preset with train.folds)",
    )
    p.add_argument("--time-limit", type=float, metavar="MIN", help="stop after the epoch that passes MIN minutes")
    p.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (fine-tuning; optimiser and schedule start fresh)",
    )
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any preset value")
    p.add_argument("--workers", type=int, default=2, help="preprocessing processes")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment cases: one label map per case on its original grid")
    p.add_argument("root", nargs="?", type=Path, metavar="INPUT", help="a case folder or a dataset folder (any layout)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (<case>.nii.gz per case)")
    p.add_argument(
        "--model",
        nargs="+",
        action="extend",
        metavar="RUN",
        help="run folder(s) or .pt checkpoint(s); several are averaged "
        "(default: the shipped model; for a case lacking a modality, the shipped missing-modality model)",
    )
    p.add_argument("--labels", choices=tuple(CONVENTIONS), help="label convention of the output (default: the input's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--overlap", type=float, help="sliding-window overlap (default: the model's inference.overlap, 0.5)")
    p.add_argument(
        "--sw-batch-size", type=int, help="windows per forward pass (default: the model's inference.sw_batch_size, 4)"
    )
    p.add_argument(
        "--window",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="sliding-window size in voxels (default: the model's inference.window)",
    )
    p.add_argument(
        "--mirror",
        action="store_true",
        default=None,
        help="test-time augmentation over the 8 axis flips (8x slower; default: the model's inference.mirror)",
    )
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>_probabilities.npz (float16)")
    p.add_argument(
        "--et-threshold",
        type=int,
        metavar="VOXELS",
        help="predicted ET smaller than this becomes necrosis (0: off; default: the model's postprocess section)",
    )
    p.add_argument(
        "--min-component-size",
        type=int,
        metavar="VOXELS",
        help=(
            "drop tumor components smaller than this, keeping the largest (0: off; default: the model's postprocess "
            "section)"
        ),
    )
    p.add_argument(
        "--min-et-component-size",
        type=int,
        metavar="VOXELS",
        help=(
            "ET components smaller than this become necrosis, the largest kept (0: off; default: the model's "
            "postprocess section)"
        ),
    )
    p.add_argument(
        "--min-core-component-size",
        type=int,
        metavar="VOXELS",
        help="tumor-core components smaller than this become edema, the largest kept (0: off; default: the model's)",
    )
    p.add_argument(
        "--min-et-component-fraction",
        type=float,
        metavar="F",
        help="ET components under F x the largest ET component become necrosis (0: off; default: the model's)",
    )
    p.add_argument(
        "--min-component-fraction",
        type=float,
        metavar="F",
        help="whole-tumor components under F x the largest are removed (0: off; default: the model's)",
    )
    p.add_argument(
        "--max-components",
        type=int,
        metavar="N",
        help="keep at most N whole-tumor components, largest first (0: no limit; default: the model's; the shipped "
        "model keeps 1: give 0 with --min-component-fraction to keep a second tumour focus)",
    )
    p.add_argument(
        "--keep-within",
        type=float,
        metavar="MM",
        dest="keep_within_mm",
        help="a whole-tumor component within MM millimetres of the largest is kept as part of it, whatever the "
        "size rules (0: off; default: the model's)",
    )
    p.add_argument(
        "--min-core-component-fraction",
        type=float,
        metavar="F",
        help="tumor-core components under F x the largest become edema (0: off; default: the model's)",
    )
    p.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="skip cases whose output exists and was written by the same model(s) and settings (others are redone)",
    )
    p.add_argument(
        "--num-parts",
        type=int,
        default=1,
        metavar="K",
        help="split the cases into K parts (case i goes to part i %% K)",
    )
    p.add_argument("--part-id", type=int, default=0, metavar="I", help="the part to run, 0..K-1")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (0: for torch the cores that other processes leave idle, for the runtimes their default)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        help=(
            "what runs the network (default auto: the fastest installed that matches PyTorch, measured once per model "
            "and CPU)"
        ),
    )
    p.add_argument("--timings", type=Path, metavar="FILE", help="write per-case stage timings as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_files_options(p)
    _add_raw_options(p, in_predict=True)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "prepare",
        help=(
            "scanner series (DICOM folders or NIfTI, any grids) -> co-registered, 1 mm, skull-stripped BraTS-ready "
            "NIfTIs"
        ),
    )
    for m in MODALITIES:
        p.add_argument(f"--{m}", type=Path, metavar="FILE_OR_DICOM_FOLDER", help=f"the {m} series")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (the case goes to OUT/<case-id>/)")
    p.add_argument("--case-id", default="case", help="case id and file-name prefix (default: case)")
    _add_raw_options(p, in_predict=False)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "export", help="export a model to ONNX or OpenVINO (for `predict --model DIR` with the fast runtimes)"
    )
    p.add_argument(
        "model", nargs="?", type=Path, metavar="MODEL", help="run folder or .pt checkpoint (default: the shipped model)"
    )
    p.add_argument("--format", default="onnx", choices=("onnx", "openvino"))
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (network, config.yaml, export.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=cmd_export)

    cv = sub.add_parser(
        "cv", help="cross-validation: train every fold, score out-of-fold, pack a model"
    ).add_subparsers(dest="cv_command", required=True, metavar="STEP")
    p = cv.add_parser("train", help="train every fold of a recipe and predict each fold's held-out cases (resumable)")
    p.add_argument(
        "--preset", default="cpu", help="paper, default, cpu, a preset YAML file, or a recipe file with stages:"
    )
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        action="extend",
        required=True,
        metavar="ROOT",
        help="dataset folder(s) with labels (any layout; several are joined)",
    )
    p.add_argument(
        "--work",
        type=Path,
        required=True,
        help="work folder (caches, runs, out-of-fold predictions); the same command resumes it",
    )
    p.add_argument("--folds", type=int, metavar="K", help="number of folds (default: the recipe's, else 5)")
    p.add_argument("--fold", type=int, nargs="+", metavar="I", help="only these folds (e.g. one per GPU)")
    p.add_argument("--all", action="store_true", help="train the model on all cases instead (for cv pack --all)")
    p.add_argument("--workers", type=int, default=1, help="folds trained at once, one process each (2 on a 2-core CPU)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads per process (0: the cores shared among the workers)"
    )
    p.add_argument("--device", choices=DEVICES, help="default: the preset's train.device")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a preset value in every stage")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_cv_train, command="cv train")
    p = cv.add_parser(
        "report", help="out-of-fold scores, the nested post-processing choice, per-case CSV, summary, figure"
    )
    p.add_argument("work", type=Path, help="the work folder of `glioseg cv train`")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="report folder (per_case.csv, summary.md, summary.csv, choice.json, dice_per_case.png)",
    )
    p.add_argument("--stage", help="the stage to report (default: the last)")
    p.add_argument(
        "--candidates",
        type=Path,
        metavar="YAML",
        help="post-processing candidates (default: glioseg/configs/postprocess_candidates.yaml)",
    )
    p.add_argument(
        "--rules",
        choices=_RuleNames(),
        metavar="RULES",
        help="lesion-wise rule set (default: from the case names, as evaluate)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes scoring cases")
    p.set_defaults(func=cmd_cv_report, command="cv report")
    p = cv.add_parser(
        "pack",
        help=(
            "a model folder for `glioseg predict --model`: fold models (or the all-cases model), post-processing, "
            "checksums, model card"
        ),
    )
    p.add_argument("work", type=Path, help="the work folder of `glioseg cv train`")
    p.add_argument("-o", "--out", type=Path, required=True, help="the model folder to write")
    p.add_argument("--stage", help="the stage to pack (default: the last)")
    p.add_argument("--fold", type=int, nargs="+", metavar="I", help="only these folds (default: all, an ensemble)")
    p.add_argument("--all", action="store_true", help="pack the model trained on all cases (cv train --all)")
    p.add_argument(
        "--postprocess",
        default="chosen",
        choices=("chosen", "none"),
        help="chosen: what cv report chose on all cases (default)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="take the choice and out-of-fold scores from this cv report folder (for a work folder without folds)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=cmd_cv_pack, command="cv pack")

    p = sub.add_parser("evaluate", help="BraTS metrics of a prediction folder against reference cases")
    p.add_argument("--pred", type=Path, required=True, metavar="DIR", help="folder of <case>.nii.gz predictions")
    p.add_argument(
        "--ref", type=Path, required=True, metavar="ROOT", help="reference dataset (any layout, with labels)"
    )
    p.add_argument(
        "-o", "--out", type=Path, required=True, help="output folder (per_case.csv, summary.csv, summary.md)"
    )
    p.add_argument(
        "--labels",
        choices=tuple(CONVENTIONS),
        help=(
            "convention of the predictions (default: the references'; predictions with values of another convention "
            "are refused)"
        ),
    )
    p.add_argument(
        "--ref-labels", choices=tuple(CONVENTIONS), help="convention of the references (default: their layout's)"
    )
    p.add_argument(
        "--rules",
        choices=_RuleNames(),
        metavar="RULES",
        help=(
            "BraTS lesion-wise rule set: %(choices)s; shown first (default: from the case names; pre-2023 layouts: "
            "legacy first, brats2023-gli beside it)"
        ),
    )
    p.add_argument("--workers", type=int, default=2, help="processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="HTML/Markdown report: curves, tables, prediction images")
    p.add_argument("runs", nargs="*", metavar="[NAME=]RUN", help="training run folders (metrics.csv, eval_<split>/)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (report.html, report.md, PNGs)")
    p.add_argument("--cases", type=Path, metavar="ROOT", help="reference cases for the prediction images")
    p.add_argument(
        "--pred", action="append", metavar="[NAME=]DIR", help="prediction folder of one model (repeat per model)"
    )
    p.add_argument(
        "--eval",
        action="append",
        metavar="MODEL:SPLIT=DIR",
        help="a `glioseg evaluate` folder of one model on one split",
    )
    p.add_argument("--num-cases", type=int, default=3, help="cases shown in the prediction images")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "view", help="one self-contained HTML page with an interactive 3D viewer of a case (opens offline)"
    )
    p.add_argument(
        "root",
        nargs="?",
        type=Path,
        metavar="CASE",
        help="a case folder (any layout), or a dataset folder with --case-id",
    )
    p.add_argument(
        "--pred",
        nargs="+",
        action="extend",
        metavar="[NAME=]FILE",
        help="label map(s) to show beside the reference, e.g. unet=preds/unet/CASE.nii.gz",
    )
    p.add_argument(
        "--labels", choices=tuple(CONVENTIONS), help="label convention of the --pred files (default: the case's)"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="the HTML file to write")
    _add_files_options(p)
    p.set_defaults(func=cmd_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        check_options(args)
        with sigterm_raises():  # SIGTERM unwinds like Ctrl-C: temporary files removed, workers ended
            return func(args)
    except GliosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        atexit.register(logging.disable, logging.INFO)  # the word stays the last line: exit hooks (torch's) log nothing
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        atexit.register(logging.disable, logging.INFO)
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # output piped into e.g. `head`, which exited: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
