"""Run records in the store: ``runs/<run-id>/run.json`` and ``runs/<run-id>/metrics/*.jsonl``.

``run.json`` holds the run's name, status, config, times, traceback and its checkpoints; it is
rewritten (atomically) when the status changes. Metrics are append-only: each flush of the
tracker writes a new part object (``metrics/000001.jsonl``, ``000002.jsonl``, ...), never
rewriting an old one, so a crash loses at most the last unflushed buffer.

Run ids sort by start time: ``20261124-153000-<name>-<4 hex>``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from benchkit.errors import TrainError
from benchkit.store import Store

RUNS = "runs/"
CHECKPOINTS = "checkpoints/"

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, FINISHED, FAILED, INTERRUPTED)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(name: str) -> str:
    """A name made safe for a store key segment (no dots first, no slashes)."""
    s = _SAFE.sub("-", name).strip("-.") or "run"
    return s[:60]


def new_run_id(name: str, now: float | None = None) -> str:
    """A sortable, unique run id: ``YYYYMMDD-HHMMSS-<name>-<4 hex>`` (UTC)."""
    t = datetime.fromtimestamp(now if now is not None else time.time(), tz=timezone.utc)
    return f"{t:%Y%m%d-%H%M%S}-{slug(name)}-{secrets.token_hex(2)}"


def run_key(run_id: str, rest: str = "run.json") -> str:
    return f"{RUNS}{run_id}/{rest}"


def checkpoint_key(run_id: str, name: str) -> str:
    return f"{CHECKPOINTS}{run_id}/{name}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """The contents of ``run.json``."""

    id: str
    name: str
    status: str = RUNNING
    config: dict[str, Any] = field(default_factory=dict)
    started: str = field(default_factory=utc_now)
    ended: str | None = None
    traceback: str | None = None
    world_size: int = 1
    project: str | None = None
    host: str | None = None
    resumed: list[str] = field(default_factory=list)
    #: checkpoints in the order they were saved: {"name", "epoch", "step", "time", "size"}
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    #: the latest value of each metric, written when the run ends (read the metrics while running)
    last: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        rec = cls(**known)
        rec.extra.update({k: v for k, v in data.items() if k not in cls.__dataclass_fields__})
        return rec

    def duration(self) -> float | None:
        """Seconds from start to end (or to now while running)."""
        try:
            start = datetime.fromisoformat(self.started)
            end = datetime.fromisoformat(self.ended) if self.ended else datetime.now(timezone.utc)
        except (TypeError, ValueError):
            return None
        return (end - start).total_seconds()


def save_record(store: Store, rec: RunRecord) -> None:
    """Write ``run.json`` (atomically replaces the previous one)."""
    store.put_json(run_key(rec.id), rec.to_json())


def load_record(store: Store, run_id: str) -> RunRecord:
    """Read one run's record; a clear error when there is none."""
    key = run_key(run_id)
    if not store.exists(key):
        raise TrainError(
            f"no run '{run_id}' in store {store.url}; list runs with `benchkit runs list`"
        )
    try:
        return RunRecord.from_json(store.get_json(key))
    except (ValueError, TypeError) as e:
        raise TrainError(f"run record '{key}' in store {store.url} is unreadable: {e}") from e


def list_run_ids(store: Store) -> list[str]:
    """Ids of every run with a record, oldest first (ids sort by start time)."""
    catalog = store.catalog()
    if catalog is not None:
        return [r["id"] for r in catalog.runs()]
    return [d for d in store.list_dirs(RUNS) if store.exists(run_key(d))]


def list_records(store: Store) -> list[RunRecord]:
    catalog = store.catalog()
    if catalog is not None:
        return [RunRecord.from_json(r) for r in catalog.runs()]
    return [load_record(store, rid) for rid in list_run_ids(store)]


def resolve_run(store: Store, ref: str) -> str:
    """A run id from an id, a unique id prefix, a row number of ``runs list``, or a run name
    (its latest run)."""
    ids = list_run_ids(store)
    if ref in ids:
        return ref
    if ref.isdigit() and 1 <= int(ref) <= len(ids):
        return ids[int(ref) - 1]
    prefixed = [i for i in ids if i.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    named = [r.id for r in (load_record(store, i) for i in ids) if r.name == ref]
    if named:
        return named[-1]
    if len(prefixed) > 1:
        raise TrainError(f"'{ref}' matches several runs: {', '.join(prefixed)}; give the full id")
    raise TrainError(f"no run '{ref}' in store {store.url}; list runs with `benchkit runs list`")


# --- metrics ---------------------------------------------------------------------------------


def metric_parts(store: Store, run_id: str) -> list[str]:
    """The metric part keys of a run, in write order."""
    return [k for k in store.list(run_key(run_id, "metrics/")) if k.endswith(".jsonl")]


def next_part_number(store: Store, run_id: str) -> int:
    nums = [int(os.path.basename(k).split(".")[0]) for k in metric_parts(store, run_id)]
    return max(nums, default=0) + 1


def read_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every logged event of a run (``{"step", "time", "values"}`` or ``{"time", "message"}``)."""
    events: list[dict[str, Any]] = []
    for key in metric_parts(store, run_id):
        for line in store.get(key).decode().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


def metric_series(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, Any]]]:
    """Per metric, its ``(step, value)`` points ordered by step; when a step was logged twice
    (a resumed run repeats the steps after its checkpoint) the later write wins."""
    series: dict[str, dict[int, Any]] = {}
    for ev in events:
        values = ev.get("values")
        if not values:
            continue
        step = ev.get("step")
        for k, v in values.items():
            points = series.setdefault(k, {})
            points[step if step is not None else len(points)] = v
    return {k: sorted(p.items()) for k, p in series.items()}


def last_values(events: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, points in metric_series(events).items():
        if points:
            out[k] = points[-1][1]
    return out


def delete_run(store: Store, run_id: str) -> int:
    """Delete a run's record, metrics and checkpoints; returns the number of objects removed."""
    return store.delete_prefix(f"{RUNS}{run_id}/") + store.delete_prefix(f"{CHECKPOINTS}{run_id}/")
