"""Fixtures for the code-package tests: a small project on disk and a local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchkit.store import LocalStore


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``; returns ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


#: A project whose entry module needs a local module, a package with a relative import, and
#: two third-party packages.
PROJECT = {
    "benchkit.toml": '[project]\nname = "demo"\n',
    "train.py": "import os\nimport torch\nimport helpers\nfrom models import net\n\nprint(helpers.VALUE)\n",
    "helpers.py": "VALUE = 41 + 1\n",
    "models/__init__.py": "",
    "models/net.py": "from .layers import Layer\n",
    "models/layers.py": "import numpy\nclass Layer: ...\n",
    "notes.txt": "not imported, not packaged\n",
    "unused.py": "print('not imported')\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "proj", PROJECT)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def write():
    """The function writing a dict of files under a directory."""
    return write_tree
