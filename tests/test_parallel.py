"""How :func:`glioseg.parallel.map_cases` starts its workers: forked only from a one-thread process.

A worker forked while another thread of the parent held a lock inherits the lock held, with no
thread left to release it: its first use hangs the worker for ever. Session 9 saw it as a hung test
suite (a worker forked after a network had run in the same pytest process). Each test runs a small
script in its own process, so that the parent's threads are exactly those the script starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

_POOL = """
import sys, threading, time
from glioseg.parallel import map_cases, pool_context

LOCK = threading.Lock()
SEEN = "as imported"


def job(i):
    with LOCK:  # a forked copy of a lock that another thread held never opens
        return i * i, SEEN


if __name__ == "__main__":
    SEEN = "set by the parent"  # a forked worker sees it, a spawned one imports the module afresh
    if sys.argv[1] == "thread-holding-a-lock":
        held = threading.Event()

        def hold():
            with LOCK:
                held.set()
                time.sleep(3.0)

        threading.Thread(target=hold, daemon=True).start()
        held.wait()
    elif sys.argv[1] == "after-a-network":
        import torch

        torch.nn.functional.conv3d(torch.randn(1, 4, 16, 16, 16), torch.randn(8, 4, 3, 3, 3))
    print(pool_context().get_start_method(), flush=True)
    print(list(map_cases(job, [1, 2, 3], workers=2, desc="x", progress=False)), flush=True)
"""


def _run(tmp_path: Path, case: str) -> tuple[list[str], float]:
    script = tmp_path / "pool.py"
    script.write_text(_POOL)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(script), case],
        capture_output=True,
        text=True,
        timeout=120,  # before the fix the thread case hung for ever
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), time.perf_counter() - started


def test_a_one_thread_process_forks_its_workers(tmp_path):
    lines, _ = _run(tmp_path, "single-thread")
    assert lines == ["fork", str([(1, "set by the parent"), (4, "set by the parent"), (9, "set by the parent")])]


def test_a_lock_held_by_another_thread_does_not_hang_the_workers(tmp_path):
    """The parent's second thread holds LOCK for 3 s while the pool starts; every job takes LOCK.
    Forked workers would wait for ever; spawned ones import a fresh, open LOCK and finish at once."""
    lines, seconds = _run(tmp_path, "thread-holding-a-lock")
    assert lines == ["spawn", str([(1, "as imported"), (4, "as imported"), (9, "as imported")])]
    assert seconds < 60


def test_workers_after_a_network_ran_in_the_process_are_spawned(tmp_path):
    """PyTorch's intra-op pool (and ONNX Runtime's) are threads: the case that hung the suite."""
    lines, _ = _run(tmp_path, "after-a-network")
    assert lines == ["spawn", str([(1, "as imported"), (4, "as imported"), (9, "as imported")])]
