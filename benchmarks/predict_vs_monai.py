"""``glioseg predict`` against a MONAI baseline's predict script: whole commands, interleaved, on real cases.

Each round runs every command once, as a fresh process on the same cases, in an order rotated
from round to round, so a drift in the load of a shared machine hits all alike; one warm-up
round (file cache, the exported-model cache of ``~/.cache/glioseg``) is not counted. The
commands:

* ``monai``: ``benchmarks/monai_baseline_predict.py`` (MONAI SegResNet, random seeded weights,
  LoadImaged -> crop -> Spacingd 2 mm -> sliding window -> Invertd -> SaveImage).
* ``glioseg``: ``glioseg predict CASES -o OUT`` as the README's install runs it (default
  options, the shipped model), this working tree.
* ``glioseg-torch``: the same with ``--backend torch`` (PyTorch eager): the reference labels.
* ``before`` (with ``--before-ref REF``): ``glioseg predict --backend torch`` from the source
  tree of git commit REF (``git archive``), i.e. what the README's install (no runtime)
  predicted before this work; ``before-openvino``: the same tree with ``--backend openvino``
  (what ``pip install 'glioseg[fast]'`` gave before); ``before-auto``: the same tree with its default
  options (the README's command there: ONNX Runtime with PyTorch around it). The labels of ``glioseg``
  are also compared with ``before-auto``'s when both run.

Per run: wall time (process start to exit) and peak resident memory; per case, for the glioseg
commands, the stage times ``--timings`` records. The labels of ``glioseg`` are compared with
those of ``glioseg-torch`` (Dice per region, voxels that differ). Writes ``OUT.csv`` (one row per
run) and ``OUT.md`` (medians, ratios to ``monai`` per round, stages, agreement).

Usage (from the repository root)::

    python benchmarks/predict_vs_monai.py --cases ../shared/data/brats2018_extra --limit 3 --rounds 3 \
        --before-ref f77364f --out benchmarks/predict_vs_monai
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("read", "preprocess", "network", "stitch", "postprocess", "write")
REGIONS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
"""BraTS 2018 labels of each region (the cases' own convention)."""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def source_tree(ref: str, work: Path) -> Path:
    """``src/`` of git commit ``ref`` of this repository, unpacked under ``work``."""
    target = work / f"src-{ref}"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True).stdout
    target.mkdir(parents=True)
    archive_path = work / f"{ref}.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def commands(
    cases: Path, out: Path, timings: Path, before_src: Path | None, model: Path | None = None
) -> dict[str, tuple[list[str], str]]:
    """name -> (command, PYTHONPATH); every glioseg command predicts with ``model`` if given (else the shipped one)."""
    here = str(REPO / "src")
    glioseg = [
        sys.executable,
        "-m",
        "glioseg",
        "predict",
        str(cases),
        "-o",
        str(out),
        "--quiet",
        "--timings",
        str(timings),
        *(["--model", str(model)] if model is not None else []),
    ]
    found = {
        "monai": (
            [
                sys.executable,
                "-W",
                "ignore",
                str(REPO / "benchmarks" / "monai_baseline_predict.py"),
                str(cases),
                "-o",
                str(out),
            ],
            here,
        ),
        "glioseg": (glioseg, here),
        "glioseg-torch": ([*glioseg, "--backend", "torch"], here),
    }
    if before_src is not None:
        found["before"] = ([*glioseg, "--backend", "torch"], str(before_src))
        found["before-openvino"] = ([*glioseg, "--backend", "openvino"], str(before_src))
        found["before-auto"] = (glioseg, str(before_src))
    return found


def run_once(command: list[str], pythonpath: str, out: Path, timings: Path) -> dict:
    """One process: wall s, CPU s (user + system, all threads), peak GB, and the per-case stage timings (glioseg
    commands)."""
    shutil.rmtree(out, ignore_errors=True)
    timings.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert child.stderr is not None
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr.decode(errors='replace')[-2000:]}")
    cases = json.loads(timings.read_text())["cases"] if timings.exists() else {}
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_gb": usage.ru_maxrss / 1024**2,
        "cases": cases,
        "stderr": stderr.decode(errors="replace"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", type=Path, default=REPO.parent / "shared" / "data" / "brats2018_extra", help="dataset folder"
    )
    parser.add_argument("--limit", type=int, default=3, help="first N cases (sorted ids)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-ref", help="git commit whose glioseg (PyTorch backend) is the 'before' row")
    parser.add_argument(
        "--commands",
        help="comma-separated subset of the commands to run (glioseg-torch, the label reference, is always run)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "predict_vs_monai", help="output stem (OUT.csv, OUT.md)"
    )
    parser.add_argument("--model", type=Path, help="glioseg's model (a packed model folder); default: the shipped one")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="glioseg-vs-monai-"))
    cases = work / "cases"
    cases.mkdir()
    chosen = sorted(p for p in args.cases.iterdir() if p.is_dir())[: args.limit]
    for case in chosen:
        (cases / case.name).symlink_to(case.resolve())
    before_src = source_tree(args.before_ref, work) if args.before_ref else None
    todo = commands(cases, work / "out", work / "timings.json", before_src, args.model)
    if args.commands:
        wanted = {*args.commands.split(","), "glioseg-torch"}
        todo = {name: command for name, command in todo.items() if name in wanted}
    names = list(todo)
    load_start = os.getloadavg()

    for name in names:  # warm-up, not counted; keep the labels of the first real run below
        run_once(todo[name][0], todo[name][1], work / "out", work / "timings.json")
        print(f"warm-up {name} done", flush=True)
    runs = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            result = run_once(todo[name][0], todo[name][1], work / "out", work / "timings.json")
            if round_ == 0:
                shutil.copytree(work / "out", work / "labels" / name)
            runs.append({"round": round_, "command": name, **result})
            print(f"round {round_} {name}: {result['wall_s']:.1f} s wall, peak {result['peak_gb']:.2f} GB", flush=True)
    load_end = os.getloadavg()

    agreement = []
    pairs = [(n, "glioseg-torch") for n in names if n not in {"monai", "glioseg-torch"}]
    if "glioseg" in names and "before-auto" in names:
        pairs.append(("glioseg", "before-auto"))
    for name, against in pairs:
        for case in chosen:
            ours = np.asarray(nib.load(str(work / "labels" / name / f"{case.name}.nii.gz")).dataobj)
            reference = np.asarray(nib.load(str(work / "labels" / against / f"{case.name}.nii.gz")).dataobj)
            row = {"command": f"{name} vs {against}", "case": case.name,
                   "voxels_differing": int((ours != reference).sum())}
            for region, values in REGIONS.items():
                row[f"dice_{region.lower()}"] = dice(np.isin(ours, values), np.isin(reference, values))
            agreement.append(row)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".csv").open("w", newline="") as handle:
        fields = ["round", "command", "wall_s", "cpu_s", "peak_gb", "case", *STAGES, "total"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for run in runs:
            head = {"round": run["round"], "command": run["command"]}
            totals = {
                "wall_s": round(run["wall_s"], 3),
                "cpu_s": round(run["cpu_s"], 3),
                "peak_gb": round(run["peak_gb"], 3),
            }
            writer.writerow({**head, **totals, "case": ""})
            for case, stages in run["cases"].items():
                writer.writerow({**head, "case": case, **{s: round(stages.get(s, 0.0), 4) for s in (*STAGES, "total")}})
    write_markdown(args, runs, names, agreement, load_start, load_end, [c.name for c in chosen])
    print(args.out.with_suffix(".md").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return 0


def write_markdown(args, runs, names, agreement, load_start, load_end, case_names) -> None:
    """The medians, the per-round ratios to ``monai``, the stages and the label agreement."""
    wall = {n: [r["wall_s"] for r in runs if r["command"] == n] for n in names}
    ratios = {
        n: [
            next(r["wall_s"] for r in runs if r["command"] == n and r["round"] == k)
            / next(r["wall_s"] for r in runs if r["command"] == "monai" and r["round"] == k)
            for k in range(args.rounds)
        ]
        for n in names
    }
    lines = [
        f"# `glioseg predict` against a MONAI SegResNet predict script: {len(case_names)} cases, {args.rounds} "
        "interleaved rounds",
        "",
        f"Command: `python benchmarks/predict_vs_monai.py {' '.join(sys.argv[1:])}`",
        "",
        f"Cases: {', '.join(case_names)} (`{args.cases}`). Machine: {os.cpu_count()} cores, {platform.platform()}, "
        "shared with other jobs "
        f"(load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end); every command a fresh process "
        "with its default "
        "threads, after one warm-up round; order rotated per round.",
        "",
        f"| command | median wall s ({len(case_names)} cases, whole command) | runs | median ratio to monai (per "
        "round) | median CPU s (user + system) | peak memory GB (max) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for n in names:
        peak = max(r["peak_gb"] for r in runs if r["command"] == n)
        cpu = statistics.median(r["cpu_s"] for r in runs if r["command"] == n)
        lines.append(
            f"| {n} | {statistics.median(wall[n]):.1f} | {', '.join(f'{w:.1f}' for w in wall[n])} | "
            f"{statistics.median(ratios[n]):.2f} | {cpu:.1f} | {peak:.2f} |"
        )
    lines += [
        "",
        "## Median seconds per case, per stage (`--timings`)",
        "",
        "| command | " + " | ".join(STAGES) + " | total | outside the network |",
        "|---|" + "---:|" * (len(STAGES) + 2),
    ]
    for n in names:
        per_case = [t for r in runs if r["command"] == n for t in r["cases"].values()]
        if not per_case:
            continue
        med = {s: statistics.median(t.get(s, 0.0) for t in per_case) for s in (*STAGES, "total")}
        outside = statistics.median(t["total"] - t["network"] for t in per_case)
        lines.append(f"| {n} | " + " | ".join(f"{med[s]:.2f}" for s in (*STAGES, "total")) + f" | {outside:.2f} |")
    lines += [
        "", "## Labels against `glioseg-torch` (PyTorch eager, this tree) and `before-auto`, round 0", "",
        "| command | case | Dice WT | Dice TC | Dice ET | voxels differing |", "|---|---|---:|---:|---:|---:|",
    ]
    for a in agreement:
        lines.append(
            f"| {a['command']} | {a['case']} | {a['dice_wt']:.6f} | {a['dice_tc']:.6f} | {a['dice_et']:.6f} | "
            f"{a['voxels_differing']} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
