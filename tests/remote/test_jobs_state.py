"""The jobs state machine and its reconciler, on a real server database and store, with an
engine that cannot be reached (a Ray address nothing listens on): a failed status poll is never
a failed job; only a stale heartbeat makes a job lost; a terminal state is written once; a
cancel is recorded before it is sent, survives a restart of the server and is sent again."""

from __future__ import annotations

import time

import pytest
from remotekit import free_ports

from benchkit.remote import joblog
from benchkit.remote.executor import EngineState
from benchkit.remote.local import LocalExecutor
from benchkit.remote.ray_jobs import RayExecutor
from benchkit.server.app import Services
from benchkit.server.config import ServerConfig
from benchkit.server.db.jobs import Job
from benchkit.server.db.models import utcnow
from benchkit.server.services.jobs import JobTiming


def _open(data_dir):
    services = Services.open(ServerConfig(data_dir=data_dir, executor="none"))
    [port] = free_ports(1)  # nothing listens there: every call to the engine fails
    services.jobs.executor = RayExecutor(f"http://127.0.0.1:{port}", token="t", timeout_s=2)
    services.jobs.timing = JobTiming(lost_after_s=30, end_grace_s=1, cancel_resend_s=0)
    return services


@pytest.fixture
def server(tmp_path):
    services = _open(tmp_path / "srv")
    project, _ = services.keys.create_project("state")
    yield services, project.id
    services.close()


def _running_job(services, project_id: str, job_id: str) -> None:
    """A job the engine took (it has a handle) and whose shim reports, as after a submit."""
    with services.db.write() as s:
        s.add(Job(project_id=project_id, id=job_id, run_id=job_id, name="tiny", version=1,
                  state="running", executor="ray", handle=job_id,
                  spec={"job_id": job_id, "stop_grace_s": 5}, message="", log_bytes=0,
                  metric_parts=0, released=False, created_at=utcnow(), started_at=utcnow()))  # fmt: skip


def _beat(services, project_id: str, job_id: str, age: float = 0.0) -> None:
    pstore = services.jobs.project_store(project_id)
    beat = joblog.Heartbeat(time=time.time() - age, host="h", pid=1, started=time.time() - 60)
    joblog.write_heartbeat(pstore, job_id, beat)


def _exit(services, project_id: str, job_id: str, code: int, stopped: bool = False) -> None:
    pstore = services.jobs.project_store(project_id)
    rec = joblog.ExitRecord(exit_code=code, started=time.time() - 60, ended=time.time(), host="h",
                            stop_requested=stopped)  # fmt: skip
    joblog.write_exit(pstore, job_id, rec)


def _row(services, project_id: str, job_id: str) -> Job:
    with services.db.read() as s:
        return s.get(Job, (project_id, job_id))


def test_a_failed_poll_is_not_a_failed_job_a_stale_heartbeat_is_lost_and_stays_lost(server):
    services, pid = server
    jobs = services.jobs
    assert jobs.executor.observe("j1").state == EngineState.UNKNOWN  # unreachable, no raise
    _running_job(services, pid, "j1")
    _beat(services, pid, "j1")
    for _ in range(3):  # the engine cannot be asked; the heartbeat is fresh: nothing changes
        jobs.reconcile()
    assert _row(services, pid, "j1").state == "running"
    _beat(services, pid, "j1", age=31)  # the shim stopped reporting 31 s ago
    jobs.reconcile_job(pid, "j1")
    lost = _row(services, pid, "j1")
    assert lost.state == "lost" and "no heartbeat for 31 s" in lost.message, lost.message
    assert not lost.released  # the engine could not be reached to release it: tried again later
    # a terminal state is written once: a late exit.json or a second conclusion changes nothing
    _exit(services, pid, "j1", 0)
    jobs.reconcile_job(pid, "j1")
    jobs._finish(pid, "j1", "succeeded", 0, "late")
    again = _row(services, pid, "j1")
    assert (again.state, again.message, again.ended_at) == ("lost", lost.message, lost.ended_at)


def test_a_cancel_is_recorded_before_it_is_sent_and_sent_again_after_a_restart(tmp_path):
    services = _open(tmp_path / "srv")
    project, _ = services.keys.create_project("cancel")
    pid = project.id
    _running_job(services, pid, "j2")
    _beat(services, pid, "j2")
    view = services.jobs.cancel(pid, "j2")  # the engine cannot be reached
    assert view["cancel_requested"] and view["state"] == "running"
    row = _row(services, pid, "j2")
    assert row.cancel_requested_at is not None and row.cancel_sent_at is None
    assert row.cancel_reason == "user"
    services.jobs.reconcile()  # tried again, still unreachable: still running, still wanted
    assert _row(services, pid, "j2").cancel_sent_at is None
    services.close()

    services = _open(tmp_path / "srv")  # the server restarts: the intent is in its database
    try:
        engine = LocalExecutor(tmp_path / "engine", slots=1)  # an engine that answers now
        services.jobs.executor = engine
        services.jobs.reconcile()
        row = _row(services, pid, "j2")
        assert row.cancel_sent_at is not None and row.state == "running"
        _exit(services, pid, "j2", 130, stopped=True)  # the shim recorded the stop
        services.jobs.reconcile()
        ended = _row(services, pid, "j2")
        assert (ended.state, ended.exit_code, ended.message) == ("cancelled", 130, "cancelled")
        assert ended.released
        engine.close()
    finally:
        services.close()


def test_a_job_cancelled_before_it_was_submitted_never_runs(server, tmp_path):
    services, pid = server
    engine = LocalExecutor(tmp_path / "engine", slots=1)
    services.jobs.executor = engine
    with services.db.write() as s:  # accepted, not yet given to the engine (no handle)
        s.add(Job(project_id=pid, id="j3", run_id="j3", name="tiny", version=1, state="queued",
                  executor="local", spec={"job_id": "j3"}, message="", log_bytes=0,
                  metric_parts=0, released=False, created_at=utcnow()))  # fmt: skip
    assert services.jobs.cancel(pid, "j3")["state"] == "cancelled"
    services.jobs.reconcile()
    row = _row(services, pid, "j3")
    assert row.state == "cancelled" and row.handle is None and row.key_id is None
    assert engine.owned() == []  # never submitted
    engine.close()


def test_the_stall_watch_sees_metrics_the_server_ingested(server):
    """A run on a Bench server sends its metrics to the server's tracking, not to the store:
    each ingested batch counts as activity, as a metric part in the store does."""
    from benchkit.server.db.tracking import ingest_cursors

    services, pid = server
    _running_job(services, pid, "j4")
    with services.db.read() as s:
        job = s.get(Job, (pid, "j4"))
    pstore = services.jobs.project_store(pid)
    assert services.jobs._metric_activity(job, pstore) == 0
    with services.db.engine.begin() as conn:
        conn.execute(ingest_cursors.insert().values(project_id=pid, run_id="j4", writer="w0",
                                                    next_seq=7, seen_at=time.time()))  # fmt: skip
    assert services.jobs._metric_activity(job, pstore) == 7
    with services.db.engine.begin() as conn:
        conn.execute(ingest_cursors.update().values(next_seq=12))
    pstore.put("runs/j4/metrics/w1-1-3.jsonl", b"{}\n")  # a tracker writing to the store
    assert services.jobs._metric_activity(job, pstore) == 13
