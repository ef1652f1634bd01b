"""Metric ingest and chart queries over the tracking tables.

:func:`ingest` applies one batch in one transaction (see :mod:`.ingest` for the rules): it
locks the writer's cursor, skips records stored before, inserts the points, folds them into the
per-metric summaries and the rollups (SQL-side merges, so two writers of one run may ingest at
once on PostgreSQL without losing an update), appends messages to the run's log and moves the
cursor, or does none of it. :func:`chart` answers from the rollups (or the raw points of a
short range) with at most ``n`` buckets, :func:`points` pages through the raw points.

Every function takes a SQLAlchemy ``Connection`` and a run's primary key; the caller has already
checked that the run belongs to the caller's project.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import lt
from typing import Any

from sqlalchemy import Connection, and_, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from benchkit.server.db.tracking import (
    ingest_cursors,
    metric_points,
    metric_rollups,
    metric_series,
    run_log,
)
from benchkit.server.services import downsample as ds
from benchkit.server.services.ingest import (
    FIRST_SEQ,
    MAX_RECORDS,
    Batch,
    BatchError,
    Summary,
    accept,
    check_writer,
    parse_batch,
    value_json,
)

#: the most raw points one :func:`points` page returns
MAX_PAGE = 10_000


class IntegrityFailure(RuntimeError):
    """Points that the cursor said were new already existed: the transaction is rolled back."""


@dataclass(frozen=True)
class Acked:
    """The answer to a batch: everything below ``next_seq`` is stored."""

    writer: str
    next_seq: int
    inserted: int
    skipped: int

    def to_json(self) -> dict[str, Any]:
        return {
            "writer": self.writer,
            "next_seq": self.next_seq,
            "acked_through": self.next_seq - 1,
            "inserted": self.inserted,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class RunRef:
    """A run as the tracking tables address it: the caller's project and the run's id."""

    project_id: str
    run_id: str

    def where(self, table) -> Any:
        return and_(table.c.project_id == self.project_id, table.c.run_id == self.run_id)

    def values(self) -> dict[str, str]:
        return {"project_id": self.project_id, "run_id": self.run_id}


def _insert(conn: Connection, table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def writer_cursor(conn: Connection, run: RunRef, writer: str, now: float) -> tuple[int, int]:
    """``(cursor id, next_seq)`` of a writer (a new one expects seq 1), locked until the
    transaction ends.

    The first statement writes, so that SQLite takes its write lock at once (a read that later
    upgrades could fail under concurrency); PostgreSQL then locks the row ``FOR UPDATE``.
    """
    conn.execute(
        _insert(conn, ingest_cursors)
        .values(**run.values(), writer=writer, next_seq=FIRST_SEQ, seen_at=now)
        .on_conflict_do_nothing(index_elements=["project_id", "run_id", "writer"])
    )
    row = conn.execute(
        select(ingest_cursors.c.id, ingest_cursors.c.next_seq)
        .where(run.where(ingest_cursors), ingest_cursors.c.writer == writer)
        .with_for_update()
    ).one()
    return row.id, row.next_seq


def cursors(conn: Connection, run: RunRef) -> dict[str, int]:
    """Every writer of a run with its next expected sequence number."""
    q = select(ingest_cursors.c.writer, ingest_cursors.c.next_seq).where(run.where(ingest_cursors))
    return dict(conn.execute(q).all())


def last_seen(conn: Connection, runs: Sequence[RunRef]) -> dict[str, float]:
    """Per run id (of one project), the unix time of its latest batch."""
    if not runs:
        return {}
    t = ingest_cursors.c
    q = (
        select(t.run_id, func.max(t.seen_at))
        .where(t.project_id == runs[0].project_id, t.run_id.in_([r.run_id for r in runs]))
        .group_by(t.run_id)
    )
    return dict(conn.execute(q).all())


def ingest(
    conn: Connection,
    run: RunRef,
    writer: str,
    first_seq: int,
    records: Sequence[Mapping[str, Any]],
    now: float | None = None,
) -> Acked:
    """Apply one batch; raises :class:`~.ingest.SeqGap` (409) or :class:`~.ingest.BatchError`
    (422), and then the caller's transaction rolls back whatever this wrote. Run it inside
    ``engine.begin()``."""
    check_writer(writer)
    if first_seq < FIRST_SEQ:
        raise BatchError(f"sequence numbers start at {FIRST_SEQ}, got first_seq {first_seq}")
    if len(records) > MAX_RECORDS:
        raise BatchError(f"a batch holds at most {MAX_RECORDS} records, got {len(records)}")
    now = time.time() if now is None else now
    writer_pk, next_seq = writer_cursor(conn, run, writer, now)
    acc = accept(writer, next_seq, first_seq, len(records))
    batch = parse_batch(records[acc.skip :], first_seq + acc.skip)
    if batch.series:
        sums = {key: Summary.of(pts) for key, pts in batch.series.items()}
        ids = _merge_series(conn, run, sums)
        _insert_points(conn, ids, writer_pk, batch)
        _merge_rollups(conn, ids, batch)
    if batch.messages:
        conn.execute(
            run_log.insert(),
            [
                {**run.values(), "writer_pk": writer_pk, "seq": seq, "ts": ts, "text": text}
                for seq, ts, text in batch.messages
            ],
        )
    conn.execute(
        ingest_cursors.update()
        .where(ingest_cursors.c.id == writer_pk)
        .values(next_seq=acc.next_seq, seen_at=now)
    )
    return Acked(writer, acc.next_seq, batch.points, acc.skip)


def _merge_series(conn: Connection, run: RunRef, sums: dict[str, Summary]) -> dict[str, int]:
    """Fold the batch's per-metric summaries into ``metric_series`` (creating the series that
    are new); returns the series ids by metric name."""
    cols = ("project_id", "run_id", "key", *_SUMMARY, "first_step", "max_step")
    rows = [
        (run.project_id, run.run_id, key, *(getattr(s, c) for c in cols[3:]))
        for key, s in sorted(sums.items())
    ]
    steps = (
        "first_step = CASE WHEN excluded.first_step < t.first_step THEN excluded.first_step "
        "ELSE t.first_step END, "
        "max_step = CASE WHEN excluded.max_step > t.max_step THEN excluded.max_step "
        "ELSE t.max_step END"
    )
    _bulk(conn, metric_series, cols, rows, _merge_sql(("project_id", "run_id", "key"),
                                                      _LATEST_LOGGED, steps))  # fmt: skip
    t = metric_series.c
    q = select(t.key, t.id).where(run.where(metric_series), t.key.in_(sorted(sums)))
    return dict(conn.execute(q).all())


_POINT_COLUMNS = ("series_id", "step", "writer_pk", "seq", "ts", "value", "kind")
#: the summary columns shared by ``metric_series`` and ``metric_rollups``
_SUMMARY = ("count", "nonfinite", "min", "max", "last", "last_kind", "last_step", "last_ts")
#: when the incoming row's last point replaces the stored one: the latest logged (summaries),
#: or the greatest step, then the latest logged (rollups, like chart buckets)
_LATEST_LOGGED = "excluded.last_ts >= t.last_ts"
_GREATEST_STEP = (
    "excluded.last_step > t.last_step OR "
    "(excluded.last_step = t.last_step AND excluded.last_ts >= t.last_ts)"
)


def _merge_sql(conflict: tuple[str, ...], newer: str, extra: str = "") -> str:
    """``ON CONFLICT ... DO UPDATE`` that folds the incoming summary into the stored one
    (stored row aliased ``t``): counts add up, min and max widen, last is the newer. SQLite and
    PostgreSQL both read it; the merge happens in the database, so concurrent writers of one
    series cannot lose an update."""
    last = ", ".join(
        f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE t.{c} END"
        for c in ("last", "last_kind", "last_step", "last_ts")
    )
    sets = (
        "count = t.count + excluded.count, nonfinite = t.nonfinite + excluded.nonfinite, "
        "min = CASE WHEN excluded.min IS NOT NULL AND (t.min IS NULL OR excluded.min < t.min) "
        "THEN excluded.min ELSE t.min END, "
        "max = CASE WHEN excluded.max IS NOT NULL AND (t.max IS NULL OR excluded.max > t.max) "
        f"THEN excluded.max ELSE t.max END, {last}"
    )
    return f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}" + (
        f", {extra}" if extra else ""
    )


#: binary COPY types of the columns ``_bulk`` writes on PostgreSQL
_PG_TYPES = {"INTEGER": "int4", "BIGINT": "int8", "SMALLINT": "int2", "FLOAT": "float8"}


def _bulk(conn: Connection, table, cols: Sequence[str], rows: list[tuple], tail: str = "") -> int:
    """``INSERT INTO table AS t (cols) <rows> tail`` for many rows at once; returns the number
    of rows inserted or updated.

    The hot path of ingest, so plain tuples go straight to the driver, never through
    SQLAlchemy's per-row parameter processing (it would cost more than the inserts): SQLite's
    executemany is a C loop; on PostgreSQL the rows are sent by binary ``COPY``, straight into
    the table for a plain insert (no ``tail``), else into a temporary table of this
    transaction and inserted from it in one statement (psycopg's executemany would cost a
    statement per row; going through the temporary table costs twice a direct ``COPY``).
    """
    if not rows:
        return 0
    head = f"INSERT INTO {table.name} AS t ({', '.join(cols)}) "
    if conn.dialect.name != "postgresql":
        sql = f"{head}VALUES ({', '.join('?' * len(cols))}) {tail}"
        return conn.exec_driver_sql(sql, rows).rowcount
    types = [_PG_TYPES.get(str(table.c[c].type), "text") for c in cols]
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if not tail:
            _copy(cur, table.name, cols, types, rows)
            return len(rows)
        staging = f"_bk_in_{table.name}"
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        _copy(cur, staging, cols, types, rows)
        cur.execute(f"{head}SELECT {', '.join(cols)} FROM {staging} {tail}")
        return cur.rowcount
    finally:
        cur.close()


def _copy(cur: Any, target: str, cols: Sequence[str], types: list[str], rows: list[tuple]) -> None:
    with cur.copy(f"COPY {target} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _insert_points(conn: Connection, ids: dict[str, int], writer_pk: int, batch: Batch) -> None:
    """Insert the batch's points; the cursor said they are new, so one that exists already
    (the unique key says so) fails the whole batch."""
    rows: list[tuple] = []
    for key, s in batch.series.items():
        n = len(s)
        kinds = s.kinds if s.kinds is not None else repeat(ds.FINITE, n)
        rows += zip(
            repeat(ids[key], n),
            s.steps,
            repeat(writer_pk, n),
            s.seqs,
            s.ts,
            s.values,
            kinds,
            strict=False,
        )
    try:
        _bulk(conn, metric_points, _POINT_COLUMNS, rows)
    except (IntegrityError, conn.dialect.loaded_dbapi.IntegrityError) as e:
        raise IntegrityFailure(
            "points that the ingest cursor had not passed already existed; nothing was "
            f"written ({e.__class__.__name__}: {str(e).splitlines()[0]})"
        ) from e


def _merge_rollups(conn: Connection, ids: dict[str, int], batch: Batch) -> None:
    rows = []
    for key, s in batch.series.items():
        sid = ids[key]
        steps = s.steps
        if s.kinds is None and all(map(lt, steps, steps[1:])):
            tier_blocks = ds.increasing_blocks(steps, s.values, s.ts, ds.TIERS[0])
        else:
            tier_blocks = ds.blocks(s.points(), ds.TIERS[0])
        for fine, tier in zip((1, *ds.TIERS), ds.TIERS, strict=False):
            if fine > 1:
                tier_blocks = ds.coarser(tier_blocks, tier // fine)
            rows += [
                (sid, tier, i, b.count, b.nonfinite, b.min, b.max, b.value, b.kind, b.x, b.order)
                for i, b in tier_blocks.items()
            ]
    cols = ("series_id", "tier", "block", *_SUMMARY)
    _bulk(
        conn, metric_rollups, cols, rows, _merge_sql(("series_id", "tier", "block"), _GREATEST_STEP)
    )


# --- reading ------------------------------------------------------------------------------


def summaries(
    conn: Connection, runs: Sequence[RunRef], whole_project: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per run id (of one project), per metric: its summary (``last``, ``min``, ``max``,
    ``count``, steps). Reads ``metric_series`` only; ``whole_project``: ``runs`` are all the
    project's runs, so the query needs no list of ids."""
    out: dict[str, dict[str, dict[str, Any]]] = {r.run_id: {} for r in runs}
    if not runs:
        return out
    t = metric_series.c
    q = select(t.run_id, t.key, t.last, t.last_kind, *(t[c] for c in _SUMMARY_KEYS)).where(
        t.project_id == runs[0].project_id, t.count > 0
    )
    if not whole_project:
        q = q.where(t.run_id.in_(list(out)))
    for run_id, key, last, kind, *rest in conn.execute(q.order_by(t.key)):
        into = out.get(run_id)
        if into is not None:
            into[key] = d = {"last": value_json(last, kind)}
            d.update(zip(_SUMMARY_KEYS, rest, strict=True))
    return out


#: the columns of a summary besides its last value
_SUMMARY_KEYS = ("last_step", "min", "max", "count", "nonfinite", "first_step", "max_step")


def chart(
    conn: Connection,
    run: RunRef,
    key: str,
    x0: int | None = None,
    x1: int | None = None,
    n: int = ds.DEFAULT_BUCKETS,
) -> dict[str, Any] | None:
    """At most ``n`` buckets of metric ``key`` of a run over steps ``[x0, x1]`` (default: all
    of it) as column arrays (see :func:`~.downsample.to_columns`); None when there is no such
    metric."""
    if not 1 <= n <= ds.MAX_BUCKETS:
        raise ValueError(f"buckets must be between 1 and {ds.MAX_BUCKETS}, got {n}")
    s = metric_series.c
    row = conn.execute(
        select(s.id, s.first_step, s.max_step, s.count).where(
            run.where(metric_series), s.key == key
        )
    ).one_or_none()
    if row is None or row.count == 0:
        return None
    lo = row.first_step if x0 is None else max(int(x0), row.first_step)
    hi = row.max_step if x1 is None else min(int(x1), row.max_step)
    out: dict[str, Any] = {"key": key, "range": [lo, hi], "points": row.count}
    if hi < lo:
        out.update(ds.to_columns([], times=True), tier=1)
        return out
    tier, g = ds.plan(lo, hi, n)
    buckets = (
        ds.downsample(_raw(conn, row.id, g.x0, g.x1), g)
        if tier == 1
        else ds.combine(_rolled(conn, row.id, tier, g.x0 // tier, g.x1 // tier), g, tier)
    )
    out.update(ds.to_columns(buckets, times=True), tier=tier)
    return out


def _raw(conn: Connection, series_id: int, lo: int, hi: int):
    p = metric_points.c
    q = select(p.step, p.value, p.kind, p.ts).where(
        p.series_id == series_id, p.step >= lo, p.step <= hi
    )
    return (ds.Point(*r) for r in conn.execute(q))


def _rolled(conn: Connection, series_id: int, tier: int, lo: int, hi: int):
    r = metric_rollups.c
    q = select(
        r.block, r.last_step, r.last, r.last_kind, r.min, r.max, r.count, r.nonfinite, r.last_ts
    ).where(r.series_id == series_id, r.tier == tier, r.block >= lo, r.block <= hi)
    return ((row[0], ds.Bucket(*row[1:])) for row in conn.execute(q))


def points(
    conn: Connection,
    run: RunRef,
    key: str,
    after: tuple[int, int, int] | None = None,
    limit: int = MAX_PAGE,
) -> dict[str, Any] | None:
    """A page of the raw points of ``key`` in ``(step, writer, seq)`` order; ``next`` is the
    ``after`` of the following page (None on the last)."""
    s, p = metric_series.c, metric_points.c
    sid = conn.execute(
        select(s.id).where(run.where(metric_series), s.key == key)
    ).scalar_one_or_none()
    if sid is None:
        return None
    limit = max(1, min(limit, MAX_PAGE))
    q = select(p.step, p.writer_pk, p.seq, p.ts, p.value, p.kind).where(p.series_id == sid)
    if after is not None:
        q = q.where(tuple_(p.step, p.writer_pk, p.seq) > tuple_(*after))
    q = q.order_by(p.step, p.writer_pk, p.seq).limit(limit + 1)
    got = conn.execute(q).all()
    page = got[:limit]
    return {
        "key": key,
        "points": [
            {"step": r[0], "t": r[3], "value": value_json(r[4], r[5]), "seq": r[2]} for r in page
        ],
        "next": list(page[-1][:3]) if len(got) > limit else None,
    }


def log_lines(
    conn: Connection, run: RunRef, after: float | None = None, limit: int = 5000
) -> list[dict[str, Any]]:
    """The run's messages in time order (after time ``after``)."""
    t = run_log.c
    q = select(t.ts, t.text).where(run.where(run_log))
    if after is not None:
        q = q.where(t.ts > after)
    q = q.order_by(t.ts, t.writer_pk, t.seq).limit(limit)
    return [{"t": r.ts, "text": r.text} for r in conn.execute(q)]


def delete_run(conn: Connection, run: RunRef) -> None:
    """Delete everything tracked of a run (its points, rollups, log and cursors)."""
    for table in (metric_series, run_log, ingest_cursors):  # points: a trigger; rollups cascade
        conn.execute(table.delete().where(run.where(table)))
