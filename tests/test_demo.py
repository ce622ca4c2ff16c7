"""The demo: a step budget, so a busy machine makes it slower but never shows untrained networks."""

import os
import subprocess
import sys
import time

import pytest

from glioseg.demo import FULL, QUICK, idle_cores, run_demo
from glioseg.evaluation import read_summary
from glioseg.networks import NETWORKS


def test_budget_is_steps_not_minutes():
    assert FULL.steps_per_model == FULL.epochs * FULL.samples_per_epoch // 2 > QUICK.steps_per_model
    assert 1 <= idle_cores() <= (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


@pytest.mark.slow
def test_demo_on_a_busy_machine_finishes_in_12_minutes_with_working_networks(tmp_path):
    """Another process keeps one core busy the whole time (on a 2-core machine: half of it); the
    demo, with its default thread count, finishes in <= 12 minutes, and every network reaches
    Dice WT >= 0.80 and TC >= 0.60 on the held-out synthetic test cases."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        started = time.perf_counter()
        report = run_demo(tmp_path / "demo", progress=False)
        minutes = (time.perf_counter() - started) / 60
    finally:
        busy.kill()
        busy.wait()
    assert report.is_file()
    dice = {name: read_summary(tmp_path / "demo" / "runs" / name / "eval_test" / "summary.csv") for name in NETWORKS}
    for name, summary in dice.items():
        assert summary["dice_wt"]["mean"] >= 0.80, (name, summary["dice_wt"])
        assert summary["dice_tc"]["mean"] >= 0.60, (name, summary["dice_tc"])
    assert minutes <= 12, f"demo took {minutes:.1f} min"


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_demo_refuses_an_output_that_is_or_lies_under_a_file_before_any_work(tmp_path, where):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep me\n")
    out = blocker if where == "file" else blocker / "demo"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "glioseg", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0] and "Fix:" in lines[0], (
        result.stderr
    )
    assert blocker.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]
    assert time.perf_counter() - started < 30  # refused before synth, training or anything else
