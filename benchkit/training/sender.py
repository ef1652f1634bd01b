"""Shipping journaled metric records to a *sink*, with retries, for the live run and for
``benchkit sync``.

A :class:`Sink` receives a :class:`Batch`: consecutive records ``first_seq..last_seq`` of one
writer of one run, as their JSON payloads. The contract every sink keeps:

- ``send(batch)`` returns the highest seq the sink now holds *contiguously* for that writer
  (normally ``batch.last_seq``), or raises. Any exception other than :class:`SinkRejected` is
  treated as transient: the same batch (same boundaries, same bytes) is sent again after a
  capped, jittered backoff, for as long as the process lives or until the drain deadline.
- Sending a batch twice, or two overlapping batches (a live run and ``benchkit sync`` racing,
  or a crash between a write and its acknowledgement), stores each record once: the sink or
  its readers de-duplicate by ``(writer, seq)``.
- :class:`SinkRejected` means the sink will never take this batch (a server answering
  400/401/403/404/422): sending stops and the records stay in the journal for ``benchkit sync``.
- If ``send`` returns less than ``first_seq - 1`` (a server that lost records), the sender
  rewinds and resends from there; it returns more only if it already held later records.

:class:`StoreSink` is the sink for ordinary stores: one metric part object per batch,
``runs/<run>/metrics/<writer>-<first>-<last>.jsonl``, so a retried batch rewrites the same key
with the same bytes. A Bench server sink (issue 13) posts the batch with its writer id and
seq range to the server's ingest API and returns the server's ``acked_through``
(:mod:`benchkit.training.server_sink`); :func:`benchkit.training.sinks.sink_for` picks the
sink of a store.

:func:`send_pending` is the one loop both users share: under the journal's lock it reads the
acknowledged cursor, sends the next batch, and moves the cursor. The live tracker calls it from
its background thread; ``benchkit sync`` calls it until the journal is empty.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

from benchkit.fsutil import exclusive_lock
from benchkit.store import Store
from benchkit.training import runs
from benchkit.training.journal import Journal

log = logging.getLogger(__name__)

#: A batch carries at most this many records, and about this many bytes, unless the sink says
#: otherwise (``max_records`` / ``max_bytes`` attributes; a server wants small batches, a
#: store few objects).
MAX_RECORDS = 5000
MAX_BYTES = 1024 * 1024
#: Backoff between failed sends: full jitter over min(cap, base * 2**attempt) seconds.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 5.0


@dataclass(frozen=True)
class Batch:
    """Consecutive records of one writer of one run."""

    run_id: str
    writer: str
    first_seq: int
    last_seq: int
    #: JSON payloads in seq order (each carries its ``seq``)
    records: tuple[bytes, ...]


class SinkRejected(Exception):
    """The sink refuses this batch for good; the records stay in the journal."""


class Sink(Protocol):
    """Where journaled records go (see the module docstring for the contract)."""

    def send(self, batch: Batch) -> int: ...

    def describe(self) -> str: ...


class StoreSink:
    """Metric part objects in a store, keyed by writer and seq range (idempotent)."""

    #: every part is one object write (and an fsync on a directory store): few, large ones
    max_records = 100_000
    max_bytes = 16 * 1024 * 1024

    def __init__(self, store: Store) -> None:
        self.store = store

    def send(self, batch: Batch) -> int:
        key = runs.metric_part_key(batch.run_id, batch.writer, batch.first_seq, batch.last_seq)
        self.store.put(key, b"\n".join(batch.records) + b"\n")
        return batch.last_seq

    def describe(self) -> str:
        return f"store {self.store.url}"


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): capped, full jitter."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class Sender:
    """Sends one journal's unacknowledged records to a sink, one batch per :meth:`step`.

    Keeps a failed batch and sends exactly it again (same key, same bytes) on the next step,
    so retries are idempotent. Not thread-safe: one thread steps it.
    """

    def __init__(self, journal: Journal, sink: Sink) -> None:
        self.journal = journal
        self.sink = sink
        self._batch: Batch | None = None
        self.failures = 0
        self.rejected: str | None = None
        self.last_error: str | None = None
        self.retry_at = 0.0

    def step(self) -> bool:
        """Send the next batch if one is due; True when something was acknowledged. Never
        raises for the sink's errors (they are counted and retried)."""
        if self.rejected is not None or time.monotonic() < self.retry_at:
            return False
        with exclusive_lock(self.journal.lock_path, what=f"the journal {self.journal.dir}"):
            acked = self.journal.acked()
            batch = self._batch
            if batch is None or batch.last_seq <= acked:
                batch = self._next(acked)
            if batch is None:
                return False
            try:
                through = self.sink.send(batch)
            except SinkRejected as e:
                self.rejected = self.last_error = str(e)
                log.error("%s refused metric records: %s", self.sink.describe(), e)
                return False
            except Exception as e:  # noqa: BLE001 - every other failure is retried
                self._batch = batch
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                wait = max(backoff(self.failures), getattr(e, "retry_after", 0.0))  # Retry-After
                self.retry_at = time.monotonic() + wait
                log.warning(
                    "writing metrics of run %s to %s failed (attempt %d; kept and retried): %s",
                    batch.run_id, self.sink.describe(), self.failures, self.last_error,
                )  # fmt: skip
                return False
            self._batch = None
            self.failures = 0
            self.last_error = None
            self.journal.ack(through)  # below first_seq - 1: the sink asks to rewind
            return True

    def _next(self, acked: int) -> Batch | None:
        records = self.journal.read(
            acked,
            getattr(self.sink, "max_records", MAX_RECORDS),
            getattr(self.sink, "max_bytes", MAX_BYTES),
        )
        if not records:
            return None
        return Batch(
            self.journal.run_id,
            self.journal.writer,
            records[0].seq,
            records[-1].seq,
            tuple(r.payload for r in records),
        )

    def drain(self, deadline: float, target: int) -> bool:
        """Send until every seq up to ``target`` is acknowledged or ``deadline``
        (``time.monotonic()``) passes; True when all of them are."""
        while self.journal.acked() < target:
            if self.rejected is not None:
                return False
            if self.step():
                continue
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(max(self.retry_at - now, 0.01), deadline - now))
        return True


def send_pending(journal: Journal, sink: Sink, timeout: float) -> tuple[int, int]:
    """Send everything ``journal`` holds beyond its cursor (``benchkit sync``); returns
    ``(records sent, records left)``."""
    before = journal.acked()
    target = journal.last_written()
    sender = Sender(journal, sink)
    sender.drain(time.monotonic() + timeout, target)
    after = journal.acked()
    left = max(0, target - after)
    if left and sender.last_error:
        log.warning("run %s: %d records left: %s", journal.run_id, left, sender.last_error)
    return max(0, after - before), left
