"""One sliding window of the shipped model: the cheap PyTorch options against the fast runtimes.

Times the network's forward pass on one window (batch 1, the model's training patch size) with
PyTorch eager (``torch.inference_mode``), eager in channels-last-3D memory format, a frozen
TorchScript trace (oneDNN fusion), ``torch.compile`` (inductor, needs a C++ compiler), ONNX
Runtime and OpenVINO, interleaved over ``--repeats`` rounds after one warm-up, and the largest
logit difference from eager.

Usage (one core, one thread, as on the shared development machine)::

    taskset -c 1 python benchmarks/torch_variants.py --threads 1 --repeats 5 --out benchmarks/

Writes ``torch_variants.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from glioseg.checkpoint import model_from_checkpoint
from glioseg.inference import backends
from glioseg.inference.export import export_model
from glioseg.inference.predictor import resolve_checkpoints


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run folder or .pt (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    checkpoint = resolve_checkpoints([args.model] if args.model else None)[0]
    model, config, _ = model_from_checkpoint(checkpoint)
    x = torch.from_numpy(
        np.random.default_rng(0)
        .standard_normal((1, len(config.preprocess.modalities), *config.train.patch_size))
        .astype(np.float32)
    )

    variants: dict[str, tuple] = {"eager": (model, x)}
    variants["channels_last_3d"] = (
        copy.deepcopy(model).to(memory_format=torch.channels_last_3d),
        x.contiguous(memory_format=torch.channels_last_3d),
    )
    with torch.inference_mode():
        variants["torchscript_frozen"] = (torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), x)), x)
    compile_seconds = None
    if not args.no_compile:
        try:
            started = time.perf_counter()
            compiled = torch.compile(copy.deepcopy(model))
            with torch.inference_mode():
                compiled(x)
            compile_seconds = time.perf_counter() - started
            variants["torch_compile"] = (compiled, x)
        except Exception as exc:  # noqa: BLE001 - report and go on (no compiler, unsupported platform)
            print(f"torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
    exported = export_model(checkpoint, Path(tempfile.mkdtemp()) / "export", "onnx")
    for name in backends.RUNTIMES:
        if name in backends.available_backends():
            network = backends.build_runtime_network(
                name, exported.network_file, stride=exported.stride, threads=args.threads
            )
            variants[name] = (lambda t, net=network: torch.from_numpy(net(t.numpy())), x)

    times = {name: [] for name in variants}
    with torch.inference_mode():
        reference = model(x)
        difference = {
            name: float((fn(inp) - reference).abs().max()) for name, (fn, inp) in variants.items()
        }  # also the warm-up
        for _ in range(args.repeats):
            for name, (fn, inp) in variants.items():
                started = time.perf_counter()
                fn(inp)
                times[name].append(time.perf_counter() - started)
    eager = statistics.median(times["eager"])
    lines = [
        "# One window of the model: PyTorch options and the runtimes",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        f"{backends.cpu_name()}; torch {torch.__version__}; {args.threads} thread(s); window {tuple(x.shape)}; "
        f"{args.repeats} interleaved rounds after a warm-up."
        + (f" torch.compile took {compile_seconds:.0f} s to compile." if compile_seconds else ""),
        "",
        "| variant | median s | min s | / eager | max logit difference from eager |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in times.items():
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {statistics.median(values) / eager:.2f} "
            f"| {difference[name]:.1e} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "torch_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
