"""API keys: missing, malformed, wrong and revoked keys; read-only keys; secrets never logged."""

from __future__ import annotations

import time

import pytest
from serverkit import Api

from benchkit.errors import CredentialsError, StorePermissionError
from benchkit.store.http import HttpStore

#: one request of each kind a key can make (the isolation test covers every route)
WRITES = [
    ("PUT", "/blobs/w/x", {"data": b"x", "headers": {"X-Content-SHA256": "0" * 64}}),
    (
        "PUT",
        "/blobs/w/new",
        {"data": b"x", "headers": {"X-Content-SHA256": "0" * 64, "If-None-Match": "*"}},
    ),
    ("DELETE", "/blobs/w/x", {}),
    ("DELETE", "/blobs?prefix=w/", {}),
    ("POST", "/uploads", {"json": {"key": "w/big"}}),
]
READS = [("GET", "/whoami"), ("GET", "/blobs?prefix="), ("GET", "/blobs/w/x"), ("GET", "/runs")]


def _bad_keys(project) -> dict[str, str | None]:
    key_id = project.key.split("_")[1]
    return {
        "missing": None,
        "empty": "",
        "not a BenchKit key": "hunter2",
        "malformed": "bk_" + key_id,
        "wrong secret": f"bk_{key_id}_" + "A" * 43,
        "unknown key id": "bk_0123456789abcdef_" + "A" * 43,
        "other scheme": "Basic dXNlcjpwYXNz",
    }


def test_requests_without_a_valid_key_get_401(bench_server, project):
    for label, key in _bad_keys(project).items():
        api = Api(bench_server.url, None)
        if key is not None:
            api.session.headers["Authorization"] = (
                key if key.startswith("Basic") else f"Bearer {key}"
            )
        for method, path in READS:
            r = api(method, path)
            assert r.status_code in (401, 403), (label, method, path, r.status_code)
            assert r.status_code == 401 or not key, (label, r.text)
            assert project.key not in r.text


def test_info_needs_no_key(bench_server):
    r = Api(bench_server.url, None)("GET", "/info")
    assert r.status_code == 200
    assert r.json()["service"] == "benchkit" and r.json()["api_version"] == 1


def test_a_revoked_key_fails_on_its_next_request(bench_server, project, api):
    assert api("GET", "/whoami").status_code == 200
    spare = bench_server.create_key(project.id)
    bench_server.keys().revoke_key(project.key.split("_")[1])  # by another process
    assert api("GET", "/whoami").status_code == 401
    assert api("GET", "/blobs?prefix=").status_code == 401  # every route, at once
    assert Api(bench_server.url, spare)("GET", "/whoami").status_code == 200


def test_read_only_key_reads_but_cannot_write(bench_server, project, api):
    assert api.put("w/x", b"x").status_code == 200
    reader = Api(bench_server.url, bench_server.create_key(project.id, read_only=True))
    assert reader("GET", "/blobs/w/x").content == b"x"
    for method, path, kw in WRITES:
        r = reader(method, path, **kw)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "read-only" in r.json()["detail"]
    assert api("GET", "/blobs/w/x").content == b"x"
    assert api("GET", "/uploads").json()["uploads"] == []


def test_read_only_key_through_the_store_is_a_clear_error(bench_server, project):
    key = bench_server.create_key(project.id, read_only=True)
    store = HttpStore(bench_server.url, key, project.id)
    assert store.list() == []
    with pytest.raises(StorePermissionError, match="read-only") as info:
        store.put("a/b", b"x")
    assert "\n" not in str(info.value)


def test_wrong_and_revoked_keys_through_the_store_say_to_log_in_again(bench_server, project):
    key_id = project.key.split("_")[1]
    wrong = HttpStore(bench_server.url, f"bk_{key_id}_" + "B" * 43, project.id)
    with pytest.raises(CredentialsError) as info:
        wrong.list()
    msg = str(info.value)
    assert "rejected the API key" in msg and "benchkit login" in msg and "\n" not in msg
    store = HttpStore(bench_server.url, project.key, project.id)
    store.put("k", b"v")
    bench_server.keys().revoke_key(key_id)
    with pytest.raises(CredentialsError, match="wrong or was revoked"):
        store.get("k")


def test_keys_record_scope_and_last_use(bench_server, project, api):
    api("GET", "/whoami")
    [row] = [k for k in bench_server.keys().list_keys(project.id) if k.id in project.key]
    assert row.scope == "write" and row.revoked_at is None
    assert row.last_used_at is not None


def test_the_server_never_logs_a_key(bench_server, project, api):
    api.put("log/x", b"x")
    api("GET", "/blobs/log/x")
    key_id = project.key.split("_")[1]
    Api(bench_server.url, f"bk_{key_id}_" + "C" * 43)("GET", "/whoami")
    Api(bench_server.url, "not-a-key-but-secret-looking")("GET", "/whoami")
    time.sleep(0.2)  # the log is written by another process
    log = bench_server.log()
    assert "rejected an API key" in log
    secret = project.key.split("_", 2)[2]
    for needle in (project.key, secret, "C" * 43, "not-a-key-but-secret-looking"):
        assert needle not in log


def test_no_project_or_key_can_be_created_over_http(bench_server):
    api = Api(bench_server.url, None)
    paths = bench_server_paths(bench_server)
    assert not [p for p in paths if "project" in p or "key" in p.replace("{key}", "")]
    assert api("POST", "/projects", json={"name": "x"}).status_code in (401, 404, 405)


def bench_server_paths(server) -> list[str]:
    import requests

    return list(requests.get(server.url + "/openapi.json", timeout=30).json()["paths"])
