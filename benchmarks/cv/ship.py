"""Ship the fold models of a cross-validated recipe as the package's default model (an ensemble).

Each fold's ``last.pt`` (the weights of its last epoch: no checkpoint was chosen on held-out
cases) is slimmed to what inference needs (config, weights, epoch), its weights stored as
float16 (they are loaded into the float32 network, so inference runs in float32; the rounding
of the weights themselves is not measured against the float32 originals), written atomically into ``src/glioseg/weights/``
with its sha256 in ``checksums.json``. ``glioseg predict`` without ``--model`` averages the
probabilities of every checkpoint there.

Usage::

    python benchmarks/cv/ship.py /tmp/glioseg-cv/recipe_a/runs/fold{0,1,2,3} --name glioseg_cv_resunet \
        [--postprocess min_component_size=1000 et_threshold=300 | --choice benchmarks/cv/recipe_a/choice.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.checkpoint import load_checkpoint, save_checkpoint
from glioseg.checksums import write_checksums
from glioseg.config import config_from_dict

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "glioseg" / "weights"


def slim(payload: dict, postprocess: dict[str, int | None]) -> dict:
    """Config + float16 weights + epoch; ``postprocess`` values go into the config's section."""
    # through this glioseg's Config: an older checkpoint's config gains today's sections with the
    # defaults that reproduce how it was trained
    config = config_from_dict(payload["config"], "checkpoint").to_dict()
    config["postprocess"] = {**config["postprocess"], **postprocess}
    if config["train"].get("init_from"):  # a path on the machine that trained it; the model card names the stages
        config["train"]["init_from"] = None
    config_from_dict(config, "shipped config")  # the values are valid
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in payload["model"].items()}
    return {"config": config, "model": weights, "epoch": payload["epoch"]}


def chosen_postprocess(choice: Path) -> dict[str, int | None]:
    """The ``postprocess`` values of the candidate a report chose on all cases (``report.py``'s choice.json)."""
    import json

    data = json.loads(choice.read_text())
    keys = ("min_component_size", "max_components", "et_threshold", "min_et_component_size", "min_core_component_size")
    for name, *values in data["candidates"]:
        if name == data["all_cases"]:
            return dict(zip(keys, values))
    raise SystemExit(f"{choice}: the chosen candidate {data['all_cases']!r} is not among its candidates")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="fold run folders (their last.pt is shipped)")
    parser.add_argument("--name", required=True, help="file name stem; fold k becomes <name>_fold<k>.pt")
    parser.add_argument("--postprocess", nargs="*", default=[], metavar="KEY=VALUE", help="post-processing the model ships with")
    parser.add_argument("--choice", type=Path, metavar="CHOICE_JSON", help="ship the post-processing a cross-validation report chose on all cases (benchmarks/cv/<recipe>/choice.json)")
    args = parser.parse_args()
    postprocess = {key: (None if value.lower() in ("none", "null") else int(value)) for key, value in (item.split("=", 1) for item in args.postprocess)}
    if args.choice is not None:
        postprocess = {**chosen_postprocess(args.choice), **postprocess}
        print(f"post-processing from {args.choice}: {postprocess}")
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    for old in WEIGHTS.glob("*.pt"):
        old.unlink()
    for run in args.runs:
        payload = load_checkpoint(run / "last.pt")
        fold = payload["config"]["train"]["fold"]
        target = WEIGHTS / f"{args.name}_fold{fold}.pt"
        save_checkpoint(target, slim(payload, postprocess))
        print(f"shipped {target} ({target.stat().st_size / 2**20:.2f} MiB, epoch {payload['epoch']})")
    checksums = write_checksums(WEIGHTS)
    total = sum((WEIGHTS / name).stat().st_size for name in checksums)
    print(f"{len(checksums)} checkpoint(s), {total / 2**20:.1f} MiB in all; checksums written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
