"""Reading a case's series once instead of three times: seconds per case, before and after.

``glioseg prepare`` reads each series with :func:`glioseg.prepare.series.read_series`. Before, a
``.nii.gz`` was decompressed three times: ``_check_gzip`` (to the end of the stream, for its
checksum), nibabel's read for the checks (NaN, affine, rank) and ``sitk.ReadImage``. A DICOM
series' files were each read twice in full (``ImageFileReader.ReadImageInformation`` per file for
the slice checks, then ``ImageSeriesReader``), the first file three times. Now a ``.nii.gz`` is
decompressed once into a temporary ``.nii`` that nibabel and SimpleITK both read, and a DICOM
series is read by the series reader alone, which keeps every slice's tags for the checks.

This script times the reading step alone (not the shape and head checks that follow it, the same
before and after) on the four series of ``--cases`` real BraTS cases, the ways interleaved in
every round, and checks that they give bit-identical images. ``--dicom`` adds the T1 of the first
case written as a DICOM series (one file per slice, as a scanner exports it).

A third way, not taken, is timed beside them for the NIfTI files: decompress once into memory,
run nibabel's checks on those bytes, and build the SimpleITK image from nibabel's array with the
grid SimpleITK reads from the header (``ReadImageInformation``). It skips SimpleITK's own read of
the voxels, but it is not SimpleITK's reading by construction: ITK rescales ``scl_slope``/
``scl_inter`` in double precision from float32 values, its own way, and handles 1-D/2-D/4-D
files, vector intents and unsupported types its own way, each of which it would have to mimic.

Usage (from the repository root, the ``prepare`` extra installed)::

    python benchmarks/scanner/read_once.py --data ../shared/data/brats2018 \\
        --cases Brats18_2013_11_1 Brats18_CBICA_AOZ_1 Brats18_TCIA01_201_1 --rounds 7 --dicom

Writes ``read_once.md`` next to this file.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from run import write_dicom_series  # benchmarks/scanner/run.py, beside this script

from glioseg.data.io import read_header, read_volume
from glioseg.prepare.series import _check_gzip, _read_dicom, _read_nifti, keep_locale, quiet_itk

HERE = Path(__file__).resolve().parent
MODALITIES = ("flair", "t1", "t1ce", "t2")


def former_nifti(path: Path) -> sitk.Image:
    """The former reading of a NIfTI series: the gzip check, nibabel's checks and SimpleITK's read, each decompressing
    the whole file (nibabel read the header twice: ``read_header``, then again in ``read_volume``)."""
    read_header(path)
    _check_gzip(path)
    read_volume(path, dtype=None, ndim=(1, 2, 3))
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return image[:, :, :, 0] if image.GetDimension() == 4 else image


def from_nibabel(path: Path) -> sitk.Image:
    """The way not taken: one decompression into memory, nibabel's checks on it, the image from nibabel's array."""
    header = read_header(path)
    with gzip.open(path, "rb") as source:
        data = np.asanyarray(type(header).from_bytes(source.read()).dataobj)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: NaN or infinite voxels")
    info = sitk.ImageFileReader()
    info.SetFileName(str(path))
    info.ReadImageInformation()
    image = sitk.GetImageFromArray(np.asarray(data, dtype=np.float32).T)
    image.SetOrigin(info.GetOrigin())
    image.SetSpacing(info.GetSpacing())
    image.SetDirection(info.GetDirection())
    return image


def former_dicom(folder: Path) -> sitk.Image:
    """The former reading of a DICOM series: every file read on its own for the slice checks, then the series."""
    series_id = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))[0]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    info.LoadPrivateTagsOff()
    info.ReadImageInformation()
    for name in files:
        slice_info = sitk.ImageFileReader()
        slice_info.SetFileName(name)
        slice_info.ReadImageInformation()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return reader.Execute()


def same(a: sitk.Image, b: sitk.Image) -> bool:
    """Bit-identical voxels and the same grid."""
    return (a.GetOrigin(), a.GetSpacing(), a.GetDirection()) == (b.GetOrigin(), b.GetSpacing(), b.GetDirection()) and (
        sitk.GetArrayViewFromImage(a).tobytes() == sitk.GetArrayViewFromImage(b).tobytes()
    )


def timed(read: Callable[[], sitk.Image]) -> tuple[float, sitk.Image]:
    started = time.perf_counter()
    with keep_locale(), quiet_itk():
        image = read()
    return time.perf_counter() - started, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of BraTS cases (<case>/<case>_<mod>.nii.gz)")
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dicom", action="store_true", help="also a DICOM series (the first case's T1)")
    args = parser.parse_args()

    rows: dict[str, list[dict[str, Callable[[], sitk.Image]]]] = {}
    for case in args.cases:
        paths = [args.data / case / f"{case}_{m}.nii.gz" for m in MODALITIES]
        rows[f"{case} (4 .nii.gz)"] = [
            {
                "former": lambda p=p: former_nifti(p),
                "once": lambda p=p, m=m: _read_nifti(p, m).image,
                "from nibabel": lambda p=p: from_nibabel(p),
            }
            for p, m in zip(paths, MODALITIES, strict=True)
        ]
    with tempfile.TemporaryDirectory() as tmp:
        if args.dicom:
            first = args.cases[0]
            t1 = sitk.ReadImage(str(args.data / first / f"{first}_t1.nii.gz"), sitk.sitkFloat32)
            folder = write_dicom_series(t1, Path(tmp) / "t1_dicom", "P001")
            rows[f"{first} T1 as DICOM ({t1.GetDepth()} files)"] = [
                {"former": lambda: former_dicom(folder), "once": lambda: _read_dicom(folder, "t1").image}
            ]
        load_before = os.getloadavg()
        seconds: dict[str, dict[str, list[float]]] = {row: {way: [] for way in reads[0]} for row, reads in rows.items()}
        identical: dict[str, dict[str, bool]] = {row: dict.fromkeys(reads[0], True) for row, reads in rows.items()}
        for round_ in range(args.rounds):
            for row, reads in rows.items():
                order = list(reads[0])[round_ % len(reads[0]) :] + list(reads[0])[: round_ % len(reads[0])]
                total = dict.fromkeys(order, 0.0)
                for ways in reads:
                    images = {}
                    for way in order:
                        took, images[way] = timed(ways[way])
                        total[way] += took
                    assert same(images["former"], images["once"]), row
                    for way in order:
                        identical[row][way] &= same(images["former"], images[way])
                for way in order:
                    seconds[row][way].append(total[way])
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        load_after = os.getloadavg()

    lines = [
        "# Reading a case's series once (`benchmarks/scanner/read_once.py`)",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1-minute, this run included). Seconds to read the "
        f"series (the reading step of `read_series`, without the shape and head checks that follow it), median of "
        f"{args.rounds} rounds, the ways interleaved (each round starts with the next one); every image read the new "
        "way is bit-identical to the former (`sitk.ReadImage`'s). *From nibabel*: the way not taken (see the script).",
        "",
        "| series | former s (min-max) | once s (min-max) | once / former | from nibabel s (min-max), identical |",
        "|---|---:|---:|---:|---:|",
    ]
    for row, by_way in seconds.items():
        median = {w: statistics.median(v) for w, v in by_way.items()}
        spread = {w: f"{median[w]:.2f} ({min(v):.2f}-{max(v):.2f})" for w, v in by_way.items()}
        other = (
            f"{spread['from nibabel']}, {'yes' if identical[row]['from nibabel'] else 'no'}"
            if "from nibabel" in spread
            else "-"
        )
        lines.append(
            f"| {row} | {spread['former']} | {spread['once']} | {median['once'] / median['former']:.2f} | {other} |"
        )
    nifti = [r for r in seconds if r.endswith("(4 .nii.gz)")]
    former_mean = float(np.mean([statistics.median(seconds[r]["former"]) for r in nifti]))
    once_mean = float(np.mean([statistics.median(seconds[r]["once"]) for r in nifti]))
    lines += ["", f"Mean over the {len(nifti)} cases: {former_mean:.2f} s -> {once_mean:.2f} s per case.", ""]
    (HERE / "read_once.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
