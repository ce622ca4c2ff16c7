"""The package's shape: which module may import which, and what library errors may say."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "glioseg"
LIBRARY = sorted(p for p in SRC.rglob("*.py") if p.name not in ("cli.py", "__main__.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(SRC)))
def test_library_errors_name_no_command_line_flag(path):
    """Errors of the library speak of settings and files; only the CLI knows its flags."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("GliosegError", "ValueError"):
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    assert not re.search(r"(^|\s)--[a-z]", part.value), f"{path.name}:{node.lineno}: {part.value!r}"


def test_dependencies_point_downwards():
    """Inference does not need the trainer's package; what outputs mean is not a network's fact."""
    for path in (SRC / "inference").glob("*.py"):
        assert not any(m.startswith("glioseg.training") for m in _imports(path)), path.name
    for name in ("losses.py", "heads.py", "checkpoint.py"):
        assert not any(m.startswith("glioseg.training") for m in _imports(SRC / name)), name
    assert not any(m.startswith("glioseg.networks") for m in _imports(SRC / "losses.py"))
    assert not any(m.startswith("glioseg.networks") for m in _imports(SRC / "heads.py"))
    assert not (SRC / "training" / "checkpoint.py").exists()
