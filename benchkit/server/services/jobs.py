"""Remote jobs: one state machine per job in the database, kept true by a reconciler.

States::

    queued ──► starting ──► running ──► succeeded | failed | cancelled | timed_out | lost

- **queued**: accepted; waiting for the engine (a free slot, free CPUs in the Ray cluster).
- **starting**: the engine runs it, the shim has not reported yet (checkout, environment).
- **running**: the shim's heartbeat is there.
- A terminal state is written once (``UPDATE ... WHERE state IN (active)``) and never changes.

The reconciler looks at every active job every few seconds and weighs the evidence:

1. ``exit.json`` (written by the shim inside the job) beats anything the engine says: it
   gives the exit status; with a stop requested a failing exit is ``cancelled`` (or
   ``timed_out`` when the server stopped it for a limit).
2. A failed status poll is never a failed job: an engine that cannot be reached, or does not
   know the job, while the heartbeat is fresh, changes nothing.
3. ``lost`` needs a heartbeat older than ``lost_after_s`` and an engine that does not run the
   job (it ended without ``exit.json``, or it does not know it).
4. A cancel is stored (``cancel_requested_at``) before it is sent, and sent again every
   ``cancel_resend_s`` until the engine reports the job ended; a job cancelled before it was
   submitted is never submitted.
5. ``max_duration_s`` (from the first report of running) and ``stall_timeout_s`` (no new log
   output and no new metric, ingested by the server's tracking or written to the store, for
   that long) request a cancel whose outcome is ``timed_out``.
6. When a job ends: a run record it left ``running`` is marked interrupted or failed, the
   engine's own log is archived in the store when the job's log does not say why it ended,
   the engine's hold is released (the local checkout and slot, the Ray job record) and the
   job's API key is revoked.

A restarted server adopts its jobs simply by reconciling them again: the local executor finds
its live shims, Ray still has its jobs, and the store has their logs and heartbeats. Every
``sweep_s`` the engine's own list is compared with the database: jobs the database does not
know or has ended are stopped and released.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from benchkit.errors import BenchKitError, EngineUnavailable, JobError
from benchkit.remote import joblog
from benchkit.remote.executor import EngineState, Executor, Observation
from benchkit.remote.spec import JobSpec
from benchkit.server.db.jobs import Job
from benchkit.server.db.models import utcnow
from benchkit.server.db.session import Database
from benchkit.server.services.catalog import Catalog
from benchkit.server.services.errors import BadRequest, Conflict, NotFound
from benchkit.server.services.keys import Keys
from benchkit.server.services.project_store import ProjectStore
from benchkit.store import Store

log = logging.getLogger(__name__)

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, LOST = (
    "succeeded", "failed", "cancelled", "timed_out", "lost",
)  # fmt: skip
ACTIVE = (QUEUED, STARTING, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, LOST)
STATES = ACTIVE + TERMINAL
#: what a cancel's reason makes of the job
REASON_STATE = {"user": CANCELLED, "max_duration": TIMED_OUT, "stall": TIMED_OUT}
ENGINE_LOG = "engine.log"


@dataclass
class JobRequest:
    """What a client asks to run."""

    version: int
    name: str
    fn: str | None = None
    config: list[str] = field(default_factory=list)
    processes: int = 1
    nodes: int = 1
    gpus: int = 0
    cpus: float | None = None
    #: None: a new run; "": the latest run of ``name`` with a checkpoint; else a run reference
    resume: str | None = None
    #: the new run's id (default: a fresh one)
    run_id: str | None = None
    #: the job's id, chosen by the client so a repeated request finds its job (default: the
    #: run id of a new run, ``<run>-r<N>-<hex>`` for a resume)
    job_id: str | None = None
    max_duration_s: float | None = None
    stall_timeout_s: float | None = None
    stop_grace_s: float = 30.0


@dataclass
class JobTiming:
    """How often the reconciler looks, and how long it waits before concluding."""

    reconcile_s: float = 2.0
    lost_after_s: float = 60.0
    end_grace_s: float = 20.0
    cancel_resend_s: float = 10.0
    sweep_s: float = 600.0
    release_retry_s: float = 30.0


def stop_reason(reason: str | None, spec: dict[str, Any]) -> str:
    """Why a stopped job ended, for its message."""
    if reason == "max_duration":
        return f"stopped after its maximum duration of {spec.get('max_duration_s')} s"
    if reason == "stall":
        return f"stopped: no new output or metric for {spec.get('stall_timeout_s')} s"
    return "cancelled"


def _ts(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


def _age(dt: datetime | None, now: datetime) -> float:
    return (now - dt).total_seconds() if dt else 0.0


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API shows it."""
    spec = job.spec or {}
    end = job.ended_at or utcnow()
    return {
        "id": job.id,
        "run_id": job.run_id,
        "name": job.name,
        "version": job.version,
        "state": job.state,
        "executor": job.executor,
        "exit_code": job.exit_code,
        "message": job.message,
        "processes": spec.get("nproc_per_node", 1),
        "nodes": spec.get("nnodes", 1),
        "gpus": spec.get("gpus", 0),
        "resume": bool(spec.get("resume")),
        "config": spec.get("config", []),
        "max_duration_s": spec.get("max_duration_s"),
        "stall_timeout_s": spec.get("stall_timeout_s"),
        "cancel_requested": job.cancel_requested_at is not None,
        "created": _ts(job.created_at),
        "started": _ts(job.started_at),
        "ended": _ts(job.ended_at),
        "duration_s": (end - job.started_at).total_seconds() if job.started_at else None,
    }


class Jobs:
    """Accepts jobs, answers about them, and reconciles them with their engine."""

    def __init__(
        self,
        db: Database,
        store: Store,
        catalog: Catalog,
        keys: Keys,
        executor: Executor | None | Callable[[], Executor | None],
        job_store_url: str,
        *,
        job_env: dict[str, str] | None = None,
        timing: JobTiming | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.catalog = catalog
        self.keys = keys
        #: None until :meth:`start` makes it (admin commands open the services, never an engine)
        self.executor: Executor | None = None
        self._factory = executor if callable(executor) else (lambda: executor)
        self.job_store_url = job_store_url
        self.job_env = dict(job_env or {})
        self.timing = timing or JobTiming()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        self._release_tries: dict[str, float] = {}
        self._submitting = threading.Lock()

    # --- helpers -------------------------------------------------------------------------------

    def project_store(self, project_id: str) -> ProjectStore:
        return ProjectStore(self.store, self.catalog, project_id)

    def executor_info(self) -> dict[str, Any]:
        if self.executor is None:
            return {"name": None, "description": "none: this server runs no jobs"}
        return {"name": self.executor.name, "description": self.executor.describe()}

    def _require_executor(self) -> Executor:
        if self.executor is None:
            raise Conflict(
                "this server runs no jobs (it was started with --executor none); restart it with "
                "`benchkit server --executor local` or `--executor ray --ray-address URL`"
            )
        return self.executor

    def _row(self, s, project_id: str, job_id: str) -> Job:
        job = s.get(Job, (project_id, job_id))
        if job is None:
            raise NotFound(
                f"no job {job_id!r} in this project; list them with `benchkit jobs list`"
            )
        return job

    # --- the API's side ------------------------------------------------------------------------

    def submit(self, project_id: str, project_name: str, req: JobRequest) -> dict[str, Any]:
        """Check the request against the project and the engine, record the job, submit it."""
        executor = self._require_executor()
        pstore = self.project_store(project_id)
        manifest = self._manifest(pstore, req.version)
        if not req.name:
            raise BadRequest("give the run's name (the @bench.train function's name)")
        wanted = req.job_id or (req.run_id if req.resume is None else None)
        if wanted:  # a repeated request (a retry) gets its job back
            with self.db.read() as s:
                existing = s.get(Job, (project_id, wanted))
                if existing is not None:
                    if existing.version == req.version and existing.name == req.name:
                        return job_view(existing)
                    raise Conflict(f"job {wanted} exists already")
        run_id, job_id, resume = self._run_of(pstore, project_id, req)
        try:
            spec = JobSpec(
                job_id=job_id, store=self.job_store_url, version=req.version,
                archive_sha256=manifest.archive_sha256, run_id=run_id, resume=resume, name=req.name,
                fn=req.fn, config=list(req.config), nnodes=req.nodes, nproc_per_node=req.processes,
                gpus=req.gpus, cpus=req.cpus, max_duration_s=req.max_duration_s,
                stall_timeout_s=req.stall_timeout_s, stop_grace_s=req.stop_grace_s,
                project=project_name,
            )  # fmt: skip
            executor.check_spec(spec)
        except JobError as e:
            raise BadRequest(str(e)) from None
        with self.db.write() as s:
            if s.get(Job, (project_id, job_id)) is not None:
                raise Conflict(f"job {job_id} exists already")
            job = Job(
                project_id=project_id, id=job_id, run_id=run_id, name=req.name,
                version=req.version, state=QUEUED, executor=executor.name,
                spec=spec.without_env(), message="", log_bytes=0, metric_parts=0,
                released=False, created_at=utcnow(),
            )  # fmt: skip
            s.add(job)
        self._submit(project_id, job_id)
        return self.get(project_id, job_id)

    def _manifest(self, pstore: Store, version: int):
        from benchkit.code.package import get_manifest
        from benchkit.errors import CodePackageError

        try:
            return get_manifest(pstore, version)
        except CodePackageError:
            raise BadRequest(
                f"code version {version} does not exist in this project; store it with "
                "`benchkit migrate code` (or let `benchkit run --remote` do it)"
            ) from None

    def _run_of(self, pstore: Store, project_id: str, req: JobRequest) -> tuple[str, str, bool]:
        """(run id, job id, resume) for a request."""
        from benchkit.training import runs

        if req.resume is not None:
            rec = self._resume_target(pstore, req.name, req.resume or None)
            with self.db.read() as s:
                n = len(s.scalars(select(Job.id).where(Job.project_id == project_id,
                                                       Job.run_id == rec.id)).all())  # fmt: skip
            return rec.id, req.job_id or f"{rec.id}-r{n + 1}-{secrets.token_hex(2)}", True
        run_id = req.run_id or runs.new_run_id(req.name)
        if req.job_id and req.job_id != run_id:
            raise BadRequest("a new run's job has the run's id: leave out job_id or make it run_id")
        if runs.slug(run_id) != run_id:
            raise BadRequest(f"invalid run id {run_id!r}: letters, digits, '-', '_' and '.' only")
        if pstore.exists(runs.run_key(run_id)):
            raise Conflict(f"run {run_id} exists already; continue it with --resume {run_id}")
        return run_id, run_id, False

    def _resume_target(self, pstore: Store, name: str, ref: str | None):
        from benchkit.training import checkpoints as ckpt
        from benchkit.training import runs

        try:
            if ref:
                rec = runs.load_record(pstore, runs.resolve_run(pstore, ref))
                if ckpt.latest_checkpoint(pstore, rec.id) is None:
                    raise BadRequest(f"run {rec.id} has no checkpoint; nothing to resume from")
                return rec
            for rid in reversed(runs.list_run_ids(pstore)):
                rec = runs.load_record(pstore, rid)
                if rec.name == name and ckpt.latest_checkpoint(pstore, rid) is not None:
                    return rec
        except BenchKitError as e:
            raise BadRequest(str(e)) from None
        raise BadRequest(
            f"no run named {name!r} with a checkpoint in this project; start one without --resume"
        )

    def list(self, project_id: str, active: bool = False, run: str | None = None) -> list[dict]:
        with self.db.read() as s:
            q = select(Job).where(Job.project_id == project_id)
            if active:
                q = q.where(Job.state.in_(ACTIVE))
            if run:
                q = q.where(Job.run_id == run)
            return [job_view(j) for j in s.scalars(q.order_by(Job.created_at, Job.id))]

    def get(self, project_id: str, job_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            return job_view(self._row(s, project_id, job_id))

    def cancel(self, project_id: str, job_id: str, reason: str = "user") -> dict[str, Any]:
        """Record the intent to stop the job (durably, first), then ask the engine once; the
        reconciler repeats it until the engine confirms."""
        with self.db.write() as s:
            job = self._row(s, project_id, job_id)
            if job.state in TERMINAL:
                return job_view(job)
            if job.cancel_requested_at is None:
                job.cancel_requested_at = utcnow()
                job.cancel_reason = reason
        self._send_cancel(project_id, job_id)
        return self.get(project_id, job_id)

    def logs(
        self, project_id: str, job_id: str, offset: int, limit: int
    ) -> tuple[bytes, int, str, str]:
        """(bytes from ``offset``, the next offset, the job's state, the log's source).

        The source is ``job`` (what the shim wrote) or ``engine`` (the engine's own log, for a
        job whose shim never wrote anything); a follower that sees it change starts again at 0.
        """
        with self.db.read() as s:
            job = self._row(s, project_id, job_id)
            state, handle = job.state, job.handle
        pstore = self.project_store(project_id)
        if joblog.list_segments(pstore, job_id) or joblog.read_heartbeat(pstore, job_id):
            data, nxt = joblog.read_log(pstore, job_id, offset, limit)
            return data, nxt, state, "job"
        archived = joblog.job_key(job_id, ENGINE_LOG)
        if pstore.exists(archived):
            data = pstore.get_range(archived, offset, offset + limit)
            return data, offset + len(data), state, "engine"
        if handle and self.executor is not None and state in ACTIVE:
            text, nxt = self.executor.engine_logs(handle, offset)
            return text.encode()[:limit], nxt, state, "engine"
        return b"", offset, state, "job"

    # --- submitting ----------------------------------------------------------------------------

    def _submit(self, project_id: str, job_id: str) -> None:
        """Give a queued job to the engine, with a fresh API key in its environment (one
        submission at a time: the request that created the job and the reconciler may both
        try, and only one may make its key)."""
        with self._submitting:
            self._submit_now(project_id, job_id)

    def _submit_now(self, project_id: str, job_id: str) -> None:
        executor = self._require_executor()
        with self.db.read() as s:
            job = self._row(s, project_id, job_id)
        if job.state not in ACTIVE or job.handle is not None:
            return
        if job.cancel_requested_at is not None:
            self._finish(project_id, job_id, CANCELLED, None, "cancelled before it started")
            return
        # the key is made in its own transaction (SQLite allows one writer at a time)
        key = self.keys.create_key(project_id, "write", f"job {job_id}")
        with self.db.write() as s:
            job = self._row(s, project_id, job_id)
            stale = job.state not in ACTIVE or job.handle is not None
            old_key, job.key_id = job.key_id, (job.key_id if stale else key.info.id)
        if stale:
            self._revoke(key.info.id)
            return
        if old_key:
            self._revoke(old_key)
        spec = JobSpec.from_dict(job.spec)
        spec.env = {
            **self.job_env,
            "BENCHKIT_API_KEY": key.token,
            "BENCHKIT_PROJECT_ID": project_id,
        }
        try:
            handle = executor.submit(spec)
        except JobError as e:
            transient = isinstance(e, EngineUnavailable)
            log.warning(
                "job %s: submitting failed (%s)%s", job_id, e, "; will retry" if transient else ""
            )
            if not transient:
                self._finish(project_id, job_id, FAILED, None, f"the engine refused the job: {e}")
            return
        with self.db.write() as s:
            job = self._row(s, project_id, job_id)
            job.handle = handle
        log.info("job %s submitted to %s as %s", job_id, executor.name, handle)

    # --- the reconciler ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the executor and reconcile in a thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self.executor = self._factory()
        if self.executor is None:
            log.info("jobs: no executor (--executor none); this server runs no jobs")
            return
        check = getattr(self.executor, "check", None)
        if check is not None:
            try:
                check()
            except JobError as e:  # jobs wait (queued) until the engine answers
                log.warning("jobs: %s", e)
        log.info("jobs run on %s", self.executor.describe())
        self._thread = threading.Thread(target=self._loop, name="bench-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.executor is not None:
            self.executor.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # the loop must outlive any one bad round
                log.exception("reconciling jobs failed")
            self._stop.wait(self.timing.reconcile_s)

    def reconcile(self) -> None:
        """One look at every job that is active or not yet released."""
        with self.db.read() as s:
            rows = [
                (j.project_id, j.id)
                for j in s.scalars(
                    select(Job).where((Job.state.in_(ACTIVE)) | (Job.released.is_(False)))
                )
            ]
        for project_id, job_id in rows:
            if self._stop.is_set():
                return
            try:
                self.reconcile_job(project_id, job_id)
            except Exception:
                log.exception("reconciling job %s failed", job_id)
        if time.monotonic() - self._last_sweep > self.timing.sweep_s:
            self._last_sweep = time.monotonic()
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping the engine's jobs failed")

    def reconcile_job(self, project_id: str, job_id: str) -> None:
        with self.db.read() as s:
            job = s.get(Job, (project_id, job_id))
            if job is None:
                return
        if job.state in TERMINAL:
            self._release(job)
            return
        if job.handle is None:
            self._submit(project_id, job_id)
            return
        assert self.executor is not None
        pstore = self.project_store(project_id)
        exit_rec = self._quiet(lambda: joblog.read_exit(pstore, job_id))
        if exit_rec is not None:
            self._conclude(job, exit_rec)
            return
        beat = self._quiet(lambda: joblog.read_heartbeat(pstore, job_id))
        obs = self.executor.observe(job.handle)
        now = utcnow()
        resend = (
            job.cancel_sent_at is None
            or _age(job.cancel_sent_at, now) > self.timing.cancel_resend_s
        )
        if job.cancel_requested_at is not None and not obs.state.ended and resend:
            self._send_cancel(project_id, job_id)
        if obs.state.ended:
            self._engine_ended(job, obs, beat, now)
            return
        if obs.state == EngineState.UNKNOWN:
            self._engine_unknown(job, obs, beat, now)
            return
        self._progress(job, obs, beat, pstore, now)

    def _quiet(self, fn):
        """A store read that may fail for now: None then (a failed poll is not a failed job)."""
        try:
            return fn()
        except Exception as e:
            log.warning("reading a job's state from the store failed: %s", e)
            return None

    def _conclude(self, job: Job, rec: joblog.ExitRecord) -> None:
        """The shim recorded the outcome: that is the truth."""
        if rec.exit_code == 0:
            state, message = SUCCEEDED, "exit status 0"
        elif job.cancel_requested_at is not None:
            state = REASON_STATE.get(job.cancel_reason or "user", CANCELLED)
            message = stop_reason(job.cancel_reason, job.spec or {})
            if rec.killed:
                message += (
                    f" (killed after its {job.spec.get('stop_grace_s', 30):g} s grace period)"
                )
        else:
            state = FAILED
            message = f"exit status {rec.exit_code}" + (f" ({rec.signal})" if rec.signal else "")
            if rec.stop_requested:  # SIGINT/SIGTERM from outside BenchKit (a shutdown, an admin)
                message += ", stopped by a signal that did not come from this server"
        if rec.message:
            message += f": {rec.message}"
        self._finish(job.project_id, job.id, state, rec.exit_code, message)

    def _engine_ended(self, job: Job, obs: Observation, beat, now: datetime) -> None:
        """The engine says the job ended but no exit.json is there (yet)."""
        if job.engine_ended_at is None:
            self._set(job, engine_ended_at=now)
            return
        if _age(job.engine_ended_at, now) < self.timing.end_grace_s:
            return  # the shim may still be writing it, or the store may be slow to show it
        if beat is None:
            tail = self._engine_tail(job)
            self._finish(job.project_id, job.id, FAILED, obs.exit_code,
                         f"the job ended before its supervisor started ({obs.message}){tail}")  # fmt: skip
        elif job.cancel_requested_at is not None:
            state = REASON_STATE.get(job.cancel_reason or "user", CANCELLED)
            self._finish(job.project_id, job.id, state, obs.exit_code,
                         f"stopped by the engine before its outcome was recorded ({obs.message})")  # fmt: skip
        else:
            self._finish(job.project_id, job.id, LOST, obs.exit_code,
                         f"the job's supervisor ended without recording an outcome ({obs.message})")  # fmt: skip

    def _engine_unknown(self, job: Job, obs: Observation, beat, now: datetime) -> None:
        """The engine cannot be reached or does not know the job: only a stale heartbeat
        (or none, long after submission) makes it lost."""
        last = beat.time if beat is not None else job.created_at.timestamp()
        silent = now.timestamp() - last
        if silent < self.timing.lost_after_s:
            return
        what = "no heartbeat" if beat is None else f"no heartbeat for {silent:.0f} s"
        self._finish(job.project_id, job.id, LOST, None,
                     f"{what}, and the engine does not run it ({obs.message})")  # fmt: skip

    def _progress(self, job: Job, obs: Observation, beat, pstore: Store, now: datetime) -> None:
        """The engine has the job queued or running: move the state on, watch the limits."""
        changes: dict[str, Any] = {}
        if obs.state == EngineState.QUEUED:
            state = QUEUED
        else:
            state = RUNNING if beat is not None else STARTING
        if state != job.state and job.state != RUNNING:
            changes["state"] = state
        if state == RUNNING and job.started_at is None:
            changes["started_at"] = now
            changes["activity_at"] = now
        if beat is not None and beat.time != job.heartbeat_at:
            changes["heartbeat_at"] = beat.time
            if beat.bytes != job.log_bytes:
                changes["log_bytes"] = beat.bytes
                changes["activity_at"] = now
        spec = job.spec or {}
        if spec.get("stall_timeout_s") and state == RUNNING:
            parts = self._metric_activity(job, pstore)
            if parts != job.metric_parts:
                changes["metric_parts"] = parts
                changes["activity_at"] = now
        if changes:
            self._set(job, **changes)
            for k, v in changes.items():
                setattr(job, k, v)
        if job.cancel_requested_at is not None or job.state != RUNNING:
            return
        limit = spec.get("max_duration_s")
        if limit and _age(job.started_at, now) > limit:
            log.info("job %s ran past its maximum duration (%s s): stopping it", job.id, limit)
            self.cancel(job.project_id, job.id, "max_duration")
            return
        stall = spec.get("stall_timeout_s")
        if stall and _age(job.activity_at or job.started_at, now) > stall:
            log.info("job %s wrote nothing for %s s: stopping it", job.id, stall)
            self.cancel(job.project_id, job.id, "stall")

    def _metric_activity(self, job: Job, pstore: Store) -> int:
        """A number that grows whenever the job's run logs metrics: the batches the server's
        tracking ingested for it (a run on a Bench server sends its metrics there) plus the
        metric parts in the store (a run whose tracker writes them to the store)."""
        from sqlalchemy import func

        from benchkit.server.db.tracking import ingest_cursors

        parts = len(self._quiet(lambda: pstore.list(f"runs/{job.run_id}/metrics/")) or [])
        c = ingest_cursors.c
        with self.db.read() as s:
            batches = s.execute(
                select(func.coalesce(func.sum(c.next_seq), 0)).where(
                    c.project_id == job.project_id, c.run_id == job.run_id
                )
            ).scalar_one()
        return parts + int(batches)

    def _set(self, job: Job, **values: Any) -> None:
        """Update an active job's columns (never a job that has ended meanwhile)."""
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.project_id == job.project_id, Job.id == job.id, Job.state.in_(ACTIVE))
                .values(**values)
            )

    def _send_cancel(self, project_id: str, job_id: str) -> None:
        with self.db.read() as s:
            job = self._row(s, project_id, job_id)
        if job.state in TERMINAL:
            return
        if job.handle is None:
            self._finish(project_id, job_id, CANCELLED, None, "cancelled before it started")
            return
        assert self.executor is not None
        try:
            self.executor.cancel(job.handle, float(job.spec.get("stop_grace_s", 30)))
        except JobError as e:
            log.warning("job %s: the stop could not be sent (%s); will repeat", job_id, e)
            return
        self._set(job, cancel_sent_at=utcnow())

    # --- ending --------------------------------------------------------------------------------

    def _end(self, s, job: Job, state: str, code: int | None, message: str) -> bool:
        """Write a terminal state once (inside transaction ``s``); False if it had ended."""
        res = s.execute(
            update(Job)
            .where(Job.project_id == job.project_id, Job.id == job.id, Job.state.in_(ACTIVE))
            .values(state=state, exit_code=code, message=message[:4000], ended_at=utcnow())
        )
        return res.rowcount == 1

    def _finish(
        self, project_id: str, job_id: str, state: str, code: int | None, message: str
    ) -> None:
        with self.db.write() as s:
            job = self._row(s, project_id, job_id)
            ended = self._end(s, job, state, code, message)
        if not ended:
            return
        log.info("job %s %s: %s", job_id, state, message)
        with self.db.read() as s:
            job = self._row(s, project_id, job_id)
        self._true_run_record(job)
        self._release(job)

    def _true_run_record(self, job: Job) -> None:
        """A run the job left "running" did not finish: say how it ended."""
        from benchkit.training import runs

        pstore = self.project_store(job.project_id)
        try:
            rec = runs.load_record(pstore, job.run_id)
        except BenchKitError:
            return
        if rec.status != runs.RUNNING:
            return
        rec.status = runs.INTERRUPTED if job.state in (CANCELLED, TIMED_OUT) else runs.FAILED
        rec.ended = runs.utc_now()
        rec.traceback = rec.traceback or f"job {job.id} {job.state}: {job.message}"
        try:
            runs.save_record(pstore, rec)
        except Exception as e:
            log.warning("run %s: its record could not be corrected (%s)", job.run_id, e)

    def _engine_tail(self, job: Job) -> str:
        text = self._archive_engine_log(job)
        lines = [ln for ln in text.splitlines() if ln.strip()][-12:]
        return (":\n" + "\n".join(lines)) if lines else ""

    def _archive_engine_log(self, job: Job) -> str:
        """Keep the engine's log of a job whose own log is missing or does not explain its end."""
        if not job.handle or self.executor is None:
            return ""
        pstore = self.project_store(job.project_id)
        key = joblog.job_key(job.id, ENGINE_LOG)
        if pstore.exists(key):
            return pstore.get(key).decode(errors="replace")
        text, _ = self.executor.engine_logs(job.handle, 0)
        if text:
            pstore.put(key, text.encode())
        return text

    def _release(self, job: Job) -> None:
        """Free what the engine holds for an ended job and revoke its key (retried later when
        the engine cannot be reached)."""
        if job.released:
            return
        last = self._release_tries.get(job.id, 0.0)
        if time.monotonic() - last < self.timing.release_retry_s and last:
            return
        self._release_tries[job.id] = time.monotonic()
        try:
            if job.state in (FAILED, LOST) or not joblog.list_segments(
                self.project_store(job.project_id), job.id
            ):
                self._archive_engine_log(job)
            if job.handle and self.executor is not None:
                self.executor.release(job.handle)
        except (JobError, OSError) as e:
            log.warning("job %s: releasing it failed (%s); will retry", job.id, e)
            return
        if job.key_id:
            self._revoke(job.key_id)
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.project_id == job.project_id, Job.id == job.id)
                .values(released=True)
            )
        self._release_tries.pop(job.id, None)

    def _revoke(self, key_id: str) -> None:
        try:
            self.keys.revoke_key(key_id)
        except Exception as e:
            log.warning("revoking job key %s failed: %s", key_id, e)

    def sweep(self) -> list[str]:
        """Stop and release the engine's jobs of this server that the database does not know or
        has ended; returns their handles."""
        if self.executor is None:
            return []
        with self.db.read() as s:
            known = {
                j.handle
                for j in s.scalars(
                    select(Job).where(Job.state.in_(ACTIVE) | Job.released.is_(False))
                )
            }
        stray = [h for h in self.executor.owned() if h not in known]
        for handle in stray:
            obs = self.executor.observe(handle)
            try:
                if not obs.state.ended and obs.state != EngineState.UNKNOWN:
                    log.warning(
                        "engine job %s is not an active job of this server: stopping it", handle
                    )
                    self.executor.cancel(handle, 30.0)
                elif obs.state.ended:
                    self.executor.release(handle)
            except JobError as e:
                log.warning("sweeping engine job %s failed: %s", handle, e)
        return stray


def server_id(data_dir: Path) -> str:
    """This server's stable id (a file in its data directory), tagging its engine jobs."""
    path = Path(data_dir) / "server-id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as f:
                f.write(secrets.token_hex(8))
        except FileExistsError:
            pass
    return path.read_text().strip()


def _env_float(name: str, default: float) -> float:
    import os

    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise BenchKitError(f"{name}={value!r}: give a number of seconds") from None


def make_executor(config: Any) -> Executor | None:
    """The executor ``config.executor`` names: ``local`` (the default), ``ray`` or ``none``.

    Tuning from the environment: ``BENCHKIT_JOB_HEARTBEAT_S`` (15) and ``BENCHKIT_JOB_FLUSH_S``
    (5), how often each job's shim writes its heartbeat and its output.
    """
    from benchkit.errors import ConfigError

    kind = (config.executor or "local").lower()
    heartbeat = _env_float("BENCHKIT_JOB_HEARTBEAT_S", 15.0)
    flush = _env_float("BENCHKIT_JOB_FLUSH_S", 5.0)
    if kind == "none":
        return None
    if kind == "local":
        from benchkit.remote.local import LocalExecutor

        return LocalExecutor(config.data_dir / "executor", slots=config.job_slots,
                             heartbeat_s=heartbeat, flush_s=flush)  # fmt: skip
    if kind == "ray":
        from benchkit.remote.ray_jobs import RayExecutor

        if not config.ray_address:
            raise ConfigError(
                "--executor ray needs the Ray cluster's dashboard address: "
                "--ray-address http://HEAD:8265 (the token comes from RAY_AUTH_TOKEN)"
            )
        return RayExecutor(config.ray_address, server_id=server_id(config.data_dir),
                           python=config.ray_python, placement=config.ray_placement,
                           heartbeat_s=heartbeat, flush_s=flush)  # fmt: skip
    raise ConfigError(f"unknown executor {kind!r}: choose local, ray or none")


def open_jobs(config: Any, db: Database, store: Store, catalog: Catalog, keys: Keys) -> Jobs:
    """The job service of a server: its executor, the URL its jobs reach it at, its timing
    (``BENCHKIT_JOB_RECONCILE_S``, ``BENCHKIT_JOB_LOST_AFTER_S``, ``BENCHKIT_JOB_END_GRACE_S``)."""
    # a job outlives a restart of its server: its store client keeps trying for about 2 minutes
    env = {"BENCHKIT_HTTP_RETRIES": "30", "BENCHKIT_HTTP_CONNECT_RETRIES": "30"}
    if config.tls_cert is not None and config.job_store_url is None:
        env["BENCHKIT_CA_BUNDLE"] = str(config.tls_cert)  # jobs trust the server's certificate
    timing = JobTiming(
        reconcile_s=_env_float("BENCHKIT_JOB_RECONCILE_S", 2.0),
        lost_after_s=_env_float("BENCHKIT_JOB_LOST_AFTER_S", 60.0),
        end_grace_s=_env_float("BENCHKIT_JOB_END_GRACE_S", 20.0),
    )
    return Jobs(db, store, catalog, keys, lambda: make_executor(config), config.job_url,
                job_env=env, timing=timing)  # fmt: skip
