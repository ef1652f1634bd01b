"""Fixtures of the server tests: projects on the session's servers (see tests/serverkit.py)."""

from __future__ import annotations

import pytest
from browserkit import browser, chromium  # noqa: F401  (the dashboard's browser tests)
from serverkit import Api
from trackkit import tracking_db, tracking_engine  # noqa: F401  (the tracking services' tests)


@pytest.fixture
def project(bench_server):
    """A fresh read-write project on the session's server (each database in turn)."""
    return bench_server.quick_project()


@pytest.fixture
def api(bench_server, project):
    return Api(bench_server.url, project.key)
