"""``BenchTracker``: an Accelerate tracker that records a run in the store.

It records the config (in ``runs/<run-id>/run.json``), every logged value with its step and wall
time, and messages (in ``runs/<run-id>/metrics/NNNNNN.jsonl``). ``log()`` only appends to a list
under a lock; a background thread turns the buffer into a new part object every
``flush_interval`` seconds, and ``finish()`` (``accelerator.end_training()``) writes the rest, so
the training loop never waits on the store.

Tensors are accepted: CPU scalars are read at once, accelerator tensors are detached and copied
(asynchronously) and read in the background thread, so logging does not force a device sync.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import numbers
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from accelerate.tracking import GeneralTracker

from benchkit.errors import TrainError
from benchkit.store import Store, open_store
from benchkit.training import runs

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
    """A JSON value from a logged value (deferred tensors must already be resolved)."""
    if isinstance(value, _PLAIN):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            return "NaN"
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if hasattr(value, "item"):  # tensors, numpy scalars
        return _to_plain(value.item())
    if isinstance(value, numbers.Number):
        return float(value)
    return str(value)


class BenchTracker(GeneralTracker):
    """Records a run's config, metrics and messages in a BenchKit store.

    Args:
        run_name: the run's human name (``runs list`` shows it).
        store: a store URL or :class:`~benchkit.store.Store`; default: the configured store.
        run_id: attach to this run (used by ``benchkit run``); default: a new run id.
        flush_interval: seconds between background flushes of the buffer.
    """

    name = "benchkit"
    requires_logging_directory = False
    main_process_only = True

    def __init__(
        self,
        run_name: str = "run",
        store: str | Store | None = None,
        run_id: str | None = None,
        flush_interval: float = 2.0,
    ) -> None:
        super().__init__()
        self.run_name = run_name
        self._store_ref = store
        self._store: Store | None = None
        self.run_id = run_id or runs.new_run_id(run_name)
        self.flush_interval = flush_interval
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._part = 0
        self._started = False
        self._finished = False
        #: True when this tracker created the run record (then finish() closes it too)
        self._owns_record = False
        self.flush_count = 0
        #: the latest value of every metric written so far (``runs list`` shows them)
        self.last: dict[str, Any] = {}
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
        """Create the run record if there is none yet, and start the flushing thread."""
        if self._started:
            return
        self._started = True
        store = self.store
        if not store.exists(runs.run_key(self.run_id)):
            rec = runs.RunRecord(id=self.run_id, name=self.run_name, host=socket.gethostname())
            runs.save_record(store, rec)
            self._owns_record = True
        self._part = runs.next_part_number(store, self.run_id) - 1
        self._thread = threading.Thread(
            target=self._flush_loop, name="benchkit-tracker", daemon=True
        )
        self._thread.start()
        _live.add(self)

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        """Record ``values`` as the run's config."""
        self.start()
        rec = runs.load_record(self.store, self.run_id)
        rec.config.update(
            {k: _to_plain(v) if not isinstance(v, (list, dict)) else v for k, v in values.items()}
        )
        runs.save_record(self.store, rec)

    #: the name the BenchKit docs use for ``store_init_configuration``
    def store_config(self, values: dict) -> None:
        self.store_init_configuration(values)

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        """Buffer ``values`` (numbers, strings, or scalar tensors) at ``step``."""
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
        """Flush everything and stop; close the run record if this tracker created it."""
        if self._finished or not self._started:
            return
        self._finished = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        _live.discard(self)
        if self._owns_record:
            rec = runs.load_record(self.store, self.run_id)
            if rec.status == runs.RUNNING:
                rec.status = status or runs.FINISHED
                rec.ended = runs.utc_now()
            rec.last = {**rec.last, **self.last}
            runs.save_record(self.store, rec)

    # --- buffering -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the buffered events as one new part object (nothing when the buffer is empty)."""
        with self._write_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return
            lines = []
            for step, t, payload in batch:
                if isinstance(payload, str):
                    lines.append(json.dumps({"time": round(t, 6), "message": payload}))
                else:
                    values = {k: _to_plain(v) for k, v in payload.items()}
                    self.last.update(values)
                    lines.append(json.dumps({"step": step, "time": round(t, 6), "values": values}))
            self._part += 1
            key = runs.run_key(self.run_id, f"metrics/{self._part:06d}.jsonl")
            self.store.put(key, ("\n".join(lines) + "\n").encode())
            self.flush_count += 1

    def _flush_loop(self) -> None:
        while not self._finished:
            self._wake.wait(self.flush_interval)
            if self._finished:
                return
            try:
                self.flush()
            except Exception:  # the next flush or finish() retries with the same buffer lost
                log.exception("benchkit tracker: writing metrics of run %s failed", self.run_id)


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
        import os

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
