"""The local executor with real processes: slots and a first-come queue, idempotent submits,
release, and what it refuses up front. (Through a server, with the CLI: cancel, adoption after
``kill -9``, timeouts and bad requirements are in test_server_jobs.py.)"""

from __future__ import annotations

import psutil
import pytest
from remotekit import job_env, make_wheel, wait_for

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

    def make(slots: int = 2, gpus: int = 0, **env: str) -> LocalExecutor:
        ex = LocalExecutor(tmp_path / "executor", slots=slots, gpus=gpus, env={**job_env(), **env},
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
def test_jobs_wait_for_their_gpus_first_come_first_served(make_executor, tmp_path, tiny_version):
    store = LocalStore(tmp_path / "store")
    make_wheel(tmp_path / "wheels", "bkgpu", "1.0", "")  # a requirement pip installs offline
    version = tiny_version(store, requirements="torch\nbkgpu==1.0\n")
    ex = make_executor(
        slots=2, gpus=1, PIP_FIND_LINKS=str(tmp_path / "wheels"), PIP_NO_INDEX="1"
    )  # one GPU to hand out (a machine without any is fine:
    # the job's torch then finds none and trains on the CPU)
    first = JobSpec(job_id="first", store=str(store.root), version=version, gpus=1,
                    config=["steps=3"])  # fmt: skip
    second = JobSpec(job_id="second", store=str(store.root), version=version, gpus=1,
                     config=["steps=2"])  # fmt: skip
    assert ex.submit(first) == "first" and ex.submit(first) == "first"  # idempotent
    ex.submit(second)
    wait_for(lambda: ex.observe("first").state == EngineState.RUNNING, 60, "the first job to start")
    assert ex.observe("second").state == EngineState.QUEUED  # a slot is free, the GPU is not
    obs = _ended(ex, "first")
    log = joblog.read_log(store, "first")[0].decode()
    assert obs.state == EngineState.SUCCEEDED, log + ex.engine_logs("first")[0]
    assert "checksums verified" in log and "step 2 " in log and "devices 0" in log
    assert "building environment" in log and "torch: the machine's own is used" in log
    assert runs.load_record(store, "first").status == runs.FINISHED
    assert not (ex.jobs_dir / "first" / "work").exists()  # the checkout went with the job
    first_end = joblog.read_exit(store, "first").ended
    assert _ended(ex, "second").state == EngineState.SUCCEEDED
    assert joblog.read_heartbeat(store, "second").started >= first_end - 1.0
    second_log = joblog.read_log(store, "second")[0].decode()
    assert "reused (1 requirement(s))" in second_log and "building" not in second_log
    assert not _job_processes("first", "second")
    ex.release("first")
    assert ex.observe("first").state == EngineState.UNKNOWN and not (ex.jobs_dir / "first").exists()
    assert ex.owned() == ["second"]


def test_what_the_local_executor_refuses_up_front(make_executor, tmp_path):
    ex = make_executor(slots=2)
    with pytest.raises(JobError, match="--executor ray"):
        ex.submit(JobSpec(job_id="nodes", store=str(tmp_path), version=1, nnodes=2))
    with pytest.raises(JobError, match="has 0"):
        ex.submit(JobSpec(job_id="gpu", store=str(tmp_path), version=1, gpus=1))
    with pytest.raises(JobError, match="2 slot"):
        ex.submit(JobSpec(job_id="big", store=str(tmp_path), version=1, nproc_per_node=3))
    with pytest.raises(JobError, match="invalid job id"):
        JobSpec(job_id="../escape", store=str(tmp_path), version=1)
    assert ex.observe("never-submitted").state == EngineState.UNKNOWN
    assert ex.owned() == []
