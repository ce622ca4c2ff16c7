"""Out-of-fold Dice of fold models for each of the 15 non-empty subsets of FLAIR, T1, T1ce and T2.

Given fold run folders (each with ``last.pt`` and ``split.json``, as ``glioseg train --folds K
--fold I`` writes them) and the data they were trained on, every fold model predicts its own
held-out cases (``split.json``'s ``val``) once per subset, with the other modalities hidden (the
case is given to the predictor without their files, exactly as ``glioseg predict`` gets a case
folder that lacks them), and ``glioseg evaluate``'s library scores each subset's predictions
against the reference labels. A model trained without modality dropout is scored on the full
subset only (it refuses the others).

Usage (from the repository root)::

    python benchmarks/missing_modalities.py --runs /tmp/runs/fold0 /tmp/runs/fold1 ... \\
        --data ../shared/data/brats2018 --work /tmp/mm-work --out benchmarks/missing_modalities/NAME

``--runs`` takes run folders or folders holding them. Writes ``OUT/subsets.csv`` (one row per
subset: mean Dice WT/TC/ET and the change against the full subset), ``OUT/per_case.csv`` and
``OUT/subsets.md``. Predictions go to ``WORK/<subset>/`` and are kept: a rerun predicts only what
is missing (label maps whose stamp is this model's and settings').
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

MODALITY_LABELS = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
REGIONS = ("wt", "tc", "et")

logger = logging.getLogger("missing_modalities")


def subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (in their order), the largest first, then in order of ``itertools.combinations``."""
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
        found = sorted(p for p in path.iterdir() if (p / "last.pt").is_file() and (p / "split.json").is_file()) if path.is_dir() else []
        if not found:
            raise SystemExit(f"error: {path}: no run folder (last.pt and split.json) in it. Fix: pass the folders `glioseg train --folds K --fold I` wrote")
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
                raise SystemExit(f"error: {run}: case {case_id} is also held out by {owner[case_id]}. Fix: pass the folds of one cross-validation")
            owner[case_id] = run
        out[run] = ids
    return out


def predict_subsets(runs: Sequence[Path], data: Path, work: Path, threads: int) -> dict[tuple[str, ...], str]:
    """Predict every run's held-out cases with every subset its model accepts, into ``work/<subset>/``.

    Returns:
        subset -> why it was not predicted, for the subsets some model refuses.
    """
    from glioseg.data.discovery import discover
    from glioseg.inference.predictor import Predictor, output_path

    cases = {case.case_id: case for case in discover(data, required=()).cases}
    skipped: dict[tuple[str, ...], str] = {}
    for run, ids in held_out(runs).items():
        missing = [i for i in ids if i not in cases]
        if missing:
            raise SystemExit(f"error: {data}: held-out case(s) {', '.join(missing)} of {run} not found. Fix: pass the data the folds were trained on")
        predictor = Predictor.from_checkpoints([run / "last.pt"], device="cpu", threads=threads, backend="torch")
        modalities = tuple(predictor.config.preprocess.modalities)
        for subset in subsets(modalities):
            if subset != modalities and not predictor.accepts_missing:
                skipped[subset] = f"{run.name} was trained without modality dropout"
                continue
            out_dir = work / subset_name(subset)
            out_dir.mkdir(parents=True, exist_ok=True)
            for case_id in ids:
                case = dataclasses.replace(cases[case_id], images={m: p for m, p in cases[case_id].images.items() if m in subset})
                if predictor.is_done(case, out_dir):
                    continue
                started = time.perf_counter()
                predictor.predict_case(case, output_path(out_dir, case_id))
                logger.info("%s %s %s: %.1f s", run.name, subset_name(subset), case_id, time.perf_counter() - started)
    return skipped


def score_subsets(
    modalities: Sequence[str], data: Path, work: Path, skipped: dict[tuple[str, ...], str], workers: int,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Mean Dice per subset (rows) and per case (per-case rows), through :func:`glioseg.evaluation.evaluate`."""
    from glioseg.evaluation import evaluate

    rows: list[dict[str, object]] = []
    per_case: list[dict[str, object]] = []
    for subset in subsets(modalities):
        name = subset_name(subset)
        row: dict[str, object] = {"subset": name, "modalities": len(subset)}
        if subset in skipped:
            rows.append({**row, "cases": 0, "note": skipped[subset]})
            continue
        result = evaluate(work / name, data, workers=workers)
        if result.failed:
            raise SystemExit(f"error: {work / name}: {len(result.failed)} prediction(s) not scored: {next(iter(result.failed.values()))}")
        for case_row in result.rows:
            per_case.append({"subset": name, "case": case_row["case"], **{f"dice_{r}": case_row[f"dice_{r}"] for r in REGIONS}})
        rows.append({**row, "cases": len(result.rows), **{f"dice_{r}": result.summary[f"dice_{r}"]["mean"] for r in REGIONS}, "note": ""})
    full = rows[0]
    for row in rows:
        for r in REGIONS:
            if f"dice_{r}" in row and f"dice_{r}" in full:
                row[f"change_{r}"] = float(row[f"dice_{r}"]) - float(full[f"dice_{r}"])  # type: ignore[arg-type]
    return rows, per_case


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, object]], runs: Sequence[Path], data: Path) -> str:
    """The table: one row per subset, Dice WT/TC/ET and the change against all four modalities."""
    lines = [
        "# Out-of-fold Dice per subset of modalities",
        "",
        f"Fold models: {', '.join(str(r) for r in runs)} (each on its own held-out cases); data: {data}.",
        "Absent modalities are given to the network as zero channels (`glioseg.data.modalities`); labels after",
        "the checkpoint's own `postprocess` section, scored by `glioseg evaluate` (mean legacy Dice, BraTS empty rules).",
        "",
        "| modalities | cases | Dice WT | Dice TC | Dice ET | change WT | change TC | change ET |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = sorted({str(row["note"]) for row in rows if row.get("note")})
    for row in rows:
        label = ", ".join(MODALITY_LABELS.get(m, m) for m in str(row["subset"]).split("+"))
        if row.get("note"):
            lines.append(f"| {label} | 0 | - | - | - | - | - | - |")
            continue
        cells = [_fmt(row[f"dice_{r}"]) for r in REGIONS] + [f"{float(row[f'change_{r}']):+.3f}" for r in REGIONS]  # type: ignore[arg-type]
        lines.append(f"| {label} | {row['cases']} | {' | '.join(cells)} |")
    if notes:
        lines += ["", f"Rows without scores: not predicted ({'; '.join(notes)})."]
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
    parser.add_argument("--data", type=Path, required=True, help="the dataset the folds were trained on (with labels)")
    parser.add_argument("--work", type=Path, required=True, help="predictions, one folder per subset (kept: a rerun resumes)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (subsets.csv, per_case.csv, subsets.md)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=1, help="evaluation processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from glioseg.checkpoint import load_checkpoint
    from glioseg.config import config_from_dict

    runs = find_runs(args.runs)
    modalities = tuple(config_from_dict(load_checkpoint(runs[0] / "last.pt")["config"]).preprocess.modalities)
    started = time.perf_counter()
    skipped = predict_subsets(runs, args.data, args.work, args.threads)
    rows, per_case = score_subsets(modalities, args.data, args.work, skipped, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "subsets.csv", rows)
    write_csv(args.out / "per_case.csv", per_case)
    (args.out / "subsets.md").write_text(markdown(rows, runs, args.data))
    print(markdown(rows, runs, args.data))
    print(f"{len(rows)} subsets, {len(per_case)} scored predictions in {time.perf_counter() - started:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
