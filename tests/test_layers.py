"""Layers only call downwards (CONTRIBUTING.md, "Where things live"): checked on the imports of
every module, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import benchkit

PACKAGE = Path(benchkit.__file__).parent

#: The layers from the bottom up, as CONTRIBUTING.md draws them: a layer may import the
#: layers of the tiers below its own, never one of its own tier (beside it) or above it.
TIERS: list[tuple[str, ...]] = [
    ("errors",),
    ("units", "fsutil"),
    ("settings",),
    ("api_client",),
    ("registry", "console"),
    ("store",),
    ("data", "code"),
    ("remote", "training"),
    ("server",),
    ("cli",),
]

#: layer -> the BenchKit layers it must never import
FORBIDDEN = {
    layer: {other for higher in TIERS[i:] for other in higher} - {layer}
    for i, tier in enumerate(TIERS)
    for layer in tier
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


def test_every_layer_has_a_tier():
    """A new top-level module or package gets a place in TIERS (and in CONTRIBUTING.md)."""
    found = {layer_of(name) for name, _ in modules()} - {None}
    unplaced = {layer for layer in found if not layer.startswith("_")} - set(FORBIDDEN)
    assert not unplaced, f"place {sorted(unplaced)} in TIERS and in CONTRIBUTING.md's layers"
