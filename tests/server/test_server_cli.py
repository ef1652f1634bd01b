"""The commands: `server create-project/keys/projects`, listening rules and TLS, and the
client's `login`, `project`, `logout` and the original `startproject ID KEY --server URL`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time

import pytest
import requests
from serverkit import BenchServer, child_env, free_port

from benchkit.errors import StoreConnectionError
from benchkit.settings import get_paths
from benchkit.store.http import HttpStore


def bk(*args: str, cwd=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchkit", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=child_env(**env),
    )  # fmt: skip


def test_create_project_prints_the_key_once_and_refuses_a_duplicate(sqlite_server):
    name = f"demo-{time.monotonic_ns()}"
    out = json.loads(sqlite_server.cli("create-project", name, "--json").stdout)
    assert set(out) >= {"project_id", "api_key"} and out["api_key"].startswith("bk_")
    again = sqlite_server.cli("create-project", name, check=False)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    projects = json.loads(sqlite_server.cli("projects", "--json").stdout)
    assert name in [p["name"] for p in projects]
    assert out["api_key"] not in sqlite_server.cli("projects").stdout


def test_keys_create_list_revoke(sqlite_server):
    """The key commands themselves (three processes; the other tests make keys in-process)."""
    project = sqlite_server.quick_project()
    made = sqlite_server.cli("keys", "create", project.id, "--read-only", "--json").stdout
    reader = json.loads(made)["api_key"]
    key_id = reader.split("_")[1]
    assert HttpStore(sqlite_server.url, reader, project.id).list() == []  # a key that works
    sqlite_server.cli("keys", "revoke", key_id)
    r = requests.get(
        sqlite_server.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {reader}"}
    )
    assert r.status_code == 401  # on its next request
    listed = sqlite_server.cli("keys", "list", project.id, "--json").stdout
    [row] = [r for r in json.loads(listed) if r["key_id"] == key_id]
    assert row["scope"] == "read" and row["last_used"] is not None and row["revoked"] is not None
    assert reader.split("_", 2)[2] not in listed


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_a_public_address_without_tls_is_refused(tmp_path, host):
    r = bk("server", "--data-dir", str(tmp_path), "--host", host, "--port", str(free_port()))
    assert r.returncode == 1
    assert (
        "refusing to listen" in r.stderr and "--tls-cert" in r.stderr and "--insecure" in r.stderr
    )


def test_the_pepper_file_is_private(sqlite_server):
    mode = stat.S_IMODE((sqlite_server.data_dir / "pepper").stat().st_mode)
    assert mode == 0o600


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "cert.pem", d / "key.pem"


@pytest.mark.slow
def test_tls_serves_https_and_the_client_checks_the_certificate(tmp_path, tls_files, monkeypatch):
    cert, key = tls_files
    server = BenchServer(tmp_path / "srv")
    project = server.create_project()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchkit", "server", "--data-dir", str(server.data_dir),
         "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(),
    )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                requests.get(url + "/api/v1/info", verify=str(cert), timeout=2)
                break
            except requests.RequestException:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        with pytest.raises(StoreConnectionError, match="BENCHKIT_CA_BUNDLE"):
            HttpStore(url, project.key).list()
        monkeypatch.setenv("BENCHKIT_CA_BUNDLE", str(cert))
        store = HttpStore(url, project.key)
        store.put("tls/x", b"over TLS")
        assert store.get("tls/x") == b"over TLS"
        # an idle TLS connection would hold the server's shutdown until asyncio's TLS
        # close timeout (30 s)
        store.close()
    finally:
        proc.terminate()
        assert proc.wait(60) in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown


def test_login_project_logout(sqlite_server, tmp_path):
    project = sqlite_server.create_project()
    r = bk("login", sqlite_server.url, "--project", project.id, "--key", project.key, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert project.name in r.stdout and project.key not in r.stdout
    creds = get_paths().credentials_file
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text())["server"] == sqlite_server.url
    info = json.loads(bk("project", "--json", cwd=tmp_path).stdout)
    assert info["store"] == sqlite_server.url and info["key_ok"] is True
    assert info["project_id"] == project.id and project.name in info["key"]
    # the server is now the store of every command
    listed = bk("datasets", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    sqlite_server.keys().revoke_key(project.key)
    info = json.loads(bk("project", "--json", cwd=tmp_path).stdout)
    assert info["key_ok"] is False and "rejected" in info["key"]
    failed = bk("runs", "list", cwd=tmp_path)
    assert failed.returncode == 1 and "benchkit login" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    r = bk("logout", cwd=tmp_path)
    assert r.returncode == 0 and not creds.exists()
    assert json.loads(bk("config", "--json").stdout)["settings"]["store"]["source"] == "default"


def test_login_with_a_wrong_key_or_project_saves_nothing(sqlite_server, tmp_path):
    project = sqlite_server.quick_project()
    other = sqlite_server.quick_project()
    key_id = project.key.split("_")[1]
    r = bk("login", sqlite_server.url, "--project", project.id, "--key", f"bk_{key_id}_" + "x" * 43)
    assert r.returncode == 1 and "rejected the API key" in r.stderr
    r = bk("login", sqlite_server.url, "--project", other.id, "--key", project.key)
    assert r.returncode == 1 and "belongs to project" in r.stderr
    r = bk(
        "login", f"http://127.0.0.1:{free_port()}", "--project", project.id, "--key", project.key
    )
    assert r.returncode == 1 and "cannot reach" in r.stderr
    assert not get_paths().credentials_file.exists()


def test_original_startproject_with_a_server(sqlite_server, tmp_path):
    project = sqlite_server.quick_project()
    r = bk("startproject", project.id, project.key, "--server", sqlite_server.url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / project.id / "benchkit.toml").is_file()
    assert json.loads(get_paths().credentials_file.read_text())["api_key"] == project.key
    info = json.loads(bk("project", "--json", cwd=tmp_path / project.id).stdout)
    assert info["key_ok"] is True and info["store"] == sqlite_server.url
