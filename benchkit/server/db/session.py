"""The engine and transactions.

SQLite (the default) runs in WAL mode with a busy timeout and foreign keys on. Its deferred
transactions fail at once, not after the timeout, when a reader tries to become a writer while
another connection writes, so every transaction that may write is opened with
``BEGIN IMMEDIATE`` (:meth:`Database.write`); read-only work uses :meth:`Database.read`.
PostgreSQL needs neither: both are plain transactions there.

:meth:`Database.query_one` is the one exception to going through a session: a single
parameterised SELECT on a pooled driver connection, for the lookup every request makes (the
API key), where the ORM's per-query work costs more than the query itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from benchkit.errors import ConfigError

SQLITE_BUSY_MS = 30_000


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"invalid database URL {url!r}: use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
        _sqlite_pragmas(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise ConfigError(
            f"database URL {parsed.render_as_string(hide_password=True)}: use the psycopg driver "
            "(postgresql+psycopg://...), the one benchkit[server] installs"
        )
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except NoSuchModuleError as e:
        raise ConfigError(f"unsupported database URL {url!r}: {e}") from e


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Sessions over one engine: ``with db.read() as s`` and ``with db.write() as s``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        writer = (
            self.engine.execution_options(sqlite_begin="IMMEDIATE")
            if self.is_sqlite
            else self.engine
        )
        self._write = sessionmaker(writer, expire_on_commit=False)
        self._paramstyle = self.engine.dialect.paramstyle

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:  # closing ends the transaction (the pool rolls it back)
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits when the block ends without an exception."""
        with self._write() as session, session.begin():
            yield session

    def query_one(self, sql: str, *params: Any) -> tuple | None:
        """The first row of one read-only SELECT written with ``?`` placeholders (rewritten for
        the driver), on a pooled connection without ORM or transaction events."""
        if self._paramstyle != "qmark":
            sql = sql.replace("%", "%%").replace("?", "%s")
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, params)
                return cur.fetchone()
            finally:
                cur.close()
        finally:
            conn.close()  # back to the pool, which ends the driver's transaction

    def upsert(
        self, session: Session, model: Any, row: dict[str, Any], update: bool = True
    ) -> None:
        """Insert ``row``, or on a primary-key clash update its other columns (``update``) or
        leave the existing row: one statement, so concurrent writers of the same row cannot
        both insert (``INSERT ... ON CONFLICT``, on SQLite and PostgreSQL alike)."""
        from sqlalchemy.dialects import postgresql, sqlite  # here: the admin CLI needs neither

        insert = sqlite.insert if self.is_sqlite else postgresql.insert
        stmt = insert(model).values(**row)
        keys = [c.name for c in model.__table__.primary_key.columns]
        rest = {k: stmt.excluded[k] for k in row if k not in keys}
        if update and rest:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=rest)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        session.execute(stmt)

    def safe_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()
