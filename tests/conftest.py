"""Fixtures shared by every test: an isolated BenchKit home, so no test touches the real one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Point BENCHKIT_HOME at a fresh directory and clear store/project overrides."""
    home = tmp_path_factory.mktemp("benchkit-home")
    monkeypatch.setenv("BENCHKIT_HOME", str(home))
    for var in ("BENCHKIT_STORE", "BENCHKIT_PROJECT", "BENCHKIT_CACHE_LIMIT", "BENCHKIT_S3_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return home
