"""Faults against the server sink, injected for real: the server killed with SIGKILL and
restarted in the middle of a 2-process training run; an offline run sent later with
``benchkit sync`` (twice); a training process killed with SIGKILL. Nothing may be lost or
stored twice, and no run may show as running forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from serverkit import child_env, start_server
from trackkit import TRAINER, expected_points, headers, points_of

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    """A server of this module's own (the tests kill it)."""
    server = start_server(tmp_path_factory.mktemp("fault-server"))
    yield server
    server.close()


@pytest.fixture
def setup(fault_server, tmp_path):
    """A fresh project, the trainer module, a signals directory and the run's environment."""
    project = fault_server.quick_project()
    (tmp_path / "signals").mkdir()
    path = tmp_path / "trainer.py"
    path.write_text(TRAINER)
    env = child_env(
        SIGNALS=str(tmp_path / "signals"),
        BENCHKIT_STORE=fault_server.url,
        BENCHKIT_API_KEY=project.key,
        BENCHKIT_PROJECT_ID=project.id,
        BENCHKIT_HEARTBEAT_INTERVAL="1",
        BENCHKIT_DRAIN_TIMEOUT="240",
        OMP_NUM_THREADS="1",
    )
    procs: list[subprocess.Popen] = []

    def start(*args: str, **extra: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchkit", *args], cwd=tmp_path, env={**env, **extra},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        return proc

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "benchkit", *args], cwd=tmp_path, env={**env, **extra},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    yield project, path, tmp_path / "signals", start, run
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_file(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) first:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, f"{path.name} did not appear in {timeout} s"
        time.sleep(0.05)


def stored(server, key: str, run_id: str) -> dict[str, list]:
    return {m: [p["value"] for p in points_of(server, key, run_id, m)] for m in ("x", "sq", "odd")}


def test_a_server_killed_and_restarted_mid_run_ends_with_every_point_once(fault_server, setup):
    project, path, signals, start, _ = setup
    rid = "faulty-2proc"
    proc = start("run", str(path), "--processes", "2", "--cpu", "--run-id", rid,
                 "--config", "signal_at=100", "--config", "hold_at=250")  # fmt: skip
    wait_file(signals / "logged", proc)
    fault_server.kill()  # SIGKILL, possibly in the middle of a batch's transaction
    time.sleep(3)  # the run goes on logging into its journal; its sends fail meanwhile
    fault_server.start()
    (signals / "go").write_text("")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "kept and retried" in out  # the fault did hit a send
    got = stored(fault_server, project.key, rid)
    assert got == expected_points(400)  # the same count and values as a run without the fault
    steps = [p["step"] for p in points_of(fault_server, project.key, rid, "x")]
    assert steps == list(range(400))
    run = requests.get(
        f"{fault_server.url}/api/v1/tracking/runs/{rid}", headers=headers(project.key), timeout=60
    ).json()
    assert run["status"] == "finished" and run["processes"] == 2


def test_an_offline_run_synced_twice_equals_an_online_run(fault_server, setup):
    project, path, signals, start, run = setup
    off = run("run", str(path), "--cpu", "--run-id", "offline-run", "--config", "points=200",
              BENCHKIT_MODE="offline")  # fmt: skip
    assert off.returncode == 0, off.stdout + off.stderr
    assert "benchkit sync offline-run" in off.stdout + off.stderr
    assert stored(fault_server, project.key, "offline-run") == {"x": [], "sq": [], "odd": []}
    for _ in range(2):
        synced = run("sync", "offline-run")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert stored(fault_server, project.key, "offline-run") == expected_points(200)
    on = run("run", str(path), "--cpu", "--run-id", "online-run", "--config", "points=200")
    assert on.returncode == 0, on.stdout + on.stderr
    offline = {m: points_of(fault_server, project.key, "offline-run", m) for m in ("x", "odd")}
    online = {m: points_of(fault_server, project.key, "online-run", m) for m in ("x", "odd")}
    strip = lambda pts: [(p["step"], p["value"]) for p in pts]  # noqa: E731
    assert {m: strip(p) for m, p in offline.items()} == {m: strip(p) for m, p in online.items()}


def test_a_killed_training_process_shows_as_lost_not_running_forever(fault_server, setup):
    project, path, signals, start, _ = setup
    rid = "killed-run"
    proc = start("run", str(path), "--cpu", "--run-id", rid, "--config", "hang_at=30")
    wait_file(signals / "hanging", proc)
    url = f"{fault_server.url}/api/v1/tracking/runs/{rid}"

    def status() -> str:
        return requests.get(url, headers=headers(project.key), timeout=60).json()["status"]

    assert status() == "running"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 120
    while status() == "running":
        assert time.monotonic() < deadline, "the killed run still shows as running"
        time.sleep(0.5)
    assert status() == "lost"
    table = requests.get(
        f"{fault_server.url}/api/v1/tracking/runs", headers=headers(project.key), timeout=60
    ).json()
    assert [r["status"] for r in table["runs"] if r["id"] == rid] == ["lost"]


def test_a_failing_run_shows_failed_and_a_sigtermed_run_interrupted(fault_server, setup):
    project, path, signals, start, run = setup
    term = start("run", str(path), "--cpu", "--run-id", "termed", "--config", "hang_at=20",
                 BENCHKIT_STOP_GRACE="1")  # no step boundary comes: stop after a second  # fmt: skip
    failed = run("run", str(path), "--cpu", "--run-id", "failing", "--config", "fail_at=30")
    assert failed.returncode != 0 and "boom" in failed.stdout + failed.stderr
    wait_file(signals / "hanging", term)
    term.send_signal(signal.SIGTERM)  # what a scheduler or a spot reclaim sends
    term.communicate(timeout=240)

    def view(rid: str) -> dict:
        url = f"{fault_server.url}/api/v1/tracking/runs/{rid}"
        return requests.get(url, headers=headers(project.key), timeout=60).json()

    f, t = view("failing"), view("termed")
    assert f["status"] == "failed" and "<b>boom</b> at step 30" in f["traceback"] and f["ended"]
    assert f["summaries"]["x"]["last"] == 30.0  # what it logged before failing, all of it
    assert t["status"] == "interrupted" and "interrupted" in t["traceback"] and t["ended"]
    assert t["summaries"]["x"]["last"] == 20.0
    page = requests.get(
        f"{fault_server.url}/runs/failing", headers=headers(project.key), timeout=60
    ).text
    assert 'data-status="failed"' in page and "&lt;b&gt;boom&lt;/b&gt; at step 30" in page


def test_runs_list_and_show_read_the_same_server_data_as_the_browser(fault_server, setup):
    import json

    project, path, signals, start, run = setup
    done = run("run", str(path), "--cpu", "--run-id", "cli-run", "--config", "points=120")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = run("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    view = requests.get(
        f"{fault_server.url}/api/v1/tracking/runs/cli-run", headers=headers(project.key), timeout=60
    ).json()
    assert rows["cli-run"]["status"] == view["status"] == "finished"
    assert rows["cli-run"]["last"] == {k: s["last"] for k, s in view["summaries"].items()}
    assert rows["cli-run"]["last"]["x"] == 119.0
    shown = run("runs", "show", "cli-run", "--json")
    assert shown.returncode == 0, shown.stderr
    metrics = json.loads(shown.stdout)["metrics"]
    assert [p["value"] for p in metrics["x"]] == expected_points(120)["x"]
    assert [p["value"] for p in metrics["odd"]] == expected_points(120)["odd"]
    text = run("runs", "show", "cli-run")
    assert text.returncode == 0 and "x" in text.stdout and "120" in text.stdout, text.stdout
