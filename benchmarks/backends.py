"""Whole-case inference per backend: the same real cases, read -> write, interleaved, repeated.

Every backend (PyTorch eager, ONNX Runtime, OpenVINO; ``--variants`` adds e.g. OpenVINO with
one large window) predicts the same cases with the same model, threads and sliding-window
settings, in one process. Each round visits the cases in turn and, for each case, every
backend (the backend order rotates from round to round), so load on a shared machine hits
all backends alike. Per stage (read, preprocess, network, stitch, postprocess, write, total)
the medians over cases and rounds are written, with the ratio to PyTorch eager, and the label
agreement with PyTorch's labels: Dice per region (WT, TC, ET) per case and the number of
voxels whose label differs. It also records which backend ``--backend auto`` (the default of
``glioseg predict``) chooses here, and the one-off cost of loading each backend the first
time (ONNX export and the measurement of ``auto`` included), measured with an empty cache.

Usage (pinned to one core, one thread per backend, as on the shared development machine)::

    taskset -c 1 python benchmarks/backends.py --threads 1 --rounds 3 --out benchmarks/

Writes ``backends_results.csv`` (one row per case, backend and round) and
``backends_results.md`` (medians, ratios, agreement) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.discovery import discover
from glioseg.inference import backends
from glioseg.inference.predictor import STAGES, Predictor, output_path, resolve_checkpoints
from glioseg.labels import REGION_NAMES, region_masks
from glioseg.metrics import dice

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018"
VALIDATION_CASES = ("Brats18_CBICA_AOZ_1", "Brats18_TCIA01_499_1", "Brats18_TCIA02_370_1", "Brats18_TCIA13_623_1")
"""The 4 held-out validation cases of the shipped model (docs/results.md, "Paper recipe vs ours at an equal budget")."""


def parse_variant(text: str) -> tuple[str, str, tuple[int, int, int] | None]:
    """``NAME=BACKEND[:WINDOWxWINDOWxWINDOW]`` -> (name, backend, window)."""
    name, _, spec = text.partition("=")
    backend, _, window = spec.partition(":")
    return name, backend, tuple(int(v) for v in window.split("x")) if window else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--cases", nargs="+", default=list(VALIDATION_CASES))
    parser.add_argument(
        "--model", nargs="+", help="run folder(s), .pt or export folder(s) (default: the shipped model)"
    )
    parser.add_argument(
        "--backends", nargs="+", default=[b for b in backends.BACKENDS if b in backends.available_backends()]
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        metavar="NAME=BACKEND[:XxYxZ]",
        help="extra rows, e.g. openvino_96=openvino:96x96x96 (another window)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sw-batch-size", type=int, default=4, help="as glioseg predict's default")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="glioseg-backends-"))
    backends.CACHE_DIR = work / "cache"  # an empty cache: the first load pays the export and the measurement
    checkpoints = resolve_checkpoints(args.model)
    dataset = discover(args.data_root)
    by_id = {case.case_id: case for case in dataset.cases}
    cases = [by_id[c] for c in args.cases]

    rows_spec = [(b, b, None) for b in args.backends] + [parse_variant(v) for v in args.variants]
    predictors, load_seconds = {}, {}
    for name, backend, window in [("auto", "auto", None), *rows_spec]:
        started = time.perf_counter()
        predictors[name] = Predictor.from_checkpoints(
            checkpoints, "cpu", overlap=args.overlap, sw_batch_size=args.sw_batch_size, patch_size=window,
            threads=args.threads, backend=backend,
        )
        load_seconds[name] = time.perf_counter() - started
    auto_choice = predictors.pop("auto").backend
    names = [name for name, _, _ in rows_spec]

    rows = []
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        for case in cases:
            for name in order:
                out = work / "pred" / name / f"round{round_index}"
                timings = predictors[name].predict_case(case, output_path(out, case.case_id))
                rows.append(
                    {
                        "backend": name,
                        "case": case.case_id,
                        "round": round_index,
                        **{k: round(v, 4) for k, v in timings.items()},
                    }
                )
                print(
                    f"round {round_index} {case.case_id} {name}: total {timings['total']:.2f} s, network "
                    f"{timings['network']:.2f} s",
                    flush=True,
                )

    agreement = []
    for case in cases:
        reference = np.asarray(nib.load(str(output_path(work / "pred" / "torch" / "round0", case.case_id))).dataobj)
        ref_masks = region_masks(reference, case.convention)
        truth = region_masks(np.asarray(nib.load(str(case.label)).dataobj), case.convention) if case.label else None
        for name in names:
            labels = np.asarray(nib.load(str(output_path(work / "pred" / name / "round0", case.case_id))).dataobj)
            masks = region_masks(labels, case.convention)
            agreement.append(
                {
                    "backend": name,
                    "case": case.case_id,
                    **{f"dice_{r.lower()}": dice(masks[r], ref_masks[r]) for r in REGION_NAMES},
                    "voxels_differing": int((labels != reference).sum()),
                    **{
                        f"truth_dice_{r.lower()}": dice(masks[r], truth[r]) if truth else float("nan")
                        for r in REGION_NAMES
                    },
                }
            )

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "backends_results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_markdown(args, rows, agreement, names, load_seconds, auto_choice, cases)
    print((args.out / "backends_results.md").read_text())
    return 0


def write_markdown(args, rows, agreement, names, load_seconds, auto_choice, cases) -> None:
    import onnxruntime
    import openvino
    import torch

    stages = (*STAGES, "total")
    median = {(n, s): statistics.median(r[s] for r in rows if r["backend"] == n) for n in names for s in stages}
    lines = [
        "# Whole-case inference per backend",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        f"Machine: {backends.cpu_name()}, {os.cpu_count()} cores, {platform.platform()}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}. {args.threads} thread(s) per "
        "backend. "
        f"Model: {', '.join(str(m) for m in (args.model or ['the shipped model']))}; sliding window overlap "
        f"{args.overlap}, "
        f"{args.sw_batch_size} windows per batch. {len(cases)} cases x {args.rounds} rounds, interleaved (round-robin "
        "over "
        f"backends per case, order rotated per round). `glioseg predict --backend auto` chose here: **{auto_choice}**.",
        "",
        "## Median seconds per case, read -> write",
        "",
        "| backend | " + " | ".join(stages) + " | total / torch | first load s |",
        "|---|" + "---:|" * (len(stages) + 2),
    ]
    for n in names:
        ratio = median[(n, "total")] / median[("torch", "total")] if "torch" in names else float("nan")
        lines.append(
            f"| {n} | "
            + " | ".join(f"{median[(n, s)]:.2f}" for s in stages)
            + f" | {ratio:.2f} | {load_seconds[n]:.1f} |"
        )
    lines += [
        "",
        "First load: building the predictor with an empty cache (the `auto` row of loading: "
        f"{load_seconds['auto']:.1f} s, "
        "which exports the checkpoint to ONNX once and measures the backends; later runs read both from "
        "`~/.cache/glioseg`).",
        "",
        "## Label agreement with PyTorch eager (round 0)",
        "",
        "Dice per region between each backend's labels and PyTorch eager's, the number of voxels whose label",
        "differs, and (for reference) each backend's Dice against the case's ground truth.",
        "",
        "| backend | case | Dice WT | Dice TC | Dice ET | voxels differing | truth Dice WT / TC / ET |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for a in agreement:
        lines.append(
            f"| {a['backend']} | {a['case']} | {a['dice_wt']:.6f} | {a['dice_tc']:.6f} | {a['dice_et']:.6f} | "
            f"{a['voxels_differing']} "
            f"| {a['truth_dice_wt']:.4f} / {a['truth_dice_tc']:.4f} / {a['truth_dice_et']:.4f} |"
        )
    lines += ["", "Minimum Dice against PyTorch over the cases:", ""]
    for name in names:
        worst = min(min(a[f"dice_{r.lower()}"] for r in REGION_NAMES) for a in agreement if a["backend"] == name)
        lines.append(f"- {name}: {worst:.6f}")
    (args.out / "backends_results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
