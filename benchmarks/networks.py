"""Speed, memory and size of the three U-Net variants next to MONAI networks of similar size.

Every network is measured in the paper's configuration (filters 16-32-64-128-256, batch
norm, the paper's dropout) with 4 input channels and the 4-class head, at batch 2:
one training step is forward, cross-entropy loss and backward. The MONAI networks are
``BasicUNet`` (features 16-32-64-128-256-16, the same 4-pooling topology) and
``SegResNet`` (init_filters 18), both with batch norm, chosen for a parameter count
near ours. Each (network, size, AMP) configuration runs in a fresh spawned process, so
its peak resident memory is its own, after ``--warmup`` untimed steps. On a shared
machine the load drifts, so the whole sequence of configurations is run ``--rounds``
times, every other round in reverse order, and a configuration's time is the median of
its ``rounds x steps`` timed steps.

Usage::

    python benchmarks/networks.py --device cpu --sizes 64 96 --steps 3 --warmup 1 --rounds 2 --threads 1 --out
    benchmarks/
    python benchmarks/networks.py --device cuda --sizes 128 --steps 10 --out benchmarks/

Writes ``networks_results.csv`` (one row per configuration) and ``networks_results.md``
(the size table, the timing table and the comparison with the nearest MONAI network).
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, SegResNet
from torch import nn

from glioseg.networks import (
    NETWORKS,
    PAPER_FILTERS,
    ModelConfig,
    build_network,
    count_parameters,
    dropout_schedule,
    forward_gflops,
)

logger = logging.getLogger("benchmarks.networks")

MONAI_NETWORKS = ("monai_basicunet", "monai_segresnet")
IN_CHANNELS = 4
NUM_CLASSES = 4


def make_network(name: str) -> nn.Module:
    """One of our variants in the paper's configuration, or a MONAI network of similar size."""
    if name in NETWORKS:
        config = ModelConfig(
            name=name, head="classes", norm="batch", dropout=dropout_schedule("tutorial", len(PAPER_FILTERS) - 1)
        )
        return build_network(config, in_channels=IN_CHANNELS)
    if name == "monai_basicunet":
        return BasicUNet(
            spatial_dims=3,
            in_channels=IN_CHANNELS,
            out_channels=NUM_CLASSES,
            features=(16, 32, 64, 128, 256, 16),
            norm="batch",
        )
    if name == "monai_segresnet":
        return SegResNet(
            spatial_dims=3, init_filters=18, in_channels=IN_CHANNELS, out_channels=NUM_CLASSES, norm="batch"
        )
    raise ValueError(f"unknown network {name!r}")


@dataclass(frozen=True)
class Run:
    """One configuration measured in one process; times in milliseconds, memory in MiB."""

    network: str
    device: str
    size: int
    batch: int
    amp: bool
    parameters: int
    step_ms: tuple[float, ...]
    peak_memory_mib: float
    memory_kind: str
    threads: int


@dataclass(frozen=True)
class Measurement:
    """One configuration's result over all rounds; times in milliseconds, memory in MiB."""

    network: str
    device: str
    size: int
    batch: int
    amp: bool
    parameters: int
    step_ms_median: float
    step_ms_min: float
    step_ms_max: float
    steps: int
    peak_memory_mib: float
    memory_kind: str
    threads: int


def summarise(runs: list[Run]) -> Measurement:
    """Pool the timed steps of one configuration's runs; memory is the largest peak."""
    times = [t for run in runs for t in run.step_ms]
    first = runs[0]
    return Measurement(
        network=first.network,
        device=first.device,
        size=first.size,
        batch=first.batch,
        amp=first.amp,
        parameters=first.parameters,
        step_ms_median=statistics.median(times),
        step_ms_min=min(times),
        step_ms_max=max(times),
        steps=len(times),
        peak_memory_mib=max(run.peak_memory_mib for run in runs),
        memory_kind=first.memory_kind,
        threads=first.threads,
    )


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(
    network: str, device: str, size: int, batch: int, amp: bool, warmup: int, steps: int, threads: int | None
) -> Run:
    """Time training steps of one configuration; run in a fresh process.

    ``threads`` sets torch's intra-op threads (``None``: torch's default). On CPU the
    memory is the rise of the process's peak resident set size (RSS) over its peak after
    start-up (imports, MONAI's included), which covers weights, activations and gradients.
    On CUDA it is ``torch.cuda.max_memory_allocated``.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    start_rss = _maxrss_mib()
    model = make_network(network).to(device).train()
    x = torch.randn(batch, IN_CHANNELS, size, size, size, device=device)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size, size), device=device)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    scaler = torch.amp.GradScaler(device, enabled=amp)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x), target)
        scaler.scale(loss).backward()

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize()
        begin = time.perf_counter()
        step()
        synchronize()
        times.append(1000 * (time.perf_counter() - begin))
    if device == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda max allocated"
    else:
        peak, kind = _maxrss_mib() - start_rss, "peak RSS rise"
    return Run(
        network=network,
        device=device,
        size=size,
        batch=batch,
        amp=amp,
        parameters=count_parameters(model),
        step_ms=tuple(times),
        peak_memory_mib=peak,
        memory_kind=kind,
        threads=torch.get_num_threads(),
    )


def size_table(names: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """``(network, parameters, forward GFLOPs per 1 x 4 x 128^3 patch)`` for each network."""
    rows = []
    for name in names:
        model = make_network(name)
        rows.append((name, count_parameters(model), forward_gflops(model, (1, IN_CHANNELS, 128, 128, 128))))
    return rows


def nearest_monai(ours: str, parameters: dict[str, int]) -> str:
    """The MONAI network whose parameter count is closest to that of ``ours``."""
    return min(MONAI_NETWORKS, key=lambda name: abs(parameters[name] - parameters[ours]))


def markdown(
    results: list[Measurement], sizes: list[tuple[str, int, float]], command: str, environment: str
) -> str:
    """The results file: size table, timing table and the comparison with MONAI."""
    parameters = {name: count for name, count, _ in sizes}
    lines = [
        "# Network benchmark",
        "",
        f"Command: `{command}`",
        "",
        environment,
        "",
        "## Size (batch 1, 4 input channels, classes head, paper filters, batch norm)",
        "",
        "| network | parameters | forward GFLOPs per 128^3 patch |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {count:,} | {gflops:.1f} |" for name, count, gflops in sizes]
    lines += [
        "",
        "GFLOPs = 2 x multiply-accumulates of all (transposed) convolutions, counted with",
        "`glioseg.networks.forward_gflops`; norms, activations and interpolation are not counted.",
        "",
        "## Training step (forward + cross-entropy + backward), batch 2",
        "",
        "| network | device | size | AMP | parameters | steps | step ms (median) | min | max "
        "| peak memory MiB | memory |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.network} | {r.device} | {r.size}^3 | {'yes' if r.amp else 'no'} | {r.parameters:,} "
        f"| {r.steps} | "
        f"{r.step_ms_median:.0f} | {r.step_ms_min:.0f} | {r.step_ms_max:.0f} | {r.peak_memory_mib:.0f} | "
        f"{r.memory_kind} |"
        for r in results
    ]
    lines += [
        "",
        "## Against the MONAI network of nearest parameter count",
        "",
        "Ratios ours / MONAI. On a shared machine the fastest step is the least disturbed one,",
        "so the ratio of the minima is given next to the ratio of the medians.",
        "",
        "| network | nearest MONAI network | size | AMP | step time ratio (median) | step time ratio (min) "
        "| memory ratio |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    by_key = {(r.network, r.size, r.amp): r for r in results}
    for r in results:
        if r.network not in NETWORKS:
            continue
        reference = by_key.get((nearest_monai(r.network, parameters), r.size, r.amp))
        if reference is not None:
            lines.append(
                f"| {r.network} | {reference.network} | {r.size}^3 | {'yes' if r.amp else 'no'} | "
                f"{r.step_ms_median / reference.step_ms_median:.2f} | "
                f"{r.step_ms_min / reference.step_ms_min:.2f} | "
                f"{r.peak_memory_mib / reference.peak_memory_mib:.2f} |"
            )
    return "\n".join(lines) + "\n"


def environment_line(device: str, threads: int) -> str:
    """Torch version, processor and, on a shared machine, the load at the time of the run."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    if device == "cuda":
        processor = torch.cuda.get_device_name()
    else:
        machine = platform.processor() or platform.machine()
        processor = f"{machine}, {os.cpu_count()} cores, torch threads: {threads}"
    return f"torch {torch.__version__}, {processor}; load average at the end (1, 5, 15 min): {load}."


def main(argv: list[str] | None = None) -> None:
    """Run every configuration, each in a fresh process, and write CSV + Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="cube edges (default cpu: 64 96, cuda: 128)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of the whole sequence")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's); 1 is robust on a shared machine",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    sizes = args.sizes or ([128] if args.device == "cuda" else [64, 96])
    amp_options = (False, True) if args.device == "cuda" else (False,)
    names = NETWORKS + MONAI_NETWORKS
    configs = [(name, size, amp) for size in sizes for amp in amp_options for name in names]
    runs: dict[tuple[str, int, bool], list[Run]] = {config: [] for config in configs}
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=1, maxtasksperchild=1) as pool:
        for round_index in range(args.rounds):
            for name, size, amp in configs if round_index % 2 == 0 else configs[::-1]:
                config = (name, args.device, size, args.batch, amp, args.warmup, args.steps, args.threads)
                run = pool.apply(measure, config)
                logger.info(
                    "round %d, %s %d^3 amp=%s: %s ms/step, %.0f MiB",
                    round_index + 1,
                    name,
                    size,
                    amp,
                    " ".join(f"{t:.0f}" for t in run.step_ms),
                    run.peak_memory_mib,
                )
                runs[(name, size, amp)].append(run)
    results = [summarise(runs[config]) for config in configs]

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "networks_results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(asdict(results[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    command = "python benchmarks/networks.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(results, size_table(names), command, environment_line(args.device, results[0].threads))
    (args.out / "networks_results.md").write_text(text)
    logger.info("wrote %s and %s", args.out / "networks_results.csv", args.out / "networks_results.md")


if __name__ == "__main__":
    main()
