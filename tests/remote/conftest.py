"""Fixtures for the remote-execution tests: a real Ray head (once per session, everything on
127.0.0.1), environment caches shared by the session, small code versions in a store."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import requests
from remotekit import ROOT, TINY, free_ports, job_env, wait_for


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory) -> Path:
    """One environment cache for the session: jobs with the same requirements reuse it."""
    return tmp_path_factory.mktemp("envs")


# --- Ray ---------------------------------------------------------------------------------------


@dataclass
class RayHead:
    address: str  # the dashboard (Jobs API)
    gcs: str
    token: str
    temp_dir: Path
    proc: subprocess.Popen
    log: BinaryIO  # the head's output, closed when it stops
    stopped: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _ray_pids(temp_dir: Path, root_pid: int) -> set[int]:
    import psutil

    pids = set()
    try:
        root = psutil.Process(root_pid)
        pids.update(c.pid for c in root.children(recursive=True))
    except psutil.Error:
        pass
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in (p.info["cmdline"] or [])):
                pids.add(p.pid)
        except psutil.Error:
            continue
    pids.discard(os.getpid())
    return pids


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _assert_loopback_only(pids: set[int]) -> None:
    """No Ray process has a socket bound or connected to a non-loopback address."""
    import psutil

    bad = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            for addr in (c.laddr, c.raddr):
                if addr and not _is_loopback(addr.ip):
                    bad.append(f"pid {pid}: {addr.ip}:{addr.port} ({c.status})")
    assert not bad, "Ray sockets off loopback:\n" + "\n".join(bad)


def _wait_for_job_agent(head: RayHead, agent_port: int, proc: subprocess.Popen) -> None:
    """Wait until the head can hand a job to its dashboard agent, by polling the REST API.

    ``GET /api/jobs/`` answers as soon as the head's dashboard is up, but a job is submitted
    through the node's dashboard agent, which registers itself in the GCS a little later (and
    much later on a loaded machine): a submit before that fails with "No available agent to
    submit job". So: poll the agent's health endpoint, then submit a trivial probe job until
    the head takes it (each refused submit is the head having waited for the agent in vain),
    and wait for the probe to succeed, which also proves the runtime-env agent works. The
    probe is deleted, so the tests see a head with no jobs."""
    agent = f"http://127.0.0.1:{agent_port}/api/healthz"

    def agent_answers():
        if proc.poll() is not None:
            pytest.fail(
                f"ray start exited with {proc.returncode}; see {head.temp_dir / 'head.log'}"
            )
        try:
            return requests.get(agent, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_for(agent_answers, 120, "the Ray dashboard agent's health endpoint", interval=0.5)
    probe = f"fixture-probe-{secrets.token_hex(3)}"
    body = {"submission_id": probe, "entrypoint": f"{sys.executable} -c pass",
            "entrypoint_num_cpus": 0, "metadata": {"benchkit_server": "ray-fixture"}}  # fmt: skip
    refused: list[str] = []

    def submitted():
        r = requests.get(f"{head.address}/api/jobs/{probe}", headers=head.headers, timeout=10)
        if r.status_code == 200:  # taken (perhaps by a post whose answer was an error)
            return True
        r = requests.post(f"{head.address}/api/jobs/", json=body, headers=head.headers, timeout=60)
        if r.status_code == 200:
            return True
        refused.append(f"HTTP {r.status_code}: {r.text[:300]}")
        return False

    try:
        wait_for(submitted, 180, "the Ray head to take a job (its job agent)", interval=1.0)
    except AssertionError as e:
        raise AssertionError(f"{e}; last answers: {refused[-3:]}") from None

    def probe_ended():
        r = requests.get(f"{head.address}/api/jobs/{probe}", headers=head.headers, timeout=10)
        status = r.json().get("status") if r.status_code == 200 else None
        return status if status in ("SUCCEEDED", "FAILED", "STOPPED") else None

    status = wait_for(probe_ended, 180, "the Ray probe job to end", interval=0.5)
    assert status == "SUCCEEDED", f"the probe job {status}; see {head.temp_dir}"
    requests.delete(f"{head.address}/api/jobs/{probe}", headers=head.headers, timeout=10)


def _start_ray_head(tmp_path_factory) -> RayHead:
    """A real Ray head: 2 CPUs, 200 MB object store, a token, every one of its nine ports free
    and on 127.0.0.1, its own short temp dir. Returns once its Jobs API runs a job."""
    import psutil  # noqa: F401  (the stop needs it: fail before starting anything)

    temp_dir = Path(tempfile.mkdtemp(prefix="bkr", dir="/tmp"))
    home = tmp_path_factory.mktemp("ray-jobs-home")  # the jobs' BenchKit home, never the real one
    ports = free_ports(9)
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        **job_env(),
        "BENCHKIT_HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_JOB_START_TIMEOUT_SECONDS": "120",
        # without it Ray swaps 127.0.0.1 for the machine's eth0 address
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={ports[0]}", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}",
        f"--node-manager-port={ports[6]}", f"--object-manager-port={ports[7]}",
        f"--ray-client-server-port={ports[8]}", "--num-cpus=2", "--num-gpus=0",
        "--object-store-memory=200000000", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]  # fmt: skip
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    head = RayHead(
        f"http://127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[0]}", token, temp_dir, proc, log
    )
    try:

        def jobs_api_answers():
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}; see {temp_dir / 'head.log'}")
            try:
                r = requests.get(f"{head.address}/api/jobs/", headers=head.headers, timeout=5)
            except requests.RequestException:
                return False
            return r.status_code == 200

        wait_for(jobs_api_answers, 120, "the Ray Jobs API", interval=0.5)
        assert requests.get(f"{head.address}/api/jobs/", timeout=5).status_code == 401
        _wait_for_job_agent(head, ports[2], proc)
        _assert_loopback_only(_ray_pids(temp_dir, proc.pid))
    except BaseException:
        _stop_ray_head(head)
        raise
    return head


def _stop_ray_head(head: RayHead) -> None:
    """Every Ray process of this head, by pid: the --block process, its children, and any
    process naming the head's temp dir (gcs_server, raylet, workers). Never `ray stop`."""
    import psutil

    if head.stopped:
        return
    head.stopped = True
    proc, temp_dir = head.proc, head.temp_dir
    pids = _ray_pids(temp_dir, proc.pid) | {proc.pid}
    procs = []
    for pid in pids:
        try:
            q = psutil.Process(pid)
            q.terminate()
            procs.append(q)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for q in alive:
        with contextlib.suppress(psutil.Error):
            q.kill()
    proc.wait(10)
    for pid in _ray_pids(temp_dir, proc.pid):  # anything started meanwhile
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    head.log.close()


#: the session's Ray head, while it runs
_ray: RayHead | None = None


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> RayHead:
    """A real Ray head for the session (:func:`_start_ray_head`), stopped by its processes'
    ids after the last test that uses it (:func:`pytest_runtest_teardown`), or at the end."""
    global _ray
    pytest.importorskip("ray")
    _ray = _start_ray_head(tmp_path_factory)
    try:
        yield _ray
    finally:
        _stop_ray_head(_ray)


def _uses_ray(item: pytest.Item | None) -> bool:
    return item is not None and "ray_head" in item.fixturenames


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the Ray head as soon as no test left needs it: idle, its dozen processes still cost
    CPU the rest of the suite wants. Known only where the order is: without xdist (the whole
    list), and with ``--dist loadgroup``, which runs the "ray" group's tests one after another
    on one worker (tests/conftest.py). Otherwise the session's end stops it."""
    yield  # the test's own teardown first (a module's Ray job server goes before the head)
    if _ray is None or _ray.stopped or not _uses_ray(item) or _uses_ray(nextitem):
        return
    if nextitem is None:
        return  # the end of the session stops it
    config = item.config
    if hasattr(config, "workerinput"):  # an xdist worker (its own option.dist is "no")
        if not getattr(config.option, "loadgroup", False):
            return
    elif getattr(config.option, "dist", "no") == "no":
        items = item.session.items
        if any(_uses_ray(i) for i in items[items.index(nextitem) :]):
            return
    else:
        return
    _stop_ray_head(_ray)


# --- code versions -----------------------------------------------------------------------------


@pytest.fixture
def tiny_version(tmp_path):
    """``tiny_version(store, **files)`` stores the tiny training module as a code version."""
    from benchkit.code import migrate_code

    def make(store, requirements: str = "", source: str = TINY) -> int:
        project = tmp_path / f"proj-{secrets.token_hex(3)}"
        project.mkdir()
        (project / "benchkit.toml").write_text('[project]\nname = "remote-tests"\n')
        (project / "train.py").write_text(textwrap.dedent(source))
        if requirements:
            (project / "requirements.txt").write_text(requirements)
        return migrate_code(project / "train.py", store).version

    return make


# --- Bench servers that run jobs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def local_job_server(tmp_path_factory):
    """A Bench server with the local executor (3 slots) for the module."""
    from remotekit import job_server

    server = job_server(tmp_path_factory.mktemp("local-jobs"), "--slots", "3")
    yield server
    server.close()


@pytest.fixture
def server_project(local_job_server, monkeypatch):
    """A fresh project on the module's server, made the store of this test and its children."""
    from serverkit import use_project

    project = use_project(monkeypatch, local_job_server)
    monkeypatch.setenv("BENCHKIT_STORE", local_job_server.url)
    return project


@pytest.fixture(scope="session")
def catdog_data(tmp_path_factory) -> Path:
    """A few small cat/dog images (the example's generator): 120 train, 24 val, 32 pixels."""
    import importlib.util

    path = ROOT / "examples" / "catdog" / "make_data.py"
    spec = importlib.util.spec_from_file_location("catdog_make_data_remote", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("catdog-data")
    mod.make(out, 144, size=32)
    return out


@pytest.fixture
def catdog_project(tmp_path, catdog_data, monkeypatch) -> Path:
    """The cat/dog example in a project of its own, reading the small images."""
    import shutil

    project = tmp_path / "catdog"
    project.mkdir()
    shutil.copy(ROOT / "examples" / "catdog" / "train.py", project / "train.py")
    (project / "benchkit.toml").write_text('[project]\nname = "catdog"\n')
    monkeypatch.setenv("CATDOG_DATA", str(catdog_data))
    return project
