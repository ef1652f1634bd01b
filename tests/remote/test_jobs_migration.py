"""The jobs migration (0003, after tracking's 0002) on SQLite and PostgreSQL: an empty
database goes to the head in one go; a database a server left at 0002, with projects, keys and
tracking data in it, gains the jobs table and loses nothing; 0003 goes down again."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from benchkit.server.db.migrate import alembic_config, current_revision, head_revision, upgrade
from benchkit.server.db.session import Database

PEPPER = b"p" * 32


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bench.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    db = Database(url)
    yield db
    db.close()


def _alembic(db: Database, action: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_the_chain_is_0001_0002_0003_and_an_empty_database_reaches_the_head(empty_db):
    from alembic.script import ScriptDirectory

    from benchkit.server.db.migrate import MIGRATIONS

    chain = [s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()]
    assert chain[-3:] == ["0003", "0002", "0001"] and head_revision() == chain[0]  # one head
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    assert {"jobs", "projects", "api_keys", "users"} <= _tables(empty_db)
    upgrade(empty_db)  # again: nothing to do
    assert current_revision(empty_db) == head_revision()


def test_a_database_at_0002_gains_the_jobs_table_and_keeps_its_rows(empty_db):
    from benchkit.server.db.jobs import Job
    from benchkit.server.db.models import utcnow

    _alembic(empty_db, "upgrade", "0002")
    assert current_revision(empty_db) == "0002" and "jobs" not in _tables(empty_db)
    # a project, a key and a user, as a server of the tracking release left them
    from benchkit.server.services.keys import Keys

    project, key = Keys(empty_db, PEPPER).create_project("before-jobs")
    with empty_db.engine.begin() as conn:
        before = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
                  for t in ("projects", "api_keys")}  # fmt: skip
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    with empty_db.engine.begin() as conn:
        after = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in before}
    assert after == before and before["projects"] == 1
    assert (
        Keys(empty_db, PEPPER).authenticate(key.token).project_id == project.id
    )  # the key still works
    with empty_db.write() as s:  # the new table takes a job of the old project
        s.add(Job(project_id=project.id, id="j1", run_id="j1", name="tiny", version=1,
                  state="queued", executor="local", spec={"job_id": "j1"}, message="",
                  log_bytes=0, metric_parts=0, released=False, created_at=utcnow()))  # fmt: skip
    with empty_db.read() as s:
        assert s.get(Job, (project.id, "j1")).state == "queued"
    _alembic(empty_db, "downgrade", "0002")
    assert current_revision(empty_db) == "0002" and "jobs" not in _tables(empty_db)
    assert Keys(empty_db, PEPPER).authenticate(key.token).project_id == project.id
