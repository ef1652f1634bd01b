"""Databases for the tracking service tests: SQLite and a real PostgreSQL (the session's
cluster from ``serverkit``), migrated to the newest schema, with two projects in them."""

from __future__ import annotations

import pytest

from benchkit.server.db.migrate import upgrade
from benchkit.server.db.models import Project
from benchkit.server.db.session import Database

PROJECTS = ("proj-a", "proj-b")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """A fresh, migrated database on each engine in turn, holding projects ``proj-a`` and
    ``proj-b``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bench.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    database = Database(url)
    upgrade(database)
    with database.write() as s:
        for pid in PROJECTS:
            s.add(Project(id=pid, name=pid))
    yield database
    database.close()


@pytest.fixture
def engine(db):
    """An engine whose transactions may write (``BEGIN IMMEDIATE`` on SQLite)."""
    return db.engine.execution_options(sqlite_begin="IMMEDIATE") if db.is_sqlite else db.engine
