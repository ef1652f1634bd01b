"""A run's metric journal: every logged event, on local disk, before it goes anywhere else.

Layout (under ``<data dir>/journal/<run-id>/<writer>/``)::

    meta.json                 run id, writer id, store URL, host, pid, created
    acked                     the highest seq a sink has acknowledged (text; absent: 0)
    lock                      held while a batch is sent (the live run and `benchkit sync`)
    000000000001.seg          records seq 1.. (a new segment every SEGMENT_BYTES)
    000000052311.seg          ...

One **writer** is one tracker in one process (a resumed run gets a new writer), so a writer's
journal is appended by one thread only. Each record is framed as ``<u32 length><u32 crc32>
<payload>`` with a JSON payload carrying a ``seq`` that counts 1, 2, 3, ... per writer. A
reader stops at the first frame that is incomplete or fails its CRC (a process killed while
appending leaves such a torn tail); nothing after it was ever acknowledged, because records are
sent only once they are in the journal. Segments whose records are all acknowledged are
deleted, so the journal of a long run stays small while the store is reachable.

Costs: appending is a buffered ``write`` of the frame; :meth:`Journal.sync` (``fsync``) is
called by the tracker's background thread about once a second and before a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from benchkit.fsutil import atomic_file, fsync_dir
from benchkit.settings import get_paths

log = logging.getLogger(__name__)

FRAME = struct.Struct("<II")
#: A new segment file starts once the current one is this large.
SEGMENT_BYTES = 16 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
#: Unacknowledged records an appending process also keeps in memory, at most.
MEMORY_BYTES = 64 * 1024 * 1024
#: Refuse frames claiming more than this (a damaged length field).
MAX_RECORD = 16 * 1024 * 1024


def journal_root() -> Path:
    """Where journals live: ``<data dir>/journal``."""
    return get_paths().data / "journal"


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)


def encode(record: dict[str, Any]) -> bytes:
    """One record as JSON (NaN and infinities kept as such: Python's JSON reads them back)."""
    return _ENCODER.encode(record).encode()


def frame(payload: bytes, _pack: Any = FRAME.pack, _crc: Any = zlib.crc32) -> bytes:
    return _pack(len(payload), _crc(payload)) + payload


def read_frames(path: Path, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset after the frame, payload)`` for every whole, valid frame from ``offset``; stops
    at a torn or corrupt tail."""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            head = f.read(FRAME.size)
            if len(head) < FRAME.size:
                return
            n, crc = FRAME.unpack(head)
            if n > MAX_RECORD:
                log.warning("journal %s: damaged frame at byte %d; ignoring the rest", path, offset)
                return
            payload = f.read(n)
            if len(payload) < n:  # the writer was killed while appending
                log.debug("journal %s: torn tail at byte %d ignored", path, offset)
                return
            if zlib.crc32(payload) != crc:
                log.warning("journal %s: bad CRC at byte %d; ignoring the rest", path, offset)
                return
            offset += FRAME.size + n
            yield offset, payload


@dataclass(frozen=True)
class Record:
    """One journaled event: its seq and its JSON payload."""

    seq: int
    payload: bytes


class Journal:
    """One writer's journal directory (see the module docstring).

    Open with :meth:`create` (a new writer, for appending) or :meth:`open` (an existing one,
    for reading and acknowledging, e.g. by ``benchkit sync``).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.meta: dict[str, Any] = {}
        self._out: BinaryIO | None = None
        self._out_bytes = 0
        self._next_seq = 1
        #: (segment's first seq, byte offset, seq of the record that ends there) of the last read
        self._read_hint: tuple[int, int, int] = (0, 0, 0)
        #: the appending process's unacknowledged records, also kept in memory (while they fit
        #: in MEMORY_BYTES) so sending them does not read the journal back
        self._mem: list[bytes] = []
        self._mem_first = 1
        self._mem_bytes = 0
        self._mem_lock = threading.Lock()

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, run_id: str, writer: str, store_url: str, root: Path | None = None) -> Journal:
        """A new, empty journal for ``writer`` of ``run_id`` whose records go to ``store_url``."""
        j = cls((root or journal_root()) / run_id / writer)
        j.dir.mkdir(parents=True, exist_ok=True)
        j.meta = {
            "run_id": run_id,
            "writer": writer,
            "store": store_url,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        with atomic_file(j.dir / "meta.json") as f:
            f.write(json.dumps(j.meta, indent=1, sort_keys=True).encode())
        return j

    @classmethod
    def open(cls, directory: Path) -> Journal:
        """An existing journal (``directory`` holds its ``meta.json``)."""
        j = cls(directory)
        j.meta = json.loads((j.dir / "meta.json").read_text())
        return j

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def writer(self) -> str:
        return str(self.meta["writer"])

    @property
    def store_url(self) -> str:
        return str(self.meta["store"])

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    # --- appending (one thread of the writer's process) ------------------------------------

    def append(self, records: list[dict[str, Any]]) -> int:
        """Give each record the next seq and append it; returns the last seq (0 if none yet).
        The bytes reach the OS (readers in other processes see them) but are not fsynced.
        On a write error (disk full) nothing of the batch counts: the seqs are given again
        by the next append, into a new segment that hides what the failed write left."""
        payloads: list[bytes] = []
        batch_first = self._next_seq
        pending: list[bytes] = []
        try:
            for rec in records:
                if self._out is None or self._out_bytes >= SEGMENT_BYTES:
                    self._write(pending)
                    self._roll()
                rec["seq"] = self._next_seq
                payload = encode(rec)
                data = frame(payload)
                pending.append(data)
                self._out_bytes += len(data)
                self._next_seq += 1
                payloads.append(payload)
            self._write(pending)
        except OSError:
            self._next_seq = batch_first
            if self._out is not None:
                with contextlib.suppress(OSError):
                    self._out.close()
                self._out = None
            raise
        with self._mem_lock:
            if not self._mem:
                self._mem_first = batch_first
            if self._mem_bytes < MEMORY_BYTES and self._mem_first + len(self._mem) == batch_first:
                self._mem.extend(payloads)
                self._mem_bytes += sum(map(len, payloads))
        return self._next_seq - 1

    def _write(self, frames: list[bytes]) -> None:
        if frames and self._out is not None:
            self._out.write(b"".join(frames))
            self._out.flush()
            frames.clear()

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def _roll(self) -> None:
        if self._out is not None:
            self.sync()
            self._out.close()
        path = self.dir / f"{self._next_seq:012d}{SEGMENT_SUFFIX}"
        self._out = open(path, "ab")  # noqa: SIM115 - kept open while the writer lives
        self._out_bytes = 0
        fsync_dir(self.dir)

    def sync(self) -> None:
        """Make everything appended so far durable (``fsync``)."""
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())

    def close(self) -> None:
        if self._out is not None:
            self.sync()
            self._out.close()
            self._out = None

    # --- reading and acknowledging ---------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """``(first seq, path)`` of every segment, in order."""
        out = []
        for p in self.dir.glob(f"*{SEGMENT_SUFFIX}"):
            try:
                out.append((int(p.name.removesuffix(SEGMENT_SUFFIX)), p))
            except ValueError:
                continue
        return sorted(out)

    def read(self, after: int, max_records: int, max_bytes: int) -> list[Record]:
        """Up to ``max_records`` records (and about ``max_bytes``) with seq > ``after``.
        Sequential reads continue from where the last one stopped (no rescan)."""
        from_memory = self._read_memory(after, max_records, max_bytes)
        if from_memory is not None:
            return from_memory
        out: list[Record] = []
        size = 0
        segs = self.segments()
        for i, (first, path) in enumerate(segs):
            if i + 1 < len(segs) and segs[i + 1][0] <= after + 1:
                continue  # every record of this segment is at or below `after`
            seq, offset = first - 1, 0
            hint_first, hint_offset, hint_seq = self._read_hint
            if hint_first == first and hint_seq <= after:
                seq, offset = hint_seq, hint_offset  # resume the scan where it stopped
            # frames past the next segment's first seq were left by a failed write
            limit = segs[i + 1][0] - 1 if i + 1 < len(segs) else None
            for end, payload in read_frames(path, offset):
                seq += 1
                if limit is not None and seq > limit:
                    break
                if seq <= after:
                    self._read_hint = (first, end, seq)
                    continue
                out.append(Record(seq, payload))
                size += len(payload)
                self._read_hint = (first, end, seq)
                if len(out) >= max_records or size >= max_bytes:
                    return out
        return out

    def _read_memory(self, after: int, max_records: int, max_bytes: int) -> list[Record] | None:
        with self._mem_lock:
            start = after + 1 - self._mem_first
            if not self._mem or start < 0 or self._mem_bytes >= MEMORY_BYTES:
                return None  # not (all) in memory: read the journal
            out, size = [], 0
            for i in range(start, min(len(self._mem), start + max_records)):
                out.append(Record(self._mem_first + i, self._mem[i]))
                size += len(self._mem[i])
                if size >= max_bytes:
                    break
            return out

    def _forget(self, seq: int) -> None:
        """Drop acknowledged records from memory; start over once memory overflowed."""
        with self._mem_lock:
            if self._mem_bytes >= MEMORY_BYTES:  # overflowed: the journal serves until empty
                self._mem, self._mem_bytes, self._mem_first = [], 0, seq + 1
                return
            n = max(0, min(len(self._mem), seq + 1 - self._mem_first))
            if n:
                self._mem_bytes -= sum(map(len, self._mem[:n]))
                del self._mem[:n]
                self._mem_first += n

    def last_written(self) -> int:
        """The highest seq on disk (reads the last segment)."""
        segs = self.segments()
        if not segs:
            return 0
        first, path = segs[-1]
        return first - 1 + sum(1 for _ in read_frames(path))

    def acked(self) -> int:
        """The highest seq acknowledged by a sink (0 when none)."""
        try:
            return int((self.dir / "acked").read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def ack(self, seq: int) -> None:
        """Record that every seq up to ``seq`` is acknowledged; delete segments wholly below it."""
        # not fsynced: a cursor lost in a crash only makes a batch be sent again (idempotent)
        tmp = self.dir / f".acked.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(f"{seq}\n")
        os.replace(tmp, self.dir / "acked")
        self._forget(seq)
        segs = self.segments()
        for i, (_, path) in enumerate(segs[:-1]):
            if segs[i + 1][0] - 1 <= seq:
                path.unlink(missing_ok=True)

    def unsent(self) -> int:
        """How many records are on disk and not acknowledged."""
        return max(0, self.last_written() - self.acked())

    def remove(self) -> None:
        """Delete this journal (everything in it is acknowledged)."""
        self.close()
        for p in self.dir.iterdir():
            p.unlink(missing_ok=True)
        self.dir.rmdir()
        with contextlib.suppress(OSError):  # the run's directory, when this was its last writer
            self.dir.parent.rmdir()


def pending_record_path(run_id: str, root: Path | None = None) -> Path:
    return (root or journal_root()) / run_id / "record.json"


def save_pending_record(
    run_id: str, store_url: str, final: dict[str, Any], root: Path | None = None
) -> Path:
    """Keep the final state of a run whose record the store refused (``benchkit sync``
    writes it)."""
    path = pending_record_path(run_id, root)
    with atomic_file(path) as f:
        f.write(json.dumps({"store": store_url, "final": final}, indent=1).encode())
    return path


def apply_final(rec: Any, final: dict[str, Any]) -> None:
    """Give a run record its final state (status, end, traceback, last values, unsent)."""
    rec.status = final["status"]
    rec.ended = final["ended"]
    rec.traceback = final.get("traceback")
    rec.last = {**rec.last, **(final.get("last") or {})}
    rec.unsent = final.get("unsent")


def find_journals(run_id: str | None = None, root: Path | None = None) -> list[Journal]:
    """Every writer journal (of ``run_id``, or of every run), oldest run and writer first."""
    base = root or journal_root()
    runs = [base / run_id] if run_id else sorted(p for p in base.glob("*") if p.is_dir())
    out = []
    for run_dir in runs:
        for d in sorted(run_dir.glob("*")):
            if (d / "meta.json").is_file():
                try:
                    out.append(Journal.open(d))
                except (OSError, ValueError) as e:
                    log.warning("journal %s is unreadable (%s); skipping it", d, e)
    return out
