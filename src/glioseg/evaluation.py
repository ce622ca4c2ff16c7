"""Per-case metric tables from a folder of predictions and a folder of reference cases.

Predictions are label maps ``PRED/<case>.nii.gz`` (or ``.nii``), as ``glioseg predict`` writes
them; references are the labels of the cases :func:`~glioseg.data.discovery.discover` finds under
the reference root (any layout). Pairs are made by case id. Each pair must share its grid
(shape, and affine within :data:`~glioseg.data.io.AFFINE_TOLERANCE`, for every layout: an MSD label
saved reoriented is refused like any other); metrics follow the official BraTS definitions, empty masks
included (see :mod:`glioseg.metrics`), with the reference's voxel spacing for HD95.

Label conventions: the reference's is its case's (``case.convention``) unless given. The
predictions' is given (``labels``), or else taken to be the reference's. A prediction holding a
value the reference's convention lacks is refused, never silently converted: e.g. the value 3
(BraTS 2023+ ET) against ``brats2018`` references (ET = 4), or 4 against ``brats2023`` ones.
The whole evaluation then stops (nothing is written) with a message naming both conventions and
the ``--labels`` option that converts the predictions.

Two metric sets are computed for every case (see :mod:`glioseg.metrics`):

* **legacy** (whole-image) metrics, HD95 as the BraTS 2018-2021 organisers (MedPy's pooled one);
* **lesion-wise** Dice, HD95 and TP/FP/FN lesion counts of a BraTS 2023+ rule set
  (:data:`~glioseg.metrics.SCORING_RULES`), HD95 as the 2023+ organisers (surface-area weighted).

The rule set is ``rules`` when given (``glioseg evaluate --rules NAME``) and then lesion-wise is
the primary set. Otherwise it is picked from the references (:func:`default_rules`): BraTS 2023+
case names (``BraTS-GLI-...``, ``BraTS-MET-...``) pick their challenge's rules, lesion-wise
primary; BraTS 2024 labels (``--labels``/``--ref-labels brats2024``) pick ``brats2024-gli``;
older layouts keep the legacy metrics primary with ``brats2023-gli`` beside them. The choice and
the reason are stated in every output.

Outputs of :func:`write_evaluation`:

* ``per_case.csv`` -- one row per evaluated case: ``case``, then :data:`~glioseg.metrics.METRIC_KEYS`
  (``dice_wt, dice_tc, dice_et, iou_*, sensitivity_*, specificity_*, hd95_*`` in mm, ``accuracy``),
  then :data:`~glioseg.metrics.LESION_METRIC_KEYS` (``lesion_dice_*, lesion_hd95_*, lesion_tp_*,
  lesion_fp_*, lesion_fn_*``).
* ``summary.csv`` -- one row per metric: ``metric, n, mean, std, median, q1, q3`` (``std`` with
  ddof=0, ``q1``/``q3`` the 25th/75th percentiles). :mod:`glioseg.reporting` reads this file.
* ``summary.md`` -- the rule set and both HD95 definitions, the primary set's table first,
  then the other, then the unmatched and failed cases.
* ``rules.json`` -- the rule set, its parameters, the primary set, the reason, the HD95 definitions.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.discovery import Case, discover, strip_nifti
from glioseg.data.io import AFFINE_TOLERANCE, Volume, read_header, read_volume
from glioseg.data.modalities import stamped_inputs, stamped_model
from glioseg.errors import GliosegError
from glioseg.files import write_text
from glioseg.labels import CONVENTIONS, ConventionMismatch, detect_convention, get_convention, to_internal
from glioseg.metrics import (
    HD95_DEFINITIONS,
    LEGACY_HD95,
    LESION_METRIC_KEYS,
    LESIONWISE_HD95,
    METRIC_KEYS,
    STATISTICS,
    MetricAccumulator,
    case_metrics,
    get_rules,
)
from glioseg.parallel import map_cases

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("metric", "n", *STATISTICS)
"""Columns of ``summary.csv``."""


@dataclass(frozen=True)
class Pairing:
    """Predictions matched with reference cases by id.

    Attributes:
        pairs: ``(prediction file, reference case)`` sorted by case id.
        predictions_without_reference: ids of prediction files with no labelled reference case.
        references_without_prediction: ids of labelled reference cases with no prediction file.
        duplicates: id -> one-line error, for ids with two prediction files (``.nii`` and
            ``.nii.gz``); such a case is not evaluated, the others are.
    """

    pairs: list[tuple[Path, Case]]
    predictions_without_reference: list[str]
    references_without_prediction: list[str]
    duplicates: dict[str, str] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`.

    Attributes:
        rows: one dict per evaluated case: ``{"case": id, **metrics}``, sorted by id.
        summary: metric -> statistic (``mean, std, median, q1, q3``) -> value; empty without rows.
        predictions_without_reference: as in :class:`Pairing`.
        references_without_prediction: as in :class:`Pairing`.
        failed: id -> one-line error for pairs that could not be evaluated.
        rules: name of the lesion-wise rule set (:data:`~glioseg.metrics.SCORING_RULES`).
        primary: ``"lesion-wise"`` or ``"legacy"``: the metric set shown first.
        rules_reason: why this rule set and primary set (chosen, or what the data looked like).
    """

    rows: list[dict[str, float | str]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions_without_reference: list[str] = field(default_factory=list)
    references_without_prediction: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rules: str = "brats2023-gli"
    primary: str = "legacy"
    rules_reason: str = ""

    @property
    def complete(self) -> bool:
        """True when every prediction and every reference was paired and evaluated."""
        return not (self.predictions_without_reference or self.references_without_prediction or self.failed)


def prediction_files(pred_dir: str | Path) -> dict[str, Path]:
    """Case id -> prediction file for the NIfTI files directly in ``pred_dir`` (the first in
    sorted order when an id has two files; :func:`pair_cases` reports the second).

    Raises:
        GliosegError: the folder is missing.
    """
    return _scan_predictions(pred_dir)[0]


def _scan_predictions(pred_dir: str | Path) -> tuple[dict[str, Path], dict[str, str]]:
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise GliosegError(pred_dir, "prediction folder not found", "pass the folder `glioseg predict -o` wrote")
    found: dict[str, Path] = {}
    duplicates: dict[str, str] = {}
    for path in sorted(pred_dir.iterdir()):
        stem = None if path.name.startswith(".") else strip_nifti(path.name)
        if stem is None:  # a folder named like a prediction is kept: reading it gives a clear error
            continue
        if stem in found:
            duplicates[stem] = str(
                GliosegError(
                    path,
                    f"second prediction for case {stem} (also {found[stem].name}); the case is not evaluated",
                    "keep one file per case",
                )
            )
            continue
        found[stem] = path
    return found, duplicates


def pair_cases(pred_dir: str | Path, ref_root: str | Path) -> Pairing:
    """Match ``PRED/<case>.nii.gz`` files with the labelled cases under ``ref_root``.

    Raises:
        GliosegError: a folder is missing, or no prediction file is found.
    """
    predictions, duplicates = _scan_predictions(pred_dir)
    if not predictions:
        raise GliosegError(pred_dir, "holds no .nii.gz prediction", "pass the folder `glioseg predict -o` wrote")
    dataset = discover(ref_root, required=())
    for problem in dataset.problems:
        logger.warning("reference: %s", problem)
    references = {case.case_id: case for case in dataset.cases if case.label is not None}
    pairs = [(predictions[i], references[i]) for i in sorted(set(predictions) & set(references)) if i not in duplicates]
    return Pairing(
        pairs=pairs,
        predictions_without_reference=sorted(set(predictions) - set(references)),
        references_without_prediction=sorted(set(references) - set(predictions)),
        duplicates={i: message for i, message in duplicates.items() if i in references},
    )


def evaluate_case(
    pred_path: str | Path,
    ref_case: Case,
    *,
    labels: str | None = None,
    ref_labels: str | None = None,
    rules: str | None = None,
) -> dict[str, float]:
    """Metrics of one prediction file against its reference case.

    Args:
        pred_path: the predicted label map.
        ref_case: the reference case (its ``label`` is read).
        labels: convention of the prediction, or ``None`` to detect it.
        ref_labels: convention of the reference, or ``None`` for ``ref_case.convention``.
        rules: lesion-wise rule set (a name of :data:`~glioseg.metrics.SCORING_RULES`), or
            ``None`` for the legacy metrics only.

    Returns:
        ``{key: value}`` for :data:`~glioseg.metrics.METRIC_KEYS` (then
        :data:`~glioseg.metrics.LESION_METRIC_KEYS` with ``rules``).

    Raises:
        GliosegError: unreadable files, a grid mismatch or labels outside the convention.
    """
    if ref_case.label is None:
        raise GliosegError(
            ref_case.reference_image.parent,
            f"reference case {ref_case.case_id} has no label",
            "evaluate against labelled cases",
        )
    ref_convention = get_convention(ref_labels or ref_case.convention).name
    ref = read_volume(ref_case.label, dtype=None)
    pred = read_volume(pred_path, dtype=None)
    same_shape = pred.data.shape == ref.data.shape
    same_affine = np.allclose(pred.affine, ref.affine, atol=AFFINE_TOLERANCE)
    if not (same_shape and same_affine):
        _blame_grid_mismatch(pred, ref, ref_case, same_shape)
    pred_convention = get_convention(labels).name if labels else detect_convention(pred.data, ref_convention, pred_path)
    pred_internal = to_internal(
        pred.data,
        pred_convention,
        pred.path,
        fix=f"check that it is a prediction, or evaluate with labels= its convention ({', '.join(CONVENTIONS)})",
    )
    ref_internal = to_internal(
        ref.data,
        ref_convention,
        ref.path,
        fix=(
            "check that it is this case's label map, or evaluate with ref_labels= its convention "
            f"({', '.join(CONVENTIONS)})"
        ),
    )
    return case_metrics(pred_internal, ref_internal, ref.spacing, rules=rules)


def _blame_grid_mismatch(pred: Volume, ref: Volume, ref_case: Case, same_shape: bool) -> None:
    """Raise for a prediction whose grid differs from its reference label, blaming the right file.

    When the reference label's own grid differs from its case's images while the prediction
    matches the images, the reference label is at fault (a prediction is written on the images' grid).
    """
    what = "shape" if not same_shape else f"affine (orientation/spacing/origin), beyond {AFFINE_TOLERANCE} mm,"
    try:
        image = read_header(ref_case.reference_image)
        image_shape, image_affine = tuple(int(n) for n in image.shape[:3]), np.asarray(image.affine, dtype=np.float64)
    except GliosegError:
        image_shape, image_affine = None, None
    if image_shape is not None and image_affine is not None:
        pred_on_images = pred.data.shape == image_shape and np.allclose(
            pred.affine, image_affine, atol=AFFINE_TOLERANCE
        )
        ref_on_images = ref.data.shape == image_shape and np.allclose(ref.affine, image_affine, atol=AFFINE_TOLERANCE)
        if pred_on_images and not ref_on_images:
            raise GliosegError(
                ref.path,
                f"reference label's {what} differs from its own image {ref_case.reference_image.name} (the prediction "
                "matches the image)",
                "resample the reference label onto its images' grid, or fix its header",
            )
    if not same_shape:
        raise GliosegError(
            pred.path,
            f"shape {pred.data.shape} differs from the reference {ref.path.name} {ref.data.shape}",
            "predict on the reference images' original grid (glioseg predict does)",
        )
    raise GliosegError(
        pred.path,
        f"affine (orientation/spacing/origin) differs from the reference {ref.path.name} by more than "
        f"{AFFINE_TOLERANCE} mm",
        "predict on the reference images' original grid (glioseg predict does)",
    )


_CHALLENGE_RULES = {
    "GLI": "brats2023-gli",
    "SSA": "brats2023-ssa",
    "PED": "brats2023-ped",
    "MEN": "brats2023-men",
    "MET": "brats2023-met",
}
"""BraTS 2023+ case-name challenge code (``BraTS-GLI-00000-000``) -> its lesion-wise rule set."""


def default_rules(
    cases: Sequence[Case], labels: str | None = None, ref_labels: str | None = None
) -> tuple[str, str, str]:
    """The rule set, primary metric set and reason when ``--rules`` is not given.

    Args:
        cases: the reference cases.
        labels: the predictions' convention as given (``brats2024`` picks ``brats2024-gli``).
        ref_labels: the references' convention as given.

    Returns:
        ``(rules name, "lesion-wise" or "legacy", reason)``.
    """
    if "brats2024" in (labels, ref_labels):
        return "brats2024-gli", "lesion-wise", "BraTS 2024 post-treatment labels (--labels brats2024)"
    codes = Counter(
        case.case_id.split("-")[1].upper()
        for case in cases
        if case.case_id.upper().startswith("BRATS-") and "-" in case.case_id[6:]
    )
    known = [(code, n) for code, n in codes.most_common() if code in _CHALLENGE_RULES]
    if known:
        code = known[0][0]
        return _CHALLENGE_RULES[code], "lesion-wise", f"BraTS 2023+ case names (BraTS-{code}-...)"
    if any(case.layout == "brats2023" for case in cases):
        return "brats2023-gli", "lesion-wise", "BraTS 2023+ layout (challenge not in the case names: glioma rules)"
    return "brats2023-gli", "legacy", "pre-2023 layout: legacy metrics first, BraTS 2023 glioma lesion-wise beside them"


def _evaluate_job(
    job: tuple[Path, Case, str | None, str | None, str | None],
) -> tuple[str, dict[str, float] | None, str | None, tuple | None]:
    """``(case id, metrics or None, error or None, (path, problem, fix) of a convention mismatch or None)``."""
    pred_path, case, labels, ref_labels, rules = job
    try:
        return (
            case.case_id,
            evaluate_case(pred_path, case, labels=labels, ref_labels=ref_labels, rules=rules),
            None,
            None,
        )
    except ConventionMismatch as exc:
        return case.case_id, None, str(exc), (exc.path, exc.problem, exc.fix)
    except GliosegError as exc:
        return case.case_id, None, str(exc), None


def log_inputs(pairs: Sequence[tuple[Path, Case]]) -> None:
    """Log which modalities the predictions were made from, as their header stamps say
    (``glioseg predict`` writes ``inputs=...``): one line in all, and one per case predicted
    from fewer modalities than the most any prediction used."""
    inputs = {case.case_id: stamped_inputs(path) for path, case in pairs}
    counts = Counter(",".join(i) if i is not None else "not stamped" for i in inputs.values())
    if counts:
        logger.info(
            "modalities the predictions were made from (header stamps): %s",
            "; ".join(f"{k} ({n})" for k, n in counts.most_common()),
        )
    models = Counter(tag for tag in (stamped_model(path) for path, _ in pairs) if tag is not None)
    if models:
        tags = "; ".join(f"{k} ({n})" for k, n in sorted(models.items()))
        logger.info("shipped models that made them (header aux_file): %s", tags)
    most = max((len(i) for i in inputs.values() if i is not None), default=0)
    for case_id, used in inputs.items():
        if used is not None and len(used) < most:
            logger.info("%s: predicted from %s only", case_id, ", ".join(used))


def evaluate(
    pred_dir: str | Path,
    ref_root: str | Path,
    *,
    labels: str | None = None,
    ref_labels: str | None = None,
    rules: str | None = None,
    workers: int = 2,
    progress: bool = False,
) -> Evaluation:
    """Evaluate every prediction that has a labelled reference; list what has no partner.

    Args:
        pred_dir: folder of ``<case>.nii.gz`` label maps.
        ref_root: reference dataset (any layout).
        labels: convention of the predictions (``None``: the reference's; see :func:`detect_convention`).
        ref_labels: convention of the references (``None``: each case's own).
        rules: lesion-wise rule set (``None``: :func:`default_rules`; given, lesion-wise is primary).
        workers: processes evaluating cases in parallel (1: in this process).
        progress: show a tqdm progress bar.

    Raises:
        ConventionMismatch: a prediction is in another label convention than its reference and
            ``labels`` was not given (see the module docstring); no case is scored.
        GliosegError: a folder is missing or holds no prediction.
    """
    for name in (labels, ref_labels):
        if name is not None:
            get_convention(name)
    if rules is not None:
        get_rules(rules)
    pairing = pair_cases(pred_dir, ref_root)
    if rules is None:
        rules, primary, reason = default_rules([case for _, case in pairing.pairs], labels, ref_labels)
    else:
        primary, reason = "lesion-wise", f"chosen with --rules {rules}"
    logger.info("lesion-wise rules %s, %s metrics first (%s)", rules, primary, reason)
    for case_id in pairing.predictions_without_reference:  # listed in Evaluation (the CLI prints them once)
        logger.debug("prediction %s has no labelled reference case under %s", case_id, ref_root)
    for case_id in pairing.references_without_prediction:
        logger.debug("reference case %s has no prediction in %s", case_id, pred_dir)
    log_inputs(pairing.pairs)
    jobs = [(path, case, labels, ref_labels, rules) for path, case in pairing.pairs]
    outcomes = list(map_cases(_evaluate_job, jobs, workers=workers, desc="evaluate", progress=progress))
    result = Evaluation(
        predictions_without_reference=pairing.predictions_without_reference,
        references_without_prediction=pairing.references_without_prediction,
        rules=rules,
        primary=primary,
        rules_reason=reason,
    )
    mismatched = sorted((o for o in outcomes if o[3] is not None), key=lambda o: o[0])
    if mismatched:  # a systematic error: refuse the whole evaluation rather than score some cases
        path, problem, fix = mismatched[0][3]  # type: ignore[misc]
        others = f"; {len(mismatched) - 1} other prediction(s) hold such values too" if len(mismatched) > 1 else ""
        raise ConventionMismatch(path, problem + others, fix)
    accumulator = MetricAccumulator()
    result.failed.update(pairing.duplicates)
    for case_id, metrics, error, _ in sorted(outcomes, key=lambda o: o[0]):
        if error is not None:
            result.failed[case_id] = error
            logger.debug("%s", error)  # listed in Evaluation.failed (the CLI prints it once)
            continue
        accumulator.add(case_id, metrics)  # type: ignore[arg-type]
        result.rows.append({"case": case_id, **metrics})  # type: ignore[dict-item]
    if len(accumulator):
        result.summary = accumulator.summary()
    return result


# --- tables ------------------------------------------------------------------------------------


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _number(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _number_of(key: str, value: object) -> str:
    """Lesion counts as integers, everything else as :func:`_number`."""
    if key.startswith(("lesion_tp", "lesion_fp", "lesion_fn")):
        return str(int(value))  # type: ignore[call-overload]
    return _number(float(value))  # type: ignore[arg-type]


def per_case_csv(rows: Sequence[Mapping[str, float | str]]) -> str:
    """The text of ``per_case.csv``: the legacy keys, then the lesion-wise ones where the rows have them."""
    keys = METRIC_KEYS + (LESION_METRIC_KEYS if rows and LESION_METRIC_KEYS[0] in rows[0] else ())
    return _csv(("case", *keys), [[row["case"], *(_number_of(k, row[k]) for k in keys)] for row in rows])


def rules_lines(result: Evaluation) -> list[str]:
    """What the figures mean: the rule set and why, and the HD95 definition of each metric set."""
    rules = get_rules(result.rules)
    legacy = f"legacy (whole-image) metrics, HD95 '{LEGACY_HD95}': {HD95_DEFINITIONS[LEGACY_HD95]}"
    lesion = (
        f"lesion-wise metrics ({rules.name}: {rules.description}), HD95 '{LESIONWISE_HD95}': "
        f"{HD95_DEFINITIONS[LESIONWISE_HD95]}; misses and false positives {rules.miss_hd95_mm:g} mm"
    )
    first, second = (lesion, legacy) if result.primary == "lesion-wise" else (legacy, lesion)
    return [f"Primary: {first}.", f"Also: {second}.", f"Why: {result.rules_reason}."]


def summary_csv(summary: Mapping[str, Mapping[str, float]], n: int) -> str:
    """The text of ``summary.csv``."""
    return _csv(SUMMARY_COLUMNS, [[key, n, *(_number(summary[key][s]) for s in STATISTICS)] for key in summary])


def _summary_table(summary: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> list[str]:
    lines = ["| metric | mean | std | median | q1 | q3 |", "|---|---|---|---|---|---|"]
    for key in keys:
        if key in summary:
            lines.append(f"| {key} | " + " | ".join(f"{summary[key][s]:.4f}" for s in STATISTICS) + " |")
    return lines


def summary_markdown(result: Evaluation) -> str:
    """The text of ``summary.md``: the rules, the primary set's table, the other's, unmatched and failed cases."""
    lines = [f"# Evaluation ({len(result.rows)} cases)", "", *(f"- {line}" for line in rules_lines(result)), ""]
    if result.summary:
        tables = {
            "lesion-wise": (f"## Lesion-wise ({result.rules})", LESION_METRIC_KEYS),
            "legacy": ("## Legacy (whole image)", METRIC_KEYS),
        }
        order = ["lesion-wise", "legacy"] if result.primary == "lesion-wise" else ["legacy", "lesion-wise"]
        for name in order:
            title, keys = tables[name]
            if any(key in result.summary for key in keys):
                lines += [title, "", *_summary_table(result.summary, keys), ""]
        lines += [
            "Dice, IoU, sensitivity, specificity and accuracy are fractions; HD95 is in mm; lesion_tp/fp/fn are "
            "lesion counts per case. BraTS rules for empty masks."
        ]
    else:
        lines.append("No case could be evaluated.")
    for title, names in (
        ("Predictions without a reference", result.predictions_without_reference),
        ("References without a prediction", result.references_without_prediction),
    ):
        if names:
            lines += ["", f"## {title}", "", *(f"- {name}" for name in names)]
    if result.failed:
        lines += ["", "## Failed", "", *(f"- {case_id}: {message}" for case_id, message in result.failed.items())]
    return "\n".join(lines) + "\n"


def rules_json(result: Evaluation) -> str:
    """The text of ``rules.json``: rule set, parameters, primary set, reason, HD95 definitions."""
    rules = get_rules(result.rules)
    return json.dumps(
        {
            "rules": rules.name,
            "description": rules.description,
            "dilation": rules.dilation,
            "min_volume_mm3": dict(rules.min_volume_mm3),
            "miss_hd95_mm": rules.miss_hd95_mm,
            "primary": result.primary,
            "reason": result.rules_reason,
            "hd95": {
                "legacy": {"name": LEGACY_HD95, "definition": HD95_DEFINITIONS[LEGACY_HD95]},
                "lesion-wise": {"name": LESIONWISE_HD95, "definition": HD95_DEFINITIONS[LESIONWISE_HD95]},
            },
        },
        indent=2,
    ) + "\n"


def write_evaluation(result: Evaluation, out_dir: str | Path) -> list[Path]:
    """Write ``per_case.csv``, ``summary.csv``, ``summary.md`` and ``rules.json`` into ``out_dir`` (atomically).

    Returns:
        The files written.
    """
    out_dir = Path(out_dir)
    files = [out_dir / "per_case.csv", out_dir / "summary.csv", out_dir / "summary.md", out_dir / "rules.json"]
    write_text(files[0], per_case_csv(result.rows))
    write_text(files[1], summary_csv(result.summary, len(result.rows)))
    write_text(files[2], summary_markdown(result))
    write_text(files[3], rules_json(result))
    return files


def read_summary(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a ``summary.csv``: metric -> statistic (``n`` included) -> value.

    Raises:
        GliosegError: missing or malformed file.
    """
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(SUMMARY_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise GliosegError(
                    path,
                    f"summary table lacks column(s) {', '.join(sorted(missing))}",
                    "write it with `glioseg evaluate`",
                )
            return {row["metric"]: {k: float(row[k]) for k in SUMMARY_COLUMNS[1:]} for row in reader}
    except OSError as exc:
        raise GliosegError(path, f"cannot be read ({exc.strerror})", "run `glioseg evaluate` first") from None
    except ValueError as exc:
        raise GliosegError(path, f"malformed summary table ({exc})", "write it with `glioseg evaluate`") from None


def read_per_case(path: str | Path) -> list[dict[str, float | str]]:
    """Read a ``per_case.csv``: one dict per row, ``case`` a string and the metrics floats.

    Raises:
        GliosegError: missing or malformed file.
    """
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if "case" not in (reader.fieldnames or ()):
                raise GliosegError(path, "per-case table has no 'case' column", "write it with `glioseg evaluate`")
            return [{k: (v if k == "case" else float(v)) for k, v in row.items()} for row in reader]
    except OSError as exc:
        raise GliosegError(path, f"cannot be read ({exc.strerror})", "run `glioseg evaluate` first") from None
    except ValueError as exc:
        raise GliosegError(path, f"malformed per-case table ({exc})", "write it with `glioseg evaluate`") from None
