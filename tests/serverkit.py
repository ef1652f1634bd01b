"""Real Bench servers and a real PostgreSQL for the tests (imported by tests/conftest.py).

- :class:`Postgres`: ``initdb`` + ``pg_ctl`` in a temporary directory on a free loopback port
  (as the ``postgres`` user when the tests run as root, since PostgreSQL refuses root).
- :class:`BenchServer`: ``python -m benchkit server`` in its own process on a free port of
  127.0.0.1 with its own data directory and database; start, stop (SIGTERM), kill (SIGKILL),
  restart; projects and keys through the real admin CLI, or in-process through the same
  service functions when a test needs a fresh project (milliseconds instead of a process).

Session fixtures: ``postgres``, ``sqlite_server``, ``pg_server`` and ``bench_server``
(parametrized over both databases).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one's, importing this checkout of benchkit,
    without any API key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHKIT_API")}
    env.pop("BENCHKIT_PROJECT_ID", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def missing_service(what: str) -> None:
    """Fail in CI (where .ci/run installs the service), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but is not installed")
    pytest.skip(f"{what} is not installed")


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_bin() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: $BENCHKIT_PG_BIN, Debian's newest, or PATH."""
    env = os.environ.get("BENCHKIT_PG_BIN")
    if env:
        return Path(env)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # not under pytest's 0700 temp root: the postgres user must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="bkpg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "benchkit"
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        res = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir
        )
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {res.stdout}{res.stderr}")

    def start(self) -> Postgres:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
            "-o", opts, "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"bk_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the session (fails in CI when PostgreSQL is missing)."""
    bindir = pg_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        missing_service("PostgreSQL (initdb/pg_ctl)")
    pg = Postgres(bindir)
    try:
        pg.start()
    except Exception as e:
        pg.stop()
        pytest.fail(f"could not start PostgreSQL: {e}")
    yield pg
    pg.stop()


class Api:
    """Raw HTTP to a server with one key (None: no Authorization header)."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        if key is not None:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.session.request(method, self.url + path, **kw)

    def put(self, key: str, data: bytes, **kw) -> requests.Response:
        headers = {"X-Content-SHA256": hashlib.sha256(data).hexdigest(), **kw.pop("headers", {})}
        return self("PUT", f"/blobs/{key}", data=data, headers=headers, **kw)


# --- Bench servers -----------------------------------------------------------------------------


@dataclass
class Project:
    id: str
    name: str
    key: str


class BenchServer:
    """``python -m benchkit server`` in a child process."""

    def __init__(
        self, data_dir: Path, db_url: str | None = None, store_url: str | None = None, **env: str
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_url = db_url or f"sqlite:///{self.data_dir / 'benchkit.db'}"
        self.store_url = store_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._keys = None

    @property
    def kind(self) -> str:
        return "postgresql" if self.db_url.startswith("postgresql") else "sqlite"

    def _flags(self) -> list[str]:
        flags = ["--data-dir", str(self.data_dir), "--db", self.db_url]
        return flags + (["--store", self.store_url] if self.store_url else [])

    def start(self) -> BenchServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchkit", "server", *self._flags(), "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(**self.env),
            start_new_session=True,
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/api/v1/info", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not answer within {START_TIMEOUT_S} s:\n{self.log()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> BenchServer:
        self.kill()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- administration ----------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``python -m benchkit server ACTION ...`` against this server's database."""
        res = subprocess.run(
            [sys.executable, "-m", "benchkit", "server", *args, *self._flags()],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"server {' '.join(args)} failed: {res.stdout}{res.stderr}")
        return res

    def create_project(self, name: str | None = None, read_only: bool = False) -> Project:
        """A project and its first key, through the admin CLI."""
        name = name or f"p-{uuid.uuid4().hex[:10]}"
        flags = ["--read-only"] if read_only else []
        out = json.loads(self.cli("create-project", name, "--json", *flags).stdout)
        return Project(out["project_id"], out["name"], out["api_key"])

    def create_key(self, project: str, read_only: bool = False) -> str:
        """A new key of ``project``, in-process (the function ``server keys create`` calls;
        tests/server/test_server_cli.py runs the command itself)."""
        return self.keys().create_key(project, "read" if read_only else "write").token

    def keys(self):
        """The key service over this server's database, in this process."""
        if self._keys is None:
            from benchkit.server.db.session import Database
            from benchkit.server.services.keys import Keys, load_pepper

            self._keys = Keys(Database(self.db_url), load_pepper(self.data_dir / "pepper"))
        return self._keys

    def quick_project(self) -> Project:
        """A fresh project in-process (the function the CLI calls, without a process)."""
        project, key = self.keys().create_project(f"t-{uuid.uuid4().hex[:12]}")
        return Project(project.id, project.name, key.token)

    def close(self) -> None:
        self.stop()
        if self._keys is not None:
            self._keys.db.close()


def start_server(tmp_root: Path, db_url: str | None = None, **kw) -> BenchServer:
    data = Path(tempfile.mkdtemp(prefix="srv-", dir=tmp_root))
    # the CLI creates the schema and the key file, as an admin would before the first start
    server = BenchServer(data, db_url, **kw)
    server.cli("projects")
    return server.start()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory):
    """One server on SQLite for the whole session."""
    server = start_server(tmp_path_factory.mktemp("bench-sqlite"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory, postgres):
    """One server on PostgreSQL for the whole session."""
    server = start_server(tmp_path_factory.mktemp("bench-pg"), postgres.create_database())
    yield server
    server.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def bench_server(request):
    """The session's server on each database in turn."""
    return request.getfixturevalue(
        "pg_server" if request.param == "postgresql" else "sqlite_server"
    )


def use_project(monkeypatch, server: BenchServer) -> Project:
    """A fresh project whose key the store, and child processes, pick up from the environment."""
    project = server.quick_project()
    monkeypatch.setenv("BENCHKIT_API_KEY", project.key)
    monkeypatch.setenv("BENCHKIT_PROJECT_ID", project.id)
    return project
