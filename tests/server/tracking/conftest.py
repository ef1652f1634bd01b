"""Databases for the tracking service tests: SQLite and a real PostgreSQL, schema created.

TEMPORARY: the PostgreSQL cluster and the engine settings come from the server's fixtures
(tests/serverkit.py) once they are on main.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event

from benchkit.server.db.tracking import metadata


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_url():
    bindir = Path("/usr/lib/postgresql/15/bin")
    if not (bindir / "pg_ctl").exists():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is required in CI")
        pytest.skip("PostgreSQL is not installed")
    d = Path(tempfile.mkdtemp(prefix="bkpg-"))
    port = _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(d / "data"), "-A", "trust", "-U", "bk",
         "--no-sync", "--no-instructions"], check=True, capture_output=True, cwd=d,
    )  # fmt: skip
    opts = f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(d / "data"), "-l", str(d / "log"), "-o",
         opts, "-w", "start"], check=True, capture_output=True, cwd=d,
    )  # fmt: skip
    yield f"postgresql+psycopg://bk@127.0.0.1:{port}/postgres"
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(d / "data"), "-m", "immediate", "stop"],
        capture_output=True, cwd=d,
    )  # fmt: skip
    shutil.rmtree(d, ignore_errors=True)


def _sqlite_engine(path: Path):
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn, _):
        dbapi_conn.isolation_level = None
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """An engine with the tracking tables, on each database in turn (a fresh schema)."""
    if request.param == "sqlite":
        eng = _sqlite_engine(tmp_path / "t.db")
    else:
        url = request.getfixturevalue("pg_url")
        name = f"t_{uuid.uuid4().hex[:10]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        eng = create_engine(url.rsplit("/", 1)[0] + "/" + name)
    metadata.create_all(eng)
    yield eng
    eng.dispose()
