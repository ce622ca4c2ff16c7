"""ONNX Runtime's CPU memory arena on and off: peak memory and wall time of ``glioseg predict``.

glioseg keeps the arena for windows up to 96^3 voxels and drops it above
(``glioseg.inference.runtime.ARENA_MAX_WINDOW``). This script runs the same command with the arena
forced on and forced off for every session (``onnxruntime.InferenceSession`` is wrapped so that its
session options say ``enable_cpu_mem_arena = True`` or ``False``), in turn (on, off, on, off, ...),
each run a fresh process on the same cases, for each model given, and writes the medians::

    python benchmarks/ort_arena.py --cases ../shared/data/brats2018_extra --limit 3 --rounds 3 \\
        --model shipped --model E=/work/glioseg-runs/pack_e --out benchmarks/ort_arena

Per run: the process's wall time and peak resident memory (``/usr/bin/time``), and the median
read -> write time per case from ``--timings``. Labels are not compared: the arena only decides
where ONNX Runtime's buffers live.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import sys
import onnxruntime as ort

real = ort.InferenceSession


def forced(path, options=None, *args, **kwargs):
    options = options or ort.SessionOptions()
    options.enable_cpu_mem_arena = sys.argv[1] == "on"
    return real(path, options, *args, **kwargs)


ort.InferenceSession = forced
from glioseg.cli import main

sys.exit(main(sys.argv[2:]))
"""


def run_once(arena: str, model: str, cases: Path, out: Path, timings: Path) -> tuple[float, float, float]:
    """(wall s, peak GB, median read -> write s per case) of one ``glioseg predict``."""
    argv = ["predict", str(cases), "-o", str(out), "--quiet", "--timings", str(timings)]
    if model != "shipped":
        argv += ["--model", model]
    stats = out.parent / "time.txt"
    command = ["/usr/bin/time", "-f", "%e %M", "-o", str(stats), sys.executable, "-c", RUN, arena, *argv]
    subprocess.run(command, check=True, capture_output=True)
    wall, kb = stats.read_text().split()[-2:]
    return float(wall), int(kb) / 2**20, float(json.loads(timings.read_text())["median_total_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", action="append", required=True, help="'shipped', or NAME=MODEL_FOLDER")
    parser.add_argument("--out", type=Path, required=True, help="output stem (OUT.csv, OUT.md)")
    args = parser.parse_args()
    models = [(m, m) if m == "shipped" else tuple(m.split("=", 1)) for m in args.model]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp, "cases")
        cases.mkdir()
        for case in sorted(p for p in args.cases.iterdir() if p.is_dir())[: args.limit]:
            (cases / case.name).symlink_to(case.resolve())
        for _, model in models:  # warm-up: file cache, the exported model's cache
            run_once("off", model, cases, Path(tmp, "warm"), Path(tmp, "t.json"))
        for round_ in range(args.rounds):
            for name, model in models:
                for arena in ("on", "off"):
                    out = Path(tmp, f"out-{round_}-{name}-{arena}")
                    wall, gb, per_case = run_once(arena, model, cases, out, Path(tmp, "t.json"))
                    rows.append(
                        {
                            "round": round_,
                            "model": name,
                            "arena": arena,
                            "wall_s": wall,
                            "peak_gb": gb,
                            "per_case_s": per_case,
                        }
                    )
                    print(rows[-1], flush=True)
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# ONNX Runtime's memory arena on and off: `glioseg predict` on {args.limit} cases, {args.rounds} rounds",
        "",
        "| model | arena | median wall s | median read -> write s per case | peak GB (max) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, _ in models:
        for arena in ("on", "off"):
            mine = [r for r in rows if r["model"] == name and r["arena"] == arena]
            lines.append(
                f"| {name} | {arena} | {statistics.median(r['wall_s'] for r in mine):.2f} | "
                f"{statistics.median(r['per_case_s'] for r in mine):.2f} | {max(r['peak_gb'] for r in mine):.2f} |"
            )
    lines += ["", f"`python benchmarks/ort_arena.py {' '.join(sys.argv[1:])}`", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
