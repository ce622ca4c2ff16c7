"""Candidates for the README install's default ``glioseg predict`` path: whole commands, interleaved, on real cases.

Each candidate is ``glioseg predict CASES -o OUT --backend B [--window X Y Z] [--threads T]`` run as a fresh
process by a given Python (so OpenVINO can be measured from a separate virtual environment that has it, never
from the shared one). Each round runs every candidate once, in an order rotated from round to round, after
one warm-up round (exports, compiled-network caches, file cache) that is not counted. Per run: wall and CPU
time, peak memory, and the per-case stage times of ``--timings``. The labels of round 0 are compared with
those of PyTorch eager with the SAME window (Dice per region, voxels that differ), and the labels of a
candidate with another window also with PyTorch eager at the model's own window.

Usage (from the repository root)::

    python benchmarks/default_candidates.py --cases ../shared/data/brats2018_extra --limit 3 --rounds 3 \\
        --candidate torch=torch --candidate onnxruntime=onnxruntime \\
        --candidate openvino=openvino@/tmp/ov-venv/bin/python --candidate torch_whole=torch:80x96x80 \\
        --out benchmarks/default_candidates

A candidate is ``NAME=BACKEND[:WINDOW][+tTHREADS][@PYTHON]``; the reference ``torch`` (PyTorch eager, the
model's window) is always run, and ``torch:WINDOW`` for every other window a candidate uses.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("predict_vs_monai", REPO / "benchmarks" / "predict_vs_monai.py")
assert _spec is not None and _spec.loader is not None
vs_monai = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs_monai)

CANDIDATE = re.compile(r"^(?P<name>[\w.-]+)=(?P<backend>torch|onnxruntime|openvino|auto)(:(?P<window>\d+x\d+x\d+))?"
                       r"(\+t(?P<threads>\d+))?(@(?P<python>.+))?$")


def parse(spec: str) -> dict:
    """``NAME=BACKEND[:WINDOW][+tTHREADS][@PYTHON]`` -> its parts."""
    match = CANDIDATE.match(spec)
    if match is None:
        raise SystemExit(f"error: candidate '{spec}': not NAME=BACKEND[:WINDOW][+tTHREADS][@PYTHON]")
    parts = match.groupdict()
    return {"name": parts["name"], "backend": parts["backend"], "window": parts["window"] or "",
            "threads": int(parts["threads"] or 0), "python": parts["python"] or sys.executable}


def command(candidate: dict, cases: Path, out: Path, timings: Path) -> list[str]:
    """The ``glioseg predict`` command line of a candidate."""
    line = [candidate["python"], "-m", "glioseg", "predict", str(cases), "-o", str(out), "--quiet",
            "--timings", str(timings), "--backend", candidate["backend"]]
    if candidate["window"]:
        line += ["--window", *candidate["window"].split("x")]
    if candidate["threads"]:
        line += ["--threads", str(candidate["threads"])]
    return line


def labels(folder: Path, case: str) -> np.ndarray:
    """The label map written for ``case``."""
    return np.asarray(nib.load(str(folder / f"{case}.nii.gz")).dataobj)


def compare(ours: np.ndarray, reference: np.ndarray) -> dict:
    """Dice per BraTS region and the voxels that differ."""
    row: dict = {"voxels_differing": int((ours != reference).sum())}
    for region, values in vs_monai.REGIONS.items():
        row[f"dice_{region.lower()}"] = vs_monai.dice(np.isin(ours, values), np.isin(reference, values))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=REPO.parent / "shared" / "data" / "brats2018_extra")
    parser.add_argument("--limit", type=int, default=3, help="first N cases (sorted ids)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidate", action="append", default=[], help="NAME=BACKEND[:WINDOW][+tTHREADS][@PYTHON]")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "default_candidates")
    args = parser.parse_args()

    candidates = {c["name"]: c for c in map(parse, args.candidate)}
    candidates.setdefault("torch", parse("torch=torch"))
    for c in list(candidates.values()):
        if c["window"] and not any(r["backend"] == "torch" and r["window"] == c["window"] and not r["threads"]
                                   for r in candidates.values()):
            candidates[f"torch_{c['window']}"] = parse(f"torch_{c['window']}=torch:{c['window']}")
    work = Path(tempfile.mkdtemp(prefix="glioseg-candidates-"))
    cases = work / "cases"
    cases.mkdir()
    chosen = sorted(p for p in args.cases.iterdir() if p.is_dir())[: args.limit]
    for case in chosen:
        (cases / case.name).symlink_to(case.resolve())
    out, timings = work / "out", work / "timings.json"
    names = list(candidates)
    pythonpath = str(REPO / "src")
    load_start = os.getloadavg()
    for name in names:
        vs_monai.run_once(command(candidates[name], cases, out, timings), pythonpath, out, timings)
        print(f"warm-up {name} done", flush=True)
    runs = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            result = vs_monai.run_once(command(candidates[name], cases, out, timings), pythonpath, out, timings)
            if round_ == 0:
                shutil.copytree(out, work / "labels" / name)
            runs.append({"round": round_, "command": name, **result})
            print(f"round {round_} {name}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} CPU-s", flush=True)
    load_end = os.getloadavg()

    agreement = []
    for name, c in candidates.items():
        same = next(
            n
            for n, r in candidates.items()
            if r["backend"] == "torch" and r["window"] == c["window"] and not r["threads"]
        )
        references = {same: "same window"}
        if c["window"]:
            references["torch"] = "model's window"
        for reference, what in references.items():
            if reference == name:
                continue
            for case in chosen:
                row = compare(labels(work / "labels" / name, case.name), labels(work / "labels" / reference, case.name))
                agreement.append({"command": name, "reference": f"{reference} ({what})", "case": case.name, **row})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        fields = ["round", "command", "wall_s", "cpu_s", "peak_gb", "case", *vs_monai.STAGES, "total"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for run in runs:
            head = {"round": run["round"], "command": run["command"]}
            writer.writerow({**head, "wall_s": round(run["wall_s"], 3), "cpu_s": round(run["cpu_s"], 3),
                             "peak_gb": round(run["peak_gb"], 3), "case": ""})
            for case, stages in run["cases"].items():
                writer.writerow(
                    {**head, "case": case, **{s: round(stages.get(s, 0.0), 4) for s in (*vs_monai.STAGES, "total")}}
                )

    lines = [
        f"# Candidates for the default `glioseg predict`: {len(chosen)} cases, {args.rounds} interleaved rounds",
        "",
        f"Command: `python benchmarks/default_candidates.py {' '.join(sys.argv[1:])}`",
        "",
        f"Cases: {', '.join(c.name for c in chosen)}. Machine: {os.cpu_count()} cores, {platform.platform()}, shared "
        f"with other "
        f"jobs (load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end); every command a fresh "
        f"process, "
        "after one warm-up round; order rotated per round.",
        "",
        "| candidate | command | median wall s (whole command) | runs | ratio to torch (median of rounds) | median CPU "
        "s |"
        " outside the network, s per case (median) | network, s per case (median) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for name in names:
        mine = [r for r in runs if r["command"] == name]
        ratios = [
            r["wall_s"] / next(t["wall_s"] for t in runs if t["command"] == "torch" and t["round"] == r["round"])
            for r in mine
        ]
        per_case = [t for r in mine for t in r["cases"].values()]
        outside = statistics.median(t["total"] - t["network"] for t in per_case)
        network = statistics.median(t["network"] for t in per_case)
        shown = " ".join(command(candidates[name], Path("CASES"), Path("OUT"), Path("T.json"))[1:])
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in mine)
        lines.append(f"| {name} | `{shown}` | {statistics.median(r['wall_s'] for r in mine):.1f} | "
                     f"{walls} | {statistics.median(ratios):.2f} | "
                     f"{statistics.median(r['cpu_s'] for r in mine):.1f} | {outside:.2f} | {network:.2f} |")
    lines += [
        "",
        "## Median seconds per case, per stage (`--timings`)",
        "",
        "| candidate | " + " | ".join(vs_monai.STAGES) + " | total |",
        "|---|" + "---:|" * (len(vs_monai.STAGES) + 1),
    ]
    for name in names:
        per_case = [t for r in runs if r["command"] == name for t in r["cases"].values()]
        lines.append(f"| {name} | " + " | ".join(f"{statistics.median(t.get(s, 0.0) for t in per_case):.2f}"
                                                for s in (*vs_monai.STAGES, "total")) + " |")
    lines += [
        "",
        "## Labels (round 0) against PyTorch eager",
        "",
        "| candidate | reference | case | Dice WT | Dice TC | Dice ET | voxels differing |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for a in agreement:
        lines.append(f"| {a['command']} | {a['reference']} | {a['case']} | {a['dice_wt']:.6f} | {a['dice_tc']:.6f} | "
                     f"{a['dice_et']:.6f} | {a['voxels_differing']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(args.out.with_suffix(".md").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
