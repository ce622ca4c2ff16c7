"""Command-line entry points: thin wrappers that parse arguments and call the library.

Every user-facing problem surfaces as ``error: <file>: <problem>. Fix: <what to do>`` on
stderr with exit status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from glioseg import __version__
from glioseg.errors import GliosegError

logger = logging.getLogger("glioseg")

EXIT_ERROR = 2


def _dataset_or_files(args: argparse.Namespace, required: Sequence[str]):
    """Discover cases from ``args.root`` or build one from explicit ``--flair/--t1/--t1ce/--t2`` files."""
    from glioseg.data.discovery import Dataset, case_from_files, discover

    explicit = [getattr(args, m, None) for m in ("flair", "t1", "t1ce", "t2")]
    if any(explicit):
        if args.root is not None:
            raise GliosegError(args.root, "both a folder and explicit files given", "pass either ROOT or --flair/--t1/--t1ce/--t2")
        case = case_from_files(*explicit, seg=args.seg, case_id=args.case_id)
        case.require(required)
        return Dataset(root=case.reference_image.parent, layout="files", cases=[case])
    if args.root is None:
        raise GliosegError(None, "no input given", "pass a dataset folder, or --flair/--t1/--t1ce/--t2 files")
    return discover(args.root, required=required)


def _add_files_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("explicit files for one case (instead of ROOT)")
    for m in ("flair", "t1", "t1ce", "t2", "seg"):
        group.add_argument(f"--{m}", type=Path, metavar="FILE")
    group.add_argument("--case-id", help="case id for explicit files (default: from the file name)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from glioseg.data.inspect import summarise

    dataset = _dataset_or_files(args, required=())
    summary = summarise(dataset, deep=args.deep)
    for line in summary.lines():
        print(line)
    return 1 if summary.problems else 0


def cmd_synth(args: argparse.Namespace) -> int:
    from glioseg.data.synth import write_cohort

    started = time.perf_counter()
    ids = write_cohort(args.out, cases=args.cases, shape=tuple(args.shape), layout=args.layout, seed=args.seed, with_labels=not args.no_labels)
    print(f"wrote {len(ids)} synthetic {args.layout} cases to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from glioseg.config import load_config
    from glioseg.data.preprocess import preprocess_dataset

    config = load_config(args.preset, args.set or ())
    dataset = _dataset_or_files(args, required=config.preprocess.modalities)
    for problem in dataset.problems:
        print(f"error: {problem}", file=sys.stderr)
    started = time.perf_counter()
    report = preprocess_dataset(dataset.cases, config.preprocess, args.out, workers=args.workers, progress=not args.quiet)
    elapsed = time.perf_counter() - started
    print(
        f"{len(report.done)} preprocessed, {len(report.cached)} already cached, "
        f"{len(report.dropped)} dropped, {len(report.failed) + len(dataset.problems)} failed "
        f"-> {args.out} ({elapsed:.1f} s)"
    )
    for case_id, fraction in sorted(report.dropped.items()):
        print(f"dropped {case_id}: tumor is {100 * fraction:.2f}% of the crop (needs > {100 * config.preprocess.min_tumor_fraction:g}%)")
    for message in report.failed:
        print(f"error: {message}", file=sys.stderr)
    if config.train.folds == 0 and (report.done or report.cached):
        from glioseg.data.splits import ratio_split, save_split

        kept = sorted(report.done + report.cached)
        if len(kept) >= 2:
            split = ratio_split(kept, val_fraction=config.train.val_fraction, seed=config.train.split_seed)
            save_split(Path(args.out) / "split.json", split)
            print(f"split: {len(split['train'])} train / {len(split['val'])} val -> {Path(args.out) / 'split.json'}")
    return EXIT_ERROR if report.failed or dataset.problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glioseg", description="Brain glioma segmentation in multi-modal MRI (BraTS).")
    parser.add_argument("--version", action="version", version=f"glioseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except GliosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
