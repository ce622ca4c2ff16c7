"""The package's shape: the floors of ARCHITECTURE.md, checked on every import of src/, and what library errors may
say."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "glioseg"
LIBRARY = sorted(p for p in SRC.rglob("*.py") if p.name not in ("cli.py", "__main__.py"))


def floors_table(text: str) -> dict[str, int]:
    """Room -> floor, from the table of ARCHITECTURE.md (rows ``| floor | `room`, `room` | ...``)."""
    floors: dict[str, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for room in re.findall(r"`([^`]+)`", cells[1]):
                floors[room.rstrip("/").removesuffix(".py")] = int(cells[0])
    return floors


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    """``glioseg.data.io`` -> ``data``; ``glioseg`` (the package itself) -> ``glioseg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """Every glioseg module ``path`` imports (line, module), wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from glioseg.x import y` imports glioseg.x, and glioseg.x.y when y is a module
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in targets if t in modules]
    return found


def import_graph(src: Path) -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]]]:
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    return files, {m: imports(p, set(files)) for m, p in files.items()}


def wrong_arrows(src: Path, floors: dict[str, int]) -> list[str]:
    """Imports that point to a room on the same or a higher floor, and files whose room has no floor."""
    files, graph = import_graph(src)
    problems = [
        f"{files[m].relative_to(src.parent)}: room '{room_of(m)}' has no floor"
        for m in files
        if room_of(m) not in floors
    ]
    for module, targets in graph.items():
        for line, target in targets:
            a, b = room_of(module), room_of(target)
            if a != b and a in floors and b in floors and floors[b] >= floors[a]:
                problems.append(
                    f"{files[module].relative_to(src.parent)}:{line}: {module} (floor {floors[a]}) imports {target} "
                    f"(floor {floors[b]})"
                )
    return problems


def circles(src: Path) -> list[list[str]]:
    """Import circles between modules (each reported once, from its smallest module)."""
    _, graph = import_graph(src)
    edges = {m: sorted({t for _, t in targets if t != m}) for m, targets in graph.items()}
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in edges[node]:
            if nxt in path:
                cycle = path[path.index(nxt):]
                key = frozenset(cycle)
                if key not in done:
                    done.add(key)
                    found.append([*cycle, nxt])
            elif nxt not in finished:
                visit(nxt, [*path, nxt])
        finished.add(node)

    finished: set[str] = set()
    for module in sorted(edges):
        if module not in finished:
            visit(module, [module])
    return found


def closure(module: str, graph: dict[str, list[tuple[int, str]]]) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for _, target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


FLOORS = floors_table((REPO / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def test_the_table_of_floors_is_read():
    assert (
        FLOORS["errors"] == 0
        and FLOORS["config"] < FLOORS["data"] < FLOORS["inference"] < FLOORS["training"] < FLOORS["cli"]
    )
    assert len(FLOORS) == 27  # every room of the table


def test_every_import_of_src_points_down_a_floor():
    assert wrong_arrows(SRC, FLOORS) == []


def test_no_import_circle():
    assert circles(SRC) == []


def test_training_needs_neither_the_predictor_nor_reporting():
    """Validation decodes with inference/decode.py; the trainer draws its curves with training/curves.py."""
    _, graph = import_graph(SRC)
    reached = set().union(*(closure(m, graph) | {m} for m in graph if room_of(m) == "training"))
    assert "glioseg.inference.predictor" not in reached
    assert not {m for m in reached if room_of(m) == "reporting"}
    assert "glioseg.inference.decode" in reached  # the walk does see training's imports


def test_configuration_stands_on_the_ground_floor():
    _, graph = import_graph(SRC)
    reached = closure("glioseg.config", graph)
    assert {room_of(m) for m in reached} <= {"errors", "validation", "labels", "config"}, reached


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "glioseg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "glioseg"


def test_the_walk_finds_an_upward_arrow_a_circle_and_an_unknown_room(tmp_path):
    """The checks above can fail: a fake tree with each fault, including an import inside a function."""
    src = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "config/__init__.py": "def f():\n    from glioseg.training.loop import train\n",
        "training/__init__.py": "",
        "training/loop.py": "from glioseg import errors\nfrom glioseg.config import f\n",
        "gadgets.py": "import glioseg.errors\n",
    })
    floors = {"glioseg": 0, "errors": 0, "config": 3, "training": 8}
    problems = wrong_arrows(src, floors)
    assert any(
        "config/__init__.py:2: glioseg.config (floor 3) imports glioseg.training.loop (floor 8)" in p for p in problems
    ), problems
    assert any("room 'gadgets' has no floor" in p for p in problems), problems
    assert not any("training/loop.py" in p for p in problems), problems  # downward arrows are fine
    assert circles(src) == [["glioseg.config", "glioseg.training.loop", "glioseg.config"]]
    assert (
        wrong_arrows(src, {**floors, "config": 8, "gadgets": 1}) != []
    )  # a sideways arrow (same floor) is refused too


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(SRC)))
def test_library_errors_name_no_command_line_flag(path):
    """Errors of the library speak of settings and files; only the CLI knows its flags."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
            "GliosegError",
            "ValueError",
        ):
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    assert not re.search(r"(^|\s)--[a-z]", part.value), f"{path.name}:{node.lineno}: {part.value!r}"
