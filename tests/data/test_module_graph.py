"""The shape of benchkit/data/: no import cycles (function-level imports included), every module
imports on its own in a fresh interpreter, and the loader drives the dataset through public methods."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import benchkit.data

DATA = Path(benchkit.data.__file__).parent
MODULES = sorted(p.stem for p in DATA.glob("*.py") if p.stem != "__init__")


def _imports(path: Path) -> set[str]:
    """The benchkit.data modules a file imports, anywhere in it (top level or in functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[:2] == ["benchkit", "data"] and len(parts) > 2 and parts[2] in MODULES:
                out.add(parts[2])
    out.discard(path.stem)
    return out


def test_benchkit_data_has_no_import_cycles():
    graph = {m: _imports(DATA / f"{m}.py") for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n) :] + [n]
                pytest.fail("import cycle in benchkit/data: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])
    assert graph["stream"] and "loader" not in graph["stream"]


_ISOLATED = """
import importlib, sys
for m in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "benchkit" or n.startswith("benchkit.")]:
        del sys.modules[name]  # nothing of benchkit is loaded before each module
    importlib.import_module("benchkit.data." + m)
"""


def test_every_data_module_imports_on_its_own():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED, *MODULES],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_loader_uses_only_public_members_of_the_dataset():
    tree = ast.parse((DATA / "loader.py").read_text())
    private = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert not private, private
