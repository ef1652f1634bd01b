"""Schema migrations with Alembic, applied when the server starts (and by the admin commands).

The migration scripts live inside the package (``benchkit/server/db/migrations``), so an
installed wheel carries them. A new schema change is a new file in ``migrations/versions``::

    python -m benchkit.server.db.migrate revision "add a column"
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from benchkit.server.db.session import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _main(argv: list[str]) -> int:  # pragma: no cover - a developer tool
    if len(argv) < 2 or argv[0] != "revision":
        print("usage: python -m benchkit.server.db.migrate revision MESSAGE [DB_URL]")
        return 2
    db = Database(argv[2] if len(argv) > 2 else "sqlite:///benchkit-dev.db")
    upgrade(db)
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=argv[1], autogenerate=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
