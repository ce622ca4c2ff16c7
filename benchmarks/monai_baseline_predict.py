"""A MONAI baseline's predict script: the yardstick ``benchmarks/predict_vs_monai.py`` times glioseg against.

What a MONAI user writes to segment BraTS cases with a SegResNet on a CPU, in MONAI's own
idiom: ``LoadImaged`` (the four modalities stacked as channels), ``EnsureChannelFirstd``,
``Orientationd`` (RAS), ``CropForegroundd`` (the box of the non-zero voxels, as glioseg crops to
the brain), ``Spacingd`` to 2 mm (bilinear), ``NormalizeIntensityd`` (non-zero voxels,
per channel), MONAI's ``sliding_window_inference`` (64^3 windows, overlap 0.5, Gaussian
blending, 4 windows per batch: glioseg's settings), sigmoid > 0.5 for the three nested regions
(WT, TC, ET) turned into BraTS labels, ``Invertd`` back to the original grid (nearest) and
``SaveImage`` as ``uint8`` NIfTI.

The network is MONAI's ``SegResNet`` (``init_filters=8``, blocks 1-2-2-4, 4 inputs, 3 outputs;
the size of the "bar from MONAI's SegResNet" in docs/results.md), **randomly initialised with a
fixed seed**: this script times the pipeline, its labels are meaningless. A trained network of
the same architecture costs the same time. Like glioseg it crops to the brain before
resampling, so both run about 8 windows of 64^3 per case (without the crop, the whole
240 x 240 x 155 volume at 2 mm needs 18).

Usage::

    python benchmarks/monai_baseline_predict.py CASES_FOLDER -o OUT [--threads N]

``CASES_FOLDER`` holds one folder per case with ``*_flair``, ``*_t1``, ``*_t1ce`` and ``*_t2``
NIfTI files (BraTS 2018-2020 naming). One label map per case is written to ``OUT/<case>.nii.gz``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    SaveImage,
    Spacingd,
)

MODALITIES = ("flair", "t1", "t1ce", "t2")


def case_files(folder: Path) -> list[str]:
    """The four modality files of a BraTS case folder, in :data:`MODALITIES` order."""
    files = []
    for modality in MODALITIES:
        found = sorted(p for p in folder.iterdir() if p.name.endswith((f"_{modality}.nii.gz", f"_{modality}.nii")))
        if len(found) != 1:
            raise SystemExit(f"error: {folder}: expected one *_{modality}.nii.gz file, found {len(found)}")
        files.append(str(found[0]))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path, help="folder of case folders")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    pre = Compose([
        LoadImaged(keys="image"),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS"),
        CropForegroundd(keys="image", source_key="image"),
        Spacingd(keys="image", pixdim=(2.0, 2.0, 2.0), mode="bilinear"),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])
    post = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True, to_tensor=True)
    torch.manual_seed(0)
    model = SegResNet(
        blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=8, in_channels=4, out_channels=3
    ).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    writer = SaveImage(
        output_dir=str(args.out),
        output_postfix="",
        output_dtype=np.uint8,
        separate_folder=False,
        print_log=False,
        resample=False,
    )

    for folder in sorted(p for p in args.cases.iterdir() if p.is_dir()):
        started = time.perf_counter()
        data = pre({"image": case_files(folder)})
        with torch.inference_mode():
            logits = sliding_window_inference(
                data["image"][None],
                roi_size=(64, 64, 64),
                sw_batch_size=4,
                predictor=model,
                overlap=0.5,
                mode="gaussian",
            )
        regions = torch.sigmoid(logits[0]) > 0.5  # WT, TC, ET
        labels = torch.zeros(regions.shape[1:], dtype=torch.uint8)
        labels[regions[0]] = 2  # edema
        labels[regions[0] & regions[1]] = 1  # necrosis
        labels[regions[0] & regions[1] & regions[2]] = 4  # enhancing (BraTS 2018 label)
        data["pred"] = MetaTensor(
            labels[None].float(), meta=data["image"].meta, applied_operations=data["image"].applied_operations
        )
        inverted = post(data)["pred"]
        writer(inverted.to(torch.uint8), filename=args.out / folder.name)
        print(f"{folder.name}: {time.perf_counter() - started:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
