"""``BenchTracker``: an Accelerate tracker that records a run in the store and loses nothing.

The config goes into ``runs/<run-id>/run.json``; every logged value (with its step and wall
time) and every message goes first into the run's local journal
(:mod:`benchkit.training.journal`: append-only, CRC-framed, a ``seq`` per writer), then to the
store through a sink (:mod:`benchkit.training.sender`), which writes metric part objects
``runs/<run-id>/metrics/<writer>-<first seq>-<last seq>.jsonl``. A batch the store refuses is
kept and sent again; the run record says what could not be sent by the end and
``benchkit sync`` sends it later. ``BENCHKIT_MODE=offline`` journals only.

``log()`` only appends to a list under a lock, so the training loop never waits on the disk or
the store. Tensors are accepted: CPU scalars are read at once, accelerator tensors are
detached and copied (asynchronously) and read in the journal thread, so logging does not force
a device sync. Non-finite values are kept as floats.
"""

from __future__ import annotations

import atexit
import functools
import logging
import numbers
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from accelerate.tracking import GeneralTracker

from benchkit.console import print_hint
from benchkit.errors import BenchKitError, ConfigError, TrainError
from benchkit.store import Store, open_store
from benchkit.training import runs
from benchkit.training.journal import Journal
from benchkit.training.sender import Sender
from benchkit.training.sinks import sink_for

log = logging.getLogger(__name__)

_PLAIN = (float, int, bool, str, type(None))


def on_main_process(method: Callable) -> Callable:
    """Run ``method`` on the main process only (like accelerate's decorator, but the process
    check is done once per tracker, so ``log()`` stays cheap)."""

    @functools.wraps(method)
    def wrapper(self: BenchTracker, *args: Any, **kwargs: Any) -> Any:
        is_main = self._is_main
        if is_main is None:
            from accelerate import PartialState

            is_main = self._is_main = (not self.main_process_only) or PartialState().is_main_process
        if is_main:
            return method(self, *args, **kwargs)
        return None

    return wrapper


def _to_plain(value: Any) -> Any:
    """A JSON value from a logged value (deferred tensors must already be resolved); NaN and
    infinities stay floats (the journal and the metric parts keep them as such)."""
    if isinstance(value, _PLAIN):
        return value
    if hasattr(value, "item"):  # tensors, numpy scalars
        return _to_plain(value.item())
    if isinstance(value, numbers.Number):
        return float(value)
    return str(value)


def _config_value(value: Any) -> Any:
    """A config value as stored in ``run.json``: JSON containers and numbers as they are
    (NaN and infinities stay floats), tensors and numpy scalars as numbers, else a string."""
    if isinstance(value, (list, dict, *_PLAIN)):
        return value
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, numbers.Number):
        return float(value)
    return str(value)


def offline_mode() -> bool:
    """True when ``BENCHKIT_MODE=offline``: metrics are journaled only (send them later with
    ``benchkit sync``)."""
    mode = os.environ.get("BENCHKIT_MODE", "").strip().lower()
    if mode not in ("", "online", "offline"):
        raise ConfigError(f"BENCHKIT_MODE must be 'online' or 'offline', got {mode!r}")
    return mode == "offline"


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


class BenchTracker(GeneralTracker):
    """Records a run's config, metrics and messages in a BenchKit store, losing nothing.

    ``log()`` appends to an in-memory list (cheap, never touches disk or store). A journal
    thread moves the list into the run's local journal (:mod:`benchkit.training.journal`)
    every ``0.2`` s and fsyncs it every second; a sender thread ships unacknowledged records
    to the store every ``flush_interval`` seconds through a sink
    (:mod:`benchkit.training.sender`), keeping and retrying a batch the store refused. It also
    writes the run's heartbeat (``runs/<id>/heartbeat.json``) every ``heartbeat_interval``.
    ``finish()`` sends the rest, waiting at most ``drain_timeout`` seconds; what is still
    unsent stays in the journal, is noted in the run record (``unsent``) and is sent by
    ``benchkit sync``.

    Args:
        run_name: the run's human name (``runs list`` shows it).
        store: a store URL or :class:`~benchkit.store.Store`; default: the configured store.
        run_id: attach to this run (used by ``benchkit run``); default: a new run id.
        flush_interval: seconds between background sends.
        drain_timeout: seconds ``finish()`` waits for the store (default 60;
            ``BENCHKIT_DRAIN_TIMEOUT``).
        heartbeat_interval: seconds between heartbeats (default 30;
            ``BENCHKIT_HEARTBEAT_INTERVAL``).
    """

    name = "benchkit"
    requires_logging_directory = False
    main_process_only = True

    #: seconds between moves of the in-memory list into the journal
    journal_interval = 0.2
    #: seconds between fsyncs of the journal
    sync_interval = 1.0

    def __init__(
        self,
        run_name: str = "run",
        store: str | Store | None = None,
        run_id: str | None = None,
        flush_interval: float = 2.0,
        drain_timeout: float | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        super().__init__()
        self.run_name = run_name
        self._store_ref = store
        self._store: Store | None = None
        self.run_id = run_id or runs.new_run_id(run_name)
        self.flush_interval = flush_interval
        self.drain_timeout = (
            drain_timeout
            if drain_timeout is not None
            else _env_seconds("BENCHKIT_DRAIN_TIMEOUT", 60.0)
        )
        self.heartbeat_interval = (
            heartbeat_interval
            if heartbeat_interval is not None
            else _env_seconds("BENCHKIT_HEARTBEAT_INTERVAL", runs.HEARTBEAT_INTERVAL)
        )
        self.offline = offline_mode()
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()  # the in-memory list
        self._journal_lock = threading.Lock()  # appends to the journal
        self._stop = threading.Event()
        self._wake_sender = threading.Event()
        self._acked = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.journal: Journal | None = None
        self._sender: Sender | None = None
        self._started = False
        self._finished = False
        #: True when this tracker created the run record (then finish() closes it too)
        self._owns_record = False
        #: batches written to the store
        self.flush_count = 0
        #: the latest value of every metric journaled so far (``runs list`` shows them)
        self.last: dict[str, Any] = {}
        #: after finish(): what could not be sent ({"records", "journal", "store", ...}) or None
        self.unsent: dict[str, Any] | None = None
        self._is_main: bool | None = None

    # --- accelerate's tracker interface ----------------------------------------------------

    @property
    def tracker(self) -> BenchTracker:
        return self

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self._store_ref)
        return self._store

    @on_main_process
    def start(self) -> None:
        """Create the run record if there is none yet, open the journal, start the threads."""
        if self._started:
            return
        self._started = True
        store = self.store
        if not store.exists(runs.run_key(self.run_id)):
            rec = runs.RunRecord(id=self.run_id, name=self.run_name, host=socket.gethostname())
            runs.save_record(store, rec)
            self._owns_record = True
        self.journal = Journal.create(self.run_id, runs.new_writer_id(), store.url)
        self._sender = Sender(self.journal, sink_for(store))
        self._threads = [
            threading.Thread(target=self._journal_loop, name="benchkit-journal", daemon=True)
        ]
        if not self.offline:
            self._beat()
            self._threads.append(
                threading.Thread(target=self._send_loop, name="benchkit-sender", daemon=True)
            )
        for t in self._threads:
            t.start()
        _live.add(self)

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        """Record ``values`` as the run's config."""
        self.start()
        config = {k: _config_value(v) for k, v in values.items()}
        runs.update_record(self.store, self.run_id, lambda rec: rec.config.update(config))

    #: the name the BenchKit docs use for ``store_init_configuration``
    def store_config(self, values: dict) -> None:
        self.store_init_configuration(values)

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        """Record ``values`` (numbers, strings, or scalar tensors) at ``step``."""
        if not self._started:
            self.start()
        now = time.time()
        if all(type(v) in _PLAIN for v in values.values()):  # the common case: plain numbers
            with self._lock:
                self._buffer.append((step, now, dict(values)))
            return
        out = {}
        for k, v in values.items():
            if type(v) in _PLAIN:
                out[k] = v
            elif hasattr(v, "detach"):  # a tensor
                if v.numel() != 1:
                    raise TrainError(
                        f"logged value {k!r} is a tensor of shape {tuple(v.shape)}; log scalars "
                        "(e.g. loss.mean() or a float)"
                    )
                out[k] = v.item() if v.device.type == "cpu" else v.detach().clone()
            else:
                out[k] = v
        with self._lock:
            self._buffer.append((step, now, out))

    @on_main_process
    def message(self, text: str) -> None:
        """Record a text message with the current time."""
        if not self._started:
            self.start()
        with self._lock:
            self._buffer.append((None, time.time(), str(text)))

    @on_main_process
    def finish(self, status: str | None = None) -> None:
        """Journal everything, send what the store takes within ``drain_timeout``, stop;
        close the run record if this tracker created it."""
        if self._finished or not self._started:
            return
        self._finished = True
        self._stop.set()
        self._wake_sender.set()
        for t in self._threads:
            t.join()
        _live.discard(self)
        assert self.journal is not None and self._sender is not None
        try:
            self._journal_pending()
            self.journal.close()
        except OSError as e:
            log.error(
                "benchkit tracker: the journal of run %s in %s cannot be written (%s); %d "
                "event(s) logged last are lost", self.run_id, self.journal.dir, e, len(self._buffer),
            )  # fmt: skip
        target = self.journal.last_seq
        if not self.offline:
            self._sender.drain(time.monotonic() + self.drain_timeout, target)
        self._settle(target)
        if self._owns_record:

            def close(rec: runs.RunRecord) -> None:
                if rec.status == runs.RUNNING:
                    rec.status = status or runs.FINISHED
                    rec.ended = runs.utc_now()
                rec.last = {**rec.last, **self.last}
                rec.unsent = self.unsent

            runs.update_record(self.store, self.run_id, close)

    def _settle(self, target: int) -> None:
        """After the drain: drop a fully sent journal, or say what is left and how to send it."""
        assert self.journal is not None and self._sender is not None
        left = target - self.journal.acked()
        if left <= 0:
            self.journal.remove()
            return
        self.unsent = {
            "records": left,
            "journal": str(self.journal.dir),
            "host": socket.gethostname(),
            "store": self.store.url,
            "reason": "offline mode" if self.offline else self._sender.last_error,
            "command": f"benchkit sync {self.run_id}",
        }
        why = "BENCHKIT_MODE=offline" if self.offline else f"store {self.store.url} failed"
        print_hint(
            f"[yellow]{left} metric record(s) of run {self.run_id} are not in the store yet "
            f"({why}); they are kept in {self.journal.dir}. Send them with:[/yellow]",
            f"benchkit sync {self.run_id}",
        )

    # --- background work -------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Journal (and fsync) everything logged so far, then wait up to ``timeout`` seconds
        for the store to acknowledge it. True when the store has it all; never raises for
        the store's errors (what it refused is kept and retried)."""
        if not self._started or self.journal is None:
            return True
        try:
            target = self._journal_pending(sync=True)
        except OSError as e:  # the local disk: the events stay in memory, retried
            log.error("benchkit tracker: journaling run %s failed: %s", self.run_id, e)
            return False
        if self.offline or self._finished:
            return self.journal.acked() >= target
        deadline = time.monotonic() + timeout
        with self._acked:
            while self.journal.acked() < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake_sender.set()
                self._acked.wait(min(left, 0.1))
        return True

    def _journal_pending(self, sync: bool = False) -> int:
        """Move the in-memory list into the journal; returns the last seq journaled."""
        assert self.journal is not None
        with self._journal_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            try:
                return self._append(batch, sync)
            except OSError:
                with self._lock:  # kept for the next try: the local disk may recover
                    self._buffer[:0] = batch
                raise

    def _append(self, batch: list[tuple], sync: bool) -> int:
        assert self.journal is not None
        records = []
        for step, t, payload in batch:
            if isinstance(payload, str):
                records.append({"time": round(t, 6), "message": payload})
            else:
                values = {k: _to_plain(v) for k, v in payload.items()}
                self.last.update(values)
                records.append({"step": step, "time": round(t, 6), "values": values})
        last = self.journal.append(records)
        if sync:
            self.journal.sync()
        return last

    def _journal_loop(self) -> None:
        next_sync = 0.0
        while not self._stop.wait(self.journal_interval):
            try:
                now = time.monotonic()
                self._journal_pending(sync=now >= next_sync)
                if now >= next_sync:
                    next_sync = now + self.sync_interval
            except Exception:  # noqa: BLE001 - keep journaling; finish() tries once more
                log.exception("benchkit tracker: journaling metrics of run %s failed", self.run_id)

    def _send_loop(self) -> None:
        assert self._sender is not None
        next_beat = time.monotonic() + self.heartbeat_interval
        while True:
            # a failed batch is retried when its backoff ends, not a whole interval later
            wait = min(self.flush_interval, max(0.0, self._sender.retry_at - time.monotonic()))
            self._wake_sender.wait(wait or self.flush_interval)
            self._wake_sender.clear()
            if self._stop.is_set():
                return
            while self._sender.step():  # every batch that is due
                self.flush_count += 1
                with self._acked:
                    self._acked.notify_all()
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + self.heartbeat_interval

    def _beat(self) -> None:
        try:
            runs.write_heartbeat(self.store, self.run_id, self.heartbeat_interval)
        except BenchKitError as e:
            log.warning("benchkit tracker: heartbeat of run %s failed: %s", self.run_id, e)


class BenchAccelerateTracker(BenchTracker):
    """The original's tracker: ``BenchAccelerateTracker(run_name, epochs)``.

    Use it as ``acc = get_accelerator(log_with=tracker)``, then
    ``acc.init_trackers(project, config=...)`` and ``acc.log({...})``.
    """

    def __init__(
        self,
        run_name: str,
        epochs: int | None = None,
        store: str | Store | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(run_name, store=store, run_id=run_id or os.environ.get("BENCHKIT_RUN_ID"))
        self.epochs = epochs

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        values = dict(values)
        if self.epochs is not None:
            values.setdefault("epochs", self.epochs)
        super().store_init_configuration(values)


# flush trackers a script forgot to finish (the original's scripts never called end_training)
_live: weakref.WeakSet[BenchTracker] = weakref.WeakSet()


@atexit.register
def _flush_live() -> None:
    for tracker in list(_live):
        try:
            tracker.finish()
        except Exception:
            log.exception("benchkit tracker: final flush of run %s failed", tracker.run_id)
