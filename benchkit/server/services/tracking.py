"""Experiment tracking as one service: metric ingest, charts, points, run logs and the runs
table, each within the caller's project (the project id always comes from the principal).

The work itself lives in :mod:`.metrics` (points and charts) and :mod:`.runs` (runs and the
table); this class opens the transactions and turns their refusals into service errors (a gap
in the sequence numbers is a 409 Conflict carrying ``expected_seq``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from benchkit.errors import ObjectNotFound, StoreError
from benchkit.server.db.session import Database
from benchkit.server.services import downsample as ds
from benchkit.server.services import metrics, runs
from benchkit.server.services.catalog import project_prefix
from benchkit.server.services.errors import BadRequest, Conflict, NotFound
from benchkit.server.services.ingest import BatchError, SeqGap
from benchkit.server.services.metrics import RunRef
from benchkit.store import Store

#: the most runs one comparison chart overlays
MAX_COMPARE = 20
#: a heartbeat larger than this is not read
MAX_HEARTBEAT = 64 * 1024


class Tracking:
    """Runs, metrics and logs of every project."""

    def __init__(self, db: Database, store: Store) -> None:
        self.db = db
        self.store = store

    def heartbeats(self, project_id: str) -> runs.Heartbeats:
        """Reads the heartbeats (``runs/<id>/heartbeat.json``) of a project's running runs."""

        def read(run_id: str) -> dict[str, Any] | None:
            key = f"{project_prefix(project_id)}runs/{run_id}/heartbeat.json"
            try:
                if self.store.stat(key).size > MAX_HEARTBEAT:
                    return None
                doc = json.loads(self.store.get(key))
            except (ObjectNotFound, ValueError, StoreError):
                return None
            return doc if isinstance(doc, dict) else None

        return read

    # --- writing ------------------------------------------------------------------------------

    def ingest(
        self,
        project_id: str,
        run_id: str,
        writer: str,
        first_seq: int,
        records: Sequence[Mapping[str, Any]],
    ) -> metrics.Acked:
        """Store one batch (all or nothing); a replay is skipped, a gap is a 409."""
        try:
            with self.db.write() as s:
                return metrics.ingest(
                    s.connection(), RunRef(project_id, run_id), writer, first_seq, records
                )
        except SeqGap as e:
            raise Conflict(str(e), expected_seq=e.expected_seq, writer=e.writer) from e
        except BatchError as e:
            raise BadRequest(str(e)) from e

    def delete_run(self, project_id: str, run_id: str) -> None:
        with self.db.write() as s:
            metrics.delete_run(s.connection(), RunRef(project_id, run_id))

    # --- reading ------------------------------------------------------------------------------

    def _known(self, conn, project_id: str, run_id: str) -> bool:
        """Whether the project has a run of that id (a record, or tracked data)."""
        ref = RunRef(project_id, run_id)
        return bool(
            runs.load(conn, project_id, [run_id])
            or metrics.cursors(conn, ref)
            or metrics.summaries(conn, [ref])[run_id]
        )

    def run_metrics(self, project_id: str, run_id: str) -> dict[str, Any]:
        """A run's metric summaries and its writers' next sequence numbers (where a resumed
        sender or ``benchkit sync`` continues)."""
        ref = RunRef(project_id, run_id)
        with self.db.read() as s:
            conn = s.connection()
            if not self._known(conn, project_id, run_id):
                raise NotFound(f"no run {run_id!r} in this project")
            return {
                "run_id": run_id,
                "metrics": metrics.summaries(conn, [ref])[run_id],
                "writers": metrics.cursors(conn, ref),
            }

    def chart(
        self,
        project_id: str,
        run_ids: Sequence[str],
        key: str,
        x0: int | None = None,
        x1: int | None = None,
        n: int = ds.DEFAULT_BUCKETS,
    ) -> dict[str, Any]:
        """Buckets of metric ``key`` for each run (runs without that metric are left out; runs
        not in the project are a 404, like a run that does not exist)."""
        if not run_ids:
            raise BadRequest("name at least one run (run=ID)")
        if len(run_ids) > MAX_COMPARE:
            raise BadRequest(f"compare at most {MAX_COMPARE} runs at once")
        if x0 is not None and x1 is not None and x1 < x0:
            raise BadRequest(f"empty step range: x0={x0} > x1={x1}")
        with self.db.read() as s:
            conn = s.connection()
            found = runs.load(
                conn, project_id, list(run_ids), heartbeats=self.heartbeats(project_id)
            )
            views = {v.id: v for v in found}
            out = []
            for rid in dict.fromkeys(run_ids):
                ref = RunRef(project_id, rid)
                if rid not in views and not self._known(conn, project_id, rid):
                    raise NotFound(f"no run {rid!r} in this project")
                ch = metrics.chart(conn, ref, key, x0, x1, n)
                if ch is None:
                    continue
                v = views.get(rid)
                ch.update(run=rid, name=v.name if v else rid, status=v.status if v else None)
                out.append(ch)
        return {"key": key, "series": out}

    def points(
        self,
        project_id: str,
        run_id: str,
        key: str,
        after: tuple[int, int, int] | None = None,
        limit: int = metrics.MAX_PAGE,
    ) -> dict[str, Any]:
        with self.db.read() as s:
            page = metrics.points(s.connection(), RunRef(project_id, run_id), key, after, limit)
        if page is None:
            raise NotFound(f"no metric {key!r} in run {run_id!r} of this project")
        return page

    def log(
        self, project_id: str, run_id: str, after: float | None = None, limit: int = 5000
    ) -> list[dict[str, Any]]:
        with self.db.read() as s:
            conn = s.connection()
            if not self._known(conn, project_id, run_id):
                raise NotFound(f"no run {run_id!r} in this project")
            return metrics.log_lines(conn, RunRef(project_id, run_id), after, limit)

    def list_runs(
        self, project_id: str, run_ids: Sequence[str] | None = None
    ) -> list[runs.RunView]:
        with self.db.read() as s:
            return runs.load(
                s.connection(), project_id, run_ids, heartbeats=self.heartbeats(project_id)
            )

    def get_run(self, project_id: str, run_id: str) -> runs.RunView:
        found = self.list_runs(project_id, [run_id])
        if not found:
            raise NotFound(f"no run {run_id!r} in this project")
        return found[0]

    def table(
        self,
        project_id: str,
        sort: str | None = None,
        order: str | None = None,
        query: str = "",
        limit: int | None = None,
        strict: bool = True,
    ) -> runs.Table:
        """The runs table; ``strict``: a filter that cannot be parsed is a 400 (else the table
        is unfiltered and says why)."""
        try:
            return runs.build(self.list_runs(project_id), sort, order, query, limit, strict)
        except runs.FilterError as e:
            raise BadRequest(str(e)) from e
