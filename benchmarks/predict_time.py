"""Prediction time and memory of two models side by side: ``glioseg predict`` on real cases.

The two models run in turn (A B A B ...), each round a fresh ``glioseg predict`` process on the
same cases, so a drift in the machine's speed hits both alike. Per case: the read -> write time
that ``--timings`` records (reading the four modalities, preprocessing, the network(s),
stitching, post-processing, writing the label map); per run: the process's wall time and peak
resident memory (the kernel's accounting of the child, as ``/usr/bin/time -v`` reports it). The
networks run on ``--backend`` (default ``auto``: what the README's install runs; ``torch`` gives
the PyTorch figures of earlier tables).

Usage (from the repository root)::

    python benchmarks/predict_time.py --cases ../shared/data/brats2018 --limit 3 --rounds 3 \
        --threads 2 --a shipped --b OLD.pt --out benchmarks/predict_time

``--a shipped`` is the package's default model (no ``--model``); otherwise a run folder or .pt.
Results: ``OUT.csv`` (one row per run and case) and ``OUT.md`` (medians).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def predict_once(
    model: str, cases: Path, threads: int, work: Path, backend: str = "auto"
) -> tuple[dict[str, float], float, float]:
    """One ``glioseg predict`` process: ``({case: read -> write s}, wall s, peak memory GB)``."""
    out, timings = work / "out", work / "timings.json"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "glioseg", "predict", str(cases), "-o", str(out), "--device", "cpu",
               "--threads", str(threads), "--backend", backend, "--quiet", "--timings", str(timings)]
    if model != "shipped":
        command += ["--model", model]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"glioseg predict with {model} failed (exit {os.waitstatus_to_exitcode(status)})")
    per_case = {case: t["total"] for case, t in json.loads(timings.read_text())["cases"].items()}
    return per_case, wall, usage.ru_maxrss / 1024**2  # KiB -> GiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, required=True, help="dataset folder")
    parser.add_argument("--limit", type=int, default=3, help="first N cases (sorted ids)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--a", required=True, help="model A: 'shipped' or a run folder / .pt")
    parser.add_argument("--b", required=True, help="model B: 'shipped' or a run folder / .pt")
    parser.add_argument("--out", type=Path, required=True, help="output stem (OUT.csv, OUT.md)")
    parser.add_argument(
        "--backend", default="auto", help="glioseg predict's --backend (auto: what the README's install runs)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp) / "cases"
        cases.mkdir()
        for case in sorted(p for p in args.cases.iterdir() if p.is_dir())[: args.limit]:
            (cases / case.name).symlink_to(case.resolve())
        rows = []
        predict_once(args.a, cases, args.threads, Path(tmp), args.backend)  # warm-up (file cache, exported model cache)
        for round_ in range(args.rounds):
            for name, model in (("A", args.a), ("B", args.b)):
                per_case, wall, peak = predict_once(model, cases, args.threads, Path(tmp), args.backend)
                rows += [
                    {
                        "round": round_,
                        "model": name,
                        "spec": model,
                        "case": c,
                        "read_to_write_s": t,
                        "run_wall_s": wall,
                        "run_peak_gb": peak,
                    }
                    for c, t in per_case.items()
                ]
                print(
                    f"round {round_} {name}: median {statistics.median(per_case.values()):.2f} s per case, run "
                    f"{wall:.1f} s, peak {peak:.2f} GB",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Prediction time, {args.limit} cases of `{args.cases.name}`, {args.rounds} interleaved rounds, "
        f"{args.threads} thread(s), backend `{args.backend}`",
        "",
        "| model | median read -> write s per case | median run wall s | peak memory GB (max) |",
        "|---|---:|---:|---:|",
    ]
    medians = {}
    for name, model in (("A", args.a), ("B", args.b)):
        mine = [r for r in rows if r["model"] == name]
        medians[name] = statistics.median(r["read_to_write_s"] for r in mine)
        walls = sorted({(r["round"], r["run_wall_s"]) for r in mine})
        lines.append(
            f"| {name}: `{model}` | {medians[name]:.2f} | {statistics.median(w for _, w in walls):.1f} | "
            f"{max(r['run_peak_gb'] for r in mine):.2f} |"
        )
    lines += ["", f"Ratio A / B of the per-case medians: {medians['A'] / medians['B']:.2f}."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
