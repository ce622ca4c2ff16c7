"""Out-of-fold Dice of fold models for each of the 15 non-empty subsets of FLAIR, T1, T1ce and T2.

Given fold run folders (each with ``last.pt`` and ``split.json``, as ``glioseg train --folds K
--fold I`` writes them) and the data they were trained on, every fold model predicts its own
held-out cases (``split.json``'s ``val``) once per subset, with the other modalities hidden (the
case is given to the predictor without their files, exactly as ``glioseg predict`` gets a case
folder that lacks them), and each subset's predictions are scored against the reference labels
with ``glioseg evaluate``'s legacy Dice (:func:`dice_rows`). A model trained without modality
dropout is scored on the full subset only (it refuses the others) unless ``--force-missing``.

Usage (from the repository root)::

    python benchmarks/missing_modalities.py --runs /tmp/runs/fold0 /tmp/runs/fold1 ... \\
        --data ../shared/data/brats2018 --work /tmp/mm-work --out benchmarks/missing_modalities/NAME

``--runs`` takes run folders or folders holding them (a ``glioseg cv train`` stage folder,
``WORK/<stage>``, holds ``fold0`` ... ``fold<K-1>``); ``--data`` one or more dataset folders.
Writes ``OUT/subsets.csv`` (one row per subset: mean Dice WT/TC/ET and the change against the
full subset), ``OUT/per_case.csv`` and ``OUT/subsets.md``. Predictions go to ``WORK/<subset>/``
and are kept: a rerun predicts only what is missing (label maps whose stamp is this model's and
settings').

Cost: each fold model is loaded once and predicts all its subsets; each held-out case is read
from disk once and every subset is cut from that read (the same arrays a read of the case
without the other files gives, see :class:`ReadOnce`), then preprocessed, predicted and written
as ``glioseg predict`` does. ``--window`` (e.g. one window covering the whole 2 mm brain) and
``--backend`` are ``glioseg predict``'s. ``--predict-only`` with disjoint ``--runs`` lets several
processes predict side by side; a last run without it scores. ``--force-missing`` predicts
subsets with a model trained without modality dropout (which ``glioseg predict`` refuses), to
show what such a model does with a zero channel; its rows are marked as such.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glioseg.data.discovery import LoadedCase, load_case
from glioseg.inference.predictor import Predictor

MODALITY_LABELS = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
REGIONS = ("wt", "tc", "et")

logger = logging.getLogger("missing_modalities")


def subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (in their order), the largest first, then in order of
    ``itertools.combinations``."""
    return [combo for size in range(len(modalities), 0, -1) for combo in itertools.combinations(modalities, size)]


def subset_name(subset: Sequence[str]) -> str:
    """``flair+t1ce``: a folder name and a table key."""
    return "+".join(subset)


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """The run folders among ``paths`` and their sub-folders (those with ``last.pt`` and ``split.json``), sorted."""
    runs: list[Path] = []
    for path in paths:
        if (path / "last.pt").is_file() and (path / "split.json").is_file():
            runs.append(path)
            continue
        found = (
            sorted(p for p in path.iterdir() if (p / "last.pt").is_file() and (p / "split.json").is_file())
            if path.is_dir()
            else []
        )
        if not found:
            raise SystemExit(
                f"error: {path}: no run folder (last.pt and split.json) in it. Fix: pass the folders `glioseg train "
                "--folds K --fold I` wrote"
            )
        runs.extend(found)
    return runs


def held_out(runs: Sequence[Path]) -> dict[Path, list[str]]:
    """Each run's held-out case ids; a case held out by two runs is refused (it would be scored twice)."""
    from glioseg.data.splits import load_split

    out: dict[Path, list[str]] = {}
    owner: dict[str, Path] = {}
    for run in runs:
        ids = list(load_split(run / "split.json")["val"])
        for case_id in ids:
            if case_id in owner:
                raise SystemExit(
                    f"error: {run}: case {case_id} is also held out by {owner[case_id]}. Fix: pass the folds of one "
                    "cross-validation"
                )
            owner[case_id] = run
        out[run] = ids
    return out


class ReadOnce(Predictor):
    """A predictor that reads and preprocesses a case once for all its subsets.

    After :meth:`hold` (the case read with all the model's modalities), :meth:`read` of that
    case with some files left out returns the held arrays of the modalities it has, which is
    what :func:`glioseg.data.discovery.load_case` returns for it when every file of the case
    has the same affine (BraTS: checked in :meth:`hold`; otherwise nothing is held and every
    read goes to disk).

    :meth:`preprocess` of a subset whose brain mask (:func:`~glioseg.data.preprocess.brain_mask`
    of the modalities present) is the full case's reuses the full case's preprocessed image with
    the absent channels set to 0: cropping (the mask's box), z-scoring (inside the mask) and
    resampling act on each channel alone, so it is the image the subset's own preprocessing
    gives. The first such reuse of every case is checked against that preprocessing (a
    mismatch stops the run); a subset with another mask is preprocessed on its own. Network,
    labels and writing are :meth:`Predictor.predict_case`'s.
    """

    held: LoadedCase | None = None
    _held_pre: Any = None
    _held_mask: Any = None
    _checked: bool = False
    reused: int = 0

    def hold(self, case: Any) -> None:
        """Read ``case`` with all the model's modalities, to serve its subsets from memory."""
        import nibabel as nib
        import numpy as np

        modalities = tuple(self.config.preprocess.modalities)
        affines = [nib.load(str(case.images[m])).affine for m in modalities if m in case.images]  # type: ignore[attr-defined]
        same = case.layout != "msd" and all(np.array_equal(a, affines[0]) for a in affines)
        self.held = load_case(case, modalities, with_label=False) if same and len(affines) == len(modalities) else None

    def read(self, case: Any) -> LoadedCase:
        held = self.held
        if held is None or held.case.case_id != case.case_id:
            return super().read(case)
        present = self.modalities_of(case)
        image = held.image[[held.modalities.index(m) for m in present]]
        return LoadedCase(case, image, present, None, held.affine)

    def release(self) -> None:
        """Forget the held case."""
        self.held = self._held_pre = self._held_mask = None
        self._checked = False

    def preprocess(self, loaded: LoadedCase) -> Any:
        import numpy as np

        from glioseg.data.modalities import drop_modalities
        from glioseg.data.preprocess import brain_mask

        held, config = self.held, self.config.preprocess
        if held is None or held.case.case_id != loaded.case.case_id or loaded.modalities == held.modalities:
            return super().preprocess(loaded)
        if config.crop != "brain" or config.normalization != "zscore":
            return super().preprocess(loaded)
        if self._held_mask is None:
            self._held_mask = brain_mask(held.image)
            self._held_pre = super().preprocess(held)
        if not np.array_equal(brain_mask(loaded.image), self._held_mask):
            return super().preprocess(loaded)
        keep = [m in loaded.modalities for m in held.modalities]
        pre = dataclasses.replace(self._held_pre, image=drop_modalities(self._held_pre.image, keep))
        if not self._checked:
            own = super().preprocess(loaded)
            if own.crop != pre.crop or not np.array_equal(own.image, pre.image):
                raise SystemExit(
                    f"error: {loaded.case.case_id}: the full case's preprocessed image with "
                    f"{', '.join(loaded.modalities)} kept "
                    "is not that subset's own. Fix: report this; ReadOnce's shortcut does not hold here"
                )
            self._checked = True
        self.reused += 1
        return pre


def load_data(roots: Sequence[Path]) -> dict[str, Any]:
    """Case id -> case over every dataset folder (images need not be complete); a case id found twice is refused."""
    from glioseg.data.discovery import discover

    cases: dict[str, Any] = {}
    for root in roots:
        for case in discover(root, required=()).cases:
            if case.case_id in cases:
                raise SystemExit(
                    f"error: {root}: case {case.case_id} is also in {cases[case.case_id].reference_image.parent}. Fix: "
                    "pass each case once"
                )
            cases[case.case_id] = case
    return cases


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the label maps are made: ``glioseg predict``'s options."""

    threads: int = 1
    window: tuple[int, ...] | None = None
    backend: str = "torch"
    force_missing: bool = False


def load_predictor(run: Path, settings: Settings) -> ReadOnce:
    """The fold model of ``run`` (``last.pt``, the model ``glioseg cv`` scores out-of-fold)."""
    predictor = ReadOnce.from_checkpoints(
        [run / "last.pt"], device="cpu", threads=settings.threads, backend=settings.backend, patch_size=settings.window,
    )
    assert isinstance(predictor, ReadOnce)
    if settings.force_missing and not predictor.accepts_missing:  # zero channels for a model that never saw one
        augment = dataclasses.replace(predictor.config.augment, modality_dropout=1.0)
        predictor.config = dataclasses.replace(predictor.config, augment=augment)
    return predictor


def predict_subsets(
    runs: Sequence[Path],
    data: Sequence[Path],
    work: Path,
    settings: Settings,
    only: Sequence[tuple[str, ...]] | None = None,
) -> dict[tuple[str, ...], str]:
    """Predict every run's held-out cases with every subset its model accepts, into ``work/<subset>/``.

    Args:
        only: the subsets to predict (``None``: all 15).

    Returns:
        subset -> why it was not predicted, for the subsets some model refuses.
    """
    from glioseg.inference.predictor import output_path

    cases = load_data(data)
    skipped: dict[tuple[str, ...], str] = {}
    for run, ids in held_out(runs).items():
        missing = [i for i in ids if i not in cases]
        if missing:
            raise SystemExit(
                f"error: {data[0]}: held-out case(s) {', '.join(missing)} of {run} not found. Fix: pass the data the "
                "folds were trained on"
            )
        predictor = load_predictor(run, settings)
        modalities = tuple(predictor.config.preprocess.modalities)
        chosen = [s for s in subsets(modalities) if only is None or s in only]
        for subset in chosen:
            if subset != modalities and not predictor.accepts_missing:
                skipped[subset] = f"{run.name} was trained without modality dropout"
        todo = [s for s in chosen if s not in skipped]
        for case_id in ids:
            parts = {
                s: dataclasses.replace(
                    cases[case_id], images={m: p for m, p in cases[case_id].images.items() if m in s}
                )
                for s in todo
            }
            pending = [s for s in todo if not predictor.is_done(parts[s], work / subset_name(s))]
            if not pending:
                continue
            predictor.hold(cases[case_id])
            for subset in pending:
                out_dir = work / subset_name(subset)
                out_dir.mkdir(parents=True, exist_ok=True)
                started = time.perf_counter()
                predictor.predict_case(parts[subset], output_path(out_dir, case_id))
                logger.info("%s %s %s: %.1f s", run.name, subset_name(subset), case_id, time.perf_counter() - started)
            predictor.release()
        logger.info(
            "%s: %d subset image(s) cut from the full case's preprocessing (the brain mask the same)",
            run.name,
            predictor.reused,
        )
    return skipped


def dice_rows(
    pred_dir: Path, cases: dict[str, Any], references: dict[str, Any], ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Legacy Dice WT/TC/ET of every label map in ``pred_dir`` (of the cases ``ids``; ``None``: all) against its case's
    reference.

    The Dice of :func:`glioseg.evaluation.evaluate` (``glioseg.metrics.dice`` of the BraTS regions,
    1 when both are empty), without the surface and lesion-wise metrics the table does not show
    (they cost seconds per case; a test checks the two agree). ``references`` caches each case's
    reference regions across subsets.
    """
    from glioseg.data.io import read_volume
    from glioseg.labels import region_masks, to_internal
    from glioseg.metrics import dice

    rows: list[dict[str, Any]] = []
    for path in sorted(p for p in pred_dir.glob("*.nii.gz") if "_probabilities" not in p.name):
        case_id = path.name[: -len(".nii.gz")]
        if ids is not None and case_id not in ids:  # another fold's case (a work folder shared by several runs)
            continue
        case = cases.get(case_id)
        if case is None or case.label is None:
            raise SystemExit(
                f"error: {path}: no labelled case {case_id} in the data. Fix: pass every dataset folder the folds were "
                "trained on"
            )
        if case_id not in references:
            references[case_id] = region_masks(
                to_internal(read_volume(case.label, dtype=None).data, case.convention, case.label)
            )
        pred = region_masks(to_internal(read_volume(path, dtype=None).data, case.convention, path))
        ref = references[case_id]
        if next(iter(pred.values())).shape != next(iter(ref.values())).shape:
            raise SystemExit(
                f"error: {path}: shape differs from the reference {case.label}. Fix: predict it again (delete it)"
            )
        rows.append({"case": case_id, **{f"dice_{r}": dice(pred[r], ref[r]) for r in REGIONS}})
    return rows


def score_subsets(
    modalities: Sequence[str], data: Sequence[Path], work: Path, skipped: dict[tuple[str, ...], str],
    only: Sequence[tuple[str, ...]] | None = None, forced: bool = False, ids: Sequence[str] | None = None,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Mean Dice per subset (rows) and per case (per-case rows), see :func:`dice_rows`."""
    from glioseg.metrics import MetricAccumulator

    cases = load_data(data)
    references: dict[str, Any] = {}
    rows: list[dict[str, object]] = []
    per_case: list[dict[str, object]] = []
    for subset in subsets(modalities):
        name = subset_name(subset)
        row: dict[str, object] = {"subset": name, "modalities": len(subset)}
        if subset in skipped or (only is not None and subset not in only):
            rows.append({**row, "cases": 0, "note": skipped.get(subset, "not asked for (--subsets)")})
            continue
        accumulator = MetricAccumulator()
        for case_row in dice_rows(work / name, cases, references, ids):
            accumulator.add(str(case_row["case"]), {f"dice_{r}": case_row[f"dice_{r}"] for r in REGIONS})
            per_case.append(
                {"subset": name, "case": case_row["case"], **{f"dice_{r}": case_row[f"dice_{r}"] for r in REGIONS}}
            )
        summary = accumulator.summary()
        note = (
            "forced: zero channels given to a model trained without modality dropout"
            if forced and subset != tuple(modalities)
            else ""
        )
        rows.append(
            {
                **row,
                "cases": len(accumulator),
                **{f"dice_{r}": summary[f"dice_{r}"]["mean"] for r in REGIONS},
                "note": note,
            }
        )
    full = rows[0]
    for row in rows:
        for r in REGIONS:
            if f"dice_{r}" in row and f"dice_{r}" in full:
                row[f"change_{r}"] = float(row[f"dice_{r}"]) - float(full[f"dice_{r}"])  # type: ignore[arg-type]
    return rows, per_case


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, object]], runs: Sequence[Path], data: Sequence[Path], how: str = "") -> str:
    """The table: one row per subset, Dice WT/TC/ET and the change against all four modalities."""
    lines = [
        "# Out-of-fold Dice per subset of modalities",
        "",
        f"Fold models: {', '.join(str(r) for r in runs)} (each `last.pt` on its own held-out cases); data: "
        f"{', '.join(str(d) for d in data)}.",
        "Absent modalities are given to the network as zero channels (`glioseg.data.modalities`); labels after",
        "the checkpoint's own `postprocess` section, scored with `glioseg evaluate`'s legacy Dice (mean over cases; 1 "
        "when both are empty).",
        *([how] if how else []),
        "",
        "| modalities | cases | Dice WT | Dice TC | Dice ET | change WT | change TC | change ET |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = sorted({str(row["note"]) for row in rows if row.get("note") and not row.get("cases")})
    forced = sorted({str(row["note"]) for row in rows if row.get("note") and row.get("cases")})
    for row in rows:
        label = ", ".join(MODALITY_LABELS.get(m, m) for m in str(row["subset"]).split("+"))
        if not row.get("cases"):
            lines.append(f"| {label} | 0 | - | - | - | - | - | - |")
            continue
        if row.get("note"):
            label += " (forced)"
        cells = [_fmt(row[f"dice_{r}"]) for r in REGIONS] + [f"{float(row[f'change_{r}']):+.3f}" for r in REGIONS]  # type: ignore[arg-type]
        lines.append(f"| {label} | {row['cases']} | {' | '.join(cells)} |")
    if notes:
        lines += ["", f"Rows without scores: not predicted ({'; '.join(notes)})."]
    if forced:
        lines += ["", f"Rows marked (forced): {'; '.join(forced)} (`glioseg predict` refuses this; `--force-missing`)."]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows([{k: _fmt(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="fold run folders, or folders holding them")
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="the dataset folder(s) the folds were trained on (with labels)",
    )
    parser.add_argument(
        "--work", type=Path, required=True, help="predictions, one folder per subset (kept: a rerun resumes)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results folder (subsets.csv, per_case.csv, subsets.md); required unless --predict-only",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the network")
    parser.add_argument(
        "--window", type=int, nargs=3, metavar=("X", "Y", "Z"), help="sliding window (default: the training patch)"
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "openvino", "auto"),
        help="network runtime (default torch)",
    )
    parser.add_argument(
        "--subsets", nargs="+", metavar="SUBSET", help="only these subsets, named like flair+t1ce+t2 (default: all 15)"
    )
    parser.add_argument(
        "--force-missing", action="store_true", help="predict subsets with a model trained without modality dropout too"
    )
    parser.add_argument(
        "--predict-only", action="store_true", help="predict, do not score (to run several processes side by side)"
    )
    args = parser.parse_args(argv)
    if not args.predict_only and args.out is None:
        parser.error("--out is required unless --predict-only")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from glioseg.checkpoint import load_checkpoint
    from glioseg.config import config_from_dict

    runs = find_runs(args.runs)
    modalities = tuple(config_from_dict(load_checkpoint(runs[0] / "last.pt")["config"]).preprocess.modalities)
    only = None
    if args.subsets:
        names = {subset_name(s): s for s in subsets(modalities)}
        unknown = [n for n in args.subsets if n not in names]
        if unknown:
            raise SystemExit(
                f"error: --subsets: {', '.join(unknown)} is not a subset of {'+'.join(modalities)}. Fix: name subsets "
                f"like {subset_name(modalities[:2])}"
            )
        only = [names[n] for n in args.subsets]
    settings = Settings(
        threads=args.threads,
        window=tuple(args.window) if args.window else None,
        backend=args.backend,
        force_missing=args.force_missing,
    )
    started = time.perf_counter()
    skipped = predict_subsets(runs, args.data, args.work, settings, only)
    if args.predict_only:
        print(f"predicted in {time.perf_counter() - started:.0f} s -> {args.work}", file=sys.stderr)
        return 0
    held = [case_id for ids in held_out(runs).values() for case_id in ids]
    rows, per_case = score_subsets(modalities, args.data, args.work, skipped, only, forced=args.force_missing, ids=held)
    how = (
        f"Window {list(settings.window) if settings.window else 'the training patch'}, backend {settings.backend}, "
        f"{settings.threads} thread(s); `python benchmarks/missing_modalities.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "subsets.csv", rows)
    write_csv(args.out / "per_case.csv", per_case)
    (args.out / "subsets.md").write_text(markdown(rows, runs, args.data, how))
    print(markdown(rows, runs, args.data, how))
    print(
        f"{len(rows)} subsets, {len(per_case)} scored predictions in {time.perf_counter() - started:.0f} s -> "
        f"{args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
