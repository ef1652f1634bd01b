"""``run --remote`` against a Bench server whose executor is a real Ray head (2 CPUs): a
2-process job trains there and its log streams back; a second job waits while the first holds
the CPUs, then a Ctrl-C of its client cancels it mid-run; Ray's records of both are deleted once
they have ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
import requests
from remotekit import TINY, job_server, wait_for

from benchkit.remote import joblog
from benchkit.remote.client import JobsClient
from benchkit.store.http import HttpStore
from benchkit.training import runs

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def ray_job_server(tmp_path_factory, ray_head):
    server = job_server(
        tmp_path_factory.mktemp("ray-jobs"), "--executor", "ray", "--ray-address", ray_head.address,
        "--ray-placement", "PACK", "--ray-python", sys.executable, RAY_AUTH_TOKEN=ray_head.token,
    )  # fmt: skip
    yield server
    server.close()


def cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchkit", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=400)  # fmt: skip


def test_a_two_process_run_on_ray_while_a_second_waits_then_ctrl_c_cancels_it(
    ray_job_server, ray_head, tmp_path, monkeypatch
):
    from serverkit import use_project

    project = use_project(monkeypatch, ray_job_server)
    monkeypatch.setenv("BENCHKIT_STORE", ray_job_server.url)
    code = tmp_path / "tiny"
    code.mkdir()
    (code / "benchkit.toml").write_text('[project]\nname = "tiny"\n')
    (code / "train.py").write_text(textwrap.dedent(TINY))
    store = HttpStore(ray_job_server.url, project.key, project.id)
    jobs = JobsClient(store)
    first = cli("run", "train.py", "--remote", "--detach", "--processes", "2", "-c", "steps=6",
                "-c", "sleep=0.5", cwd=code)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr + ray_job_server.log()[-3000:]
    # the second is followed by its client, which a Ctrl-C will stop below
    second = subprocess.Popen(
        [sys.executable, "-m", "benchkit", "run", "train.py", "--remote", "--grace", "20",
         "-c", "steps=400", "-c", "sleep=0.2", "--name", "second"],
        cwd=code, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: len(jobs.list(active=True)) == 2, 120, "the second job to be submitted")
    a, b = jobs.list(active=True)
    assert "ray (" in first.stderr and a["executor"] == "ray"
    wait_for(lambda: jobs.get(a["id"])["state"] == "running", 180, "the first job to run")
    assert jobs.get(b["id"])["state"] == "queued"  # the head's 2 CPUs are the first job's

    follow = cli("runs", "logs", a["run_id"], "--follow", cwd=code)  # streams until it ends
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert "rank 0 of 2" in follow.stdout and "rank 1 of 2" in follow.stdout
    assert jobs.get(a["id"])["state"] == "succeeded"
    done = joblog.read_exit(store, a["id"])
    assert runs.load_record(store, a["run_id"]).world_size == 2

    wait_for(
        lambda: "step 2 " in joblog.read_log(store, b["id"])[0].decode(), 180, "the second job"
    )
    assert joblog.read_heartbeat(store, b["id"]).started >= done.ended - 1.0
    second.send_signal(signal.SIGINT)  # Ctrl-C without a terminal: cancel, follow to the end
    out, err = second.communicate(timeout=180)
    assert second.returncode == 130, out + err
    assert "stop requested" in err and "cancelled" in err
    assert out.count("step 2 ") == 1  # followed on after the Ctrl-C where it was
    ended = jobs.get(b["id"])
    assert ended["state"] == "cancelled", ended
    assert runs.load_record(store, b["run_id"]).status == runs.INTERRUPTED
    left = [p for p in psutil.process_iter(["environ"])
            if (p.info["environ"] or {}).get("BENCHKIT_JOB_ID") in (a["id"], b["id"])]  # fmt: skip
    assert not left, f"processes left behind: {left}"

    def ray_forgot(job_id: str) -> bool:
        r = requests.get(
            f"{ray_head.address}/api/jobs/{job_id}", headers=ray_head.headers, timeout=10
        )
        return r.status_code == 404

    wait_for(lambda: ray_forgot(a["id"]) and ray_forgot(b["id"]), 120, "Ray's job records to go")
