"""Fixtures of the server tests: projects on the session's servers (see tests/serverkit.py)."""

from __future__ import annotations

import hashlib

import pytest
import requests


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


@pytest.fixture
def project(bench_server):
    """A fresh read-write project on the session's server (each database in turn)."""
    return bench_server.quick_project()


@pytest.fixture
def api(bench_server, project):
    return Api(bench_server.url, project.key)
