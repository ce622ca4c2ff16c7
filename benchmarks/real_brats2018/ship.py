"""Ship a trained run as the package's default model (``src/glioseg/weights/``).

Keeps only what inference needs (config and weights, plus the epoch and the validation score
for the record), writes it atomically, records its sha256 in ``checksums.json`` (checked on every
load), and prints the size. The model card (``MODEL_CARD.md``) is written by hand from the
experiment's results.

Usage::

    python benchmarks/real_brats2018/ship.py /tmp/glioseg-real/runs/cpu-resunet --name glioseg_cpu_resunet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.checkpoint import load_checkpoint, save_checkpoint
from glioseg.checksums import write_checksums

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "glioseg" / "weights"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (its best.pt is shipped)")
    parser.add_argument("--name", required=True, help="file name without .pt")
    args = parser.parse_args()
    payload = load_checkpoint(args.run / "best.pt")
    slim = {key: payload[key] for key in ("config", "model", "epoch", "best_metric")}
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    for old in WEIGHTS.glob("*.pt"):
        old.unlink()
    target = WEIGHTS / f"{args.name}.pt"
    save_checkpoint(target, slim)
    checksums = write_checksums(WEIGHTS)
    print(f"shipped {target} ({target.stat().st_size / 2**20:.1f} MiB), sha256 {checksums[target.name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
