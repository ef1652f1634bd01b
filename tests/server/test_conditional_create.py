"""``PUT /blobs/KEY`` with ``If-None-Match: *``: created once (the racing case is in the store
contract suite), 412 afterwards, and bad input refused before anything is stored."""

from __future__ import annotations

import hashlib

from benchkit.api_client import CONDITIONAL_CREATE
from benchkit.store.http import HttpStore

CREATE = {"If-None-Match": "*"}


def test_a_conditional_create_makes_the_object_once_then_412(api):
    assert CONDITIONAL_CREATE in api("GET", "/info").json()["features"]
    r = api.put("claims/1", b"first", headers=CREATE)
    assert r.status_code == 200, r.text
    assert r.json() == {"key": "claims/1", "size": 5}
    assert api.put("claims/1", b"second", headers=CREATE).status_code == 412
    assert api("GET", "/blobs/claims/1").content == b"first"
    assert api.put("claims/1", b"third").status_code == 200  # a plain PUT still replaces


def test_bad_conditional_creates_are_refused_and_store_nothing(api):
    cases = {
        "an etag instead of *": (b"x", {"If-None-Match": '"abc"'}, None),
        "a wrong checksum": (b"x", CREATE, "0" * 64),
        "no checksum": (b"x", CREATE, ""),
        "over 1 MiB": (b"y" * (1024 * 1024 + 1), CREATE, None),
    }
    for what, (body, headers, sha) in cases.items():
        h = {"X-Content-SHA256": hashlib.sha256(body).hexdigest() if sha is None else sha}
        r = api("PUT", "/blobs/claims/bad", data=body, headers={**h, **headers})
        assert r.status_code == 400, (what, r.status_code, r.text)
    assert api("GET", "/blobs?prefix=claims/").json()["keys"] == []


def test_the_http_store_uses_it(bench_server, project):
    store = HttpStore(bench_server.url, project.key, project.id)
    assert store.put_if_absent("c/claim", b"one") is True
    assert store.put_if_absent("c/claim", b"two") is False
    assert store.get("c/claim") == b"one"
