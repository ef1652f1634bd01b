"""Blob keys that try to leave the project: refused with 400 on every blob route, and nothing is
written anywhere (the server's whole directory is compared before and after)."""

from __future__ import annotations

import hashlib
import http.client
import os
from pathlib import Path

import pytest

from benchkit.errors import InvalidKey
from benchkit.store.http import HttpStore

#: raw request targets after /api/v1/blobs/ (sent byte for byte, no client-side normalising)
ESCAPES = {
    "dot-dot": "a/../../../etc/passwd",
    "dot-dot at start": "../outside.bin",
    "encoded dots": "a/%2e%2e/%2e%2e/outside.bin",
    "encoded dots upper": "%2E%2E/outside.bin",
    "encoded dot-dot-slash": "a%2F%2E%2E%2Foutside.bin",
    "double-encoded dots": "%252e%252e/outside.bin",
    "absolute": "/etc/passwd",
    "encoded absolute": "%2Fetc%2Fpasswd",
    "backslash": "a%5C..%5Coutside.bin",
    "raw backslash": "a\\..\\outside.bin",
    "NUL": "a%00b",
    "hidden segment": ".staging/x",
    "control character": "a%0Ab",
    "over-long key": "k/" + "x" * 1100,
    "over-long segment": "a/" + "y" * 300,
    "empty segment": "a//b",
    "trailing slash": "dir/",
}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (but the database's own files), with size and mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if "benchkit.db" in name:
                continue
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _raw(server, method: str, target: str, key: str, body: bytes = b"") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": f"Bearer {key}"}
    if method == "PUT":
        headers["X-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.parametrize("label", list(ESCAPES))
def test_escaping_blob_keys_are_refused_and_write_nothing(bench_server, project, label):
    root = bench_server.data_dir.parent
    before = _tree(root)
    target = "/api/v1/blobs/" + ESCAPES[label]
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        status = _raw(bench_server, method, target, project.key, b"escaped!")
        # 400 from our checks; 404 only where routing itself can't match (no key at all)
        assert status == 400, (label, method, status)
    after = _tree(root)
    written = {k for k in after if k not in before or after[k] != before[k]}
    written = {k for k in written if not k.endswith("-server.log")}
    assert not written, written


@pytest.mark.parametrize("prefix", ["../", "a/../", "%2e%2e/", "/abs", "a\\b/", "x" * 1100])
def test_escaping_prefixes_are_refused(bench_server, project, api, prefix):
    for method in ("GET", "DELETE"):
        assert api(method, "/blobs", params={"prefix": prefix}).status_code == 400, (method, prefix)
    assert api("GET", "/blob-dirs", params={"prefix": prefix}).status_code == 400
    assert api("POST", "/uploads", json={"key": prefix + "x"}).status_code == 400


@pytest.mark.parametrize("key", ["a/%2e%2e/b", "k/" + "x" * 1100, "a\nb", "a/%41"])
def test_the_client_refuses_such_keys_before_sending(bench_server, project, key):
    store = HttpStore(bench_server.url, project.key, project.id)
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    with pytest.raises(InvalidKey):
        store.get(key)


def test_keys_that_only_look_odd_round_trip(bench_server, project):
    store = HttpStore(bench_server.url, project.key, project.id)
    for key in ["a b/c d.bin", "üñí/çødé", "a+b/c&d=e", "x/%", "q?x=1#frag", "semi;colon"]:
        store.put(key, key.encode())
        assert store.get(key) == key.encode(), key
        assert key in store.list()
