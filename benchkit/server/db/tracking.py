"""Tables of experiment tracking: metric series with their summaries, points, rollups, ingest
cursors and the runs' console log.

A run is the catalog's ``runs`` row (indexed from the run's ``run.json`` blob); these tables
refer to it by ``(project_id, run_id)`` without a foreign key to it, because the catalog may
rebuild its rows from the store at any time (``benchkit server reindex``) and metrics live only
here. They are deleted with the project (``ON DELETE CASCADE``; points by a trigger on their
series) or with the run (:func:`benchkit.server.services.metrics.delete_run`).

Listing runs reads ``metric_series`` (one row per metric of a run with its last, min, max and
count), never ``metric_points``. Points are keyed ``(series, step, writer, seq)``, so one
journal record's value of one metric exists once (a record's step never changes), and that key
is the order charts read them in (on SQLite the point and rollup tables are ``WITHOUT ROWID``
tables clustered by it). It is their only index (revision 0005): the ingest cursor is what skips
a retried batch.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from benchkit.server.db.models import Base

metadata = Base.metadata


def _run_columns() -> list[Column]:
    return [
        Column(
            "project_id",
            String(32),
            ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("run_id", String(255), nullable=False),
    ]


def _summary_columns() -> list[Column]:
    """What a series and each of its rollup blocks keep of the points they cover."""
    return [
        Column("count", BigInteger, nullable=False),
        Column("nonfinite", BigInteger, nullable=False),
        Column("min", Float),
        Column("max", Float),
        Column("last", Float),
        Column("last_kind", SmallInteger, nullable=False),
        Column("last_step", BigInteger, nullable=False),
        Column("last_ts", Float, nullable=False),
    ]


metric_series = Table(
    "metric_series",
    metadata,
    Column("id", Integer, primary_key=True),
    *_run_columns(),
    Column("key", String(250), nullable=False),
    *_summary_columns(),
    Column("first_step", BigInteger, nullable=False),
    Column("max_step", BigInteger, nullable=False),
    UniqueConstraint("project_id", "run_id", "key", name="uq_metric_series_run_key"),
)

ingest_cursors = Table(
    "ingest_cursors",
    metadata,
    Column("id", Integer, primary_key=True),
    *_run_columns(),
    Column("writer", String(120), nullable=False),
    Column("next_seq", BigInteger, nullable=False),
    #: unix time of the writer's last batch: a run's last sign of life
    Column("seen_at", Float, nullable=False),
    UniqueConstraint("project_id", "run_id", "writer", name="uq_ingest_cursors_run_writer"),
)

#: no foreign keys (revision 0004): checking them cost more than storing the point; ``AFTER
#: DELETE`` triggers on ``metric_series`` and ``ingest_cursors`` delete a series' points
metric_points = Table(
    "metric_points",
    metadata,
    Column("series_id", Integer, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("writer_pk", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("value", Float),
    Column("kind", SmallInteger, nullable=False),
    PrimaryKeyConstraint("series_id", "step", "writer_pk", "seq", name="pk_metric_points"),
    sqlite_with_rowid=False,
)

metric_rollups = Table(
    "metric_rollups",
    metadata,
    Column("series_id", Integer, ForeignKey("metric_series.id", ondelete="CASCADE")),
    Column("tier", Integer, nullable=False),
    Column("block", BigInteger, nullable=False),
    *_summary_columns(),
    PrimaryKeyConstraint("series_id", "tier", "block", name="pk_metric_rollups"),
    sqlite_with_rowid=False,
)

run_log = Table(
    "run_log",
    metadata,
    Column("writer_pk", Integer, ForeignKey("ingest_cursors.id", ondelete="CASCADE")),
    Column("seq", BigInteger, nullable=False),
    *_run_columns(),
    Column("ts", Float, nullable=False),
    Column("text", Text, nullable=False),
    PrimaryKeyConstraint("writer_pk", "seq", name="pk_run_log"),
    Index("ix_run_log_run_ts", "project_id", "run_id", "ts"),
)
