"""Fixtures shared by every test: an isolated BenchKit home, so no test touches the real one."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest
from serverkit import bench_server, pg_server, postgres, sqlite_server, use_project  # noqa: F401
from storekit import BACKENDS, fresh_store_url


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Point BENCHKIT_HOME at a fresh directory and clear store/project overrides."""
    home = tmp_path_factory.mktemp("benchkit-home")
    monkeypatch.setenv("BENCHKIT_HOME", str(home))
    for var in (
        "BENCHKIT_STORE",
        "BENCHKIT_PROJECT",
        "BENCHKIT_CACHE_LIMIT",
        "BENCHKIT_S3_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


# --- stores ------------------------------------------------------------------------------------
# Shared by the store contract suite and the data tests: a real S3 endpoint (moto_server in its
# own process on 127.0.0.1) and a `store_url` fixture parametrized over every backend.

STORE_BACKENDS = ("local", "memory", "tensorstore-file", "s3")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(name: str, argv: list[str], probe: str, log_dir):
    """Run a local stand-in for a cloud service (``argv``) until ``probe`` answers; stop it after.

    Its output goes to a log file in ``log_dir``, named in every failure message.
    """
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    log = open(log_dir / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(probe, timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not answer {probe} within 60 s; see {log.name}")
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A moto S3 server on a free port of 127.0.0.1, for the whole session; yields its endpoint.

    Runs moto's server (through tests/store/moto_server.py, which makes its conditional writes
    atomic as S3's are) in its own process (so objects it holds do not count in the
    test process), sets dummy ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_REGION`` for
    the session (tensorstore and subprocesses read them) and stops the server at the end.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    launcher = str(Path(__file__).resolve().parent / "store" / "moto_server.py")
    argv = [launcher, "-H", "127.0.0.1", "-p", str(port)]
    with (
        _serve("moto_server", argv, endpoint + "/moto-api/", tmp_path_factory.mktemp("moto")),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_REGION", "us-east-1")
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            mp.delenv(var, raising=False)
        yield endpoint


@pytest.fixture
def s3_bucket(moto_server):
    """A fresh, empty bucket on the moto server; yields its name."""
    import uuid

    import boto3

    name = f"bk-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store_url(moto_server, s3_bucket):
    """``s3://<fresh bucket>/prefix?endpoint=http://127.0.0.1:PORT&region=us-east-1``.

    The endpoint travels in the URL's query (not in environment variables), so the URL alone
    opens the store, in subprocesses too; the dummy credentials come from the environment set by
    ``moto_server``.
    """
    return f"s3://{s3_bucket}/prefix?endpoint={moto_server}&region=us-east-1"


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A GCS JSON API server on a free port of 127.0.0.1 for the whole session (the
    gcp-storage-emulator, completed by tests/store/gcs_emulator.py); yields its URL and points
    tensorstore's GCS driver at it (``TENSORSTORE_GCS_HTTP_URL``, which subprocesses inherit)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    launcher = str(Path(__file__).resolve().parent / "store" / "gcs_emulator.py")
    probe = url + "/storage/v1/b?project=test"
    with (
        _serve("the GCS emulator", [launcher, str(port)], probe, tmp_path_factory.mktemp("gcs")),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
        yield url


@pytest.fixture
def gs_store_url(gcs_server):
    """``gs://<fresh bucket>/prefix`` on the GCS emulator."""
    import json
    import urllib.request
    import uuid

    name = f"bk-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(
        f"{gcs_server}/storage/v1/b?project=test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
    return f"gs://{name}/prefix"


@pytest.fixture
def local_store_url(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def memory_store_url():
    import uuid

    return f"memory://test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tensorstore_file_store_url(tmp_path):
    return f"tensorstore+file://{tmp_path / 'ts-store'}"


@pytest.fixture
def http_store_url(request, monkeypatch):
    """A Bench server on SQLite: a fresh project, its key in ``BENCHKIT_API_KEY``."""
    server = request.getfixturevalue("sqlite_server")
    use_project(monkeypatch, server)
    return server.url


@pytest.fixture
def http_pg_store_url(request, monkeypatch):
    """A Bench server on PostgreSQL: a fresh project, its key in ``BENCHKIT_API_KEY``."""
    server = request.getfixturevalue("pg_server")
    use_project(monkeypatch, server)
    return server.url


@pytest.fixture(params=BACKENDS)
def store_url(request):
    """A URL for an empty store of each backend in turn: a local directory, ``memory://``
    (a fresh name), ``tensorstore+file://``, S3 on moto (a fresh bucket) and a Bench server on
    SQLite and on PostgreSQL (see tests/storekit.py; tests/store adds GCS on its emulator)."""
    return fresh_store_url(request)


# --- a directory made read-only for real ---------------------------------------------------------


@pytest.fixture
def read_only():
    """``with read_only(path):`` makes directory ``path`` read-only for real: a read-only bind
    mount when the tests run as root (root ignores file modes), else mode 0o555. Where root
    cannot mount, the test fails under CI and is skipped elsewhere."""
    import contextlib
    import os
    import subprocess

    @contextlib.contextmanager
    def make(path):
        path = str(path)
        if os.geteuid() != 0:
            mode = os.stat(path).st_mode
            os.chmod(path, 0o555)
            try:
                yield
            finally:
                os.chmod(path, mode)
            return
        bind = subprocess.run(["mount", "--bind", path, path], capture_output=True, text=True)
        if bind.returncode != 0:
            why = f"cannot bind-mount {path} read-only: {bind.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
            yield
        finally:
            subprocess.run(["umount", path], check=True)

    return make


# --- signals ----------------------------------------------------------------------------------
# A suite started in the background by a non-interactive shell (`bash .ci/run &`) inherits SIGINT
# ignored, and so does every process it starts: the tests that press Ctrl-C on a `benchkit`
# process would see it ignored and fail (measured: both Ctrl-C-on-a-follower tests did). A user
# at a terminal has the default, so the tests' processes get it too.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# --- running the suite in parallel (pytest-xdist, `--dist loadgroup`) ----------------------------
#: a session fixture that starts something expensive, and the xdist group of the tests that use
#: it: each group runs on one worker, so the suite starts one Ray head and one browser
_ONE_WORKER_FIXTURES = {"ray_head": "ray", "chromium": "browser"}


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        groups = {g for f, g in _ONE_WORKER_FIXTURES.items() if f in item.fixturenames}
        for group in sorted(groups):
            item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        _name_groups_in_ids(items)
    return result


def _name_groups_in_ids(items) -> None:
    """An xdist worker tells the scheduler a test's group as a suffix of its id
    (``...::test@ray``). pytest 9.2 keeps ids structured, and pytest-xdist 3.8 still writes
    the suffix into the old ``_nodeid`` field, which nothing reads any more, so every group
    was silently ignored: both workers started a browser and the Ray tests ran on both
    (pytest-dev/pytest-xdist#1386). Until xdist writes it, the suffix goes in here."""
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:
        return  # an older pytest: xdist's own suffix takes effect
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}  # fmt: skip
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)
