"""Wall and CPU seconds per training step of the demo's networks (48^3 patches, batch 2).

Shows what a busy core does to PyTorch's default thread count: run it once pinned to one core
with one thread and once unpinned with two threads while another job holds a core::

    taskset -c 1 python benchmarks/demo_steps.py --threads 1
    python benchmarks/demo_steps.py --threads 2

Prints one JSON line: per-step wall and CPU seconds and their medians (the first step excluded).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import time
from pathlib import Path

import torch

from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.synth import write_cohort
from glioseg.demo import FULL
from glioseg.training.loop import build_trainer


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="sa_unet")
    parser.add_argument("--work", type=Path, default=Path("/tmp/glioseg-demo-steps"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    p = FULL.patch
    config = load_config("cpu", [
        "preprocess.target_spacing=null", f"train.patch_size=[{p},{p},{p}]", f"train.epochs={FULL.epochs}",
        f"train.samples_per_epoch={FULL.samples_per_epoch}", f"train.threads={args.threads}", f"train.lr={FULL.lr}",
        "train.device=cpu", f"model.name={args.model}",
    ])
    write_cohort(args.work / "raw", cases=6, shape=FULL.shape, layout="brats2021", seed=0)
    preprocess_dataset(discover(args.work / "raw").cases, config.preprocess, args.work / "cache", progress=False)
    trainer = build_trainer(config, args.work / "cache", args.work / "run", progress=False)
    trainer.model.train()
    walls, cpus = [], []
    for image, labels in trainer._loader():
        wall, cpu = time.perf_counter(), cpu_seconds()
        trainer.optimizer.zero_grad()
        trainer.loss_fn(trainer.model(image), labels).backward()
        trainer.optimizer.step()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    print(
        json.dumps(
            {
                "model": args.model,
                "threads": torch.get_num_threads(),
                "wall_s": [round(w, 2) for w in walls],
                "cpu_s": [round(c, 2) for c in cpus],
                "median_wall_s": round(statistics.median(walls[1:]), 2),
                "median_cpu_s": round(statistics.median(cpus[1:]), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
