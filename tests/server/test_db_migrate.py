"""The admin commands' cheap schema check (``upgrade_if_needed``) on SQLite and PostgreSQL:
:data:`HEAD_REVISION` matches the migration scripts; a database at the head is used without
importing Alembic; an older one is upgraded; one written by a newer BenchKit is refused with a
one-line error and left as it was (the server's start refuses it the same way)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from serverkit import child_env
from sqlalchemy import text

from benchkit.errors import ConfigError
from benchkit.server.db.migrate import (
    HEAD_REVISION,
    MIGRATIONS,
    alembic_config,
    current_revision,
    stored_revisions,
    upgrade,
    upgrade_if_needed,
)
from benchkit.server.db.session import Database

# The admin CLI in a child process, reporting whether it imported Alembic.
CHILD = """
import sys
from benchkit.cli.main import main
rc = main(sys.argv[1:])
print("ALEMBIC" if "alembic" in sys.modules else "NO-ALEMBIC")
sys.exit(rc)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bench.db'}"
    return request.getfixturevalue("postgres").create_database()


def admin(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", CHILD, "server", *args, "--data-dir", str(tmp_path / "srv")]
    return subprocess.run(
        [*cmd, "--db", url], capture_output=True, text=True, timeout=120, env=child_env()
    )


def test_the_head_constant_is_the_head_of_the_migration_scripts():
    """Fails when a migration is added without moving ``HEAD_REVISION`` (or the reverse)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    assert script.get_heads() == [HEAD_REVISION], (
        f"set HEAD_REVISION in benchkit/server/db/migrate.py to {script.get_heads()}"
    )
    files = sorted(p.name for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))
    revisions = [re.search(r'^revision = "(.+)"$', (MIGRATIONS / "versions" / f).read_text(), re.M)[1] for f in files]  # fmt: skip
    assert revisions[-1] == HEAD_REVISION and len(set(revisions)) == len(files)


def test_a_new_database_is_migrated_once_then_left_alone(url):
    db = Database(url)
    try:
        assert stored_revisions(db) == [] and upgrade_if_needed(db) is True
        assert current_revision(db) == HEAD_REVISION and upgrade_if_needed(db) is False
    finally:
        db.close()


def test_the_admin_commands_do_not_import_alembic_at_the_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    db = Database(url)
    upgrade(db)
    db.close()
    out = admin(tmp_path, url, "create-project", "demo", "--json")
    assert out.returncode == 0, out.stderr
    assert '"demo"' in out.stdout and out.stdout.strip().endswith("\nNO-ALEMBIC")


def test_an_older_database_is_upgraded_and_keeps_its_rows(url):
    from alembic import command

    db = Database(url)
    try:
        cfg = alembic_config(db)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        with db.write() as s:
            s.execute(
                text(
                    "INSERT INTO projects (id, name, created_at) "
                    "VALUES ('p1', 'old', CURRENT_TIMESTAMP)"
                )
            )
        assert stored_revisions(db) == ["0002"]
        assert upgrade_if_needed(db) is True
        assert stored_revisions(db) == [HEAD_REVISION]
        with db.read() as s:
            assert s.execute(text("SELECT name FROM projects")).scalars().all() == ["old"]
    finally:
        db.close()


def test_a_database_from_a_newer_benchkit_is_refused_and_left_alone(url, tmp_path):
    """In-process on both engines; the command's one-line error on SQLite."""
    db = Database(url)
    try:
        upgrade(db)
        with db.write() as s:
            s.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        for fn in (upgrade_if_needed, upgrade):
            with pytest.raises(ConfigError, match=r"revision 9999.*newer BenchKit"):
                fn(db)
        assert stored_revisions(db) == ["9999"]
    finally:
        db.close()
    if url.startswith("postgresql"):
        return
    out = admin(tmp_path, url, "projects")
    assert out.returncode == 1 and "revision 9999" in out.stderr and "pip install" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
