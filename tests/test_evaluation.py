"""`glioseg evaluate` against an independent implementation of the official BraTS definitions."""

import csv

import nibabel as nib
import numpy as np
import pytest
from conftest import BRATS_AFFINE

from glioseg.cli import main
from glioseg.data.io import write_label_map
from glioseg.evaluation import evaluate, read_per_case, read_summary

# --- the reference implementation: plain numpy, written from the BraTS definitions --------------

INTERNAL_FROM = {"brats2018": {0: 0, 1: 1, 2: 2, 4: 3}, "brats2023": {0: 0, 1: 1, 2: 2, 3: 3}}
FILE_FROM_INTERNAL = {name: {v: k for k, v in table.items()} for name, table in INTERNAL_FROM.items()}
REGION_CLASSES = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
ONE_EMPTY_HD95 = 373.13


def convert(labels, table):
    out = np.zeros(labels.shape, np.uint8)
    for source, target in table.items():
        out[labels == source] = target
    return out


def surface(mask):
    """Voxels of the mask with at least one face neighbour outside it (outside the array counts as outside)."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def brute_hd95(pred, ref, spacing):
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return ONE_EMPTY_HD95
    a, b = np.argwhere(surface(pred)) * spacing, np.argwhere(surface(ref)) * spacing

    def directed(x, y):  # every pair of surface voxels, |x - y|^2 = |x|^2 + |y|^2 - 2 x.y
        squared = (x**2).sum(1)[:, None] + (y**2).sum(1)[None] - 2 * x @ y.T
        return np.sqrt(np.maximum(squared.min(axis=1), 0))

    # MedPy's hd95 (the BraTS 2018-2021 organisers'): one percentile of both directions pooled
    return np.percentile(np.concatenate((directed(a, b), directed(b, a))), 95)


def reference_metrics(pred, ref, spacing):
    """Every metric of the per-case table from internal label maps."""
    out = {}
    for region, classes in REGION_CLASSES.items():
        p, r = np.isin(pred, classes), np.isin(ref, classes)
        tp, fp, fn = np.sum(p & r), np.sum(p & ~r), np.sum(~p & r)
        tn = p.size - tp - fp - fn
        both_empty = not p.any() and not r.any()
        out[f"dice_{region}"] = 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn)
        out[f"iou_{region}"] = 1.0 if both_empty else tp / (tp + fp + fn)
        out[f"sensitivity_{region}"] = (1.0 if not p.any() else 0.0) if not r.any() else tp / (tp + fn)
        out[f"specificity_{region}"] = tn / (tn + fp)
        out[f"hd95_{region}"] = brute_hd95(p, r, np.asarray(spacing))
    out["accuracy"] = np.mean(pred == ref)
    return out


# --- helpers ------------------------------------------------------------------------------------------


def write_reference(root, case_id, internal, affine, convention="brats2018"):
    folder = root / case_id
    folder.mkdir(parents=True)
    flair = np.full(internal.shape, 100, np.int16)
    nib.save(nib.Nifti1Image(flair, affine), str(folder / f"{case_id}_flair.nii.gz"))
    nib.save(
        nib.Nifti1Image(convert(internal, FILE_FROM_INTERNAL[convention]), affine),
        str(folder / f"{case_id}_seg.nii.gz"),
    )


def write_prediction(pred_dir, case_id, internal, affine, convention="brats2018"):
    write_label_map(pred_dir / f"{case_id}.nii.gz", convert(internal, FILE_FROM_INTERNAL[convention]), affine)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_against_reference(rows, expected, rel):
    assert [row["case"] for row in rows] == sorted(expected)
    for row in rows:
        want = expected[row["case"]]
        assert set(want) <= set(row)
        for key, value in want.items():
            assert float(row[key]) == pytest.approx(value, rel=rel, abs=1e-9), (row["case"], key)


def synthetic_pairs():
    """(case id, prediction, reference) covering the empty-region rules."""
    shape = (18, 16, 14)
    ref = np.zeros(shape, np.uint8)
    ref[4:12, 3:11, 3:10] = 2
    ref[6:10, 5:9, 5:8] = 1
    ref[7:9, 6:8, 5:8] = 3
    shifted = np.roll(ref, (1, -2, 1), axis=(0, 1, 2))
    no_et_ref = np.where(ref == 3, 1, ref).astype(np.uint8)
    fp_et = no_et_ref.copy()
    fp_et[5, 4, 4] = 3  # reference has no ET, prediction one voxel
    empty = np.zeros(shape, np.uint8)
    return [
        ("Brats18_S_1", shifted, ref),
        ("Brats18_S_2", fp_et, no_et_ref),  # ET: reference empty, prediction not
        ("Brats18_S_3", no_et_ref, no_et_ref),  # ET: both empty
        ("Brats18_S_4", empty, ref),  # everything missed
    ]


# --- 2: evaluate matches the reference --------------------------------------------------------------


def test_evaluate_matches_reference_on_synthetic_pairs(tmp_path):
    affine = np.diag([-1.0, -1.2, 1.5, 1.0])  # anisotropic: HD95 must use the spacing
    spacing = (1.0, 1.2, 1.5)
    expected = {}
    for case_id, pred, ref in synthetic_pairs():
        write_reference(tmp_path / "ref", case_id, ref, affine)
        write_prediction(tmp_path / "pred", case_id, pred, affine, "brats2018")  # the references' convention
        expected[case_id] = reference_metrics(pred, ref, spacing)
    assert expected["Brats18_S_2"]["dice_et"] == 0 and expected["Brats18_S_3"]["dice_et"] == 1
    assert expected["Brats18_S_2"]["hd95_et"] == ONE_EMPTY_HD95 and expected["Brats18_S_3"]["hd95_et"] == 0

    result = evaluate(tmp_path / "pred", tmp_path / "ref", workers=1)
    assert result.complete
    check_against_reference(result.rows, expected, rel=1e-6)  # the header stores the spacing as float32

    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred"),
                "--ref",
                str(tmp_path / "ref"),
                "-o",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 0
    )
    per_case = read_csv(tmp_path / "out" / "per_case.csv")
    check_against_reference(per_case, expected, rel=1e-5)
    assert list(per_case[0])[:4] == ["case", "dice_wt", "dice_tc", "dice_et"] and "accuracy" in per_case[0]
    summary = read_summary(tmp_path / "out" / "summary.csv")
    for key in ("dice_et", "hd95_wt", "accuracy"):
        values = np.array([expected[c][key] for c in sorted(expected)])
        assert summary[key]["mean"] == pytest.approx(values.mean(), rel=1e-5)
        assert summary[key]["std"] == pytest.approx(values.std(), rel=1e-5, abs=1e-9)
        assert summary[key]["median"] == pytest.approx(np.median(values), rel=1e-5)
        assert summary[key]["q1"] == pytest.approx(np.percentile(values, 25), rel=1e-5)
        assert summary[key]["q3"] == pytest.approx(np.percentile(values, 75), rel=1e-5)
        assert summary[key]["n"] == 4
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "| dice_wt |" in markdown and "| hd95_et |" in markdown


@pytest.mark.real
def test_evaluate_matches_reference_on_real_label_pairs(real_data_root, tmp_path):
    from scipy import ndimage

    expected = {}
    for case_id, names in (("Brats18_2013_2_1", ("shift", "noet")), ("Brats18_CBICA_ABM_1", ("erode",))):
        seg = nib.load(str(real_data_root / case_id / f"{case_id}_seg.nii.gz"))
        internal = convert(np.asarray(seg.dataobj), INTERNAL_FROM["brats2018"])
        centre = np.round(ndimage.center_of_mass(internal > 0)).astype(int)
        box = tuple(slice(max(c - 12, 0), max(c - 12, 0) + 24) for c in centre)  # small: brute-force HD95
        ref = internal[box]
        assert np.any(ref == 3) and np.any(ref == 1) and np.any(ref == 2)
        eroded = ref.copy()
        et = ref == 3
        eroded[et & ~ndimage.binary_erosion(et)] = 1  # thinner ET, its rim becomes necrosis
        variants = {
            "shift": np.roll(ref, (2, -1, 3), axis=(0, 1, 2)),
            "erode": eroded,
            "noet": np.where(ref == 3, 1, ref).astype(np.uint8),  # predicted ET empty
        }
        for name in names:
            pred = variants[name]
            pair_id = f"{case_id}{name.upper()}"
            write_reference(tmp_path / "ref", pair_id, ref, BRATS_AFFINE)
            write_prediction(tmp_path / "pred", pair_id, pred, BRATS_AFFINE)
            expected[pair_id] = reference_metrics(pred, ref, (1.0, 1.0, 1.0))
    result = evaluate(tmp_path / "pred", tmp_path / "ref", workers=2)
    rows, summary = result.rows, result.summary
    check_against_reference(rows, expected, rel=1e-9)
    assert summary["dice_wt"]["mean"] == pytest.approx(np.mean([e["dice_wt"] for e in expected.values()]))


# --- unmatched and mismatched cases -------------------------------------------------------------------


def test_unmatched_and_mismatched_cases_are_reported(tmp_path, capsys):
    (_case_id, pred, ref), *_ = synthetic_pairs()
    for name in ("Brats18_A_1", "Brats18_B_1", "Brats18_NOPRED_1"):
        write_reference(tmp_path / "ref", name, ref, BRATS_AFFINE)
    write_prediction(tmp_path / "pred", "Brats18_A_1", pred, BRATS_AFFINE)
    write_prediction(tmp_path / "pred", "Brats18_B_1", pred[:-1], BRATS_AFFINE)  # wrong shape
    write_prediction(tmp_path / "pred", "Brats18_NOREF_1", pred, BRATS_AFFINE)
    out = tmp_path / "out"

    code = main(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "-o", str(out), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Brats18_NOREF_1" in err and "no labelled reference" in err
    assert "Brats18_NOPRED_1" in err and "no prediction" in err
    assert "Brats18_B_1.nii.gz" in err and "shape" in err
    assert [row["case"] for row in read_per_case(out / "per_case.csv")] == ["Brats18_A_1"]
    markdown = (out / "summary.md").read_text()
    assert "Brats18_NOREF_1" in markdown and "Brats18_NOPRED_1" in markdown and "Brats18_B_1" in markdown


def test_affine_mismatch_and_given_conventions(tmp_path):
    (_case_id, pred, ref), *_ = synthetic_pairs()
    write_reference(tmp_path / "ref", "Brats18_A_1", ref, BRATS_AFFINE)
    moved = BRATS_AFFINE.copy()
    moved[0, 3] += 5.0
    write_prediction(tmp_path / "pred", "Brats18_A_1", pred, moved)
    result = evaluate(tmp_path / "pred", tmp_path / "ref", workers=1)
    assert not result.rows and "affine" in result.failed["Brats18_A_1"]

    write_prediction(tmp_path / "pred", "Brats18_A_1", pred, BRATS_AFFINE, "brats2023")
    wrong = evaluate(tmp_path / "pred", tmp_path / "ref", labels="brats2018", workers=1)  # 3 is not a 2018 label
    assert "value(s) [3]" in wrong.failed["Brats18_A_1"]
    right = evaluate(tmp_path / "pred", tmp_path / "ref", labels="brats2023", workers=1)
    assert right.rows[0]["dice_wt"] == pytest.approx(reference_metrics(pred, ref, (1, 1, 1))["dice_wt"])


# --- lesion-wise rules ------------------------------------------------------------------------------


def test_lesion_wise_columns_rules_and_their_default(tmp_path, capsys):
    # A reference with one large lesion; the prediction finds it and adds a far false-positive speck.
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    ref = np.zeros((30, 16, 14), np.uint8)
    ref[3:10, 3:10, 3:10] = 2
    ref[5:8, 5:8, 5:8] = 3
    pred = ref.copy()
    pred[25, 8, 8] = 2
    write_reference(tmp_path / "ref", "Brats18_L_1", ref, affine)
    write_prediction(tmp_path / "pred", "Brats18_L_1", pred, affine)

    result = evaluate(tmp_path / "pred", tmp_path / "ref", workers=1)
    assert (result.rules, result.primary) == ("brats2023-gli", "legacy")  # pre-2023 layout: legacy first
    row = result.rows[0]
    # WT: the lesion is found exactly (Dice 1, HD95 0) and one false positive: (1 + 0) / 2, (0 + 374) / 2
    assert (row["lesion_dice_wt"], row["lesion_hd95_wt"]) == (0.5, 187.0)
    assert (row["lesion_tp_wt"], row["lesion_fp_wt"], row["lesion_fn_wt"]) == (1, 1, 0)
    # ET: 27 voxels <= 50 mm^3 is left out under brats2023-gli: nothing to score, Dice 1
    assert (row["lesion_dice_et"], row["lesion_tp_et"], row["lesion_fp_et"]) == (1.0, 0, 0)
    assert row["dice_wt"] == pytest.approx(2 * 343 / (343 + 344))

    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred"),
                "--ref",
                str(tmp_path / "ref"),
                "-o",
                str(out),
                "--quiet",
                "--rules",
                "brats2023-met",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Primary: lesion-wise metrics (brats2023-met" in printed and "HD95 'pooled'" in printed
    per_case = read_csv(out / "per_case.csv")
    assert list(per_case[0])[-15:] == [
        f"lesion_{m}_{r}" for m in ("dice", "hd95", "tp", "fp", "fn") for r in ("wt", "tc", "et")
    ]
    assert per_case[0]["lesion_fp_wt"] == "1"
    assert (per_case[0]["lesion_dice_et"], per_case[0]["lesion_tp_et"]) == ("1", "1")  # MET keeps lesions over 2 mm^3
    rules = __import__("json").loads((out / "rules.json").read_text())
    assert rules["rules"] == "brats2023-met" and rules["primary"] == "lesion-wise"
    assert rules["hd95"]["legacy"]["name"] == "pooled" and rules["hd95"]["lesion-wise"]["name"] == "surface-area"
    markdown = (out / "summary.md").read_text()
    assert markdown.index("## Lesion-wise (brats2023-met)") < markdown.index("## Legacy (whole image)")
    assert "| lesion_dice_wt |" in markdown and "chosen with --rules brats2023-met" in markdown


def test_default_rules_follow_the_case_names_and_the_2024_labels(tmp_path):
    from glioseg.data.discovery import Case
    from glioseg.evaluation import default_rules

    def case(case_id, layout):
        return Case(case_id, {}, None, layout, "brats2023")

    assert default_rules([case("BraTS-MET-00001-000", "brats2023")])[:2] == ("brats2023-met", "lesion-wise")
    assert default_rules([case("BraTS-SSA-00001-000", "brats2023")])[:2] == ("brats2023-ssa", "lesion-wise")
    assert default_rules([case("BraTS-GLI-00001-000", "brats2023")], labels="brats2024")[:2] == (
        "brats2024-gli",
        "lesion-wise",
    )
    assert default_rules([case("Brats18_2013_2_1", "brats2018")])[:2] == ("brats2023-gli", "legacy")
