"""Cross-validation of a training recipe on the shared BraTS cases: out-of-fold scores only.

Every case is predicted by the one fold model that never saw it, from its last epoch (no
checkpoint is chosen on held-out cases), on its original 1 mm grid with ``glioseg predict``,
and scored with ``glioseg evaluate``. Post-processing is chosen *nested*: the setting applied
to the cases of fold k is the one that scores best on the out-of-fold predictions of the
other folds, so no case takes part in choosing what is applied to it.

Usage (from the repository root; every stage is resumable: finished stages are skipped and an
interrupted training run continues from its last checkpoint)::

    # train and predict folds (--workers 2: two folds at once, one core each)
    python benchmarks/cv/run.py train --recipe benchmarks/cv/recipe_a.yaml --workers 2
    # out-of-fold evaluation, nested post-processing choice, results into benchmarks/cv/
    python benchmarks/cv/run.py report --recipe benchmarks/cv/recipe_a.yaml

The work folder (cache, runs, predictions; default /tmp/glioseg-cv/<recipe>) stays outside the
repository. Results: ``benchmarks/cv/<recipe>/`` (per-case and summary CSV/Markdown).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGIONS = ("wt", "tc", "et")


def glioseg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print("$ glioseg " + " ".join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "glioseg", *args], check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"glioseg {args[0]} failed with exit {result.returncode}")
    return result


def recipe_predict_options(recipe: Path) -> list[str]:
    """``glioseg predict`` options a recipe's ``inference`` section asks for beyond the checkpoint's."""
    import yaml

    inference = (yaml.safe_load(recipe.read_text()) or {}).get("inference", {})
    return ["--mirror"] if inference.get("mirror") else []


def recipe_folds(recipe: Path) -> tuple[int, int]:
    import yaml

    train = (yaml.safe_load(recipe.read_text()) or {}).get("train", {})
    return int(train.get("folds", 0)), int(train.get("split_seed", 42))


def case_folder(root: Path, data: Path, case_ids: list[str]) -> Path:
    """A folder of symlinks to ``case_ids`` under ``data`` (a dataset of just those cases)."""
    root.mkdir(parents=True, exist_ok=True)
    for case_id in case_ids:
        link = root / case_id
        if not link.exists():
            link.symlink_to((data / case_id).resolve())
    return root


def first_stage(recipe: Path, work: Path, fold: int) -> tuple[Path, Path, Path] | None:
    """``(recipe, work folder, checkpoint)`` of the earlier stage fold ``fold`` of ``recipe`` starts
    from, or ``None`` for a recipe trained from scratch.

    A recipe whose ``train.init_from`` reads ``{cv}/<first>/runs/fold{fold}/last.pt`` starts each
    fold from the last weights of the same fold of recipe ``<first>`` (``benchmarks/cv/<first>.yaml``,
    work folder ``<cv>/<first>``). Fold k of the first stage never saw fold k's held-out cases.
    """
    import yaml

    pattern = ((yaml.safe_load(recipe.read_text()) or {}).get("train") or {}).get("init_from")
    if not pattern or "{cv}" not in str(pattern):
        return None
    source = Path(str(pattern).format(cv=work.parent, fold=fold))
    first = source.relative_to(work.parent).parts[0]
    return HERE / f"{first}.yaml", work.parent / first, source


def recipe_init_from(recipe: Path, work: Path, fold: int, data: Path, threads: int) -> list[str]:
    """``--set train.init_from=...`` for a second-stage recipe, after training that fold of its
    first stage if it is missing or interrupted (so one command reproduces both stages; ``main``
    has prepared every stage's cache)."""
    stage = first_stage(recipe, work, fold)
    if stage is None:
        return []
    first_recipe, first_work, source = stage
    if not (source.parent / "finished.json").is_file():
        print(f"fold {fold}: training the first stage ({first_recipe.stem}) first", flush=True)
        train_fold(first_recipe, data, first_work, fold, threads)
    return ["--set", f"train.init_from={source}"]


def first_stages(recipe: Path, work: Path) -> list[tuple[Path, Path]]:
    """``(recipe, work folder)`` of every earlier stage a second-stage recipe starts from, first stage first."""
    stage = first_stage(recipe, work, 0)
    if stage is None:
        return []
    first_recipe, first_work, _ = stage
    return [*first_stages(first_recipe, first_work), (first_recipe, first_work)]


def train_fold(recipe: Path, data: Path, work: Path, fold: int, threads: int) -> None:
    cache, run = work / "cache", work / "runs" / f"fold{fold}"
    sets = ["--set", f"train.fold={fold}", "--set", f"train.threads={threads}"]
    if not (run / "finished.json").is_file() and not (run / "last.pt").is_file():
        sets += recipe_init_from(recipe, work, fold, data, threads)
    if not (run / "finished.json").is_file():
        if (run / "last.pt").is_file():
            glioseg("train", "--resume", str(run), "--quiet")
        else:
            glioseg("train", "--preset", str(recipe), "--cache", str(cache), "--run-dir", str(run), "--quiet", *sets)
        history = list(csv.DictReader((run / "metrics.csv").open()))
        (run / "finished.json").write_text(json.dumps({"epochs": int(history[-1]["epoch"]), "train_s": float(history[-1]["time_s"])}))
    split = json.loads((run / "split.json").read_text())
    held_out = case_folder(work / "held_out" / f"fold{fold}", data, split["val"])
    pred = work / "pred" / "raw"
    timings = work / f"timings-fold{fold}.json"
    if not timings.is_file():
        glioseg(
            "predict", str(held_out), "-o", str(pred), "--model", str(run / "last.pt"), "--device", "cpu",
            "--threads", str(threads), "--quiet", "--timings", str(timings), *recipe_predict_options(recipe),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("prepare", "train", "report"))
    parser.add_argument("--recipe", type=Path, required=True, help="preset YAML with train.folds > 0")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brats2018"))
    parser.add_argument("--work", type=Path, help="work folder (default /tmp/glioseg-cv/<recipe>)")
    parser.add_argument("--folds", type=int, nargs="+", help="folds to train (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    parser.add_argument("--workers", type=int, default=1, help="train this many folds at once, one process each (2 on a 2-core machine)")
    args = parser.parse_args()
    name = args.recipe.stem
    work = args.work or Path("/tmp/glioseg-cv") / name
    k, _ = recipe_folds(args.recipe)
    if k < 2:
        raise SystemExit(f"{args.recipe}: train.folds must be >= 2 for cross-validation")
    if args.stage == "prepare":
        glioseg("preprocess", str(args.data), "--preset", str(args.recipe), "--out", str(work / "cache"), "--quiet")
        return 0
    if args.stage == "train":
        for stage_recipe, stage_work in [*first_stages(args.recipe, work), (args.recipe, work)]:  # before any worker starts
            if not (stage_work / "cache" / "preset.json").is_file():
                glioseg("preprocess", str(args.data), "--preset", str(stage_recipe), "--out", str(stage_work / "cache"), "--quiet")
        folds = list(args.folds or range(k))
        if args.workers > 1 and len(folds) > 1:  # one process per share of the folds, 1 core each
            shares = [folds[i::args.workers] for i in range(min(args.workers, len(folds)))]
            base = [sys.executable, __file__, "train", "--recipe", str(args.recipe), "--data", str(args.data), "--work", str(work), "--threads", str(args.threads)]
            workers = [subprocess.Popen([*base, "--folds", *map(str, share)]) for share in shares]
            codes = [w.wait() for w in workers]
            return max(codes)
        for fold in folds:
            started = time.perf_counter()
            train_fold(args.recipe, args.data, work, fold, args.threads)
            print(f"fold {fold} done in {time.perf_counter() - started:.0f} s", flush=True)
        return 0
    from report import write_report  # benchmarks/cv/report.py

    write_report(args.recipe, args.data, work, HERE / name, k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
