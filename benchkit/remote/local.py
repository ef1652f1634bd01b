"""The ``local`` executor: a queue and a bounded pool of worker slots on this machine.

Each job takes ``nproc_per_node`` slots (one per process; the pool has one per CPU unless told
otherwise) and waits, first come first served, until they are free. A started job is its shim
(``benchkit job-shim``) in a session of its own, so it outlives the server: its directory
``<root>/jobs/<job-id>/`` holds ``job.json`` (the spec without its environment, the shim's pid
and start time), ``engine.log`` (the shim's own output) and ``work/`` (the code checkout,
deleted by the shim when the job ends). Environments are cached under ``<root>/envs``.

A server restarted while jobs run makes a new executor over the same root: it adopts every
shim still alive (same pid, same start time, so a recycled pid is not mistaken for it) and
queues again the jobs that had not started.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchkit.errors import JobError
from benchkit.fsutil import atomic_file
from benchkit.remote.executor import (
    EngineState,
    Executor,
    Observation,
    job_run_command,
    shim_command,
)
from benchkit.remote.procs import children_of, signal_group, start_time
from benchkit.remote.spec import JobSpec, check_job_id

log = logging.getLogger(__name__)

QUEUED, LAUNCHED, CANCELLED = "queued", "launched", "cancelled"
#: written by the shim in the job's directory: its command's pid, process group, start time
CHILD = "child.json"


@dataclass
class _Job:
    spec: JobSpec
    submitted: float
    status: str = QUEUED
    pid: int | None = None
    start_time: int | None = None
    returncode: int | None = None
    cancel_requested: bool = False
    #: the GPUs (indices) the job holds, given to it as CUDA_VISIBLE_DEVICES
    gpu_ids: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def record(self) -> dict:
        return {
            "spec": self.spec.to_dict(),  # the env may hold a store key: the file is 0600
            "submitted": self.submitted,
            "status": self.status,
            "pid": self.pid,
            "start_time": self.start_time,
            "returncode": self.returncode,
            "cancel_requested": self.cancel_requested,
            "gpu_ids": self.gpu_ids,
        }

    def alive(self) -> bool:
        if self.pid is None or self.returncode is not None:
            return False
        if self.proc is not None:
            return self.proc.poll() is None
        return self.start_time is not None and start_time(self.pid) == self.start_time


class LocalExecutor(Executor):
    """Jobs as processes on this machine, at most ``slots`` processes at a time."""

    name = "local"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        slots: int | None = None,
        gpus: int | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        heartbeat_s: float = 15.0,
        flush_s: float = 5.0,
        poll_s: float = 0.5,
    ) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.env_root = self.root / "envs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.slots = int(slots or os.cpu_count() or 1)
        self._gpus = None if gpus is None else int(gpus)
        self.python = python
        self.env = dict(env or {})
        self.heartbeat_s = heartbeat_s
        self.flush_s = flush_s
        self._jobs: dict[str, _Job] = {}
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._recover()
        self._thread = threading.Thread(target=self._dispatch, name="local-executor", daemon=True)
        self._thread.start()

    @property
    def gpus(self) -> int:
        """GPUs to hand out (default: every GPU torch sees, counted when a job first asks for
        one, so a CPU-only server never imports torch); each job gets its own."""
        if self._gpus is None:
            self._gpus = _gpu_count()
        return self._gpus

    def describe(self) -> str:
        gpus = f", {self._gpus} GPU(s)" if self._gpus else ""
        return f"local ({self.slots} slot(s){gpus}, {self.root})"

    # --- persistence -------------------------------------------------------------------------

    def _dir(self, job_id: str) -> Path:
        return self.jobs_dir / check_job_id(job_id)

    def _save(self, job: _Job) -> None:
        path = self._dir(job.spec.job_id) / "job.json"
        with atomic_file(path, mode=0o600) as f:
            f.write(json.dumps(job.record(), indent=1, sort_keys=True).encode())

    def _recover(self) -> None:
        found = []
        for path in self.jobs_dir.glob("*/job.json"):
            try:
                data = json.loads(path.read_text())
                spec = JobSpec.from_dict(data["spec"])
            except (OSError, ValueError, KeyError, JobError) as e:
                log.warning("local executor: %s is unreadable (%s); skipped", path, e)
                continue
            job = _Job(spec, float(data.get("submitted", 0)), data.get("status", QUEUED),
                       data.get("pid"), data.get("start_time"), data.get("returncode"),
                       bool(data.get("cancel_requested")), list(data.get("gpu_ids") or []))  # fmt: skip
            found.append(job)
        for job in sorted(found, key=lambda j: j.submitted):
            self._jobs[job.spec.job_id] = job
            if job.status == QUEUED:
                self._queue.append(job.spec.job_id)
            elif job.status == LAUNCHED and job.alive():
                log.info("local executor: adopted job %s (pid %s)", job.spec.job_id, job.pid)

    # --- the pool ----------------------------------------------------------------------------

    def _running(self) -> list[_Job]:
        return [j for j in self._jobs.values() if j.status == LAUNCHED and j.alive()]

    def _used(self) -> int:
        return sum(j.spec.nproc_per_node for j in self._running())

    def _free_gpus(self, wanted: int) -> list[int]:
        if not wanted:
            return []
        held = {g for j in self._running() for g in j.gpu_ids}
        return [g for g in range(self.gpus) if g not in held]

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                while self._queue:
                    job = self._jobs[self._queue[0]]
                    free_gpus = self._free_gpus(job.spec.gpus)
                    if (
                        self._used() + job.spec.nproc_per_node > self.slots
                        or len(free_gpus) < job.spec.gpus
                    ):
                        break  # first come, first served: the head waits for its slots
                    job.gpu_ids = free_gpus[: job.spec.gpus]
                    self._queue.pop(0)
                    try:
                        self._launch(job)
                    except OSError as e:
                        log.error("job %s could not start: %s", job.spec.job_id, e)
                        job.status, job.returncode = LAUNCHED, 127
                        self._save(job)
                self._cond.wait(0.5)
            self._reap()

    def _reap(self) -> None:
        with self._cond:
            for job in self._jobs.values():
                if job.proc is not None and job.returncode is None:
                    code = job.proc.poll()
                    if code is not None:
                        job.returncode = code
                        self._save(job)
                        self._cond.notify_all()
                        if code < 0:  # the shim itself was killed: its job must not run on
                            self._kill_leftovers(job.spec.job_id)

    def _launch(self, job: _Job) -> None:
        spec = job.spec
        d = self._dir(spec.job_id)
        work = d / "work"
        inner = job_run_command(self.python, spec, ["--env-root", str(self.env_root)])
        cmd = shim_command(
            spec, self.python, inner, heartbeat_s=self.heartbeat_s, flush_s=self.flush_s,
            extra=["--cwd", str(work), "--remove", str(work), "--pid-file", str(d / CHILD)],
        )  # fmt: skip
        env = {**os.environ, **self.env, **spec.env}
        env.setdefault("OMP_NUM_THREADS", "1")
        # a job sees only its own GPUs (none for a CPU job), counted within the server's own
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        names = [visible[g] if g < len(visible) and visible[g] else str(g) for g in job.gpu_ids]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(names)
        with open(d / "engine.log", "ab") as engine_log:
            proc = subprocess.Popen(
                cmd, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=engine_log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        job.proc, job.pid = proc, proc.pid
        job.start_time = start_time(proc.pid)
        job.status = LAUNCHED
        self._save(job)
        log.info("job %s started (pid %d)", spec.job_id, proc.pid)

    # --- the interface -----------------------------------------------------------------------

    def check_spec(self, spec: JobSpec) -> None:
        """Refuse, before anything runs, a job this machine can never run."""
        if spec.nnodes > 1:
            raise JobError(
                f"job {spec.job_id} asks for {spec.nnodes} nodes: the local executor runs on this "
                "machine only; start the server with --executor ray for multi-node jobs"
            )
        if spec.nproc_per_node > self.slots:
            raise JobError(
                f"job {spec.job_id} needs {spec.nproc_per_node} processes and this server's local "
                f"executor has {self.slots} slot(s); ask for fewer processes or start the server "
                f"with --slots {spec.nproc_per_node}"
            )
        if spec.gpus and spec.gpus > self.gpus:
            raise JobError(
                f"job {spec.job_id} asks for {spec.gpus} GPU(s) and this server's local executor "
                f"has {self.gpus}; ask for fewer (--gpus) or use the ray executor"
            )

    def submit(self, spec: JobSpec) -> str:
        self.check_spec(spec)
        with self._cond:
            if spec.job_id in self._jobs:
                return spec.job_id
            d = self._dir(spec.job_id)
            d.mkdir(parents=True, exist_ok=True)
            job = _Job(spec, time.time())
            self._jobs[spec.job_id] = job
            self._save(job)
            self._queue.append(spec.job_id)
            self._cond.notify_all()
        return spec.job_id

    def observe(self, handle: str) -> Observation:
        with self._cond:
            job = self._jobs.get(handle)
            if job is None:
                return Observation(EngineState.UNKNOWN, None, f"no job {handle} in {self.root}")
            if job.status == QUEUED:
                ahead = self._queue.index(handle) if handle in self._queue else 0
                return Observation(EngineState.QUEUED, None, f"waiting for slots ({ahead} ahead)")
            if job.status == CANCELLED:
                return Observation(EngineState.STOPPED, None, "cancelled before it started")
            if job.alive():
                return Observation(EngineState.RUNNING, None, f"pid {job.pid}")
            code = job.returncode
            if code is None and job.proc is not None:
                code = job.returncode = job.proc.poll()
        if code is None:  # adopted, now gone: its status is in its exit.json
            return Observation(EngineState.FAILED, None, "the job's processes have ended")
        if job.cancel_requested:
            return Observation(EngineState.STOPPED, code, "stopped")
        state = EngineState.SUCCEEDED if code == 0 else EngineState.FAILED
        return Observation(state, code, f"exit status {code}")

    def engine_logs(self, handle: str, offset: int = 0) -> tuple[str, int]:
        try:
            path = self._dir(handle) / "engine.log"
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except (OSError, JobError):
            return "", offset
        return data.decode(errors="replace"), offset + len(data)

    def cancel(self, handle: str, grace_s: float = 30.0) -> bool:
        with self._cond:
            job = self._jobs.get(handle)
            if job is None:
                return True  # nothing to stop
            job.cancel_requested = True
            if job.status == QUEUED:
                if handle in self._queue:
                    self._queue.remove(handle)
                job.status = CANCELLED
                self._save(job)
                return True
            self._save(job)
            if not job.alive():
                return True
            pid = job.pid
        assert pid is not None
        try:
            os.kill(pid, signal.SIGINT)  # the shim forwards it and kills after its grace
        except ProcessLookupError:
            return True
        threading.Thread(target=self._kill_after, args=(job, grace_s + 15.0), daemon=True).start()
        return True

    def _kill_after(self, job: _Job, delay: float) -> None:
        """The shim's own grace period is the first line; this is the second."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if not job.alive():
                return
            time.sleep(0.5)
        if job.alive() and job.pid is not None:
            log.warning("job %s: the shim did not stop; killing its processes", job.spec.job_id)
            for child in children_of(job.pid):  # the job's group (the shim's child leads it)
                signal_group(child, signal.SIGKILL)
            signal_group(job.pid, signal.SIGKILL)
        self._kill_leftovers(job.spec.job_id)

    def _kill_leftovers(self, job_id: str) -> bool:
        """SIGKILL what is left of the job's process group once its shim is gone. A shim that
        ends normally has done it already; this is for a shim that was killed (``kill -9``,
        the OOM killer), whose training processes would otherwise run on unsupervised.
        True when there was a group to kill."""
        try:
            rec = json.loads((self._dir(job_id) / CHILD).read_text())
            pgid, leader, started = int(rec["pgid"]), int(rec["pid"]), rec.get("start_time")
        except (OSError, ValueError, KeyError, TypeError, JobError):
            return False
        now = start_time(leader)
        if now is not None and now != started:
            return False  # the leader's pid belongs to another process now: not our group
        # with the leader gone, the group id cannot be reused while any member lives
        killed = signal_group(pgid, signal.SIGKILL)
        if killed:
            log.warning("job %s: its supervisor is gone; killed what was left of its processes "
                        "(process group %d)", job_id, pgid)  # fmt: skip
        return killed

    def release(self, handle: str) -> None:
        with self._cond:
            job = self._jobs.get(handle)
        deadline = time.monotonic() + 10.0  # a shim that wrote exit.json is about to exit
        while job is not None and job.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        with self._cond:
            if job is not None and job.alive():
                raise JobError(f"job {handle} is still running; cancel it first")
            self._kill_leftovers(handle)
            self._jobs.pop(handle, None)
            if handle in self._queue:
                self._queue.remove(handle)
        shutil.rmtree(self.jobs_dir / check_job_id(handle), ignore_errors=True)

    def owned(self) -> list[str]:
        with self._cond:
            return sorted(self._jobs)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)


def _gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no usable torch: no GPUs to hand out
        return 0
