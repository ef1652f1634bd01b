"""Run records in the store: ``runs/<run-id>/run.json``, ``runs/<run-id>/heartbeat.json`` and
``runs/<run-id>/metrics/*.jsonl``.

``run.json`` holds the run's name, status, config, times, traceback, code version and its
checkpoints; it is rewritten (atomically) through :func:`update_record`, which retries
transient store errors and never replaces a record it could not read with a blank one: a
damaged record is kept aside (``run.damaged-<time>.json``) and rebuilt from what the store
still holds (the checkpoints, each of which carries the run's name, config and seed).

Metric parts are append-only: the tracker writes ``metrics/<writer>-<first>-<last>.jsonl``
per batch of journaled records (older versions wrote ``metrics/000001.jsonl``, ...; both are
read). A running run's main process rewrites ``heartbeat.json`` every ``interval`` seconds;
a ``running`` record whose heartbeat is older than :func:`heartbeat_timeout` is shown as
``lost`` (killed with SIGKILL, or its machine went away).

Run ids sort by start time: ``20261124-153000-<name>-<8 hex>``; the hex part is the run's
short id (:func:`short_id`), accepted wherever a run is named.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import socket
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from benchkit.errors import InvalidKey, ObjectNotFound, StoreError, TrainError
from benchkit.store import Store

log = logging.getLogger(__name__)

RUNS = "runs/"
CHECKPOINTS = "checkpoints/"

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"
#: shown, never written: a running record whose heartbeat stopped
LOST = "lost"
STATUSES = (RUNNING, FINISHED, FAILED, INTERRUPTED, LOST)

HEARTBEAT = "heartbeat.json"
#: seconds between heartbeats of a running run (BENCHKIT_HEARTBEAT_INTERVAL)
HEARTBEAT_INTERVAL = 30.0
#: a checkpoint's first member: its meta (name, epoch, step, the run's config and seed)
CHECKPOINT_META = "meta.json"

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(name: str) -> str:
    """A name made safe for a store key segment (no dots first, no slashes)."""
    s = _SAFE.sub("-", name).strip("-.") or "run"
    return s[:60]


_ID = re.compile(r"^\d{8}-\d{6}-.+-(?P<short>[0-9a-f]{4,})$")


def new_run_id(name: str, now: float | None = None) -> str:
    """A sortable, unique run id: ``YYYYMMDD-HHMMSS-<name>-<8 hex>`` (UTC)."""
    t = datetime.fromtimestamp(now if now is not None else time.time(), tz=timezone.utc)
    return f"{t:%Y%m%d-%H%M%S}-{slug(name)}-{secrets.token_hex(4)}"


def short_id(run_id: str) -> str:
    """The short form of a run id, like git's: its random hex part (the first 12 characters of
    an id given with ``--run-id`` that has none)."""
    m = _ID.match(run_id)
    return m["short"] if m else run_id[:12]


def new_writer_id() -> str:
    """A journal writer id: one per tracker process, sortable by start time."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(2)}"


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
    #: metric records that could not be written by the end: {"records", "journal", "command", ...}
    unsent: dict[str, Any] | None = None
    #: the stored code version the run ran (``run --version N`` or a checked-out version)
    code_version: int | None = None
    #: the project's git commit: {"commit", "dirty"} (None outside a git work tree)
    git: dict[str, Any] | None = None
    #: set when the record was rebuilt from the store: {"time", "damaged", "from"}
    rebuilt: dict[str, Any] | None = None
    #: the evaluation criterion: the logged metric that says how good the run is, and whether
    #: "max" or "min" is better (``@bench.train(monitor=..., mode=...)``)
    monitor: str | None = None
    mode: str | None = None
    #: the checkpoint with the best value of ``monitor`` (kept besides the last ones)
    best_checkpoint: str | None = None
    #: the datasets the training module declares
    datasets: list[str] = field(default_factory=list)
    #: the training module's absolute path (``benchkit run --resume ID`` runs it again)
    module: str | None = None
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


class RecordDamaged(TrainError):
    """``run.json`` exists but cannot be parsed (truncated, or not a record)."""


#: attempts and first wait for reading a record through transient store errors (~3 s in all)
READ_ATTEMPTS = 5
READ_BACKOFF = 0.2


def save_record(store: Store, rec: RunRecord) -> None:
    """Write ``run.json`` (atomically replaces the previous one)."""
    store.put_json(run_key(rec.id), rec.to_json())


def _read_record(store: Store, run_id: str) -> RunRecord:
    """One attempt: the record, ObjectNotFound, RecordDamaged, or the store's error."""
    key = run_key(run_id)
    raw = store.get(key)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or "id" not in data:
            raise ValueError("not a run record")
        data.setdefault("name", run_id)
        return RunRecord.from_json(data)
    except (ValueError, TypeError) as e:
        raise RecordDamaged(
            f"run record '{key}' in store {store.url} is damaged ({e}); `benchkit runs repair "
            f"{short_id(run_id)}` rebuilds it from the run's checkpoints"
        ) from e


def _retrying(fn: Callable[[], Any], what: str) -> Any:
    """``fn()``, retried with backoff on store errors that may pass (not a missing object)."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return fn()
        except (ObjectNotFound, InvalidKey, RecordDamaged):
            raise
        except StoreError as e:
            if attempt == READ_ATTEMPTS - 1:
                raise
            log.warning("%s failed (%s); retrying", what, e)
            time.sleep(READ_BACKOFF * 2**attempt)
    raise AssertionError("unreachable")


def load_record(store: Store, run_id: str) -> RunRecord:
    """Read one run's record, retrying transient store errors. Raises TrainError when there is
    none and :class:`RecordDamaged` when it cannot be parsed."""
    try:
        return _retrying(lambda: _read_record(store, run_id), f"reading run {run_id}")
    except ObjectNotFound:
        raise TrainError(
            f"no run '{run_id}' in store {store.url}; list runs with `benchkit runs list`"
        ) from None


def update_record(
    store: Store,
    run_id: str,
    change: Callable[[RunRecord], None],
    create: Callable[[], RunRecord] | None = None,
) -> RunRecord:
    """Read ``run.json``, apply ``change`` and write it back; returns the record written.

    Transient read errors are retried. A missing record is made by ``create`` (else
    TrainError). A damaged one is never replaced by a blank record: it is kept aside and the
    record is rebuilt from the store first (:func:`rebuild_record`).
    """
    try:
        rec = _retrying(lambda: _read_record(store, run_id), f"reading run {run_id}")
    except ObjectNotFound:
        if create is None:
            raise TrainError(
                f"no run '{run_id}' in store {store.url}; list runs with `benchkit runs list`"
            ) from None
        rec = create()
    except RecordDamaged as e:
        log.warning("%s", e)
        rec = rebuild_record(store, run_id)
    change(rec)
    save_record(store, rec)
    return rec


def keep_damaged(store: Store, run_id: str) -> str | None:
    """Copy an unreadable ``run.json`` to ``run.damaged-<time>.json``; returns its key."""
    try:
        raw = store.get(run_key(run_id))
    except ObjectNotFound:
        return None
    key = run_key(run_id, f"run.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.json")
    store.put(key, raw)
    return key


def checkpoint_meta(store: Store, run_id: str, name: str) -> dict[str, Any] | None:
    """A stored checkpoint's meta, read from the head of its tar (its first member), or None
    when it cannot be read."""
    key = checkpoint_key(run_id, name)
    try:
        head = store.get_range(key, 0, 4 * 1024 * 1024)
        with tarfile.open(fileobj=io.BytesIO(head), mode="r:") as tar:
            member = tar.next()
            if member is None or member.name != CHECKPOINT_META:
                return None
            f = tar.extractfile(member)
            return json.loads(f.read()) if f is not None else None
    except (StoreError, tarfile.TarError, OSError, ValueError) as e:
        log.warning("checkpoint %s in store %s: meta unreadable (%s)", key, store.url, e)
        return None


def rebuild_record(store: Store, run_id: str, damaged: str | None = None) -> RunRecord:
    """A run's record rebuilt from the store: the checkpoints under ``checkpoints/<run>/``
    (names, epochs, steps, sizes, times) and, from the newest one that has them, the run's
    name, config, seed and world size. Keeps the damaged ``run.json`` aside first and writes
    the rebuilt record."""
    damaged = damaged or keep_damaged(store, run_id)
    metas = []
    for key in store.list(f"{CHECKPOINTS}{run_id}/"):
        name = key.rsplit("/", 1)[1]
        meta = checkpoint_meta(store, run_id, name) or {"name": name}
        meta["size"] = store.stat(key).size
        metas.append(meta)
    metas.sort(key=lambda m: (m.get("time") or "", m["name"]))
    m = _ID.match(run_id)
    name = run_id[16 : -len(m["short"]) - 1] if m else run_id
    rec = RunRecord(id=run_id, name=name, host=socket.gethostname())
    rec.checkpoints = [
        {k: meta.get(k) for k in ("name", "epoch", "step", "time", "size")} for meta in metas
    ]
    sources = ["checkpoints"] if metas else []
    with_config = [meta for meta in metas if isinstance(meta.get("config"), dict)]
    if with_config:
        newest = with_config[-1]
        rec.config = dict(newest["config"])
        rec.name = str(newest.get("run_name") or rec.name)
        rec.world_size = int(newest.get("world_size") or 1)
        sources.append(f"config of checkpoint {newest['name']}")
    if metas and metas[0].get("time"):
        rec.started = str(metas[0]["time"])
    rec.rebuilt = {
        "time": utc_now(),
        "damaged": damaged,
        "from": sources,
        "config": bool(with_config),
    }
    save_record(store, rec)
    log.warning(
        "run %s: record rebuilt from %s (damaged copy: %s)",
        run_id, ", ".join(sources) or "nothing", damaged,
    )  # fmt: skip
    return rec


def list_run_ids(store: Store) -> list[str]:
    """Ids of every run with a record, oldest first (ids sort by start time)."""
    catalog = store.catalog()
    if catalog is not None:
        return [r["id"] for r in catalog.runs()]
    return [d for d in store.list_dirs(RUNS) if store.exists(run_key(d))]


def read_records(store: Store) -> tuple[list[RunRecord], list[str]]:
    """Every readable run record, oldest first, and a warning for each one that could not be
    read (it is skipped, not fatal)."""
    catalog = store.catalog()
    if catalog is not None:  # a Bench server lists its runs from its database
        return [RunRecord.from_json(r) for r in catalog.runs()], []
    records, warnings = [], []
    for rid in list_run_ids(store):
        try:
            records.append(load_record(store, rid))
        except TrainError as e:
            warnings.append(f"skipped run {rid}: {e}")
    return records, warnings


def list_records(store: Store) -> list[RunRecord]:
    """Every readable run record, oldest first; unreadable ones are skipped with a logged
    warning."""
    records, warnings = read_records(store)
    for w in warnings:
        log.warning("%s", w)
    return records


MIN_PREFIX = 4  # like git: a shorter prefix of an id is too easily a row number or a typo


def id_matches(ids: list[str], ref: str) -> list[str]:
    """The ids that ``ref`` is a prefix of (of the id or of its short id), or equal to; a
    prefix counts from :data:`MIN_PREFIX` characters."""
    if len(ref) < MIN_PREFIX:
        return [i for i in ids if ref in (i, short_id(i))]
    return [i for i in ids if i.startswith(ref) or short_id(i).startswith(ref)]


def resolve_run(store: Store, ref: str, rows: bool = True) -> str:
    """A run id from an id, its short id (or a unique prefix of either), a row number of
    ``runs list`` (only with ``rows``), or a run name (its latest run)."""
    ids = list_run_ids(store)
    if ref in ids:
        return ref
    if ref.isdigit() and not rows and len(ref) < MIN_PREFIX:
        raise TrainError(
            f"'{ref}' looks like a row number; name the run by its id, short id or name "
            "(see `benchkit runs list`)"
        )
    if ref.isdigit() and rows and 1 <= int(ref) <= len(ids):
        return ids[int(ref) - 1]
    matches = id_matches(ids, ref)
    if len(matches) == 1:
        return matches[0]
    named = []
    for i in ids:
        try:
            if load_record(store, i).name == ref:
                named.append(i)
        except TrainError:
            continue
    if named:
        return named[-1]
    if len(matches) > 1:
        raise TrainError(f"'{ref}' matches several runs: {', '.join(matches)}; give more of the id")
    raise TrainError(f"no run '{ref}' in store {store.url}; list runs with `benchkit runs list`")


# --- heartbeats ------------------------------------------------------------------------------


def write_heartbeat(store: Store, run_id: str, interval: float) -> None:
    """Say that the run is alive now (its main process calls this every ``interval`` s)."""
    store.put_json(
        run_key(run_id, HEARTBEAT),
        {"time": utc_now(), "unix": time.time(), "interval": interval,
         "host": socket.gethostname(), "pid": os.getpid()},
    )  # fmt: skip


def heartbeat_timeout(interval: float) -> float:
    """Seconds without a heartbeat after which a running run counts as lost: four intervals
    (``BENCHKIT_HEARTBEAT_TIMEOUT`` overrides)."""
    raw = os.environ.get("BENCHKIT_HEARTBEAT_TIMEOUT", "").strip()
    try:
        return float(raw) if raw else 4 * interval
    except ValueError:
        raise TrainError(
            f"BENCHKIT_HEARTBEAT_TIMEOUT must be a number of seconds, got {raw!r}"
        ) from None


def last_sign_of_life(store: Store, rec: RunRecord) -> tuple[float | None, float]:
    """``(unix time of the last heartbeat or start, heartbeat interval)``."""
    try:
        beat = store.get_json(run_key(rec.id, HEARTBEAT))
        return float(beat["unix"]), float(beat.get("interval") or HEARTBEAT_INTERVAL)
    except (ObjectNotFound, ValueError, KeyError, TypeError):
        pass
    # no heartbeat: a run of an older version, or one killed before its first beat
    when = rec.resumed[-1] if rec.resumed else rec.started
    try:
        return datetime.fromisoformat(when).timestamp(), HEARTBEAT_INTERVAL
    except (TypeError, ValueError):
        return None, HEARTBEAT_INTERVAL


def shown_status(store: Store, rec: RunRecord, now: float | None = None) -> str:
    """The status to show: the recorded one, or ``lost`` for a running run whose heartbeat
    stopped longer ago than :func:`heartbeat_timeout`."""
    if rec.status != RUNNING:
        return rec.status
    last, interval = last_sign_of_life(store, rec)
    now = time.time() if now is None else now
    if last is not None and now - last > heartbeat_timeout(interval):
        return LOST
    return RUNNING


# --- metrics ---------------------------------------------------------------------------------

_PART = re.compile(r"^(?P<writer>.+)-(?P<first>\d{12})-(?P<last>\d{12})\.jsonl$")
_LEGACY_PART = re.compile(r"^\d+\.jsonl$")
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def metric_part_key(run_id: str, writer: str, first: int, last: int) -> str:
    """The part object holding records ``first..last`` of ``writer``: a retried write of the
    same batch lands on the same key."""
    return run_key(run_id, f"metrics/{writer}-{first:012d}-{last:012d}.jsonl")


def metric_parts(store: Store, run_id: str) -> list[str]:
    """The metric part keys of a run: the numbered parts of older BenchKit versions first,
    then per writer (writer ids start with their UTC start time) in seq order."""
    legacy, parts = [], []
    for key in store.list(run_key(run_id, "metrics/")):
        name = key.rsplit("/", 1)[1]
        if _LEGACY_PART.match(name):
            legacy.append((int(name.split(".")[0]), key))
        elif m := _PART.match(name):
            parts.append((m["writer"], int(m["first"]), key))
    return [k for _, k in sorted(legacy)] + [k for *_, k in sorted(parts)]


def read_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every logged event of a run (``{"step", "time", "values"}`` or ``{"time", "message"}``),
    each once and in the order it was logged: a record written twice (a retried or re-synced
    batch) is kept once, by ``(writer, seq)``."""
    events: list[dict[str, Any]] = []
    by_writer: dict[str, dict[int, dict[str, Any]]] = {}
    for key in metric_parts(store, run_id):
        m = _PART.match(key.rsplit("/", 1)[1])
        lines = [json.loads(line) for line in store.get(key).decode().splitlines() if line.strip()]
        if m is None:  # an older version's part: NaN and infinities were written as strings
            for ev in lines:
                values = ev.get("values") or {}
                for k, v in values.items():
                    if isinstance(v, str) and v in _NON_FINITE:
                        values[k] = _NON_FINITE[v]
            events.extend(lines)
        else:
            records = by_writer.setdefault(m["writer"], {})
            for ev in lines:
                records.setdefault(int(ev.get("seq", 0)), ev)
    for writer in sorted(by_writer):
        events.extend(ev for _, ev in sorted(by_writer[writer].items()))
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
