"""Commands that run no network start without importing PyTorch, MONAI or a runtime (each a fresh process).

--help without SciPy either."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glioseg.data.synth import write_cohort

SRC = Path(__file__).resolve().parents[1] / "src"

PROBE = """
import json, sys
from glioseg.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help exits
    code = exc.code
NETWORK_MODULES = ("torch", "monai", "onnxruntime", "openvino", "onnx")
imported = sorted(m for m in sys.modules if m.split(".")[0] in NETWORK_MODULES)
print(json.dumps({"code": code, "imported": imported, "scipy": "scipy" in sys.modules}))
"""

def _run(args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return json.loads(done.stdout.strip().splitlines()[-1])

@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("startup")
    write_cohort(root / "data", cases=2, shape=(24, 26, 22), layout="brats2020", seed=3)
    pred = root / "pred"
    pred.mkdir()
    for case in sorted((root / "data").iterdir()):
        shutil.copy(case / f"{case.name}_seg.nii", pred / f"{case.name}.nii")  # a perfect prediction
    return root

def test_the_commands_without_a_network_import_neither_torch_nor_monai(cohort: Path) -> None:
    case = sorted((cohort / "data").iterdir())[0]
    commands = {
        "help": ["--help"],
        "predict --help": ["predict", "--help"],
        "inspect": ["inspect", str(cohort / "data")],
        "evaluate": [
            "evaluate",
            "--pred",
            str(cohort / "pred"),
            "--ref",
            str(cohort / "data"),
            "-o",
            str(cohort / "eval"),
            "--quiet",
            "--workers",
            "1",
        ],
        "view": ["view", str(case), "-o", str(cohort / "case.html")],
    }
    for name, args in commands.items():
        result = _run(args, cohort)
        assert result["code"] == 0, (name, result)
        assert result["imported"] == [], f"glioseg {name} imported {result['imported'][:5]}"
    assert (cohort / "eval" / "per_case.csv").is_file() and (cohort / "case.html").is_file()  # they did their work
    assert not _run(["--help"], cohort)["scipy"]  # nor SciPy: --help shows the commands only (0.13 CPU-s)

def test_the_probe_sees_torch_when_a_command_imports_it(cohort: Path) -> None:
    """The check above can fail: the same probe on ``export`` (which loads PyTorch before it finds the model missing)
    reports torch."""
    result = _run(["export", str(cohort / "no-such-model.pt"), "-o", str(cohort / "exported")], cohort)
    assert result["code"] == 2 and "torch" in result["imported"], result
