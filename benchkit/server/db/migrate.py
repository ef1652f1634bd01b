"""Schema migrations with Alembic, applied when the server starts (and by the admin commands).

The migration scripts live inside the package (``benchkit/server/db/migrations``), so an
installed wheel carries them. A new schema change is a new file in ``migrations/versions``::

    python -m benchkit.server.db.migrate revision "add a column"

and :data:`HEAD_REVISION` set to its revision id (``tests/server/test_migrate.py`` fails until
it is). The server's start always runs Alembic (:func:`upgrade`); the admin commands call
:func:`upgrade_if_needed`, which reads ``alembic_version`` with plain SQLAlchemy and imports
Alembic (about two seconds of imports) only when the database is not at the head.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from benchkit._version import __version__
from benchkit.errors import ConfigError
from benchkit.server.db.session import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: The newest revision in ``migrations/versions``; kept in sync by a test.
HEAD_REVISION = "0005"


def alembic_config(db: Database) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def stored_revisions(db: Database) -> list[str]:
    """The revision ids in the database's ``alembic_version`` table (none for a new database),
    read without Alembic."""
    with db.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return []
        return [r for (r,) in conn.execute(text("SELECT version_num FROM alembic_version"))]


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already).

    A database written by a newer BenchKit (a revision these migrations do not know) is
    refused with a :class:`ConfigError` that says so, and left untouched."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config(db)
    known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
    unknown = [r for r in stored_revisions(db) if r not in known]
    if unknown:
        raise ConfigError(
            f"the database {db.safe_url()} is at schema revision {', '.join(unknown)}, which "
            f"this BenchKit ({__version__}, newest revision {head_revision()}) does not know: "
            "a newer BenchKit server wrote it. Upgrade benchkit "
            '(pip install -U "benchkit[server]") or use another --db'
        )
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def upgrade_if_needed(db: Database) -> bool:
    """:func:`upgrade` unless the database is at :data:`HEAD_REVISION` already (the cheap
    check of the admin commands); True when Alembic ran."""
    if stored_revisions(db) == [HEAD_REVISION]:
        return False
    upgrade(db)
    return True


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _main(argv: list[str]) -> int:  # pragma: no cover - a developer tool
    from alembic import command

    if len(argv) < 2 or argv[0] != "revision":
        print("usage: python -m benchkit.server.db.migrate revision MESSAGE [DB_URL]")
        return 2
    db = Database(argv[2] if len(argv) > 2 else "sqlite:///benchkit-dev.db")
    upgrade(db)
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=argv[1], autogenerate=True)
    print(f"now set HEAD_REVISION in {__file__} to the new revision id")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
