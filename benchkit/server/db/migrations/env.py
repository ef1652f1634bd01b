"""Alembic environment: runs on the connection :func:`benchkit.server.db.migrate.upgrade` gives."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from benchkit.server.db import accounts, jobs, tracking  # noqa: F401  (tables on Base.metadata)
from benchkit.server.db.models import Base, UTCDateTime

config = context.config


def render_item(type_: str, obj, autogen_context):
    """Write UTC timestamps as plain ``sa.DateTime(timezone=True)``, so migrations do not
    depend on the models module."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # the alembic command line
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as conn:
        run(conn)
