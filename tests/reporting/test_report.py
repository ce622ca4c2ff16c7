"""The report: every referenced file exists, tables carry the evaluation numbers, missing data is handled."""

import csv
import re

import nibabel as nib
import numpy as np
import pytest

from glioseg.cli import main
from glioseg.data.io import write_label_map
from glioseg.errors import GliosegError
from glioseg.evaluation import Evaluation, write_evaluation
from glioseg.metrics import METRIC_KEYS, MetricAccumulator
from glioseg.reporting.figures import tumor_slices
from glioseg.reporting.report import build_report, read_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_history(folder, rows, columns):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def full_history(epochs=6):
    rows = []
    for e in range(1, epochs + 1):
        validated = e % 2 == 0  # validation every 2 epochs: empty cells in between
        rows.append({
            "epoch": e, "train_loss": 1 / e, "train_voxel_accuracy": 0.9 + e / 100, "train_iou": 0.5 + e / 50,
            "val_loss": 1.2 / e if validated else "", "val_voxel_accuracy": 0.88 + e / 100 if validated else "",
            "val_iou": 0.4 + e / 50 if validated else "",
            "val_dice_wt": 0.5 + e / 20 if validated else "", "val_dice_tc": 0.4 + e / 20 if validated else "",
            "val_dice_et": (0.9 if e == 4 else 0.3) if validated else "", "lr": 1e-3, "time_s": 10.0 * e,
        })
    return rows


def write_eval(folder, seed, cases=5):
    rng = np.random.default_rng(seed)
    accumulator = MetricAccumulator()
    rows = []
    for i in range(cases):
        metrics = {k: float(rng.uniform(0, 50) if k.startswith("hd95") else rng.uniform(0.5, 1)) for k in METRIC_KEYS}
        accumulator.add(f"case{i}", metrics)
        rows.append({"case": f"case{i}", **metrics})
    result = Evaluation(rows=rows, summary=accumulator.summary())
    write_evaluation(result, folder)
    return result.summary


def write_cases_and_predictions(write_case, root):
    preds = {"unet": root / "pred_unet", "sa": root / "pred_sa"}
    for i, case_id in enumerate(("Brats18_R_1", "Brats18_R_2")):
        folder = write_case(root / "cases", case_id, shape=(24, 26, 22), seed=i)
        seg = nib.load(str(folder / f"{case_id}_seg.nii.gz"))
        labels = np.asarray(seg.dataobj)
        write_label_map(preds["unet"] / f"{case_id}.nii.gz", np.roll(labels, 1, axis=0), seg.affine)
        if i == 0:  # the second model misses one case
            write_label_map(preds["sa"] / f"{case_id}.nii.gz", np.where(labels == 4, 1, labels), seg.affine)
    return preds


def referenced_files(text, pattern):
    return [m for m in re.findall(pattern, text) if not m.startswith(("http:", "https:", "#", "data:"))]


def test_report_references_only_existing_files_and_shows_the_numbers(tmp_path, write_case):
    runs = tmp_path / "runs"
    write_history(runs / "unet", full_history(), list(full_history()[0]))
    write_history(
        runs / "sa",
        [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": ""}],
        ["epoch", "train_loss", "val_dice_wt"],
    )
    (runs / "empty").mkdir(parents=True)  # no metrics.csv at all
    test_summary = write_eval(runs / "unet" / "eval_test", seed=1)
    write_eval(runs / "sa" / "eval_test", seed=2)
    explicit = write_eval(tmp_path / "sa_val_eval", seed=3)
    preds = write_cases_and_predictions(write_case, tmp_path)
    out = tmp_path / "report"

    code = main([
        "report", str(runs / "unet"), f"sa={runs / 'sa'}", str(runs / "empty"), "-o", str(out),
        "--cases", str(tmp_path / "cases"), "--pred", f"unet={preds['unet']}", "--pred", f"sa={preds['sa']}",
        "--eval", f"sa:val={tmp_path / 'sa_val_eval'}", "--num-cases", "2",
    ])
    assert code == 0
    page = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    images = referenced_files(page, r'src="([^"]+)"') + referenced_files(page, r'href="([^"]+)"')
    assert images and all((out / name).is_file() for name in images), images
    assert all(not name.startswith("/") and "/" not in name for name in images)  # relative, beside the page
    md_images = referenced_files(markdown, r"!\[[^\]]*\]\(([^)]+)\)")
    assert sorted(md_images) == sorted(referenced_files(page, r'src="([^"]+)"'))
    for name in images:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC or name.startswith("viewer_")
    names = set(images)
    assert {"curves_unet.png", "curves_sa.png", "boxplot_test.png", "boxplot_val.png"} <= names
    assert {"prediction_Brats18_R_1.png", "prediction_Brats18_R_2.png"} <= names
    assert "No training history" in page and "curves_empty.png" not in names  # run without metrics.csv

    # Table IV: evaluation numbers as mean ± std; Table III: IoU = mean of the region IoUs
    assert f"{test_summary['dice_tc']['mean']:.4f} ± {test_summary['dice_tc']['std']:.4f}" in page
    assert f"{explicit['dice_et']['mean']:.4f} ± {explicit['dice_et']['std']:.4f}" in page
    iou = np.mean([test_summary[f"iou_{r}"]["mean"] for r in ("wt", "tc", "et")])
    assert f"{iou:.4f}" in page and f"{test_summary['accuracy']['mean']:.4f}" in page
    # training-time fallback (dagger) from the best-validation-Dice epoch (4), not the last (6)
    assert "0.9400†" in page and "0.9200†" in page  # train / val accuracy at epoch 4
    assert "| unet | val | 0.6000† | 0.7000† | 0.9000† |" in markdown


def test_report_without_cases_or_evaluations(tmp_path):
    write_history(tmp_path / "run", full_history(3), list(full_history()[0]))
    path = build_report([(None, tmp_path / "run")], tmp_path / "out")
    page = path.read_text()
    assert "no prediction images" in page
    assert all((tmp_path / "out" / name).is_file() for name in re.findall(r'src="([^"]+)"', page))
    with pytest.raises(GliosegError, match="run folder not found"):
        build_report([(None, tmp_path / "missing")], tmp_path / "out")
    with pytest.raises(GliosegError, match="share a name"):
        build_report([(None, tmp_path / "run"), (None, tmp_path / "run")], tmp_path / "out")


def test_history_reading_tolerates_empty_and_missing_columns(tmp_path):
    write_history(
        tmp_path, [{"epoch": 1, "train_loss": "0.5"}, {"epoch": 2, "train_loss": ""}], ["epoch", "train_loss"]
    )
    history = read_history(tmp_path / "metrics.csv")
    assert history["train_loss"][0] == 0.5 and np.isnan(history["train_loss"][1])
    assert read_history(tmp_path / "nothing.csv") == {}


def test_tumor_slices_pick_the_largest_area():
    mask = np.zeros((10, 12, 14), bool)
    mask[2:5, 3:9, 7] = True  # one big axial plane
    mask[6, 4, 2:12] = True
    slices = tumor_slices([None, mask], mask.shape)
    assert slices["axial"] == 7
    assert slices["sagittal"] == 6 and slices["coronal"] == 4  # the line of 10 beats the planes of 6
    assert tumor_slices([np.zeros_like(mask)], mask.shape) == {"axial": 7, "coronal": 6, "sagittal": 5}


def test_tumor_slices_break_ties_in_the_middle():
    mask = np.zeros((9, 9, 9), bool)
    mask[2:7, 3:6, 1:4] = True  # every slice through the box has the same area
    assert tumor_slices([mask], mask.shape) == {"axial": 2, "coronal": 4, "sagittal": 4}


def test_report_shows_legacy_and_lesion_wise_sets_with_their_hd95_definitions(tmp_path):
    from glioseg.metrics import LESION_METRIC_KEYS

    rows, accumulator = [], MetricAccumulator()
    for i in range(3):
        metrics = {k: 0.8 + i / 100 if "dice" in k else 5.0 + i for k in METRIC_KEYS}
        metrics.update({k: (0.5 if "dice" in k else 187.0 if "hd95" in k else 1) for k in LESION_METRIC_KEYS})
        accumulator.add(f"case{i}", metrics)
        rows.append({"case": f"case{i}", **metrics})
    write_evaluation(
        Evaluation(rows=rows, summary=accumulator.summary(), rules="brats2023-met", primary="lesion-wise"),
        tmp_path / "eval",
    )
    build_report([], tmp_path / "report", evaluations={("resunet", "val"): tmp_path / "eval"})
    text = (tmp_path / "report" / "report.md").read_text()
    assert "BraTS metrics: legacy and lesion-wise" in text
    row = next(line for line in text.splitlines() if line.startswith("| resunet | val | brats2023-met |"))
    assert "| 0.8100 |" in row and "| 6.00 |" in row and "| 0.5000 |" in row and "| 187.00 |" in row
    assert "HD95 'pooled'" in text and "HD95 'surface-area'" in text
