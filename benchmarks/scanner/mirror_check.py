"""Does a series flipped in its voxels (header unchanged) register better mirrored back? NMI of both, real cases.

For each case (real BraTS 2018, skull-stripped, 1 mm) each modality is moved by its own random
rigid motion and imaged on the clinical grid of ``run.py`` (FLAIR axial 0.5 x 0.5 x 5 mm, T2
axial 0.6 x 0.6 x 4 mm, T1ce 3D 1 mm, T1 sagittal 1 x 1 x 1.2 mm; thick slices as smoothed
slabs), as ``glioseg prepare`` would receive it. ``--skull`` wraps the head in ``run.py``'s
simulated skull and scalp first. Then FLAIR, T1 and T2 are each registered to the T1ce with
:func:`glioseg.prepare.register.register_rigid` (what ``prepare`` runs), as acquired (``true``)
and with their voxels flipped along the voxel axis that runs left-right (``lr``),
anterior-posterior (``ap``) or superior-inferior (``si``), the header unchanged: the
conversion error. For ``true`` and ``lr`` the series' mirror image
(:func:`glioseg.prepare.register.mirrored`, left-right about its field of view's centre) is
registered too; for ``ap`` and ``si`` only when the series passes the current quality check
(then the mirror along its own axis). Rows: the NMI of the registration and of the mirror's,
their difference (mirror - series), whether the current check passes, and the seconds of each
registration.

Usage::

    nice -n 5 python benchmarks/scanner/mirror_check.py --cases brats2018/Brats18_CBICA_AOZ_1 \\
        brats2018_extra/Brats18_CBICA_APR_1 --out benchmarks/scanner/mirror [--skull]

Writes ``mirror_check.csv`` (appending, so runs can be split) and ``mirror_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import GRIDS, about, add_skull, image_on_scanner, random_motion

from glioseg.prepare.register import MIN_NMI, MIRROR_MARGIN, mirrored, register_rigid

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SERIES = ("flair", "t1", "t2")
REFERENCE = "t1ce"
AXES = {"lr": 0, "ap": 1, "si": 2}
"""A flip's name -> the LPS axis it reverses."""
FIELDS = (
    "case", "setting", "modality", "variant", "nmi", "best_neighbour_nmi", "converged", "mirror_axis", "mirror_nmi",
    "margin", "seconds", "mirror_seconds",
)


def flipped(image: sitk.Image, axis: int) -> sitk.Image:
    """``image``'s voxels reversed along the voxel axis that runs closest to LPS ``axis``; the header kept."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    voxel_axis = int(np.argmax(np.abs(direction[axis])))
    array = sitk.GetArrayFromImage(image)
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.flip(array, axis=2 - voxel_axis)))
    out.CopyInformation(image)
    return out


def simulate(case: Path, rng: np.random.Generator, skull: bool) -> dict[str, sitk.Image]:
    """The case's four series on their clinical grids, each after its own random motion."""
    images = {m: sitk.ReadImage(str(case / f"{case.name}_{m}.nii.gz"), sitk.sitkFloat32) for m in (*SERIES, REFERENCE)}
    brain = sitk.GetArrayFromImage(images[REFERENCE]) > 0
    if skull:
        heads = add_skull({m: sitk.GetArrayFromImage(i) for m, i in images.items()}, brain, rng)
        for m, array in heads.items():
            image = sitk.GetImageFromArray(array.astype(np.float32))
            image.CopyInformation(images[m])
            images[m] = image
    centre = np.array(
        images[REFERENCE].TransformContinuousIndexToPhysicalPoint(np.argwhere(brain).mean(0)[::-1].tolist())
    )
    out = {}
    for m, image in images.items():
        motion = about(random_motion(rng), centre)
        size, spacing, direction = GRIDS[m]
        out[m] = image_on_scanner(image, motion, size, spacing, direction, motion[:3, :3] @ centre + motion[:3, 3])
    return out


def timed_registration(series: sitk.Image, reference: sitk.Image):
    started = time.perf_counter()
    found = register_rigid(series, reference)
    return found, time.perf_counter() - started


def measure(case: Path, setting: str, rng: np.random.Generator, variants: list[str]) -> list[dict]:
    images = simulate(case, rng, skull=setting == "skull")
    rows = []
    for modality in SERIES:
        for variant in variants:
            series = images[modality] if variant == "true" else flipped(images[modality], AXES[variant])
            found, seconds = timed_registration(series, images[REFERENCE])
            row = {
                "case": f"{case.parent.name}/{case.name}", "setting": setting, "modality": modality,
                "variant": variant, "nmi": round(found.nmi, 4),
                "best_neighbour_nmi": round(found.best_neighbour_nmi, 4),
                "converged": found.converged, "mirror_axis": "", "mirror_nmi": "", "margin": "",
                "seconds": round(seconds, 2), "mirror_seconds": "",
            }
            axis = "lr" if variant in ("true", "lr") else variant if found.converged else None
            if axis is not None:
                mirror, mirror_seconds = timed_registration(mirrored(series, AXES[axis]), images[REFERENCE])
                row.update(
                    mirror_axis=axis, mirror_nmi=round(mirror.nmi, 4), margin=round(mirror.nmi - found.nmi, 4),
                    mirror_seconds=round(mirror_seconds, 2),
                )
            print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[dict], how: str) -> str:
    """Per series: the correct series and the series flipped left-right (measured, or the correct series' two NMIs
    swapped), whether the mirror check refuses each; then the front-back and head-foot flips."""

    def refused(nmi: float, mirror: float) -> str:
        return "**refused**" if mirror >= max(MIN_NMI, nmi + MIRROR_MARGIN) else "accepted"  # Registration.mirrored

    by_key = {(r["case"], r["setting"], r["modality"], r["variant"]): r for r in rows}
    lines = [
        "# Mirror check: each series and its left-right mirror image, registered to the T1ce (`mirror_check.py`)",
        "",
        how,
        "",
        f"A series is refused when its mirror image's NMI reaches {MIN_NMI} and exceeds its own by more than "
        f"`MIRROR_MARGIN` = {MIRROR_MARGIN}. Flipped: the series' voxels reversed along its left-right axis, the "
        "header unchanged; where not registered itself (marked =), its NMIs are the correct series' two swapped "
        "(on these axis-aligned grids it is the same image as the correct series' mirror).",
        "",
        "| case | setting | series | NMI | mirror NMI | mirror - NMI | check | flipped: NMI | mirror NMI | "
        "mirror - NMI | check | s (registration, mirror) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    correct, flips = [], []
    for (case, setting, modality, variant), r in by_key.items():
        if variant != "true":
            continue
        nmi, mirror = float(r["nmi"]), float(r["mirror_nmi"])
        flip = by_key.get((case, setting, modality, "lr"))
        f_nmi, f_mirror = (float(flip["nmi"]), float(flip["mirror_nmi"])) if flip else (mirror, nmi)
        mark = "" if flip else "="
        if flip and flip["converged"] != "True":
            mark = "†"  # the flipped series' own registration failed the quality check already
        correct.append(mirror - nmi)
        flips.append(f_mirror - f_nmi)
        lines.append(
            f"| {case} | {setting} | {modality} | {nmi:.4f} | {mirror:.4f} | {mirror - nmi:+.4f} | "
            f"{refused(nmi, mirror)} | {mark}{f_nmi:.4f} | {mark}{f_mirror:.4f} | {f_mirror - f_nmi:+.4f} | "
            f"{refused(f_nmi, f_mirror)} | {r['seconds']}, {r['mirror_seconds']} |"
        )
    if correct:
        measured = sum(1 for r in rows if r["variant"] == "lr")
        lines += [
            "",
            "† registered directly, and not a local maximum: the quality check refuses it already (prepare names it "
            "as mirrored, its mirror's registration having converged).",
            "",
            f"Mirror - NMI: correct series {min(correct):+.4f} to {max(correct):+.4f}, series flipped left-right "
            f"{min(flips):+.4f} to {max(flips):+.4f} ({len(correct)} of each; {measured} flipped series registered "
            "directly, the others their correct series' NMIs swapped).",
            "",
            "Seconds per case (wall, the three series together): each series' own registration, and its mirror's "
            "(what the check adds).",
            "",
            "| case | setting | registration s | mirror s |",
            "|---|---|---:|---:|",
        ]
        cases = dict.fromkeys((r["case"], r["setting"]) for r in rows if r["variant"] == "true")
        for case, setting in cases:
            own = [by_key[(case, setting, m, "true")] for m in SERIES]
            lines.append(
                f"| {case} | {setting} | {sum(float(r['seconds']) for r in own):.1f} | "
                f"{sum(float(r['mirror_seconds']) for r in own):.1f} |"
            )
    others = [r for r in rows if r["variant"] in ("ap", "si")]
    if others:
        lines += [
            "",
            "Flipped front-back (`ap`) or head-foot (`si`), the header unchanged: the current quality check "
            f"(NMI at least {MIN_NMI} and a local maximum) already refuses them.",
            "",
            "| case | setting | series | flip | NMI | best neighbour | passes the quality check |",
            "|---|---|---|---|---:|---:|---|",
        ]
        lines += [
            f"| {r['case']} | {r['setting']} | {r['modality']} | {r['variant']} | {float(r['nmi']):.4f} | "
            f"{float(r['best_neighbour_nmi']):.4f} | {'yes' if r['converged'] == 'True' else 'no'} |"
            for r in others
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="*", default=[], help="FOLDER/CASE under the shared data folder (none: rewrite the Markdown)"
    )
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "mirror")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--skull", action="store_true", help="the heads wrapped in run.py's simulated skull")
    parser.add_argument(
        "--variants", nargs="+", choices=("true", *AXES), default=["true", *AXES],
        help="which series to register: as acquired and/or flipped (on these axis-aligned grids a series flipped "
        "left-right is its left-right mirror image: its NMIs are the true series' two, swapped)",
    )
    parser.add_argument("--how", default="", help="a sentence on the machine and load, written into the Markdown")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "mirror_check.csv"
    setting = "skull" if args.skull else "clinical"
    for name in args.cases:
        rng = np.random.default_rng([args.seed, sum(name.encode()), args.skull])
        rows = measure(args.data / name, setting, rng, args.variants)
        new = not table.exists()
        with table.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
    with table.open() as handle:
        everything = list(csv.DictReader(handle))
    how = args.how or (
        f"{platform.node()}: {os.cpu_count()} cores, SimpleITK {sitk.Version.VersionString()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end."
    )
    (args.out / "mirror_check.md").write_text(markdown(everything, how))


if __name__ == "__main__":
    main()
