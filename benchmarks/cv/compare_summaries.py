"""Compare two cross-validation summaries (``summary.md``) number by number, to the rounding shown.

Used to check ``glioseg cv report`` against the script it replaced (``benchmarks/cv/report.py`` of
f77364f) on the same out-of-fold predictions::

    python benchmarks/cv/compare_summaries.py FORMER/summary.md NEW/summary.md --out
    benchmarks/cv/recipe_a_short/vs_former.md

Compared: every row of the metric table (raw and post-processed mean and median), the nested
choice per fold, the choice on all cases, and every per-case row (raw -> post-processed Dice and
the whole-tumour voxel counts). Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def tables(path: Path) -> dict[str, list[str]]:
    """``{first cell: the other cells}`` of every Markdown table row, and the choice lines."""
    rows: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] not in ("metric", "case"):
                rows[cells[0]] = cells[1:]
        elif line.startswith(("Post-processing chosen per fold", "Chosen on all")):
            rows[line.split(":")[0]] = [re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("former", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--out", type=Path, help="write the comparison as Markdown")
    args = parser.parse_args()
    a, b = tables(args.former), tables(args.new)
    keys = [k for k in a if k in b]
    differ = [k for k in keys if a[k] != b[k]]
    only = sorted(set(a) ^ set(b))
    lines = [
        f"# `{args.new}` against `{args.former}`",
        "",
        f"{len(keys)} rows in both; {len(differ)} differ; rows in one only: {', '.join(only) or 'none'}.",
        "",
    ]
    if differ:
        lines += ["| row | former | new |", "|---|---|---|"] + [
            f"| {k} | {' / '.join(a[k])} | {' / '.join(b[k])} |" for k in differ
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
