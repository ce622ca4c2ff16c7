"""ONNX Runtime's settings against PyTorch eager on the shipped model's window batch, in one process, interleaved.

One forward pass of a batch of windows as ``glioseg predict`` runs it (``inference.sw_batch_size`` windows of
``inference.window``, 4 channels; seeded normal input) through PyTorch eager (``torch.inference_mode``) and
through ONNX Runtime sessions on the shipped model's ONNX export with each intra-op thread count and graph
optimisation level asked for. One warm-up per variant, then ``--repeats`` rounds, each running every variant
once in turn; the median time counts. The largest difference of the sigmoid probabilities from PyTorch's is
reported too.

Usage (from the repository root)::

    python benchmarks/ort_options.py --repeats 5 --out benchmarks/ort_options.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[0, 1, 2], help="intra-op threads (0: the runtime's default)"
    )
    parser.add_argument("--levels", nargs="+", default=["disable", "basic", "extended", "all"])
    parser.add_argument("--window", type=int, nargs=3, help="default: the shipped model's inference.window")
    parser.add_argument("--batch", type=int, help="windows per pass (default: the model's inference.sw_batch_size)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ort_options.md"))
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from glioseg.checkpoint import model_from_checkpoint
    from glioseg.inference.backends import cached_export
    from glioseg.inference.predictor import resolve_checkpoints
    from glioseg.inference.runtime import _pad_to_stride

    checkpoint = resolve_checkpoints(None)[0]
    model, config = model_from_checkpoint(checkpoint, "cpu")[:2]
    model.eval()
    exported = cached_export(checkpoint)
    window = tuple(args.window or config.inference.window)
    batch = args.batch or config.inference.sw_batch_size
    x = np.random.default_rng(0).standard_normal((batch, len(config.preprocess.modalities), *window)).astype(np.float32)
    padded = np.ascontiguousarray(_pad_to_stride(x, exported.stride))
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }

    def torch_run() -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    variants = {f"torch eager ({torch.get_num_threads()} threads)": torch_run}
    settings = [(threads, level, True) for threads in args.threads for level in args.levels]
    settings += [
        (threads, "all", False) for threads in args.threads if threads != 1
    ]  # spinning matters with 2+ threads
    for threads, level, spin in settings:
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin:  # idle threads sleep instead of spinning (ONNX Runtime spins by default)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(exported.network_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        crop = (..., *(slice(0, s) for s in window))
        variants[f"onnxruntime threads={threads or 'default'} level={level}{'' if spin else ' no spinning'}"] = (
            lambda s=session, n=name, c=crop: s.run(None, {n: padded})[0][c])
    outputs = {name: run() for name, run in variants.items()}  # warm-up
    reference = 1 / (1 + np.exp(-next(iter(outputs.values()))))
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    load_end = os.getloadavg()
    torch_median = statistics.median(next(iter(seconds.values())))
    lines = [
        f"# ONNX Runtime settings against PyTorch eager: one pass of {batch} windows of {'x'.join(map(str, window))}",
        "",
        f"Command: `python benchmarks/ort_options.py {' '.join(sys.argv[1:])}`",
        "",
        f"Model: `{checkpoint.name}` ({config.model.name}, filters {list(config.model.filters)}). onnxruntime "
        f"{ort.__version__}, torch {torch.__version__}. Machine: {os.cpu_count()} cores, {platform.platform()}, shared "
        f"with other "
        f"jobs (load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end). Median of {args.repeats} "
        "interleaved passes after one warm-up.",
        "",
        "| variant | median s | runs | time / torch | max probability difference from torch |",
        "|---|---:|---|---:|---:|",
    ]
    for name, times in seconds.items():
        difference = float(np.abs(1 / (1 + np.exp(-outputs[name])) - reference).max())
        runs = ", ".join(f"{t:.2f}" for t in times)
        lines.append(
            f"| {name} | {statistics.median(times):.3f} | {runs} | {statistics.median(times) / torch_median:.2f} | "
            f"{difference:.1e} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
