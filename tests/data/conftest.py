"""Fixtures of the data tests: a project directory made from a module's source."""

from __future__ import annotations

import textwrap

import pytest


@pytest.fixture
def make_project(tmp_path, monkeypatch):
    """``make_project(train_py, store="store")``: ``proj/`` holding ``train.py`` and a
    ``benchkit.toml`` naming ``store`` (relative to the project; None: the default store),
    made the current directory; returns its path."""

    def make(train_py: str, store: str | None = "store"):
        root = tmp_path / "proj"
        root.mkdir(exist_ok=True)
        (root / "train.py").write_text(textwrap.dedent(train_py))
        store_line = f'store = "{store}"\n' if store else ""
        (root / "benchkit.toml").write_text(f'[project]\nname = "proj"\n{store_line}')
        monkeypatch.chdir(root)
        return root

    return make
