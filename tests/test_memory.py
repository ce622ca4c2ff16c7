"""glioseg.memory: glibc's allocator keeps freed memory for the next training step."""

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource, sys
from glioseg.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_size_t,), (ctypes.c_void_p,)
SIZE = 64 * 1024 * 1024
def touch():  # a 64 MB block, written, then freed: what a training step does with its activations
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env={**environment, **env}
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_a_freed_large_block_is_reused_without_new_page_faults():
    """By default glibc maps a 64 MB block afresh every time: 16,384 pages of 4 KiB fault in again. Kept, the
    second block reuses the first's pages."""
    applied, faults_default = _faults("off")
    assert faults_default > 10_000  # glibc's default: every block is a new mapping
    applied, faults_kept = _faults("on")
    assert applied == "True" and faults_kept < 500


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_a_users_own_malloc_setting_is_left_alone():
    applied, faults = _faults("on", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False" and faults > 10_000
