"""Real-data experiment: the paper's recipe and glioseg's CPU recipe, three networks each, same split.

Both presets run at the same resolution (2 mm: the paper's fixed 128^3 crop at 1 mm becomes
64^3) and the same wall-clock budget per run on this machine (``--minutes``), one run at a time
with the same number of threads. Every run is predicted on the held-out validation cases with
``glioseg predict`` (whole scans, written on the original 1 mm grid) and scored with
``glioseg evaluate`` against the expert labels.

Usage (from the repository root; resumable: finished stages are skipped, an interrupted
training run continues from its last checkpoint)::

    python benchmarks/real_brats2018/run.py --data ../shared/data/brats2018 --work /tmp/glioseg-real --minutes 12

Writes ``results.csv``, ``results.md`` and ``curves_<run>.png`` beside this file; the work
folder (caches, runs, predictions) stays outside the repository.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("unet", "resunet", "sa_unet")

# preset -> overrides that put it on the common 2 mm grid and the common budget
PRESETS = {
    "paper": ["preprocess.target_spacing=[2.0,2.0,2.0]", "train.patch_size=[64,64,64]"],
    "cpu": [],
}


def glioseg(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "glioseg", *args]
    print("$ glioseg " + " ".join(args), flush=True)
    return subprocess.run(cmd, check=False)


def validation_folder(work: Path, data: Path, val_ids: list[str]) -> Path:
    """A folder of links to exactly the validation cases of one run's split.

    Named by a hash of the sorted ids, so each preset is predicted and scored on its own split
    (the presets can keep different cases: the paper's drops those with <= 1% tumor in its crop).
    """
    digest = hashlib.sha256("\n".join(sorted(val_ids)).encode()).hexdigest()[:12]
    root = work / f"val_cases-{digest}"
    if not root.exists():
        building = work / f".val_cases-{digest}.tmp"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        for case_id in val_ids:
            (building / case_id).symlink_to((data / case_id).resolve())
        building.rename(root)
    return root


def finished(run: Path) -> bool:
    meta = run / "finished.json"
    return meta.is_file()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brats2018"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/glioseg-real"))
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--epochs-cpu",
        type=int,
        default=13,
        help="epochs of the cpu preset (its poly schedule ends there; sized to the budget)",
    )
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for preset in args.presets:
        for model in args.models:
            name = f"{preset}-{model}"
            run = work / "runs" / name
            overrides = [
                *PRESETS[preset],
                f"train.threads={args.threads}",
                f"train.time_limit_min={args.minutes}",
                "train.device=cpu",
            ]
            if preset == "cpu":
                overrides += [f"train.epochs={args.epochs_cpu}", f"train.val_every={max(args.epochs_cpu // 2, 1)}"]
            if not finished(run):
                sets = [a for o in overrides for a in ("--set", o)]
                if (run / "last.pt").exists():
                    result = glioseg("train", "--resume", str(run), "--quiet")
                else:
                    if run.exists():
                        shutil.rmtree(run)
                    result = glioseg(
                        "train",
                        "--preset",
                        preset,
                        "--data",
                        str(args.data),
                        "--run-dir",
                        str(run),
                        "--model",
                        model,
                        "--quiet",
                        *sets,
                    )
                if result.returncode != 0:
                    print(f"training {name} failed", file=sys.stderr)
                    return 1
                (run / "finished.json").write_text(json.dumps({"finished": time.time()}))
            history = list(csv.DictReader((run / "metrics.csv").open()))
            split = json.loads((run / "split.json").read_text())
            pred = work / "pred" / name
            val_root = validation_folder(work, args.data, split["val"])
            started = time.perf_counter()
            glioseg(
                "predict", str(val_root), "-o", str(pred), "--model", str(run / "best.pt"), "--continue", "--quiet",
                "--threads", str(args.threads), "--device", "cpu", "--timings", str(work / f"timings-{name}.json"),
            )
            predict_s = time.perf_counter() - started
            evaluation = work / "eval" / name
            glioseg("evaluate", "--pred", str(pred), "--ref", str(val_root), "-o", str(evaluation))
            summary = {r["metric"]: r for r in csv.DictReader((evaluation / "summary.csv").open())}
            timing_file = work / f"timings-{name}.json"
            timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
            row = {
                "preset": preset,
                "model": model,
                "epochs": history[-1]["epoch"],
                "train_min": round(float(history[-1]["time_s"]) / 60, 1),
                **{
                    f"{stat}_{metric}": round(float(summary[metric][stat]), 4)
                    for metric in ("dice_wt", "dice_tc", "dice_et", "hd95_wt", "hd95_tc", "hd95_et")
                    for stat in ("mean", "median")
                },
                "predict_s_per_case": round(timing.get("median_total_s", predict_s / max(len(split["val"]), 1)), 2),
            }
            rows.append(row)
            shutil.copy(run / "curves.png", HERE / f"curves_{name}.png")
            write_results(rows)
    return 0


def write_results(rows: list[dict]) -> None:
    with (HERE / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| preset | model | epochs | train min | Dice WT | Dice TC | Dice ET | HD95 WT mm | HD95 TC mm | HD95 ET mm | "
        "predict s/case |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def cell(m: str, r: dict = r) -> str:
            return f"{r[f'mean_{m}']:.3f} ({r[f'median_{m}']:.3f})"

        def hd(m: str, r: dict = r) -> str:
            return f"{r[f'mean_{m}']:.1f} ({r[f'median_{m}']:.1f})"

        lines.append(
            f"| {r['preset']} | {r['model']} | {r['epochs']} | {r['train_min']} | {cell('dice_wt')} | "
            f"{cell('dice_tc')} | {cell('dice_et')} "
            f"| {hd('hd95_wt')} | {hd('hd95_tc')} | {hd('hd95_et')} | {r['predict_s_per_case']} |"
        )
    lines.append("")
    lines.append(
        "Mean (median) over the 4 held-out validation cases; Dice and HD95 by the official BraTS rules, on the "
        "original 1 mm grid."
    )
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
