"""Layers only call downwards (CONTRIBUTING.md, "Where things live"): checked on the imports of
every module, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import benchkit

PACKAGE = Path(benchkit.__file__).parent

#: layer -> the BenchKit layers it must never import
FORBIDDEN = {
    "errors": {
        "fsutil",
        "units",
        "settings",
        "console",
        "store",
        "data",
        "training",
        "code",
        "cli",
    },
    "units": {"settings", "console", "store", "data", "training", "code", "cli"},
    "fsutil": {"units", "settings", "console", "store", "data", "training", "code", "cli"},
    "settings": {"console", "store", "data", "training", "code", "cli"},
    "console": {"settings", "store", "data", "training", "code", "cli"},
    "api_client": {"store", "data", "training", "code", "cli", "server", "remote"},
    "store": {"data", "training", "code", "cli", "server"},
    "registry": {"data", "training", "code", "cli", "server"},
    "data": {"training", "cli", "server"},
    "code": {"training", "cli", "server"},
    "training": {"cli", "server"},
    # remote execution: below the command line and the server, which drive it
    "remote": {"cli", "server"},
    "server": {"cli"},
}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "benchkit" else None


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


@pytest.mark.parametrize(
    "layer", sorted(FORBIDDEN), ids=lambda layer: f"{layer}-imports-only-below-it"
)
def test_layer_imports_nothing_above_it(layer):
    bad = []
    for name, path in modules():
        if layer_of(name) != layer:
            continue
        for target in imports_of(path):
            if layer_of(target) in FORBIDDEN[layer]:
                bad.append(f"{name} imports {target}")
    assert not bad, "\n".join(bad)
