"""Remote runs through a real Bench server with the local executor, driven by the real CLI:
the cat/dog example on 2 processes, a cancel mid-run then ``--remote --resume``, a stalled job
timed out, ``kill -9`` of the server while a job runs, and bad input refused before anything
runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime

import psutil
import pytest
from remotekit import TINY, bk, wait_for

from benchkit.code.package import migrate_code
from benchkit.errors import StoreError
from benchkit.remote import joblog
from benchkit.remote.client import JobsClient
from benchkit.store.http import HttpStore
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

CATDOG = ["-c", "batch_size=8", "-c", "workers=0", "-c", "width=4"]


def cli(*args, cwd, timeout=300, check=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    res = subprocess.run([sys.executable, "-m", "benchkit", *map(str, args)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    if check is not None:
        assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def store_of(server, project) -> HttpStore:
    return HttpStore(server.url, project.key, project.id)


def flat(text: str) -> str:
    """``text`` with its line breaks and runs of spaces as single spaces (rich wraps lines)."""
    return " ".join(text.split())


def job_processes(job_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["environ"]):
        try:
            if (p.info["environ"] or {}).get("BENCHKIT_JOB_ID") == job_id:
                found.append(p)
        except psutil.Error:
            continue
    return found


def wait_state(jobs: JobsClient, job_id: str, states, timeout=300):
    return wait_for(lambda: (j := jobs.get(job_id))["state"] in states and j, timeout,
                    f"job {job_id} to be {'/'.join(states)}")  # fmt: skip


def tiny_project(tmp_path, requirements: str = "") -> object:
    project = tmp_path / "tiny"
    project.mkdir()
    (project / "benchkit.toml").write_text('[project]\nname = "tiny"\n')
    (project / "train.py").write_text(textwrap.dedent(TINY))
    if requirements:
        (project / "requirements.txt").write_text(requirements)
    return project


def test_catdog_on_two_processes_cancelled_mid_run_then_resumed_remotely_to_the_end(
    local_job_server, server_project, catdog_project, capsys
):
    cli("run", "train.py", "--remote", "--detach", "--processes", "2", "--grace", "20",
        "-c", "epochs=40", "-c", "batch_size=4", "-c", "workers=0", "-c", "width=4",
        cwd=catdog_project, check=0)  # fmt: skip
    store = store_of(local_job_server, server_project)
    jobs = JobsClient(store)
    [job] = jobs.list(active=True)
    run_id = job["run_id"]
    assert job["id"] == run_id and job["processes"] == 2
    wait_for(lambda: "epoch 1: validation" in joblog.read_log(store, job["id"])[0].decode(), 300,
             "the first epoch")  # fmt: skip
    assert bk(capsys, "runs", "stop", run_id)[0] == 0
    ended = wait_state(jobs, job["id"], ("cancelled", "failed", "succeeded", "lost"), 120)
    assert ended["state"] == "cancelled", ended
    rec = runs.load_record(store, run_id)
    assert rec.status == runs.INTERRUPTED and rec.world_size == 2
    saved = [c.name for c in ckpt.list_checkpoints(store, run_id)]
    assert saved and "epoch-0040" not in saved, saved
    assert not job_processes(job["id"]), "a process of the cancelled job is still running"

    # continue it on the server from its checkpoint, one more epoch, following its log
    done = int(saved[-1].split("-")[1])
    res = cli("run", "train.py", "--remote", "--resume", "--processes", "2", "-c",
              f"epochs={done + 1}", cwd=catdog_project, timeout=400)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"epoch {done + 1}: validation" in res.stdout  # streamed back
    assert "epoch 1: validation" not in res.stdout and "succeeded" in res.stderr
    rec = runs.load_record(store, run_id)
    assert rec.status == runs.FINISHED and rec.resumed and rec.world_size == 2
    assert f"epoch-{done + 1:04d}" in [c.name for c in ckpt.list_checkpoints(store, run_id)]
    catalog = store.catalog()  # the metrics went to the server's tracking
    assert list(catalog.points(run_id, "loss"))
    assert len({p["step"] for p in catalog.points(run_id, "val_accuracy")}) >= done + 1
    first, second = jobs.list(run=run_id)
    assert (first["resume"], second["resume"]) == (False, True) and second["state"] == "succeeded"
    assert "checksums verified" in joblog.read_log(store, second["id"])[0].decode()
    code, logs, _ = bk(capsys, "runs", "logs", run_id)  # both jobs' logs
    assert code == 0 and "epoch 1: validation" in logs and f"epoch {done + 1}: validation" in logs
    work = local_job_server.data_dir / "executor" / "jobs"
    wait_for(lambda: not any(work.iterdir()), 60, "the jobs' directories to be released")


def submit_together(project, *runs: list[str]) -> None:
    """``run train.py --remote --detach ARGS`` for each of ``runs``, the clients side by side."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "benchkit", "run", "train.py", "--remote",
                               "--detach", *args], cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args in runs]  # fmt: skip
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out


def test_limits_and_a_killed_supervisor_three_jobs_side_by_side(
    local_job_server, server_project, tmp_path, capsys
):
    """Three jobs at once (the server has 3 slots). One trains, then writes nothing: timed out
    by --stall-timeout (40 s: starting Python and torch on a loaded machine is silent for a
    while too, and must not count as the stall). One writes all the time and runs past --max-duration (counted from its
    first heartbeat, preparation included: 45 s leaves a loaded machine time to start
    training): timed out. The third's supervisor is killed with kill -9: lost, and its
    training processes are killed too. `jobs list` and `show-ex` show them while they run;
    `runs logs` prints each log and exits with the job's status (124 timed out, 75 lost);
    `jobs show` and `stop-svr` (the original's name for `runs stop`) on an ended one."""
    project = tiny_project(tmp_path)
    submit_together(
        project,
        ["--stall-timeout", "40", "--grace", "10", "--name", "stalls", "-c", "steps=3",
         "-c", "sleep=600"],
        ["--max-duration", "45", "--grace", "10", "--name", "too-long", "-c", "steps=2000",
         "-c", "sleep=0.1"],
        ["--name", "killed", "-c", "steps=2000", "-c", "sleep=0.1"],
    )  # fmt: skip
    store = store_of(local_job_server, server_project)
    jobs = JobsClient(store)
    killed, stalls, too_long = sorted(jobs.list(active=True), key=lambda j: j["name"])
    assert (killed["name"], stalls["name"], too_long["name"]) == ("killed", "stalls", "too-long")
    assert too_long["max_duration_s"] == 45 and stalls["stall_timeout_s"] == 40
    wait_state(jobs, too_long["id"], ("running",), 300)
    code, table, _ = bk(capsys, "jobs", "list")
    assert code == 0 and all(j["id"] in table for j in (killed, stalls, too_long)), table
    code, listed, _ = bk(capsys, "show-ex", "--json")
    assert {j["id"] for j in json.loads(listed)} == {killed["id"], stalls["id"], too_long["id"]}

    wait_for(lambda: "step 3 " in joblog.read_log(store, killed["id"])[0].decode(), 300, "training")
    beat = joblog.read_heartbeat(store, killed["id"])
    training = job_processes(killed["id"])
    assert training and all(p.pid != beat.pid for p in training)  # the shim's children
    os.kill(beat.pid, signal.SIGKILL)  # the supervisor only: it cannot write exit.json
    lost = wait_state(jobs, killed["id"], ("lost", "failed", "succeeded", "cancelled"), 120)
    assert lost["state"] == "lost" and "without recording an outcome" in lost["message"], lost
    assert joblog.read_exit(store, killed["id"]) is None
    wait_for(lambda: not job_processes(killed["id"]), 30, "the killed job's processes to end")
    assert runs.load_record(store, killed["run_id"]).status == runs.FAILED
    code, out, err = bk(capsys, "runs", "logs", killed["run_id"])
    assert code == 75 and "step 3 " in out and "lost" in err

    for job, why in ((stalls, "no new output"), (too_long, "maximum duration of 45")):
        ended = wait_state(jobs, job["id"], ("timed_out", "failed", "cancelled", "lost"), 300)
        assert ended["state"] == "timed_out" and why in ended["message"], ended
        assert runs.load_record(store, job["run_id"]).status == runs.INTERRUPTED
        assert not job_processes(job["id"])
        code, out, err = bk(capsys, "runs", "logs", job["run_id"])
        assert code == 124 and "step 0 " in out and "timed out" in err  # it trained, then...
    started = datetime.fromisoformat(ended["started"])
    assert (datetime.fromisoformat(ended["ended"]) - started).total_seconds() >= 45
    code, shown, _ = bk(capsys, "jobs", "show", too_long["id"])
    assert code == 0 and "timed_out" in shown and "maximum duration of 45" in flat(shown), shown
    code, shown, _ = bk(capsys, "jobs", "show", too_long["id"], "--json")
    assert code == 0 and json.loads(shown) == jobs.get(too_long["id"])
    code, _, err = bk(capsys, "stop-svr", too_long["run_id"])  # the original's name for runs stop
    assert code == 0 and "is not running" in err and "timed_out" in err, err
    code, _, err = bk(capsys, "jobs", "show", "no-such-job")
    assert code != 0 and "no-such-job" in err, err
    assert "step 2 " not in joblog.read_log(store, stalls["id"])[0].decode()  # stalled at once
    code, listed, _ = bk(capsys, "jobs", "list", "--json")
    assert code == 0 and json.loads(listed) == []


def test_a_job_outlives_kill_9_of_its_server_and_is_adopted_with_its_whole_log(
    local_job_server, server_project, tmp_path
):
    project = tiny_project(tmp_path)
    cli("run", "train.py", "--remote", "--detach", "-c", "steps=40", "-c", "sleep=0.25",
        cwd=project, check=0)  # fmt: skip
    store = store_of(local_job_server, server_project)
    jobs = JobsClient(store)
    [job] = jobs.list(active=True)
    wait_for(lambda: "step 3 " in joblog.read_log(store, job["id"])[0].decode(), 300, "training")
    shim = joblog.read_heartbeat(store, job["id"]).pid
    local_job_server.kill()  # SIGKILL: no shutdown code runs
    assert psutil.pid_exists(shim)  # the job is in a session of its own
    local_job_server.start()
    ended = wait_state(jobs, job["id"], ("succeeded", "failed", "lost", "cancelled"), 300)
    assert ended["state"] == "succeeded", (
        ended,
        joblog.read_log(store, job["id"])[0].decode()[-3000:],
    )
    assert joblog.read_exit(store, job["id"]).extra["attempt"] == 1  # adopted, not run again
    lines = [ln for ln in joblog.read_log(store, job["id"])[0].decode().splitlines()
             if ln.startswith("step ")]  # fmt: skip
    assert [int(ln.split()[1]) for ln in lines] == list(range(40))
    assert runs.load_record(store, job["run_id"]).status == runs.FINISHED


def test_bad_input_is_refused_before_anything_runs(local_job_server, server_project, tmp_path):
    project = tiny_project(tmp_path)
    store = store_of(local_job_server, server_project)
    res = cli("run", "train.py", "--remote", "-c", "no_such_key=1", cwd=project, check=1)
    assert "unknown config key 'no_such_key'" in res.stderr
    assert not store.list("code/") and not JobsClient(store).list()  # nothing stored, nothing ran
    with pytest.raises(StoreError, match="code version 99 does not exist"):
        JobsClient(store).submit(version=99, name="tiny")
    version = migrate_code(project / "train.py", store).version
    with pytest.raises(StoreError, match="--executor ray"):
        JobsClient(store).submit(version=version, name="tiny", nodes=2)
    assert not JobsClient(store).list()


def test_requirements_that_cannot_be_installed_fail_the_job_with_pips_reason(
    local_job_server, server_project, tmp_path
):
    project = tiny_project(tmp_path, "no-such-package-benchkit-test==1.0\n")
    res = cli("run", "train.py", "--remote", cwd=project, check=1)
    assert "could not be installed" in res.stdout and "no-such-package-benchkit-test" in res.stdout
    assert "failed" in res.stderr
    store = store_of(local_job_server, server_project)
    assert not runs.list_run_ids(store)  # it failed before training started


def test_a_server_without_an_executor_says_so_before_packaging(tmp_path, monkeypatch, capsys):
    from remotekit import job_server
    from serverkit import use_project

    server = job_server(tmp_path, "--executor", "none")
    try:
        project = use_project(monkeypatch, server)
        monkeypatch.setenv("BENCHKIT_STORE", server.url)
        res = cli("run", "train.py", "--remote", cwd=tiny_project(tmp_path), check=1)
        assert "runs no jobs" in res.stderr and "--executor local" in res.stderr
        assert not store_of(server, project).list("code/")
        code, listed, _ = bk(capsys, "jobs", "list", "--json")
        assert code == 0 and json.loads(listed) == []
    finally:
        server.close()


def test_ctrl_c_at_a_terminal_can_only_stop_following_and_runs_logs_follows_again(
    local_job_server, server_project, tmp_path, capsys
):
    """`run --remote` with a terminal: Ctrl-C asks; "f" stops following (exit 130) and the job
    goes on; `runs logs RUN --follow` picks it up and exits with the job's status."""
    import pty

    project = tiny_project(tmp_path)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchkit", "run", "train.py", "--remote", "-c", "steps=60",
             "-c", "sleep=0.2"],
            cwd=project, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, stdin=slave,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        store = store_of(local_job_server, server_project)
        jobs = JobsClient(store)
        job = wait_for(lambda: (found := jobs.list(active=True)) and found[0], 120, "the job")
        wait_for(
            lambda: "step 2 " in joblog.read_log(store, job["id"])[0].decode(), 300, "training"
        )
        proc.send_signal(signal.SIGINT)  # what Ctrl-C at the terminal sends
        os.write(master, b"f\n")  # only stop following
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 130, out.decode() + err.decode()
    assert b"only stop following" in out and b"stopped following" in err
    assert jobs.get(job["id"])["state"] in ("starting", "running")  # it goes on
    code, out, err = bk(capsys, "runs", "logs", job["run_id"], "--follow")
    assert code == 0 and "step 59 " in out and "succeeded" in err
    assert jobs.get(job["id"])["cancel_requested"] is False
