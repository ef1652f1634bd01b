"""The local executor with real processes: slots and a first-come queue, a 2-process job,
cancel, adoption by a new executor over the same directory (a restarted server), requirements
that cannot be installed, and what it refuses up front."""

from __future__ import annotations

import psutil
import pytest
from remotekit import job_env, wait_for

from benchkit.errors import JobError
from benchkit.remote import joblog
from benchkit.remote.executor import EngineState
from benchkit.remote.local import LocalExecutor
from benchkit.remote.spec import JobSpec
from benchkit.store import LocalStore
from benchkit.training import runs


@pytest.fixture
def make_executor(tmp_path, env_cache):
    made = []

    def make(slots: int = 2, **env: str) -> LocalExecutor:
        ex = LocalExecutor(tmp_path / "executor", slots=slots, env={**job_env(), **env},
                           heartbeat_s=1, flush_s=0.3)  # fmt: skip
        ex.env_root = env_cache  # one environment cache for the session
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


def _job_processes(*job_ids: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["environ"]):
        if (p.info["environ"] or {}).get("BENCHKIT_JOB_ID") in job_ids:
            found.append(p)
    return found


def _ended(ex, handle, timeout=300):
    return wait_for(lambda: ex.observe(handle).state.ended and ex.observe(handle), timeout,
                    f"job {handle} to end")  # fmt: skip


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_job_succeeds_while_the_next_waits_for_its_slots(
    make_executor, tmp_path, tiny_version
):
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store)
    ex = make_executor(slots=2)
    two = JobSpec(job_id="two", store=str(store.root), version=version, nproc_per_node=2,
                  config=["steps=3"])  # fmt: skip
    one = JobSpec(job_id="one", store=str(store.root), version=version, config=["steps=2"])
    assert ex.submit(two) == "two" and ex.submit(two) == "two"  # idempotent
    ex.submit(one)
    wait_for(lambda: ex.observe("two").state == EngineState.RUNNING, 60, "the first job to start")
    assert ex.observe("one").state == EngineState.QUEUED
    obs = _ended(ex, "two")
    log = joblog.read_log(store, "two")[0].decode()
    assert obs.state == EngineState.SUCCEEDED, log + ex.engine_logs("two")[0]
    assert "checksums verified" in log and "rank 1 of 2" in log
    rec = runs.load_record(store, "two")
    assert rec.status == runs.FINISHED and rec.world_size == 2
    assert not (ex.jobs_dir / "two" / "work").exists()  # the checkout went with the job
    first_end = joblog.read_exit(store, "two").ended
    assert _ended(ex, "one").state == EngineState.SUCCEEDED
    assert joblog.read_heartbeat(store, "one").started >= first_end - 1.0
    assert "environment" in joblog.read_log(store, "one")[0].decode()
    assert not _job_processes("two", "one")
    ex.release("two")
    assert ex.observe("two").state == EngineState.UNKNOWN and not (ex.jobs_dir / "two").exists()


@pytest.mark.slow
def test_cancel_stops_a_running_job_and_a_new_executor_adopts_a_live_one(
    make_executor, tmp_path, tiny_version
):
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store)
    ex = make_executor(slots=2)
    ex.submit(JobSpec(job_id="long", store=str(store.root), version=version,
                      config=["steps=400", "sleep=0.1"], stop_grace_s=20))  # fmt: skip
    ex.submit(JobSpec(job_id="adopted", store=str(store.root), version=version,
                      config=["steps=30", "sleep=0.2"]))  # fmt: skip
    for job in ("long", "adopted"):
        wait_for(lambda job=job: "step 1 " in joblog.read_log(store, job)[0].decode(), 180,
                 f"{job} to train")  # fmt: skip
    ex.close()  # the server went away; its jobs did not
    again = make_executor(slots=2)
    assert again.observe("adopted").state == EngineState.RUNNING
    assert again.observe("long").state == EngineState.RUNNING
    assert again.cancel("long") and again.cancel("long")  # idempotent
    assert _ended(again, "long", 120).state in (EngineState.STOPPED, EngineState.FAILED)
    rec = wait_for(lambda: joblog.read_exit(store, "long"), 60, "exit.json of the cancelled job")
    assert rec.stop_requested and not rec.killed
    assert runs.load_record(store, "long").status == runs.INTERRUPTED
    assert not _job_processes("long")
    _ended(again, "adopted")
    done = joblog.read_exit(store, "adopted")
    assert done.exit_code == 0
    assert "step 29 " in joblog.read_log(store, "adopted")[0].decode()  # the log is whole


def test_requirements_that_cannot_be_installed_fail_the_job_with_the_reason(
    make_executor, tmp_path, tiny_version
):
    store = LocalStore(tmp_path / "store")
    version = tiny_version(store, requirements="no-such-package-benchkit-test==1.0\n")
    ex = make_executor(PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    ex.submit(JobSpec(job_id="badreq", store=str(store.root), version=version))
    obs = _ended(ex, "badreq", 180)
    assert obs.state == EngineState.FAILED
    log = joblog.read_log(store, "badreq")[0].decode()
    assert "could not be installed" in log and "no-such-package-benchkit-test" in log
    assert not runs.list_run_ids(store)  # it failed before any training started


def test_what_the_local_executor_refuses_up_front(make_executor, tmp_path):
    ex = make_executor(slots=2)
    with pytest.raises(JobError, match="--executor ray"):
        ex.submit(JobSpec(job_id="nodes", store=str(tmp_path), version=1, nnodes=2))
    with pytest.raises(JobError, match="2 slot"):
        ex.submit(JobSpec(job_id="big", store=str(tmp_path), version=1, nproc_per_node=3))
    with pytest.raises(JobError, match="invalid job id"):
        JobSpec(job_id="../escape", store=str(tmp_path), version=1)
    assert ex.observe("never-submitted").state == EngineState.UNKNOWN
    assert ex.owned() == []
