"""Helpers of the tracking tests: runs put on a real Bench server the way clients put them
(``run.json`` through the blob API, metrics through the ingest API), and migrated databases
(SQLite and the session's PostgreSQL) for the tracking services."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import requests

from benchkit.store.http import HttpStore

#: the projects every ``tracking_db`` holds
PROJECTS = ("proj-a", "proj-b")


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_db(request, tmp_path):
    """A fresh, migrated server database on each engine in turn, holding projects ``proj-a``
    and ``proj-b``."""
    from benchkit.server.db.migrate import upgrade
    from benchkit.server.db.models import Project
    from benchkit.server.db.session import Database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bench.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    database = Database(url)
    upgrade(database)
    with database.write() as s:
        for pid in PROJECTS:
            s.add(Project(id=pid, name=pid))
    yield database
    database.close()


@pytest.fixture
def tracking_engine(tracking_db):
    """An engine of ``tracking_db`` whose transactions may write (``BEGIN IMMEDIATE`` on
    SQLite)."""
    db = tracking_db
    return db.engine.execution_options(sqlite_begin="IMMEDIATE") if db.is_sqlite else db.engine


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def put_record(server: Any, key: str, record: dict[str, Any]) -> None:
    """Write ``runs/<id>/run.json`` as the tracker does (the catalog indexes it)."""
    store = HttpStore(server.url, key)
    try:
        store.put(f"runs/{record['id']}/run.json", json.dumps(record).encode())
    finally:
        store.close()


def record(run_id: str, name: str, config: Mapping[str, Any] | None = None, **more: Any):
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return {
        "id": run_id,
        "name": name,
        "status": "finished",
        "config": dict(config or {}),
        "started": now,
        "ended": now,
        "world_size": 1,
        "host": "test-host",
        "checkpoints": [],
        **more,
    }


def records(values: Mapping[str, Sequence[Any]], t0: float | None = None) -> list[dict]:
    """Journal records, one per step, from per-metric value lists."""
    t0 = time.time() if t0 is None else t0
    n = max(len(v) for v in values.values())
    return [
        {"t": t0 + i, "step": i, "values": {k: v[i] for k, v in values.items() if i < len(v)}}
        for i in range(n)
    ]


def ingest(server: Any, key: str, run_id: str, recs: list[dict], writer: str = "w0",
           first_seq: int = 1, **kw: Any) -> requests.Response:  # fmt: skip
    return requests.post(
        f"{server.url}/api/v1/runs/{run_id}/metrics",
        json={"writer": writer, "first_seq": first_seq, "records": recs},
        headers=headers(key),
        timeout=60,
        **kw,
    )


def make_run(server: Any, key: str, run_id: str, name: str, config=None,
             values: Mapping[str, Sequence[Any]] | None = None, **more: Any) -> None:  # fmt: skip
    """A run with a record and metrics."""
    put_record(server, key, record(run_id, name, config, **more))
    if values:
        r = ingest(server, key, run_id, records(values))
        assert r.status_code == 200, r.text


# --- training runs against a server --------------------------------------------------------------

TRAINER = """
import os, time
from pathlib import Path
import benchkit as bench

SIGNALS = Path(os.environ["SIGNALS"])


def signal(name):
    (SIGNALS / name).write_text("")


def wait(name):
    while not (SIGNALS / name).exists():
        time.sleep(0.02)


@bench.train(config={"points": 400, "signal_at": -1, "hold_at": -1, "hang_at": -1, "fail_at": -1})
def fit(run):
    for i in range(run.config.points):
        run.log({"x": float(i), "sq": float(i * i), "odd": float("nan") if i % 50 == 0 else i / 7})
        if i == run.config.signal_at and run.is_main_process:  # past the run's setup writes
            signal("logged")
        if i == run.config.hold_at:
            wait("go")
        if i == run.config.fail_at:
            raise RuntimeError(f"<b>boom</b> at step {i}")
        if i == run.config.hang_at:
            signal("hanging")
            while True:  # short sleeps: a signal's Python handler runs between them
                time.sleep(0.05)
        time.sleep(0.005)
    signal("done")
"""


def expected_points(n: int) -> dict[str, list]:
    """What TRAINER logs over ``n`` steps, as the API returns it."""
    return {
        "x": [float(i) for i in range(n)],
        "sq": [float(i * i) for i in range(n)],
        "odd": ["NaN" if i % 50 == 0 else i / 7 for i in range(n)],
    }


def points_of(server: Any, key: str, run_id: str, metric: str) -> list[dict]:
    """Every stored point of one metric of a run, through the API's pages."""
    out, after = [], None
    while True:
        params = {"key": metric, **({"after": after} if after else {})}
        r = requests.get(
            f"{server.url}/api/v1/runs/{run_id}/points", params=params, headers=headers(key),
            timeout=60,
        )  # fmt: skip
        if r.status_code == 404:
            return out
        r.raise_for_status()
        page = r.json()
        out += page["points"]
        if page["next"] is None:
            return out
        after = ",".join(map(str, page["next"]))
