"""The Ray executor against a real Ray head (one per session, on 127.0.0.1): a 2-node job (two
single-process torchrun nodes in one placement group) trains with ranks that agree; an unknown
job and a wrong token. Jobs through a server on Ray (2 processes, a queued second job, stop):
test_server_ray.py."""

from __future__ import annotations

import json
import re
import sys

import pytest
import requests
from remotekit import job_env, wait_for

from benchkit.errors import JobError
from benchkit.remote import joblog
from benchkit.remote.executor import EngineState
from benchkit.remote.ray_jobs import RayExecutor
from benchkit.remote.spec import JobSpec
from benchkit.store import LocalStore
from benchkit.training import runs

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture
def ray_executor(ray_head):
    ex = RayExecutor(
        ray_head.address, token=ray_head.token, server_id="tests", python=sys.executable,
        env=job_env(), placement="PACK", heartbeat_s=1, flush_s=0.5,
    )  # fmt: skip
    yield ex
    ex.close()


def _ended(ex, handle, timeout=300):
    return wait_for(lambda: ex.observe(handle).state.ended and ex.observe(handle), timeout,
                    f"Ray job {handle} to end")  # fmt: skip


def _why(ex, store, handle) -> str:
    """What the job and its engine said, for a failing assertion."""
    log = joblog.read_log(store, handle)[0].decode(errors="replace")
    return f"job log:\n{log}\nengine log:\n{ex.engine_logs(handle)[0][-4000:]}"


def _weights(text: str) -> dict[int, list]:
    return {int(m.group(1)): json.loads(m.group(2))
            for m in re.finditer(r"rank (\d+) of \d+ weights (\[.*\])", text)}  # fmt: skip


def test_a_two_node_job_trains_with_ranks_that_agree(ray_executor, tmp_path, tiny_version):
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store)
    spec = JobSpec(job_id="ray-nodes", store=str(store.root), version=version, nnodes=2,
                   config=["steps=3"])  # fmt: skip
    ray_executor.submit(spec)
    obs = _ended(ray_executor, "ray-nodes")
    text = joblog.read_log(store, "ray-nodes")[0].decode()
    assert obs.state == EngineState.SUCCEEDED, _why(ray_executor, store, "ray-nodes")
    assert "[node 0]" in text and "[node 1]" in text, _why(ray_executor, store, "ray-nodes")
    weights = _weights(text)
    assert set(weights) == {0, 1} and weights[0] == weights[1]
    rec = runs.load_record(store, "ray-nodes")
    assert rec.status == runs.FINISHED and rec.world_size == 2
    _release(ray_executor, "ray-nodes")


def _release(ex, handle: str) -> None:
    """Release a job the way the server does: retried while Ray has not settled (its monitor
    writes an ended job once more; a record deleted before that comes back)."""

    def attempt() -> bool:
        try:
            ex.release(handle)
        except JobError:
            return False
        return True

    wait_for(attempt, 120, f"Ray to let job {handle} go")
    r = requests.get(f"{ex.address}/api/jobs/{handle}", headers=ex.session.headers, timeout=10)
    assert r.status_code == 404, r.text  # gone, and not written again


def _processes_of_run(run_id: str) -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if run_id in (p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_a_stopped_two_node_job_stops_every_node(ray_executor, tmp_path, tiny_version):
    """A stop reaches both nodes as SIGTERM (an agreed stop: the run records itself
    interrupted, never failed, whichever node gets it first) and leaves no process of the job on
    the machine."""
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store)
    spec = JobSpec(job_id="ray-nodes-stop", store=str(store.root), version=version, nnodes=2,
                   config=["steps=2000", "sleep=0.1"], stop_grace_s=60)  # fmt: skip
    ray_executor.submit(spec)

    def both_train():
        text = joblog.read_log(store, spec.job_id)[0].decode()
        return "[node 0] step 1 " in text and "as node 1 of 2" in text  # rank 0 prints steps

    wait_for(both_train, 300, "both nodes to train")
    assert _processes_of_run(spec.run_id)  # the nodes' torchrun and workers
    ray_executor.cancel(spec.job_id, spec.stop_grace_s)
    obs = _ended(ray_executor, spec.job_id, 180)
    assert obs.state == EngineState.STOPPED, _why(ray_executor, store, spec.job_id)
    rec = wait_for(lambda: joblog.read_exit(store, spec.job_id), 60, "exit.json")
    assert rec.stop_requested and not rec.killed, rec
    text = joblog.read_log(store, spec.job_id)[0].decode()
    assert "stopping 2 node(s)" in text, _why(ray_executor, store, spec.job_id)
    wait_for(lambda: not _processes_of_run(spec.run_id), 180, "the nodes' processes to end")
    # every process gone: the record is final (it was read as still running before)
    record = runs.load_record(store, spec.run_id)
    assert record.status == runs.INTERRUPTED, (record.traceback, text[-6000:])
    assert "SIGTERM" in (record.traceback or ""), record
    _release(ray_executor, spec.job_id)


def test_an_unknown_job_is_unknown_and_a_wrong_token_is_a_clear_error(ray_head):
    ex = RayExecutor(ray_head.address, token="wrong")
    assert ex.observe("no-such-job").state == EngineState.UNKNOWN
    with pytest.raises(Exception, match="refused the request"):
        ex.check()
    good = RayExecutor(ray_head.address, token=ray_head.token)
    assert good.check() == "2.60.0"
    assert good.observe("no-such-job").state == EngineState.UNKNOWN


def test_the_sweep_stops_and_deletes_ray_jobs_the_server_does_not_know(ray_head, tmp_path):
    """Ray jobs tagged with this server's id: one the database does not know and still running
    is stopped, one that has ended is deleted; an active job of the database is left alone;
    another server's job is not touched."""
    import requests

    from benchkit.server.app import Services
    from benchkit.server.config import ServerConfig
    from benchkit.server.db.jobs import Job
    from benchkit.server.db.models import utcnow

    api = f"{ray_head.address}/api/jobs/"

    def submit(sid: str, server: str, seconds: float) -> None:
        body = {"submission_id": sid, "entrypoint": f"{sys.executable} -c 'import time; "
                f"time.sleep({seconds})'", "metadata": {"benchkit_server": server}}  # fmt: skip
        requests.post(api, json=body, headers=ray_head.headers, timeout=60).raise_for_status()

    def status(sid: str) -> str | None:
        r = requests.get(api + sid, headers=ray_head.headers, timeout=10)
        return r.json()["status"] if r.status_code == 200 else None

    services = Services.open(ServerConfig(data_dir=tmp_path / "srv", executor="none"))
    try:
        jobs = services.jobs
        jobs.executor = RayExecutor(ray_head.address, token=ray_head.token, server_id="sweeper")
        project, _ = services.keys.create_project("sweep")
        with services.db.write() as s:
            s.add(Job(project_id=project.id, id="known", run_id="known", name="t", version=1,
                      state="running", executor="ray", handle="sweep-known", spec={},
                      message="", log_bytes=0, metric_parts=0, released=False,
                      created_at=utcnow()))  # fmt: skip
        submit("sweep-stray", "sweeper", 600)
        submit("sweep-known", "sweeper", 600)
        submit("sweep-ended", "sweeper", 0)
        submit("sweep-other", "another-server", 600)
        wait_for(lambda: status("sweep-ended") == "SUCCEEDED", 180, "the short job to end")
        wait_for(lambda: status("sweep-stray") == "RUNNING", 180, "the stray job to run")
        assert sorted(jobs.sweep()) == ["sweep-ended", "sweep-stray"]
        # its record deleted, once Ray has settled (RayExecutor.release): later sweeps retry
        wait_for(lambda: status("sweep-ended") is None or (jobs.sweep() and False), 120,
                 "the ended job's record to be deleted")  # fmt: skip
        wait_for(lambda: status("sweep-stray") == "STOPPED", 120, "the stray job to be stopped")
        assert status("sweep-known") in ("PENDING", "RUNNING")  # the database's own job
        assert status("sweep-other") in ("PENDING", "RUNNING")  # another server's
        assert jobs.sweep() == ["sweep-stray"]  # stopped now: a next sweep deletes it
        wait_for(lambda: status("sweep-stray") is None or (jobs.sweep() and False), 120,
                 "the stopped job's record to be deleted")  # fmt: skip
    finally:
        services.close()
        for sid in ("sweep-stray", "sweep-known", "sweep-other"):  # leave the head empty
            requests.post(api + sid + "/stop", headers=ray_head.headers, timeout=30)
        for sid in ("sweep-known", "sweep-other"):
            wait_for(lambda sid=sid: status(sid) in (None, "STOPPED", "FAILED"), 120, sid)
            requests.delete(api + sid, headers=ray_head.headers, timeout=30)
