"""One HTML page (and the same as Markdown) summarising trained models, with figures beside it.

``build_report(runs, out_dir, ...)`` writes into ``out_dir``:

* ``report.html`` and ``report.md`` -- the same content; images are referenced by their file
  name (relative), so the folder can be moved or zipped as a whole;
* ``curves_<model>.png`` -- training curves per model (the paper's Figs. 10-12); a name other than
  ``A-Za-z0-9_.-`` gets 8 hex digits of its SHA-256 (:class:`FileNames`), so no two names share a file;
* ``prediction_<case>.png`` -- slices through the tumor, reference and models side by side
  (Figs. 7-9), for ``num_cases`` cases: sorted ids predicted by every model first, then those
  predicted by some (a missing prediction shows as an empty panel);
* ``viewer_<case>.html`` -- for each of those cases, an interactive 3D viewer page (every
  modality, the reference and each prediction; :mod:`glioseg.reporting.viewer`), linked from
  its prediction figure;
* ``boxplot_<split>.png`` -- per-case Dice and HD95 per region, a box per model.

Where the numbers come from:

* A **run** is a training folder (``[NAME=]RUN``; the name defaults to the folder's name).
  Its ``metrics.csv`` holds one row per epoch with the columns ``epoch, train_loss, val_loss,
  train_voxel_accuracy, val_voxel_accuracy, train_iou, val_iou, val_dice_wt, val_dice_tc, val_dice_et, lr,
  time_s``; any may be missing or empty (validation every N epochs).
* An **evaluation** is a folder written by ``glioseg evaluate -o`` (``summary.csv``, and
  ``per_case.csv`` for the box plots) for one model on one split. They are found as
  ``RUN/eval_<split>/`` (e.g. ``RUN/eval_test/``) and given explicitly as
  ``MODEL:SPLIT=DIR`` (``--eval``); explicit ones win.
* **Table III** (the paper's accuracy and IoU, train / val / test): voxel accuracy (mean over
  cases) and IoU (mean over WT, TC and ET of the mean per-case IoU) from the evaluations.
  Where a train or val evaluation is missing, the run's training-time value is shown instead,
  marked with a dagger: from the epoch with the best mean validation Dice when recorded, else
  the last epoch (the paper's own ``accuracy`` and ``IoU``, on preprocessed volumes).
* **Table IV** (the paper's Dice TC / WT / ET per model and split): mean +- std over cases
  from the evaluations; a missing val evaluation falls back to the run's ``val_dice_*``
  (dagger) as above.
* **BraTS metrics, legacy and lesion-wise**: per model and split, the mean whole-image Dice and
  HD95 and the mean lesion-wise Dice and HD95 (BraTS 2023+) per region, from the evaluations'
  ``summary.csv``, with the rule set and HD95 definitions their ``rules.json`` names.
* **Prediction images** need ``--cases ROOT`` (scans and reference label) and prediction
  folders ``--pred [NAME=]DIR`` (the name defaults to the folder's name). The slices are drawn
  over the FLAIR; a case without FLAIR is drawn over the first of T2, T1ce, T1 it has
  (:data:`BACKGROUND_ORDER`), and its caption names the modalities it lacks.

Splits are ordered train, val, test, then any other name alphabetically.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import html
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from glioseg.data.discovery import MODALITIES, discover, load_case
from glioseg.data.io import read_volume
from glioseg.errors import GliosegError
from glioseg.evaluation import prediction_files, read_per_case, read_summary
from glioseg.files import check_outputs_apart, write_text
from glioseg.labels import REGION_NAMES, detect_convention, to_internal
from glioseg.reporting.figures import prediction_panels, region_boxplots, training_curves
from glioseg.reporting.viewer import MODALITY_LABELS, absent_modalities, write_viewer

logger = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "val", "test")
FALLBACK_MARK = "†"
HISTORY_FILE = "metrics.csv"
EVAL_PREFIX = "eval_"
BACKGROUND_ORDER = ("flair", "t2", "t1ce", "t1")
"""The scan the prediction images are drawn over: the first of these the case has."""


@dataclass(frozen=True)
class Run:
    """A training run folder and its per-epoch history.

    Attributes:
        name: the model's name in the report.
        folder: the run folder.
        history: ``metrics.csv`` column -> float array per row (NaN where empty); empty without the file.
    """

    name: str
    folder: Path
    history: Mapping[str, np.ndarray]


@dataclass
class _Page:
    """Report content, rendered to HTML and Markdown."""

    html: list[str] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.markdown += ["#" * level + " " + _md(text), ""]

    def paragraph(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.markdown += [_md(text), ""]

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.html.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>")
        self.markdown += ["| " + " | ".join(_md(h, cell=True) for h in header) + " |", "|" + "---|" * len(header)]
        self.markdown += ["| " + " | ".join(_md(c, cell=True) for c in row) + " |" for row in rows]
        self.markdown.append("")

    def image(self, path: Path, alt: str, link: tuple[Path, str] | None = None) -> None:
        """A figure; ``link`` (file, text) makes the image and a line under its caption link to that file."""
        img = f'<img src="{html.escape(path.name)}" alt="{html.escape(alt)}">'
        caption = html.escape(alt)
        markdown = f"![{_md(alt, cell=True)}]({path.name})"
        if link is not None:
            target, text = html.escape(link[0].name), html.escape(link[1])
            img, caption = f'<a href="{target}">{img}</a>', f'{caption}<br><a href="{target}">{text}</a>'
            markdown = f"[{markdown}]({link[0].name})\n\n[{_md(link[1], cell=True)}]({link[0].name})"
        self.html.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
        self.markdown += [markdown, ""]


_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 90%; }
"""


def parse_named(item: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` -> ``(NAME, PATH)``; a plain ``PATH`` -> ``(None, PATH)``."""
    name, sep, path = item.partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    return None, Path(item)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def _md(text: str, *, cell: bool = False) -> str:
    """Text for ``report.md``: on one line, no raw HTML (``<`` as ``&lt;``); in a table cell or
    link text, ``|``, ``[`` and ``]`` escaped too, so that no name can break the table."""
    text = " ".join(text.splitlines()).replace("<", "&lt;")
    if cell:
        text = text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")
    return text


class FileNames:
    """One output file name per (kind, name), never the same file for two names.

    ``curves_<name>.png`` keeps a name made of ``A-Za-z0-9_.-`` as it is; any other name
    (``u net``, ``α``, a 300-character one) becomes its safe form plus 8 hex digits of its
    SHA-256, so ``u net`` and ``u_net`` (or ``α`` and ``β``) get two files. Names are compared
    without case too (``A`` and ``a`` are one file on macOS and Windows); a clash gets ``_2``, ...
    """

    MAX_STEM = 80
    """Longest part of a file name taken from a name (a file name holds at most 255 bytes)."""

    def __init__(self) -> None:
        self._given: dict[tuple[str, str], str] = {}
        self._used: set[str] = set()

    def __call__(self, prefix: str, name: str, suffix: str) -> str:
        """The file name for ``name`` of one kind (``prefix``, ``suffix``), the same on every call."""
        key = (prefix + suffix, name)
        if key not in self._given:
            stem = _safe(name)
            if stem != name or len(stem) > self.MAX_STEM:
                digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
                stem = f"{stem[: self.MAX_STEM - 9]}_{digest}"
            candidate, n = f"{prefix}{stem}{suffix}", 2
            while candidate.lower() in self._used:
                candidate, n = f"{prefix}{stem}_{n}{suffix}", n + 1
            self._used.add(candidate.lower())
            self._given[key] = candidate
        return self._given[key]


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """Read a run's ``metrics.csv``: column -> float array (NaN for empty or non-numeric cells).

    Returns an empty dict when the file does not exist.

    Raises:
        GliosegError: the file exists but cannot be read as CSV.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise GliosegError(path, f"cannot be read as CSV ({exc})", "check the run folder's metrics.csv") from None
    columns = list(rows[0]) if rows else []

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {c: np.array([number(row.get(c)) for row in rows], dtype=float) for c in columns if c is not None}


def load_run(folder: str | Path, name: str | None = None) -> Run:
    """A run folder and its history.

    Raises:
        GliosegError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GliosegError(folder, "run folder not found", "pass the folder `glioseg train` wrote")
    history = read_history(folder / HISTORY_FILE)
    if not history:
        logger.warning("%s: no %s, no training curves for this run", folder, HISTORY_FILE)
    return Run(name or folder.name, folder, history)


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def find_evaluations(runs: Sequence[Run], explicit: Mapping[tuple[str, str], Path] = {}) -> dict[tuple[str, str], Path]:
    """(model, split) -> evaluation folder: ``RUN/eval_<split>/`` of each run, then ``explicit``."""
    found: dict[tuple[str, str], Path] = {}
    for run in runs:
        for folder in sorted(run.folder.glob(f"{EVAL_PREFIX}*")):
            if (folder / "summary.csv").is_file():
                found[(run.name, folder.name[len(EVAL_PREFIX):])] = folder
    for key, folder in explicit.items():
        if not (Path(folder) / "summary.csv").is_file():
            raise GliosegError(folder, "holds no summary.csv", "pass a folder written by `glioseg evaluate -o`")
        found[key] = Path(folder)
    return found


def _history_row(history: Mapping[str, np.ndarray], column: str) -> int | None:
    """Row used for training-time values of ``column``: best mean val Dice, else its last value."""
    values = history.get(column)
    if values is None or not np.any(np.isfinite(values)):
        return None
    dice = [history[c] for c in ("val_dice_wt", "val_dice_tc", "val_dice_et") if c in history]
    if dice:
        mean = np.mean(np.stack(dice), axis=0)
        usable = np.isfinite(mean) & np.isfinite(values)
        if usable.any():
            return int(np.flatnonzero(usable)[np.argmax(mean[usable])])
    return int(np.flatnonzero(np.isfinite(values))[-1])


def _history_value(history: Mapping[str, np.ndarray], column: str) -> str | None:
    row = _history_row(history, column)
    return None if row is None else f"{history[column][row]:.4f}{FALLBACK_MARK}"


def _format(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def table_iii(
    runs: Sequence[Run], summaries: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]], splits: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table III: accuracy and IoU per model and split."""
    header = ["model", *(f"accuracy {s}" for s in splits), *(f"IoU {s}" for s in splits)]
    models = _models(runs, summaries)
    history = {run.name: run.history for run in runs}
    rows = []
    for model in models:
        accuracy, iou = [], []
        for split in splits:
            summary = summaries.get((model, split))
            if summary is not None:
                accuracy.append(_format(summary.get("accuracy", {}).get("mean")))
                regions = [summary[f"iou_{r}"]["mean"] for r in REGION_NAMES if f"iou_{r}" in summary]
                iou.append(_format(float(np.mean(regions)) if regions else None))
            elif split in ("train", "val") and model in history:
                accuracy.append(_history_value(history[model], f"{split}_voxel_accuracy") or "-")
                iou.append(_history_value(history[model], f"{split}_iou") or "-")
            else:
                accuracy.append("-")
                iou.append("-")
        rows.append([model, *accuracy, *iou])
    return header, rows


def table_iv(
    runs: Sequence[Run], summaries: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]], splits: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table IV: Dice TC / WT / ET (mean +- std) per model and split."""
    header = ["model", "split", "Dice TC", "Dice WT", "Dice ET"]
    history = {run.name: run.history for run in runs}
    rows = []
    for model in _models(runs, summaries):
        for split in splits:
            summary = summaries.get((model, split))
            if summary is not None:
                cells = [
                    f"{summary[f'dice_{r}']['mean']:.4f} ± {summary[f'dice_{r}']['std']:.4f}"
                    if f"dice_{r}" in summary
                    else "-"
                    for r in ("tc", "wt", "et")
                ]
            elif split == "val" and model in history:
                cells = [_history_value(history[model], f"val_dice_{r}") or "-" for r in ("tc", "wt", "et")]
                if all(c == "-" for c in cells):
                    continue
            else:
                continue
            rows.append([model, split, *cells])
    return header, rows


def table_brats(
    runs: Sequence[Run],
    summaries: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]],
    rules: Mapping[tuple[str, str], Mapping[str, object]],
    splits: Sequence[str],
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the legacy and lesion-wise BraTS metrics (means) per model and split."""
    header = ["model", "split", "rules"]
    header += [f"Dice {r.upper()}" for r in REGION_NAMES] + [f"HD95 {r.upper()}" for r in REGION_NAMES]
    header += [f"lesion Dice {r.upper()}" for r in REGION_NAMES] + [f"lesion HD95 {r.upper()}" for r in REGION_NAMES]
    rows = []
    for model in _models(runs, summaries):
        for split in splits:
            summary = summaries.get((model, split))
            if summary is None or not any(k.startswith("lesion_") for k in summary):
                continue
            keys = [f"{m}_{r}" for m in ("dice", "hd95", "lesion_dice", "lesion_hd95") for r in REGION_NAMES]
            digits = {"dice": 4, "hd95": 2}
            cells = [
                f"{summary[k]['mean']:.{digits['hd95' if 'hd95' in k else 'dice']}f}" if k in summary else "-"
                for k in keys
            ]
            info = rules.get((model, split), {})
            rows.append([model, split, str(info.get("rules", "-")), *cells])
    return header, rows


def _report_inputs(runs: Sequence[Run], evaluations: Mapping[tuple[str, str], Path]) -> list[Path]:
    """The tables a report reads (its label maps are added by the caller; the scans it reads are NIfTI, which it never
    writes)."""
    files = [run.folder / HISTORY_FILE for run in runs]
    files += [
        folder / name for folder in evaluations.values() for name in ("summary.csv", "per_case.csv", "rules.json")
    ]
    return [path for path in files if path.is_file()]


def _read_rules(folder: Path) -> dict[str, object]:
    """An evaluation's ``rules.json`` (empty when missing: evaluations from before it existed)."""
    path = folder / "rules.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GliosegError(path, f"unreadable rules file ({exc})", "rewrite it with `glioseg evaluate`") from None


def _models(runs: Sequence[Run], summaries: Mapping[tuple[str, str], object]) -> list[str]:
    names = [run.name for run in runs]
    for model, _ in summaries:
        if model not in names:
            names.append(model)
    return names


def _reoriented(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return apply_orientation(volume, io_orientation(affine))


def _prediction_figures(
    cases_root: Path,
    predictions: Sequence[tuple[str, Path]],
    out_dir: Path,
    num_cases: int,
    page: _Page,
    names: FileNames,
) -> None:
    dataset = discover(cases_root, required=())
    for problem in dataset.problems:
        logger.warning("cases: %s", problem)
    cases = {case.case_id: case for case in dataset.cases}
    files = {name: prediction_files(folder) for name, folder in predictions}
    if files:  # cases predicted by every model first, then those predicted by some
        everywhere = set(cases).intersection(*(set(f) for f in files.values()))
        somewhere = set(cases) & set().union(*(set(f) for f in files.values()))
        chosen = (sorted(everywhere) + sorted(somewhere - everywhere))[:num_cases]
    else:
        chosen = sorted(cases)[:num_cases]
    if not chosen:
        page.paragraph("No case of the case folder has a prediction: no prediction images.")
        return
    for case_id in chosen:
        case = cases[case_id]
        modalities = tuple(m for m in MODALITIES if m in case.images)
        loaded = load_case(case, modalities, with_label=True)
        shown = next(m for m in BACKGROUND_ORDER if m in modalities)
        background = _reoriented(loaded.image[modalities.index(shown)], loaded.affine)
        absent = absent_modalities(case)
        reference = None if loaded.label is None else _reoriented(loaded.label, loaded.affine)
        labelmaps = {} if loaded.label is None else {"reference": loaded.label}  # for the viewer page, as read
        models: dict[str, np.ndarray | None] = {}
        for name, _ in predictions:
            path = files[name].get(case_id)
            if path is None:
                models[name] = None
                continue
            volume = read_volume(path, dtype=None)
            if volume.data.shape != loaded.shape:
                logger.warning(
                    "%s: shape %s differs from the case's %s, not shown", path, volume.data.shape, loaded.shape
                )
                models[name] = None
                continue
            try:
                labels = to_internal(volume.data, detect_convention(volume.data, case.convention, path), path)
            except GliosegError as exc:  # e.g. another label convention than the case's: not shown, never mislabelled
                logger.warning("%s, not shown", exc)
                models[name] = None
                continue
            models[name] = _reoriented(labels, loaded.affine)
            labelmaps[name if name != "reference" else "reference (model)"] = labels
        figure = prediction_panels(
            background,
            reference,
            models,
            case_id,
            out_dir / names("prediction_", case_id, ".png"),
            scan_name=MODALITY_LABELS[shown],
        )
        viewer = write_viewer(
            out_dir / names("viewer_", case_id, ".html"),
            dict(zip(modalities, loaded.image, strict=True)),
            labelmaps,
            loaded.affine,
            case_id,
            subtitle=f"{case.reference_image.parent}: reference and predictions",
            absent=absent,
        )
        lacks = f"; this case has no {', '.join(MODALITY_LABELS[m] for m in absent)} scan" if absent else ""
        page.image(
            figure,
            f"{case_id}: {MODALITY_LABELS[shown]}, reference and predictions (NCR red, ED green, ET yellow){lacks}",
            link=(
                viewer.path,
                f"open {case_id} in the 3D viewer (all modalities, every label map; {viewer.size / 1e6:.1f} MB, opens "
                "offline)",
            ),
        )


def build_report(
    runs: Sequence[tuple[str | None, str | Path]],
    out_dir: str | Path,
    *,
    cases_root: str | Path | None = None,
    predictions: Sequence[tuple[str | None, str | Path]] = (),
    evaluations: Mapping[tuple[str, str], str | Path] = {},
    num_cases: int = 3,
) -> Path:
    """Write the report (see the module docstring) and return the path of ``report.html``.

    Args:
        runs: ``(name or None, run folder)`` per model.
        out_dir: output folder (created).
        cases_root: reference cases for the prediction images (``None``: no images).
        predictions: ``(name or None, prediction folder)`` per model shown in the images.
        evaluations: ``(model, split) -> evaluation folder`` beyond the runs' ``eval_<split>/``.
        num_cases: cases shown in the prediction images.

    Raises:
        GliosegError: a folder is missing or a table unreadable.
    """
    out_dir = Path(out_dir)
    loaded_runs = [load_run(folder, name) for name, folder in runs]
    names = [run.name for run in loaded_runs]
    if len(set(names)) != len(names):
        raise GliosegError(
            None,
            f"two runs share a name ({', '.join(sorted({n for n in names if names.count(n) > 1}))})",
            "name them: NAME=RUN",
        )
    folders = find_evaluations(loaded_runs, {key: Path(v) for key, v in evaluations.items()})
    summaries = {key: read_summary(folder / "summary.csv") for key, folder in folders.items()}
    splits = sorted(set(SPLIT_ORDER) | {split for _, split in summaries}, key=_split_key)

    named_predictions = [(name or Path(folder).name, Path(folder)) for name, folder in predictions]
    prediction_names = [name for name, _ in named_predictions]
    if len(set(prediction_names)) != len(prediction_names):
        repeated = sorted({n for n in prediction_names if prediction_names.count(n) > 1})
        raise GliosegError(
            None,
            f"two prediction folders share a name ({', '.join(repeated)})",
            "name each prediction folder: NAME=DIR",
        )
    read = _report_inputs(loaded_runs, folders) + [
        path for _, folder in named_predictions if folder.is_dir() for path in prediction_files(folder).values()
    ]
    check_outputs_apart([out_dir, out_dir / "report.html", out_dir / "report.md"], read)
    file_names = FileNames()
    page = _Page()
    page.heading("glioseg report", 1)
    page.paragraph(
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} from {len(loaded_runs)} run(s) and "
        f"{len(summaries)} evaluation(s)."
    )

    page.heading("Table III: accuracy and IoU")
    header, rows = table_iii(loaded_runs, summaries, splits)
    page.table(header, rows)
    page.paragraph(
        "Accuracy: voxel accuracy; IoU: mean over WT, TC and ET of the mean per-case IoU, both from `glioseg "
        "evaluate`. "
        f"{FALLBACK_MARK}: training-time value from the run's metrics.csv (no evaluation of that split), "
        "at the epoch with the best mean validation Dice, else the last epoch."
    )

    page.heading("Table IV: Dice per region")
    header, rows = table_iv(loaded_runs, summaries, splits)
    if rows:
        page.table(header, rows)
        page.paragraph(
            f"Mean ± standard deviation over cases (BraTS rules for empty regions). {FALLBACK_MARK}: training-time "
            "validation Dice."
        )
    else:
        page.paragraph("No evaluation summary or validation Dice found.")

    rules = {key: _read_rules(folder) for key, folder in folders.items()}
    header, rows = table_brats(loaded_runs, summaries, rules, splits)
    if rows:
        page.heading("BraTS metrics: legacy and lesion-wise")
        page.table(header, rows)
        definitions = sorted({
            f"{name}: {kind} HD95 '{info['hd95'][kind]['name']}' ({info['hd95'][kind]['definition']})"  # type: ignore[index]
            for info in rules.values() if info for kind in ("legacy", "lesion-wise") for name in [info["rules"]]
        })
        page.paragraph(
            "Means over cases. Legacy: whole-image Dice and HD95 (mm); lesion-wise: the BraTS 2023+ challenge scores "
            "(each reference lesion scored apart, false-positive and missed lesions count Dice 0 and the rule set's "
            "HD95 penalty). " + " ".join(f"{d}." for d in definitions)
        )

    page.heading("Training curves")
    for run in loaded_runs:
        page.heading(run.name, 3)
        figure = (
            training_curves(run.history, run.name, out_dir / file_names("curves_", run.name, ".png"))
            if run.history
            else None
        )
        if figure is None:
            page.paragraph(f"No training history ({run.folder / HISTORY_FILE} missing or empty).")
        else:
            page.image(figure, f"{run.name}: loss, accuracy, IoU and Dice per epoch (train and validation)")

    per_split: dict[str, dict[str, list]] = {}
    for (model, split), folder in sorted(folders.items(), key=lambda kv: (_split_key(kv[0][1]), kv[0][0])):
        if (folder / "per_case.csv").is_file():
            per_split.setdefault(split, {})[model] = read_per_case(folder / "per_case.csv")
    if per_split:
        page.heading("Per-case distributions")
        for split in sorted(per_split, key=_split_key):
            figure = region_boxplots(
                per_split[split], f"{split}: per-case Dice and HD95", out_dir / file_names("boxplot_", split, ".png")
            )
            if figure is not None:
                page.image(figure, f"{split}: per-case Dice and HD95 per region (box: quartiles, triangle: mean)")

    page.heading("Predictions")
    if cases_root is None:
        page.paragraph("No case folder given: no prediction images.")
    else:
        _prediction_figures(Path(cases_root), named_predictions, out_dir, num_cases, page, file_names)

    page.heading("Sources")
    sources = [f"run {run.name}: {run.folder}" for run in loaded_runs]
    sources += [f"evaluation {model} / {split}: {folder}" for (model, split), folder in sorted(folders.items())]
    sources += [f"predictions {name}: {folder}" for name, folder in named_predictions]
    page.html.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sources) + "</ul>")
    page.markdown += [f"- {_md(s)}" for s in sources] + [""]

    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>glioseg report</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(page.html) + "\n</body></html>\n"
    )
    write_text(out_dir / "report.md", "\n".join(page.markdown))
    write_text(out_dir / "report.html", document)
    logger.info("report written to %s", out_dir / "report.html")
    return out_dir / "report.html"
