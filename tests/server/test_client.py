"""The client's one-line errors (unreachable, not a Bench server, incompatible version, no or
bad credentials), its retry policy (5xx and 429 retried, other 4xx never), and its behaviour
across processes (pickled into spawned workers, reopened after fork)."""

from __future__ import annotations

import json
import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serverkit import free_port

from benchkit.api_client import API_VERSION
from benchkit.errors import CredentialsError, StoreConnectionError, StoreError
from benchkit.settings import save_credentials
from benchkit.store import open_store
from benchkit.store.http import HttpStore


class Scripted(BaseHTTPRequestHandler):
    """A tiny HTTP server that answers from a script: ``(status, headers, body)`` per request
    path, consumed in order (the last answer repeats)."""

    script: dict[str, list[tuple[int, dict, bytes]]] = {}
    seen: list[tuple[str, str]] = []

    def _answer(self) -> None:
        self.seen.append((self.command, self.path))
        path = self.path.split("?")[0]
        answers = self.script.get(path) or [(404, {}, b'{"detail":"no route"}')]
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scripted():
    Scripted.script, Scripted.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Scripted
    server.shutdown()
    server.server_close()


def _info(version: int = API_VERSION) -> tuple[int, dict, bytes]:
    body = {
        "service": "benchkit",
        "api_version": version,
        "server_version": "9.9.9",
        "features": [],
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_an_unreachable_server_is_one_line_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreConnectionError) as info:
        HttpStore(url, "bk_x").list()
    msg = _one_line(info.value)
    assert url in msg and "cannot reach" in msg and "python -m benchkit server" in msg


def test_a_url_that_is_not_a_bench_server_says_so(scripted):
    url, _ = scripted
    with pytest.raises(StoreError, match="is not a Bench server") as info:
        HttpStore(url, "bk_x").list()
    assert url in _one_line(info.value)


def test_a_server_of_another_api_version_says_what_to_do(scripted):
    url, handler = scripted
    handler.script["/api/v1/info"] = [_info(API_VERSION + 1)]
    with pytest.raises(StoreError) as info:
        HttpStore(url, "bk_x").get("a")
    msg = _one_line(info.value)
    assert f"API version {API_VERSION + 1}" in msg and "pip install -U benchkit" in msg
    assert [p for _, p in handler.seen] == ["/api/v1/info"]  # nothing else was sent


def test_5xx_and_429_are_retried_and_other_4xx_never(scripted):
    url, handler = scripted
    handler.script["/api/v1/info"] = [_info()]
    handler.script["/api/v1/blobs/a/ok"] = [
        (503, {}, b"{}"), (429, {"Retry-After": "0"}, b"{}"), (502, {}, b"{}"), (200, {}, b"data")
    ]  # fmt: skip
    handler.script["/api/v1/blobs/a/bad"] = [(400, {}, b'{"detail":"bad"}')]
    handler.script["/api/v1/blobs/a/missing"] = [(404, {}, b'{"detail":"no object"}')]
    store = HttpStore(url, "bk_x")
    assert store.get("a/ok") == b"data"
    assert [p for _, p in handler.seen].count("/api/v1/blobs/a/ok") == 4
    with pytest.raises(StoreError, match="HTTP 400"):
        store.get("a/bad")
    assert [p for _, p in handler.seen].count("/api/v1/blobs/a/bad") == 1
    assert not store.exists("a/missing")
    assert [p for _, p in handler.seen].count("/api/v1/blobs/a/missing") == 1


def test_a_server_failing_for_good_is_one_line(scripted):
    url, handler = scripted
    handler.script["/api/v1/info"] = [_info()]
    handler.script["/api/v1/blobs/a"] = [(500, {}, b'{"detail":"disk on fire"}')]
    with pytest.raises(StoreError) as info:
        HttpStore(url, "bk_x").get("a")
    msg = _one_line(info.value)
    assert "HTTP 500" in msg and "disk on fire" in msg and "server's log" in msg


def test_no_credentials_says_how_to_log_in(monkeypatch):
    monkeypatch.delenv("BENCHKIT_API_KEY", raising=False)
    with pytest.raises(CredentialsError) as info:
        open_store("http://127.0.0.1:8000")
    msg = _one_line(info.value)
    assert "benchkit login http://127.0.0.1:8000" in msg and "BENCHKIT_API_KEY" in msg


def test_credentials_saved_for_another_server_are_not_sent(monkeypatch):
    monkeypatch.delenv("BENCHKIT_API_KEY", raising=False)
    save_credentials({"server": "http://other:9000", "project_id": "p", "api_key": "bk_secret"})
    with pytest.raises(CredentialsError):
        open_store("http://127.0.0.1:8000")
    save_credentials({"server": "http://127.0.0.1:8000/", "project_id": "p", "api_key": "bk_k"})
    store = open_store("http://127.0.0.1:8000")
    assert store.client.api_key == "bk_k" and store.client.project_id == "p"


def test_the_store_survives_pickling_and_fork(sqlite_server):
    project = sqlite_server.quick_project()
    store = HttpStore(sqlite_server.url, project.key, project.id)
    store.put("p/x", b"parent")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("p/x") == b"parent" and clone.url == store.url
    assert store.fork_safe and store.usable_here()
    pid = os.fork()
    if pid == 0:  # the child uses the parent's store object: it must open its own connection
        try:
            store.put("p/child", b"child")
            os._exit(0 if store.get("p/x") == b"parent" else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("p/child") == b"child" and store.get("p/x") == b"parent"
