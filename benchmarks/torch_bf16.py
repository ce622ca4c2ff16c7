"""PyTorch's reduced-precision CPU paths against float32 eager: labels (Dice per region) and network time.

For each case of a dataset, the shipped model's sliding-window probabilities are computed three
times on the same preprocessed image: float32 eager (the reference), under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (AMX / AVX512-BF16 units where the CPU has them)
and with oneDNN's float32 convolutions computed in bfloat16
(``torch.backends.mkldnn.conv.fp32_precision = "bf16"``). The labels of each variant are compared
with the reference's (Dice of WT, TC, ET; voxels that differ). Wall times are those of
``Predictor.network_probabilities`` (the sliding window with its network calls), one run each.

Usage (from the repository root)::

    python benchmarks/torch_bf16.py --cases ../shared/data/brats2018_extra --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from glioseg.data.discovery import discover
from glioseg.inference.predictor import Predictor, resolve_checkpoints

REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
"""Internal labels of each region."""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@contextlib.contextmanager
def variant(name: str):
    """The numerical setting of one variant, undone on exit."""
    if name == "autocast_bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    elif name == "onednn_conv_bf16":
        torch.backends.mkldnn.conv.fp32_precision = "bf16"  # type: ignore[attr-defined]
        try:
            yield
        finally:
            torch.backends.mkldnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
    else:
        yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2018_extra"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="first N cases (0: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoints(resolve_checkpoints(None), device="cpu", backend="torch")
    cases = discover(args.cases, require_labels=False).cases
    names = ("float32", "autocast_bf16", "onednn_conv_bf16")
    print(
        "| case | "
        + " | ".join(f"{n} s" for n in names)
        + " | "
        + " | ".join(f"{n} Dice WT/TC/ET (voxels differing)" for n in names[1:])
        + " |"
    )
    for case in cases[: args.limit or None]:
        pre = predictor.preprocess(predictor.read(case))
        labels, seconds = {}, {}
        for name in names:
            with variant(name):
                started = time.perf_counter()
                probabilities = predictor.network_probabilities(pre.image)
                seconds[name] = time.perf_counter() - started
            labels[name] = predictor.labels_from_probabilities(probabilities.float(), pre.crop)
        cells = [f"{seconds[n]:.2f}" for n in names]
        for name in names[1:]:
            scores = [dice(np.isin(labels["float32"], v), np.isin(labels[name], v)) for v in REGIONS.values()]
            cells.append(
                " / ".join(f"{s:.5f}" for s in scores) + f" ({int((labels[name] != labels['float32']).sum())})"
            )
        print(f"| {case.case_id} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
