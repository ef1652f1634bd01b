"""Runs as the dashboard and ``runs list`` show them: the catalog's record of each run joined
with its metric summaries, its last sign of life and its evaluation criterion; the runs table
with a column per hyperparameter and per metric, sorted and filtered.

Listing reads the catalog's ``runs`` rows, ``metric_series`` (one row per metric of a run) and
``ingest_cursors``, never the points. Sorting and filtering happen on those rows in Python:
sort keys are the table's own columns (an allowlist by construction) and a filter is parsed
into conditions compared as values (``lr>=0.01 status=finished val_acc>0.9 name~cat``), never
evaluated as code or spliced into SQL.

A run whose record says ``running`` but which has shown no sign of life (a record update, an
ingest batch, its heartbeat ``runs/<id>/heartbeat.json``) for the heartbeat timeout
(:func:`benchkit.training.runs.heartbeat_timeout`: four of the run's heartbeat intervals, or
``BENCHKIT_HEARTBEAT_TIMEOUT``) is shown as ``lost``, as ``runs list`` on a local store shows
it: a process killed with ``kill -9`` cannot report that it ended, and a run must not show as
running forever.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select

from benchkit.server.db.models import Run
from benchkit.server.services import metrics
from benchkit.server.services.metrics import RunRef
from benchkit.training import runs as training_runs

#: a running run's heartbeat, by run id: ``{"unix": time, "interval": seconds}`` or None
Heartbeats = Callable[[str], "dict[str, Any] | None"]

RUNNING, LOST = training_runs.RUNNING, training_runs.LOST
#: at most this many hyperparameter and metric columns each (the rest are named in a note)
MAX_COLUMNS = 40
MODES = ("max", "min")


class FilterError(ValueError):
    """A filter expression that cannot be parsed; the message says where and how to fix it."""


def _time(value: Any) -> float | None:
    """Unix seconds from an ISO timestamp (as run records hold them) or a datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (lists stay values)."""
    if not isinstance(config, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@dataclass
class RunView:
    """One run with everything the runs table and the run page show."""

    id: str
    name: str
    status: str
    recorded_status: str
    record: dict[str, Any]
    config: dict[str, Any]
    summaries: dict[str, dict[str, Any]]
    seen: float | None
    started: str | None = None
    ended: str | None = None
    duration: float | None = None
    processes: int = 1
    host: str | None = None
    monitor: str | None = None
    mode: str | None = None
    code_version: Any = None
    datasets: list[str] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    traceback: str | None = None

    @property
    def best(self) -> float | None:
        """The best value of the run's evaluation criterion (its max or min)."""
        s = self.summaries.get(self.monitor or "")
        if not s or self.mode not in MODES:
            return None
        return s[self.mode]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "recorded_status": self.recorded_status,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "processes": self.processes,
            "host": self.host,
            "config": self.record.get("config") or {},
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "code_version": self.code_version,
            "datasets": self.datasets,
            "checkpoints": self.checkpoints,
            "summaries": self.summaries,
            "last_seen": self.seen,
            "traceback": self.traceback,
        }


def effective_status(recorded: str, seen: float | None, now: float, timeout: float) -> str:
    """``lost`` for a run recorded as running without a sign of life for ``timeout`` s."""
    if recorded == RUNNING and (seen is None or now - seen > timeout):
        return LOST
    return recorded or "unknown"


def lost_after(heartbeat: dict[str, Any] | None) -> float:
    """The heartbeat timeout of a run (its own heartbeat interval when it said one)."""
    interval = (heartbeat or {}).get("interval")
    if not _is_number(interval) or interval <= 0:
        interval = training_runs.HEARTBEAT_INTERVAL
    return training_runs.heartbeat_timeout(float(interval))


def load(
    conn: Connection,
    project_id: str,
    run_ids: Sequence[str] | None = None,
    now: float | None = None,
    heartbeats: Heartbeats | None = None,
) -> list[RunView]:
    """The project's runs (or those of ``run_ids``), oldest id first; ``heartbeats`` reads the
    heartbeat of a run recorded as running."""
    q = select(Run.id, Run.name, Run.status, Run.record, Run.updated_at).where(
        Run.project_id == project_id
    )
    if run_ids is not None:
        q = q.where(Run.id.in_(list(run_ids)))
    rows = conn.execute(q.order_by(Run.id)).all()
    refs = [RunRef(project_id, r.id) for r in rows]
    sums = metrics.summaries(conn, refs, whole_project=run_ids is None)
    seen_ingest = metrics.last_seen(conn, refs)
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    out = []
    for r in rows:
        rec = r.record if isinstance(r.record, dict) else {}
        running = str(rec.get("status") or r.status or "") == RUNNING
        beat = heartbeats(r.id) if heartbeats is not None and running else None
        out.append(_view(r, rec, sums.get(r.id, {}), seen_ingest.get(r.id), beat, now))
    return out


def _view(
    row: Any, rec: dict, sums: dict, ingested: float | None, beat: dict | None, now: float
) -> RunView:
    beat_at = (beat or {}).get("unix")
    seen_at = [t for t in (_time(row.updated_at), ingested) if t]
    if _is_number(beat_at):
        seen_at.append(float(beat_at))
    seen = max(seen_at) if seen_at else None
    recorded = str(rec.get("status") or row.status or "")
    started, ended = rec.get("started"), rec.get("ended")
    t0, t1 = _time(started), _time(ended)
    duration = None
    if t0 is not None:
        end = t1 if t1 is not None else (seen if recorded == RUNNING and seen else now)
        duration = max(0.0, end - t0)
    mode = rec.get("mode")
    datasets = rec.get("datasets") or []
    return RunView(
        id=row.id,
        name=str(rec.get("name") or row.name or row.id),
        status=effective_status(recorded, seen, now, lost_after(beat)),
        recorded_status=recorded,
        record=rec,
        config=flatten(rec.get("config") or {}),
        summaries=sums,
        seen=seen,
        started=started if isinstance(started, str) else None,
        ended=ended if isinstance(ended, str) else None,
        duration=duration,
        processes=int(rec.get("world_size") or rec.get("processes") or 1),
        host=rec.get("host") if isinstance(rec.get("host"), str) else None,
        monitor=rec.get("monitor") if isinstance(rec.get("monitor"), str) else None,
        mode=mode if mode in MODES else None,
        code_version=rec.get("code_version"),
        datasets=[str(d) for d in datasets] if isinstance(datasets, list) else [],
        checkpoints=[c for c in rec.get("checkpoints") or [] if isinstance(c, dict)],
        traceback=rec.get("traceback") if isinstance(rec.get("traceback"), str) else None,
    )


# --- the table ----------------------------------------------------------------------------

BASE_COLUMNS = (
    ("name", "run", False),
    ("status", "status", False),
    ("started", "started", False),
    ("duration", "duration (s)", True),
    ("processes", "processes", True),
)


@dataclass(frozen=True)
class TableColumn:
    id: str
    label: str
    group: str  # "run", "best", "config" or "metric"
    numeric: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "group": self.group, "numeric": self.numeric}


@dataclass
class Table:
    """A sorted, filtered runs table: columns and, per run, the cell of each column."""

    columns: list[TableColumn]
    rows: list[tuple[RunView, dict[str, Any]]]
    total: int
    sort: str
    order: str
    query: str
    monitor: str | None
    mode: str | None
    hidden: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": [c.to_json() for c in self.columns],
            "runs": [{**v.to_json(), "cells": cells} for v, cells in self.rows],
            "total": self.total,
            "sort": self.sort,
            "order": self.order,
            "query": self.query,
            "monitor": self.monitor,
            "mode": self.mode,
            "hidden_columns": self.hidden,
        }


def criterion(views: Sequence[RunView]) -> tuple[str | None, str | None]:
    """The project's evaluation criterion: that of its newest run which names one."""
    for v in reversed(views):
        if v.monitor and v.mode:
            return v.monitor, v.mode
    return None, None


def columns(views: Sequence[RunView]) -> tuple[list[TableColumn], int]:
    """The table's columns (base, best, one per hyperparameter, one per metric) and how many
    were left out beyond :data:`MAX_COLUMNS` per group."""
    cols = [TableColumn(cid, label, "run", num) for cid, label, num in BASE_COLUMNS]
    monitor, mode = criterion(views)
    if monitor:
        cols.append(TableColumn("best", f"{monitor} ({mode})", "best", True))
    config_keys = sorted({k for v in views for k in v.config})
    metric_keys = sorted({k for v in views for k in v.summaries})
    hidden = max(0, len(config_keys) - MAX_COLUMNS) + max(0, len(metric_keys) - MAX_COLUMNS)
    for k in config_keys[:MAX_COLUMNS]:
        numeric = all(_is_number(v.config.get(k)) for v in views if v.config.get(k) is not None)
        cols.append(TableColumn(f"config.{k}", k, "config", numeric))
    cols += [TableColumn(f"metric.{k}", k, "metric", True) for k in metric_keys[:MAX_COLUMNS]]
    return cols, hidden


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def cell(view: RunView, column_id: str, monitor: str | None = None) -> Any:
    """The value of one column for one run (metrics: the last value)."""
    if column_id.startswith("config."):
        return view.config.get(column_id[7:])
    if column_id.startswith("metric."):
        s = view.summaries.get(column_id[7:])
        return None if s is None else s["last"]
    if column_id == "best":
        return view.best if view.monitor == monitor else None
    if column_id == "duration":
        return None if view.duration is None else round(view.duration, 1)
    return getattr(view, column_id, None)


def _sort_key(value: Any) -> tuple:
    """Numbers (finite, then the non-finite tags) before text; missing values go last."""
    if value is None:
        return (2, 0, "")
    if _is_number(value):
        return (0, 0, float(value)) if math.isfinite(value) else (0, 1, str(value))
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return (0, 1, value)
    return (1, 0, str(value).lower())


def build(
    views: Sequence[RunView],
    sort: str | None = None,
    order: str | None = None,
    query: str = "",
    limit: int | None = None,
    strict: bool = False,
) -> Table:
    """The runs table. ``sort`` is a column id (default: the evaluation criterion, best first,
    or the start time, newest first); an unknown one is refused with the known ones named. A
    filter that cannot be parsed raises when ``strict``, else leaves the table unfiltered with
    the reason in ``error``."""
    cols, hidden = columns(views)
    ids = [c.id for c in cols]
    monitor, mode = criterion(views)
    default_sort, default_order = (
        ("best", "desc" if mode == "max" else "asc")
        if monitor
        else (
            "started",
            "desc",
        )
    )
    sort = sort or default_sort
    if sort not in ids:
        raise FilterError(f"cannot sort by {sort!r}: sort by one of {', '.join(ids)}")
    if order not in (None, "", "asc", "desc"):
        raise FilterError(f"order must be 'asc' or 'desc', got {order!r}")
    order = order or (default_order if sort == default_sort else "asc")
    error = None
    try:
        conditions = parse_filter(query, views)
    except FilterError as e:
        if strict:
            raise
        conditions, error = [], str(e)
    chosen = [v for v in views if all(c.matches(v) for c in conditions)]
    present = [v for v in chosen if cell(v, sort, monitor) is not None]
    missing = [v for v in chosen if cell(v, sort, monitor) is None]
    present.sort(key=lambda v: _sort_key(cell(v, sort, monitor)), reverse=order == "desc")
    ordered = present + missing  # runs without the value go last in either order
    if limit is not None:
        ordered = ordered[:limit]
    rows = [(v, {c: cell(v, c, monitor) for c in ids}) for v in ordered]
    return Table(cols, rows, len(chosen), sort, order, query, monitor, mode, hidden, error)


# --- filters ------------------------------------------------------------------------------

_TERM = re.compile(
    r"""\s*(?P<field>[A-Za-z_][\w.\-/]*)\s*(?P<op>!=|<=|>=|=|<|>|~)\s*"""
    r"""(?:"(?P<q>[^"]*)"|'(?P<sq>[^']*)'|(?P<word>[^\s,<>=!~"']+))(?=[\s,]|$)\s*,?""",
)
_RUN_FIELDS = ("id", "name", "status", "host", "started", "duration", "processes")


@dataclass(frozen=True)
class Condition:
    """``field op value``: a parsed filter term."""

    field: str
    op: str
    value: str | float

    def matches(self, view: RunView) -> bool:
        have = cell(view, self.field, view.monitor) if self.field != "best" else view.best
        if have is None:
            return self.op == "!="
        if self.op == "~":
            return str(self.value).lower() in str(have).lower()
        if isinstance(self.value, float):
            if not _is_number(have):
                return self.op == "!="
            a, b = float(have), self.value
        else:
            a, b = str(have).lower(), str(self.value).lower()  # type: ignore[assignment]
        return {
            "=": a == b,
            "!=": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[self.op]


def parse_filter(query: str, views: Iterable[RunView] = ()) -> list[Condition]:
    """Conditions from ``field op value`` terms (all must hold). A field is a run field (name,
    status, host, ...), ``best``, a hyperparameter or a metric (``config.x``/``metric.x`` when a
    name is both); values are numbers or text (quoted when they hold spaces)."""
    views = list(views)
    config_keys = {k for v in views for k in v.config}
    metric_keys = {k for v in views for k in v.summaries}
    out: list[Condition] = []
    pos, query = 0, query or ""
    while pos < len(query.rstrip()):
        m = _TERM.match(query, pos)
        if not m or m.end() == pos:
            raise FilterError(
                f"cannot read the filter from {query[pos:].strip()!r}: write terms like "
                "lr>=0.01 status=finished name~cat (operators = != < <= > >= ~)"
            )
        pos = m.end()
        name, op = m["field"], m["op"]
        raw = m["q"] if m["q"] is not None else m["sq"] if m["sq"] is not None else m["word"]
        out.append(Condition(_resolve(name, config_keys, metric_keys), op, _value(raw, op)))
    return out


def _resolve(name: str, config_keys: set[str], metric_keys: set[str]) -> str:
    if name in _RUN_FIELDS or name == "best":
        return name
    if name.startswith(("config.", "metric.")):
        return name
    if name in config_keys:
        return f"config.{name}"
    if name in metric_keys:
        return f"metric.{name}"
    known = sorted(set(_RUN_FIELDS) | config_keys | metric_keys)
    raise FilterError(f"unknown field {name!r} in the filter; known fields: {', '.join(known)}")


def _value(raw: str, op: str) -> str | float:
    if op == "~":
        return raw
    try:
        return float(raw)
    except ValueError:
        return raw
