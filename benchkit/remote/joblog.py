"""A job's truth in the store, under ``jobs/<job-id>/``, written by the shim inside the job.

``log/<seq>-<start>.log``
    The job's output (stdout and stderr together) in numbered, immutable segments. ``seq``
    counts segments from 1 (6 digits), ``start`` is the byte offset of the segment's first byte
    in the whole log (12 digits), so a reader finds any offset from a listing alone. A shim
    started again for the same job (an attempt after a lost one) continues the numbering.
``heartbeat.json``
    Rewritten every few seconds while the shim lives: time, host, pids, bytes written, the time
    of the last output. A stale heartbeat with no ``exit.json`` is how a lost job is detected.
``exit.json``
    Written once, atomically, when the job's command has ended: exit code, the signal that
    ended it, whether a stop was requested, times. It beats anything an engine reports.

Every write is an atomic store put, so a reader never sees half a segment or half a record;
readers treat a missing object as "not yet".
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchkit.errors import ObjectNotFound
from benchkit.store import Store

PREFIX = "jobs/"
_SEGMENT = re.compile(r"^(\d{6,})-(\d{12,})\.log$")
#: What one call to :func:`read_log` returns at most.
READ_LIMIT = 1024 * 1024


def job_key(job_id: str, rest: str) -> str:
    return f"{PREFIX}{job_id}/{rest}"


def segment_key(job_id: str, seq: int, start: int) -> str:
    return job_key(job_id, f"log/{seq:06d}-{start:012d}.log")


@dataclass(frozen=True)
class Segment:
    """One stored piece of a job's log."""

    key: str
    seq: int
    start: int


def list_segments(store: Store, job_id: str) -> list[Segment]:
    """The job's log segments in order (by sequence number)."""
    found = []
    for key in store.list(job_key(job_id, "log/")):
        m = _SEGMENT.match(key.rsplit("/", 1)[-1])
        if m:
            found.append(Segment(key, int(m.group(1)), int(m.group(2))))
    return sorted(found, key=lambda s: s.seq)


def log_end(store: Store, job_id: str, segments: list[Segment] | None = None) -> tuple[int, int]:
    """(next sequence number, bytes in the log so far): where a new writer continues."""
    segments = list_segments(store, job_id) if segments is None else segments
    if not segments:
        return 1, 0
    last = segments[-1]
    return last.seq + 1, last.start + store.stat(last.key).size


def read_log(
    store: Store, job_id: str, offset: int = 0, limit: int = READ_LIMIT
) -> tuple[bytes, int]:
    """The log's bytes from ``offset`` (at most ``limit`` of them) and the offset after them.

    Reading again from the returned offset gives what was written since, so a follower polls
    with it; nothing is skipped or repeated.
    """
    segments = list_segments(store, job_id)
    out = bytearray()
    pos = offset
    for i, seg in enumerate(segments):
        end = segments[i + 1].start if i + 1 < len(segments) else None
        if end is not None and end <= pos:
            continue
        if seg.start > pos:  # a hole (a segment that could not be written): skip to what exists
            pos = seg.start
        want = limit - len(out)
        if want <= 0:
            break
        lo = pos - seg.start
        hi = lo + want if end is None else min(end - seg.start, lo + want)
        try:
            data = store.get_range(seg.key, lo, hi)
        except ObjectNotFound:
            break
        out += data
        pos += len(data)
        if end is not None and pos < end:
            if len(out) >= limit:
                break  # the limit stopped us inside this segment
            pos = end  # shorter than its successor's start says: never stall on the gap
    return bytes(out), pos


# --- heartbeat and exit ----------------------------------------------------------------------


@dataclass
class Heartbeat:
    """What ``heartbeat.json`` holds."""

    time: float
    host: str
    pid: int
    child_pid: int | None = None
    child_pgid: int | None = None
    started: float = 0.0
    bytes: int = 0
    segments: int = 0
    last_output: float = 0.0
    attempt: int = 1

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.time


@dataclass
class ExitRecord:
    """What ``exit.json`` holds: how the job's command ended."""

    exit_code: int
    started: float
    ended: float
    host: str
    #: the signal that ended the command (``SIGKILL``...), None when it exited by itself
    signal: str | None = None
    #: the shim was asked to stop the job (SIGINT/SIGTERM reached it)
    stop_requested: bool = False
    #: the grace period ran out and the job's processes were killed
    killed: bool = False
    bytes: int = 0
    segments: int = 0
    #: log bytes that could not be written to the store (kept in ``unsent_path``)
    unsent_bytes: int = 0
    unsent_path: str | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def _load(store: Store, key: str, cls: type) -> Any:
    try:
        data = store.get_json(key)
    except (ObjectNotFound, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
    try:
        return cls(**known)
    except TypeError:
        return None


def write_heartbeat(store: Store, job_id: str, beat: Heartbeat) -> None:
    store.put_json(job_key(job_id, "heartbeat.json"), asdict(beat))


def read_heartbeat(store: Store, job_id: str) -> Heartbeat | None:
    """The job's last heartbeat, or None when there is none (or it cannot be read)."""
    return _load(store, job_key(job_id, "heartbeat.json"), Heartbeat)


def write_exit(store: Store, job_id: str, record: ExitRecord) -> None:
    store.put_json(job_key(job_id, "exit.json"), asdict(record))


def read_exit(store: Store, job_id: str) -> ExitRecord | None:
    """How the job ended, or None while it has not (or no shim ever ran it)."""
    return _load(store, job_key(job_id, "exit.json"), ExitRecord)


def clear_exit(store: Store, job_id: str) -> None:
    """Forget the outcome of an earlier attempt (a new attempt of the job is starting)."""
    store.delete(job_key(job_id, "exit.json"))


def delete_job(store: Store, job_id: str) -> int:
    """Delete everything stored for a job (log, heartbeat, exit); returns the objects removed."""
    return store.delete_prefix(f"{PREFIX}{job_id}/")
