"""Metric ingest and chart queries on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import math
import random
import threading

import pytest
from sqlalchemy import func, select

from benchkit.server.db.tracking import metric_points
from benchkit.server.services import downsample as ds
from benchkit.server.services import metrics
from benchkit.server.services.ingest import BatchError, SeqGap

RUN = metrics.RunRef("proj-a", "20261201-120000-train-ab12")


@pytest.fixture
def engine(tracking_engine):
    """A migrated database on SQLite, then PostgreSQL (see ``trackkit.tracking_db``)."""
    return tracking_engine


def recs(start, stop, keys=("loss",), t0=1000.0, f=lambda k, i: i * 0.5):
    return [
        {"t": t0 + i, "step": i, "values": {k: f(k, i) for k in keys}} for i in range(start, stop)
    ]


def put(engine, first, records, run=RUN, writer="w0"):
    """Ingest ``records`` as the writer's records from index ``first`` (seq ``first + 1``)."""
    with engine.begin() as c:
        return metrics.ingest(c, run, writer, first + 1, records)


def all_points(engine, run=RUN, key="loss"):
    out, after = [], None
    with engine.connect() as c:
        while True:
            page = metrics.points(c, run, key, after=after, limit=7)
            out += page["points"]
            if page["next"] is None:
                return out
            after = tuple(page["next"])


def test_a_batch_is_stored_and_summarised(engine):
    ack = put(engine, 0, recs(0, 10, keys=("loss", "acc")))
    assert ack.to_json() == {
        "writer": "w0", "next_seq": 11, "acked_through": 10, "inserted": 20, "skipped": 0,
    }  # fmt: skip
    with engine.connect() as c:
        s = metrics.summaries(c, [RUN])[RUN.run_id]
    assert s["loss"] == {
        "last": 4.5, "last_step": 9, "min": 0.0, "max": 4.5, "count": 10, "nonfinite": 0,
        "first_step": 0, "max_step": 9,
    }  # fmt: skip
    assert [p["value"] for p in all_points(engine)] == [i * 0.5 for i in range(10)]


def test_a_retried_batch_is_stored_once(engine):
    put(engine, 0, recs(0, 10))
    again = put(engine, 0, recs(0, 10))
    assert (again.inserted, again.skipped, again.next_seq) == (0, 10, 11)
    overlap = put(engine, 5, recs(5, 15))
    assert (overlap.inserted, overlap.skipped, overlap.next_seq) == (5, 5, 16)
    pts = all_points(engine)
    assert [p["step"] for p in pts] == list(range(15))
    with engine.connect() as c:
        assert metrics.summaries(c, [RUN])[RUN.run_id]["loss"]["count"] == 15


def test_a_batch_after_a_gap_is_refused_and_writes_nothing(engine):
    put(engine, 0, recs(0, 5))
    with pytest.raises(SeqGap) as e:
        put(engine, 8, recs(8, 10))
    assert e.value.expected_seq == 6
    with pytest.raises(SeqGap):
        put(engine, 3, recs(3, 5), writer="w-new")  # a new writer starts at 0
    with engine.connect() as c:
        assert metrics.cursors(c, RUN) == {"w0": 6}
        assert c.execute(select(func.count()).select_from(metric_points)).scalar() == 5


def test_a_malformed_batch_writes_nothing_not_even_the_valid_records(engine):
    bad = recs(0, 3) + [{"t": 5.0, "step": 3, "values": {"loss": "high"}}]
    with pytest.raises(BatchError, match="not a number"):
        put(engine, 0, bad)
    with engine.connect() as c:
        assert metrics.cursors(c, RUN) == {}
        assert metrics.summaries(c, [RUN])[RUN.run_id] == {}


def test_non_finite_values_come_back_as_such(engine):
    values = [1.0, math.nan, math.inf, -math.inf, 2.0]
    put(engine, 0, [{"t": 1.0 + i, "step": i, "values": {"loss": v if math.isfinite(v) else
        {math.inf: "Infinity", -math.inf: "-Infinity"}.get(v, "NaN")}} for i, v in enumerate(values)])  # fmt: skip
    assert [p["value"] for p in all_points(engine)] == [1.0, "NaN", "Infinity", "-Infinity", 2.0]
    with engine.connect() as c:
        s = metrics.summaries(c, [RUN])[RUN.run_id]["loss"]
        ch = metrics.chart(c, RUN, "loss", n=100)
    assert (s["min"], s["max"], s["nonfinite"], s["last"]) == (1.0, 2.0, 3, 2.0)
    assert ch["last"] == [1.0, None, None, None, 2.0]
    assert ch["nonfinite"] == [[1, "nan"], [2, "inf"], [3, "-inf"]]


def test_charts_from_rollups_equal_bucketing_the_raw_points(engine):
    rng = random.Random(3)
    n = 20_000
    for first in range(0, n, 5000):
        put(engine, first, recs(first, first + 5000, f=lambda k, i: rng.gauss(0, 1)))
    raw = [ds.Point(p["step"], p["value"], 0, p["t"]) for p in all_points_fast(engine)]
    tiers = set()
    with engine.connect() as c:
        for x0, x1, buckets in [
            (None, None, 1000),
            (None, None, 37),
            (None, None, 4),
            (1234, 15_000, 500),
            (10, 400, 50),
        ]:
            ch = metrics.chart(c, RUN, "loss", x0, x1, buckets)
            tier, g = ds.plan(ch["range"][0], ch["range"][1], buckets)
            want = ds.to_columns(ds.downsample(raw, g), times=True)
            assert ch["tier"] == tier and len(ch["x"]) <= buckets
            assert {k: ch[k] for k in want} == want, (x0, x1, buckets)
            tiers.add(ch["tier"])
        full = metrics.chart(c, RUN, "loss", n=1000)
    assert tiers == {1, 16, 256, 4096}
    assert full["points"] == n and sum(full["count"]) == n


def all_points_fast(engine):
    out, after = [], None
    with engine.connect() as c:
        while True:
            page = metrics.points(c, RUN, "loss", after=after)
            out += page["points"]
            if page["next"] is None:
                return out
            after = tuple(page["next"])


def test_a_relogged_step_after_a_resume_draws_the_newer_value(engine):
    put(engine, 0, recs(0, 100))
    put(engine, 0, recs(50, 60, t0=5000.0, f=lambda k, i: -1.0), writer="w1-resumed")
    with engine.connect() as c:
        ch = metrics.chart(c, RUN, "loss", 50, 59, n=100)
        s = metrics.summaries(c, [RUN])[RUN.run_id]["loss"]
    assert ch["last"] == [-1.0] * 10 and ch["count"] == [2] * 10
    assert (s["last"], s["last_step"], s["count"]) == (-1.0, 59, 110)  # the latest logged


def test_two_writers_of_one_run_ingest_at_once_without_losing_an_update(engine):
    errors = []

    def send(writer, offset):
        try:
            for first in range(0, 2000, 200):
                put(engine, first, recs(first + offset, first + offset + 200), writer=writer)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(f"w{i}", i * 2000)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as c:
        s = metrics.summaries(c, [RUN])[RUN.run_id]["loss"]
        ch = metrics.chart(c, RUN, "loss", n=10)
    assert (s["count"], s["min"], s["max"]) == (4000, 0.0, 3999 * 0.5)
    assert sum(ch["count"]) == 4000


def test_another_project_sees_nothing_of_a_run(engine):
    put(engine, 0, recs(0, 10))
    other = metrics.RunRef("proj-b", RUN.run_id)
    with engine.connect() as c:
        assert metrics.summaries(c, [other]) == {RUN.run_id: {}}
        assert metrics.chart(c, other, "loss") is None
        assert metrics.points(c, other, "loss") is None
        assert metrics.cursors(c, other) == {}
    with pytest.raises(SeqGap):  # its own cursor: a fresh writer there starts at 0
        put(engine, 5, recs(5, 10), run=other)


def test_messages_go_to_the_run_log_in_time_order(engine):
    put(engine, 0, [{"t": 2.0, "message": "second"}, {"t": 1.0, "message": "first"},
                    {"t": 3.0, "step": 0, "values": {"loss": 1.0}, "message": "with values"}])  # fmt: skip
    with engine.connect() as c:
        assert [m["text"] for m in metrics.log_lines(c, RUN)] == ["first", "second", "with values"]
        assert [m["text"] for m in metrics.log_lines(c, RUN, after=1.5)] == [
            "second",
            "with values",
        ]


def test_deleting_a_run_removes_its_points_and_cursors(engine):
    put(engine, 0, recs(0, 10))
    put(engine, 0, recs(0, 10), run=metrics.RunRef("proj-a", "other-run"))
    with engine.begin() as c:
        metrics.delete_run(c, RUN)
    with engine.connect() as c:
        assert metrics.chart(c, RUN, "loss") is None and metrics.cursors(c, RUN) == {}
        assert c.execute(select(func.count()).select_from(metric_points)).scalar() == 10


def test_the_migrations_build_exactly_the_tables_the_code_declares(tmp_path, request):
    """A database upgraded revision by revision (0001, tracking's 0002, jobs' 0003: the order
    the merge gave them, then 0004 and 0005; tests/remote/test_jobs_migration.py checks the chain) holds exactly
    the tables, columns, indexes and constraints the models declare, on both engines."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from benchkit.server.db import accounts, jobs, tracking  # noqa: F401  (their tables)
    from benchkit.server.db.migrate import alembic_config, current_revision
    from benchkit.server.db.models import Base
    from benchkit.server.db.session import Database

    pg = request.getfixturevalue("postgres").create_database()
    for url in (f"sqlite:///{tmp_path / 'steps.db'}", pg):
        db = Database(url)
        cfg = alembic_config(db)
        for rev in ("0001", "0002", "0003", "0004", "0005"):
            with db.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, rev)
            assert current_revision(db) == rev
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], (url.split(":")[0], diff)
        db.close()


def _alembic(db, action: str, revision: str) -> None:
    from alembic import command

    from benchkit.server.db.migrate import alembic_config

    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _count_points(db) -> int:
    with db.engine.connect() as c:
        return c.execute(select(func.count()).select_from(metric_points)).scalar()


def test_points_lose_their_foreign_keys_but_not_their_cascade(tracking_db):
    """0004 drops the points' per-row foreign keys and keeps what they did: deleting a series
    (a run, or its project) or a writer deletes its points; points stored before the upgrade
    are kept, and the revision goes down again."""
    from sqlalchemy import text

    db, other = tracking_db, metrics.RunRef("proj-b", "kept")
    engine = db.engine.execution_options(sqlite_begin="IMMEDIATE") if db.is_sqlite else db.engine
    _alembic(db, "downgrade", "0003")
    put(engine, 0, recs(0, 30, keys=("loss", "acc")))
    put(engine, 0, recs(0, 10), run=other)
    _alembic(db, "upgrade", "0004")
    assert _count_points(db) == 70
    put(engine, 30, recs(30, 40, keys=("loss", "acc")))  # ingest goes on after the upgrade
    assert _count_points(db) == 90
    with engine.begin() as c:
        c.execute(text("DELETE FROM ingest_cursors WHERE run_id = 'kept'"))
    assert _count_points(db) == 80
    put(engine, 0, recs(0, 10), run=other, writer="w1")
    with engine.begin() as c:
        c.execute(text("DELETE FROM projects WHERE id = 'proj-a'"))  # series cascade, then points
    assert _count_points(db) == 10
    _alembic(db, "downgrade", "0003")
    assert _count_points(db) == 10
    # the foreign keys are back: a point of no series is refused
    with pytest.raises(Exception, match="(?i)foreign key"), engine.begin() as c:
        c.execute(text("INSERT INTO metric_points VALUES (999, 0, 999, 1, 0.0, 1.0, 0)"))
    _alembic(db, "upgrade", "head")


def test_points_keep_only_their_primary_key_and_their_rows_across_0005(tracking_db):
    """0005 drops the unique index beside the points' primary key: points stored before are
    kept, a record sent again is still stored once, and the index comes back on downgrade."""
    from sqlalchemy import inspect

    db = tracking_db
    engine = db.engine.execution_options(sqlite_begin="IMMEDIATE") if db.is_sqlite else db.engine

    def indexes() -> list[str]:
        with db.engine.connect() as c:
            return [i["name"] for i in inspect(c).get_indexes("metric_points")]

    assert indexes() == []
    _alembic(db, "downgrade", "0004")
    assert indexes() == ["uq_metric_points_writer_seq"]
    put(engine, 0, recs(0, 20, keys=("loss", "acc")))
    _alembic(db, "upgrade", "0005")
    assert indexes() == [] and _count_points(db) == 40
    put(engine, 10, recs(10, 30, keys=("loss", "acc")))  # a retry overlapping what is stored
    assert _count_points(db) == 60
    with engine.connect() as c:
        assert metrics.cursors(c, RUN) == {"w0": 31}


def test_a_point_that_exists_although_the_cursor_says_new_fails_the_whole_batch(engine):
    """The unique key is the second line of defence: a batch whose points exist already (the
    cursor lost, say by a hand edit) is refused and writes nothing, its cursor included."""
    from sqlalchemy import text

    put(engine, 0, recs(0, 5))
    with engine.begin() as c:
        c.execute(text("UPDATE ingest_cursors SET next_seq = 3"))
    with pytest.raises(metrics.IntegrityFailure, match="already existed"):
        put(engine, 2, recs(2, 8))
    with engine.connect() as c:
        assert metrics.cursors(c, RUN) == {"w0": 3}
        assert c.execute(select(func.count()).select_from(metric_points)).scalar() == 5
