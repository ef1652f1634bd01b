"""metric points without per-row foreign keys; triggers delete them with their series

Every point row checked its two foreign keys (``metric_series.id``, ``ingest_cursors.id``) on
insert: on PostgreSQL a trigger query per row, three quarters of the cost of storing a point
(measured, docs/BENCHMARKS.md issue 13). Ingest creates the series and the cursor in the same
transaction just before it inserts their points, so the checks never caught anything; what the
keys still did is ``ON DELETE CASCADE``, which ``AFTER DELETE`` triggers on both parents now do
(deleting a run, or a project, deletes its points as before).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FKS = (
    ("fk_metric_points_series_id_metric_series", "series_id", "metric_series"),
    ("fk_metric_points_writer_pk_ingest_cursors", "writer_pk", "ingest_cursors"),
)
#: trigger name, parent table, point column
TRIGGERS = (
    ("tr_metric_series_delete_points", "metric_series", "series_id"),
    ("tr_ingest_cursors_delete_points", "ingest_cursors", "writer_pk"),
)
COLUMNS = "series_id, step, writer_pk, seq, ts, value, kind"


def _points_table(name: str, with_fks: bool) -> None:
    fks = [
        sa.ForeignKeyConstraint([col], [f"{parent}.id"], name=fk, ondelete="CASCADE")
        for fk, col, parent in FKS
        if with_fks
    ]
    op.create_table(
        name,
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("writer_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        *fks,
        sa.PrimaryKeyConstraint("series_id", "step", "writer_pk", "seq", name="pk_metric_points"),
        sqlite_with_rowid=False,
    )


def _rebuild_sqlite_points(with_fks: bool) -> None:
    """SQLite cannot drop or add a constraint: copy the table (``WITHOUT ROWID``, its key and
    unique index as before)."""
    _points_table("_metric_points_new", with_fks)
    op.execute(f"INSERT INTO _metric_points_new ({COLUMNS}) SELECT {COLUMNS} FROM metric_points")
    op.drop_table("metric_points")
    op.rename_table("_metric_points_new", "metric_points")
    op.create_index(
        "uq_metric_points_writer_seq",
        "metric_points",
        ["series_id", "writer_pk", "seq"],
        unique=True,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_points(with_fks=False)
        for name, parent, col in TRIGGERS:
            op.execute(
                f"CREATE TRIGGER {name} AFTER DELETE ON {parent} FOR EACH ROW "
                f"BEGIN DELETE FROM metric_points WHERE {col} = OLD.id; END"
            )
        return
    for fk, _, _ in FKS:
        op.drop_constraint(fk, "metric_points", type_="foreignkey")
    for name, parent, col in TRIGGERS:
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN DELETE FROM metric_points WHERE {col} = OLD.id; RETURN OLD; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER DELETE ON {parent} FOR EACH ROW EXECUTE FUNCTION {name}()"
        )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name, parent, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}" + ("" if sqlite else f" ON {parent}"))
        if not sqlite:
            op.execute(f"DROP FUNCTION {name}()")
    if sqlite:
        _rebuild_sqlite_points(with_fks=True)
        return
    for fk, col, parent in FKS:
        op.create_foreign_key(fk, "metric_points", parent, [col], ["id"], ondelete="CASCADE")
