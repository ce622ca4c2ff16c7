"""The shipped model's post-processing with the former size-only region rule and with the rule that
keeps each region's largest component (issue 22, item 1), on cases the model never saw.

The model predicts each case once without post-processing (``--min-component-size 0`` and the
region sizes 0); then, in memory:

* ``raw``: no post-processing;
* ``size-only (former)``: the shipped setting with the rule of recipe C's time: ET components
  under 300 voxels become necrosis, tumour-core components under 5000 voxels become edema, the
  largest ones included (so a small tumour's whole core could go);
* ``largest kept (now)``: the same setting as glioseg applies it now: the largest ET and
  tumour-core components always stay.

Each is scored with the BraTS rules (legacy Dice and lesion-wise BraTS 2023 GLI)::

    python benchmarks/postprocess_small_tumours.py --cases ../shared/data/brats2018_extra \
        --work /tmp/glioseg-pp-small --out benchmarks/postprocess_small_tumours
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from glioseg.checkpoint import load_checkpoint
from glioseg.checksums import shipped_checkpoints
from glioseg.data.discovery import discover
from glioseg.data.io import read_volume
from glioseg.inference.postprocess import REGION_FILTERS, PostprocessConfig, postprocess
from glioseg.labels import to_internal
from glioseg.metrics import case_metrics

REGIONS = ("wt", "tc", "et")


def size_only(labels: np.ndarray, region: str, min_size: int) -> np.ndarray:
    """The former region rule: every component under ``min_size`` voxels relabelled, the largest too."""
    members, replacement = REGION_FILTERS[region]
    components, count = ndimage.label(np.isin(labels, members), structure=np.ones((3, 3, 3), bool))
    if min_size <= 0 or count == 0:
        return labels
    small = np.concatenate([[False], np.bincount(components.ravel())[1:] < min_size])
    out = labels.copy()
    out[small[components]] = replacement
    return out


def former(labels: np.ndarray, setting: PostprocessConfig) -> np.ndarray:
    whole_only = dataclasses.replace(setting, min_et_component_size=0, min_core_component_size=0)
    labels = postprocess(labels, whole_only)
    labels = size_only(labels, "et", setting.min_et_component_size)
    return size_only(labels, "tc", setting.min_core_component_size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the raw predictions (reused)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.csv and OUT.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    shipped = shipped_checkpoints()[0]
    setting = PostprocessConfig(**load_checkpoint(shipped)["config"]["postprocess"])
    subprocess.run(
        [
            sys.executable,
            "-m",
            "glioseg",
            "predict",
            str(args.cases),
            "-o",
            str(args.work),
            "--continue",
            "--quiet",
            "--threads",
            str(args.threads),
            "--backend",
            "torch",
            "--min-component-size",
            "0",
            "--min-et-component-size",
            "0",
            "--min-core-component-size",
            "0",
        ],
        check=True,
    )
    variants = {
        "raw": lambda x: x,
        "size-only (former)": lambda x: former(x, setting),
        "largest kept (now)": lambda x: postprocess(x, setting),
    }
    rows = []
    for case in discover(args.cases).cases:
        ref = read_volume(case.label, dtype=None)
        ref_labels = to_internal(ref.data, case.convention)
        raw = to_internal(read_volume(args.work / f"{case.case_id}.nii.gz", dtype=None).data, case.convention)
        core = int(np.isin(ref_labels, (1, 3)).sum())
        for name, apply in variants.items():
            metrics = case_metrics(apply(raw), ref_labels, ref.spacing, rules="brats2023-gli")
            rows.append(
                {
                    "case": case.case_id,
                    "reference_core_voxels": core,
                    "variant": name,
                    **{f"{p}dice_{r}": metrics[f"{p}dice_{r}"] for p in ("", "lesion_") for r in REGIONS},
                }
            )
            print(case.case_id, name, " ".join(f"{metrics[f'dice_{r}']:.3f}" for r in REGIONS), flush=True)
    keys = [k for k in rows[0] if "dice" in k]
    with open(args.out.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cases = sorted({r["case"] for r in rows})
    lines = [
        f"# Shipped model ({shipped.name}), post-processing rules on {len(cases)} cases it never saw "
        f"({args.cases.name})",
        "",
        f"Setting: {dataclasses.asdict(setting)}. Mean over cases (Dice; lesion-wise BraTS 2023 GLI).",
        "",
        "| variant | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name in variants:
        chosen = [r for r in rows if r["variant"] == name]
        lines.append(f"| {name} | " + " | ".join(f"{np.mean([r[k] for r in chosen]):.4f}" for k in keys) + " |")
    lines += ["", "Per case, Dice TC / ET (raw | size-only | largest kept), with the reference core size:", ""]
    lines += ["| case | core voxels | raw | size-only (former) | largest kept (now) |", "|---|---:|---|---|---|"]
    for c in cases:
        by = {r["variant"]: r for r in rows if r["case"] == c}
        lines.append(
            f"| {c} | {by['raw']['reference_core_voxels']} | "
            + " | ".join(f"{by[v]['dice_tc']:.3f} / {by[v]['dice_et']:.3f}" for v in variants)
            + " |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
