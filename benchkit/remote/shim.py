"""``benchkit job-shim``: the small supervisor inside every job, whatever started it.

It runs the job's command in a process group of its own and, while it runs:

- copies its output (stdout and stderr together) to the store as numbered log segments
  (:mod:`benchkit.remote.joblog`), written every ``flush_s`` seconds or ``flush_bytes``
  bytes, and on exit; a segment the store refuses is kept and retried (a later try of the
  same segment replaces it whole), so output is never dropped; it is also copied to the
  shim's own stdout, where the engine's log finds it;
- writes a heartbeat every ``heartbeat_s`` seconds;
- on SIGINT or SIGTERM sends SIGINT to the command's process group (so the run can checkpoint
  and record itself interrupted), then SIGKILL to the group after ``grace_s`` seconds;
- when the command has ended: kills what is left of its process group, reaps every child
  (it is a child subreaper, so orphaned grandchildren come back to it), writes the last log
  segment and then ``exit.json``, atomically, and exits with the command's status.

The shim is what makes a job's log and outcome outlive its engine: an engine that restarts,
loses its records or cannot be reached does not change what the store says happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.remote import joblog
from benchkit.remote.procs import signal_group
from benchkit.store import Store

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
#: Log bytes held in memory while the store refuses writes; beyond it they go to a local file.
MAX_PENDING = 64 * 1024 * 1024
#: How long the end of a job keeps retrying its last writes to the store.
FINAL_WRITE_S = 60.0


@dataclass
class ShimOptions:
    """How often the shim writes, and how long a stopped job gets to end by itself."""

    flush_s: float = 5.0
    flush_bytes: int = 64 * 1024
    heartbeat_s: float = 15.0
    grace_s: float = 30.0
    #: copy the output to this process's stdout too (the engine's log)
    tee: bool = True
    #: directories deleted once the command has ended (its code checkout)
    remove: list[Path] = field(default_factory=list)
    #: where log bytes the store would not take are kept (default: the working directory)
    unsent_dir: Path | None = None
    cwd: Path | None = None
    #: the shim is a process of its own (``benchkit job-shim``): become a child subreaper and
    #: reap every child at the end. Off when the shim runs inside another program (tests).
    own_process: bool = False
    #: where the command's pid, process group and start time are written once it has started,
    #: so that whoever started the shim can stop the job's processes even if the shim dies
    pid_file: Path | None = None


class LogWriter:
    """Buffers output and writes it as log segments; a failed write is retried, never dropped."""

    def __init__(self, store: Store, job_id: str, unsent_dir: Path) -> None:
        self.store = store
        self.job_id = job_id
        self.seq, self.offset = joblog.log_end(store, job_id)
        self.segments = self.seq - 1
        self._pending = bytearray()
        self._since: float | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._failures = 0
        self._next_try = 0.0
        self.unsent_path = unsent_dir / f"{job_id}.unsent.log"
        self.unsent_bytes = 0
        self.last_output = 0.0

    def append(self, data: bytes) -> None:
        with self._lock:
            if not self._pending:
                self._since = time.monotonic()
            self._pending += data
            self.last_output = time.time()
            if len(self._pending) > MAX_PENDING:  # the store has refused writes for a long time
                self._spill(len(self._pending) - MAX_PENDING)

    def _spill(self, n: int) -> None:
        with open(self.unsent_path, "ab") as f:
            f.write(self._pending[:n])
        del self._pending[:n]
        self.unsent_bytes += n
        log.error("job %s: %d log bytes kept in %s (the store refuses writes)",
                  self.job_id, n, self.unsent_path)  # fmt: skip

    def due(self, opts: ShimOptions) -> bool:
        with self._lock:
            if not self._pending or time.monotonic() < self._next_try:
                return False
            return (
                len(self._pending) >= opts.flush_bytes
                or time.monotonic() - (self._since or 0) >= opts.flush_s
            )

    def flush(self) -> bool:
        """Write what is buffered as the next segment; False when the store refused it."""
        with self._flush_lock:
            with self._lock:
                data = bytes(self._pending)
            if not data:
                return True
            try:
                self.store.put(joblog.segment_key(self.job_id, self.seq, self.offset), data)
            except Exception as e:  # any backend's failure: keep the bytes, try again later
                self._failures += 1
                self._next_try = time.monotonic() + min(30.0, 0.5 * 2**self._failures)
                log.warning("job %s: writing log segment %d failed (%s); will retry",
                            self.job_id, self.seq, e)  # fmt: skip
                return False
            with self._lock:
                del self._pending[: len(data)]
                self._since = time.monotonic() if self._pending else None
            self.seq += 1
            self.segments += 1
            self.offset += len(data)
            self._failures = 0
            self._next_try = 0.0
            return True

    def close(self, deadline: float) -> None:
        """Write everything left, retrying until ``deadline``; what still fails is spilled."""
        while True:
            with self._lock:
                empty = not self._pending
            if empty or (self.flush() and self._is_empty()):
                return
            if time.monotonic() >= deadline:
                with self._lock:
                    self._spill(len(self._pending))
                return
            time.sleep(min(2.0, max(0.1, self._next_try - time.monotonic())))

    def _is_empty(self) -> bool:
        with self._lock:
            return not self._pending


def _set_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux or no prctl
        log.debug("could not become a child subreaper")


def _reap_all(timeout: float) -> None:
    """Wait for every remaining child (orphans reparented to us included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _retry(what: str, fn, deadline: float) -> bool:
    delay = 0.5
    while True:
        try:
            fn()
            return True
        except Exception as e:
            if time.monotonic() >= deadline:
                log.error("%s failed for good: %s", what, e)
                return False
            log.warning("%s failed (%s); retrying", what, e)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Shim:
    """One supervised command. :meth:`run` returns its exit status."""

    def __init__(
        self, store: Store, job_id: str, command: Sequence[str], opts: ShimOptions | None = None
    ) -> None:
        if not command:
            raise ValueError("job-shim needs a command to run")
        self.store = store
        self.job_id = job_id
        self.command = list(command)
        self.opts = opts or ShimOptions()
        self.host = socket.gethostname()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        self.started = time.time()
        self.stop_requested = False
        self.killed = False
        self._kill_at: float | None = None
        self._done = threading.Event()
        unsent = self.opts.unsent_dir or self.opts.cwd or Path.cwd()
        self.writer = LogWriter(store, job_id, Path(unsent))
        self.attempt = 1

    # --- signals -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stop_requested:
            return  # one stop at a time; the grace period is already running
        self.stop_requested = True
        self._kill_at = time.monotonic() + self.opts.grace_s
        log.info("job %s: %s received, sending SIGINT to the job's processes",
                 self.job_id, signal.Signals(signum).name)  # fmt: skip
        signal_group(self.pgid, signal.SIGINT)

    # --- threads -----------------------------------------------------------------------------

    def _read_output(self, pipe: int) -> None:
        out = sys.stdout.buffer if self.opts.tee else None
        while True:
            try:
                data = os.read(pipe, 65536)
            except OSError:
                break
            if not data:
                break
            self.writer.append(data)
            if out is not None:
                with contextlib.suppress(OSError, ValueError):
                    out.write(data)
                    out.flush()
        os.close(pipe)

    def _tick(self) -> None:
        next_beat = time.monotonic() + self.opts.heartbeat_s
        while not self._done.wait(0.2):
            now = time.monotonic()
            if self._kill_at is not None and now >= self._kill_at and not self.killed:
                self.killed = True
                log.warning("job %s: grace period over, killing its processes", self.job_id)
                signal_group(self.pgid, signal.SIGKILL)
            if self.writer.due(self.opts):
                self.writer.flush()
            if now >= next_beat:
                self._beat()
                next_beat = now + self.opts.heartbeat_s

    def _beat(self) -> None:
        beat = joblog.Heartbeat(
            time=time.time(),
            host=self.host,
            pid=os.getpid(),
            child_pid=self.proc.pid if self.proc else None,
            child_pgid=self.pgid,
            started=self.started,
            bytes=self.writer.offset,
            segments=self.writer.segments,
            last_output=self.writer.last_output or self.started,
            attempt=self.attempt,
        )
        try:
            joblog.write_heartbeat(self.store, self.job_id, beat)
        except Exception as e:
            log.warning("job %s: heartbeat not written (%s)", self.job_id, e)

    def _write_pid_file(self, path: Path) -> None:
        import json

        from benchkit.fsutil import atomic_file
        from benchkit.remote.procs import start_time

        assert self.proc is not None
        record = {"pid": self.proc.pid, "pgid": self.pgid, "start_time": start_time(self.proc.pid),
                  "shim_pid": os.getpid()}  # fmt: skip
        try:
            with atomic_file(Path(path)) as f:
                f.write(json.dumps(record).encode())
        except OSError as e:  # the shim still stops its command itself; only the backstop is lost
            log.warning("job %s: %s not written (%s)", self.job_id, path, e)

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        old_exit = joblog.read_exit(self.store, self.job_id)
        if old_exit is not None:  # an earlier attempt of this job ended: this is a new one
            self.attempt = int(old_exit.extra.get("attempt", 1)) + 1
            joblog.clear_exit(self.store, self.job_id)
        if self.opts.own_process:
            _set_subreaper()
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCHKIT_JOB_ID": self.job_id}
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=self.opts.cwd,
                env=env,
                start_new_session=True,
                # Ray blocks SIGINT in its processes and the mask is inherited: unblock it
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}),
            )
        except OSError as e:
            for s, h in handlers.items():
                signal.signal(s, h)
            os.close(read_fd)
            os.close(write_fd)
            self.writer.append(f"job-shim: cannot start {self.command[0]}: {e}\n".encode())
            return self._finish(127, None, f"the command could not start: {e}")
        os.close(write_fd)
        self.pgid = self.proc.pid  # start_new_session: the child leads its own group
        if self.opts.pid_file is not None:
            self._write_pid_file(self.opts.pid_file)
        if self.stop_requested:  # a signal arrived while the child was being started
            signal_group(self.pgid, signal.SIGINT)
        reader = threading.Thread(target=self._read_output, args=(read_fd,), daemon=True)
        reader.start()
        self._beat()
        ticker = threading.Thread(target=self._tick, daemon=True)
        ticker.start()
        code = self.proc.wait()
        # nothing of the job outlives it: DataLoader workers, orphaned torchrun workers...
        signal_group(self.pgid, signal.SIGKILL)
        if self.opts.own_process:
            _reap_all(5.0)
        reader.join(10.0)
        self._done.set()
        ticker.join(5.0)
        sig = signal.Signals(-code).name if code < 0 else None
        status = 128 - code if code < 0 else code
        return self._finish(status, sig, "")

    def _finish(self, status: int, sig: str | None, message: str) -> int:
        deadline = time.monotonic() + FINAL_WRITE_S
        self.writer.close(deadline)
        record = joblog.ExitRecord(
            exit_code=status,
            started=self.started,
            ended=time.time(),
            host=self.host,
            signal=sig,
            stop_requested=self.stop_requested,
            killed=self.killed,
            bytes=self.writer.offset,
            segments=self.writer.segments,
            unsent_bytes=self.writer.unsent_bytes,
            unsent_path=str(self.writer.unsent_path) if self.writer.unsent_bytes else None,
            message=message,
            extra={"attempt": self.attempt},
        )
        written = _retry(
            f"job {self.job_id}: writing exit.json",
            lambda: joblog.write_exit(self.store, self.job_id, record),
            deadline,
        )
        if not written:
            sys.stderr.write(
                f"job-shim: the outcome of job {self.job_id} (exit {status}) could not be written "
                f"to store {self.store.url}\n"
            )
        for path in self.opts.remove:
            shutil.rmtree(path, ignore_errors=True)
        return status


def run_shim(
    store: Store, job_id: str, command: Sequence[str], opts: ShimOptions | None = None
) -> int:
    """Supervise ``command`` as job ``job_id``; returns its exit status (128+N for signal N)."""
    return Shim(store, job_id, command, opts).run()
