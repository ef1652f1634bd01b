"""metric points keep one index, their primary key

``metric_points`` had its primary key ``(series_id, step, writer_pk, seq)``, the order charts
read, and a unique index ``(series_id, writer_pk, seq)``. The ingest cursor is what stores a
retried batch once (``services/ingest.py``); the primary key already refuses a record stored
twice, because a journal record's step never changes, so the index only refused one record
coming back with another step, which no writer sends. Keeping it up to date was a fifth to a
third of the cost of storing a point on PostgreSQL (ingest went from 42,675-50,674 to
61,707-69,314 points/s, docs/BENCHMARKS.md issue 13), and no query reads it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "uq_metric_points_writer_seq"


def upgrade() -> None:
    op.drop_index(INDEX, table_name="metric_points")


def downgrade() -> None:
    op.create_index(INDEX, "metric_points", ["series_id", "writer_pk", "seq"], unique=True)
