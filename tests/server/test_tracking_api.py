"""The tracking API on a real server over HTTP, on SQLite and on PostgreSQL: ingest semantics,
charts, points, logs, the runs table; every route (API and dashboard, with a key or a signed-in
session) scoped to the caller's project."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import requests
from trackkit import headers, ingest, make_run, put_record, record, records


@pytest.fixture
def server(bench_server):
    """The session's server on each database in turn."""
    return bench_server


@pytest.fixture
def project(server):
    return server.quick_project()


def get(server, api_key, path, **params):
    return requests.get(f"{server.url}{path}", params=params, headers=headers(api_key), timeout=60)


def test_a_retried_batch_is_stored_once_and_a_gap_gets_the_expected_seq(server, project):
    recs = records({"loss": [1.0, 0.5, 0.25]})
    first = ingest(server, project.key, "r1", recs)
    assert first.json() == {
        "writer": "w0", "next_seq": 4, "acked_through": 3, "inserted": 3, "skipped": 0,
    }  # fmt: skip
    again = ingest(server, project.key, "r1", recs)
    assert (again.status_code, again.json()["inserted"], again.json()["skipped"]) == (200, 0, 3)
    gap = ingest(server, project.key, "r1", recs, first_seq=7)
    assert gap.status_code == 409
    assert gap.json()["expected_seq"] == 4
    m = get(server, project.key, "/api/v1/runs/r1/metrics").json()
    assert m["writers"] == {"w0": 4}
    assert m["metrics"]["loss"]["count"] == 3


def test_a_gzipped_batch_is_accepted_and_an_oversized_one_refused(server, project):
    body = json.dumps({"writer": "w", "first_seq": 1, "records": records({"a": [1.0] * 50})})
    r = requests.post(
        f"{server.url}/api/v1/runs/gz/metrics",
        data=gzip.compress(body.encode()),
        headers={**headers(project.key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["inserted"] == 50
    big = b'{"writer": "w", "first_seq": 50, "records": [' + b" " * (5 * 1024 * 1024) + b"]}"
    r = requests.post(
        f"{server.url}/api/v1/runs/gz/metrics", data=big, headers=headers(project.key),
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 413


@pytest.mark.parametrize(
    "body, match",
    [
        ({"writer": "w", "first_seq": 1, "records": [{"t": 1.0, "values": {"x": "high"}}]}, "not a number"),
        ({"writer": "w", "first_seq": 0, "records": []}, "invalid batch"),
        ({"writer": "../w", "first_seq": 1, "records": []}, "invalid batch"),
        ({"writer": "w", "first_seq": -1, "records": []}, "invalid batch"),
        ({"writer": "w"}, "invalid batch"),
        ([1, 2], "invalid batch"),
    ],
)  # fmt: skip
def test_a_malformed_batch_is_a_400_with_the_reason(server, project, body, match):
    r = requests.post(
        f"{server.url}/api/v1/runs/bad/metrics", json=body, headers=headers(project.key),
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 400 and match in r.json()["detail"]


def test_a_read_only_key_cannot_ingest(server, project):
    ro = server.keys().create_key(project.id, "read").token
    assert ingest(server, ro, "r1", records({"a": [1.0]})).status_code == 403


def test_non_finite_values_survive_the_round_trip(server, project):
    ingest(server, project.key, "nf", records({"loss": [1.0, "NaN", "Infinity", "-Infinity"]}))
    pts = get(server, project.key, "/api/v1/runs/nf/points", key="loss").json()["points"]
    assert [p["value"] for p in pts] == [1.0, "NaN", "Infinity", "-Infinity"]
    ch = get(server, project.key, "/api/v1/runs/nf/chart", key="loss").json()["series"][0]
    assert ch["nonfinite"] == [[1, "nan"], [2, "inf"], [3, "-inf"]]


def test_the_chart_has_at_most_n_buckets_and_rebuckets_a_zoomed_range(server, project):
    n = 5000
    ingest(server, project.key, "big", records({"loss": [math.sin(i / 50) for i in range(n)]}))
    whole = get(server, project.key, "/api/v1/runs/big/chart", key="loss", n=100).json()
    s = whole["series"][0]
    assert len(s["x"]) <= 100 and sum(s["count"]) == n and s["points"] == n
    zoom = get(server, project.key, "/api/v1/runs/big/chart", key="loss", n=100, x0=1000, x1=1099)
    z = zoom.json()["series"][0]
    assert z["x"] == list(range(1000, 1100)) and set(z["count"]) == {1}
    bad = get(server, project.key, "/api/v1/runs/big/chart", key="loss", n=5000)
    assert bad.status_code == 422


def test_compare_overlays_several_runs(server, project):
    for rid, lr in (("c1", 0.1), ("c2", 0.01)):
        make_run(server, project.key, rid, f"lr{lr}", {"lr": lr}, {"loss": [lr, lr / 2]})
    r = get(server, project.key, "/api/v1/charts", key="loss", run=["c1", "c2"])
    assert [s["run"] for s in r.json()["series"]] == ["c1", "c2"]
    assert [s["name"] for s in r.json()["series"]] == ["lr0.1", "lr0.01"]


def test_messages_are_the_run_log(server, project):
    put_record(server, project.key, record("lg", "logged"))
    recs = [{"t": 10.0, "message": "epoch 1 done"}, {"t": 11.0, "message": "saved <ckpt>"}]
    assert ingest(server, project.key, "lg", recs).status_code == 200
    lines = get(server, project.key, "/api/v1/runs/lg/log").json()["lines"]
    assert [line["text"] for line in lines] == ["epoch 1 done", "saved <ckpt>"]


def test_the_runs_table_sorts_by_the_criterion_and_filters_by_hyperparameters(server, project):
    for rid, lr, acc in (("t1", 0.1, [0.5, 0.7]), ("t2", 0.01, [0.6, 0.9]), ("t3", 0.001, [0.2])):
        make_run(server, project.key, rid, f"run-{rid}", {"lr": lr, "opt": {"name": "sgd"}},
                 {"val_accuracy": acc, "loss": [1.0]}, monitor="val_accuracy", mode="max")  # fmt: skip
    t = get(server, project.key, "/api/v1/tracking/runs").json()
    assert (t["sort"], t["order"], t["monitor"], t["mode"]) == (
        "best",
        "desc",
        "val_accuracy",
        "max",
    )
    assert [r["id"] for r in t["runs"]] == ["t2", "t1", "t3"]
    assert {c["id"] for c in t["columns"]} >= {
        "config.lr",
        "config.opt.name",
        "metric.loss",
        "best",
    }
    t = get(server, project.key, "/api/v1/tracking/runs", sort="config.lr", order="asc").json()
    assert [r["id"] for r in t["runs"]] == ["t3", "t2", "t1"]
    t = get(server, project.key, "/api/v1/tracking/runs", q="lr>=0.01 val_accuracy>0.6").json()
    assert [r["id"] for r in t["runs"]] == ["t2", "t1"]
    t = get(server, project.key, "/api/v1/tracking/runs", q="name~T3").json()
    assert [r["id"] for r in t["runs"]] == ["t3"]


@pytest.mark.parametrize(
    "params, match",
    [
        ({"sort": "config.__class__"}, "cannot sort by"),
        ({"sort": "name; DROP TABLE runs"}, "cannot sort by"),
        ({"q": "lr>>1"}, "cannot read the filter"),
        ({"q": "__import__('os')=1"}, "cannot read the filter"),
        ({"q": "nosuchfield=1"}, "unknown field"),
    ],
)
def test_sort_columns_are_allowlisted_and_filters_are_parsed_not_run(
    server, project, params, match
):
    make_run(server, project.key, "s1", "s1", {"lr": 0.1}, {"loss": [1.0]})
    r = get(server, project.key, "/api/v1/tracking/runs", **params)
    assert r.status_code == 400 and match in r.json()["detail"]


def test_run_detail_has_summaries_and_status(server, project):
    make_run(server, project.key, "d1", "detail", {"lr": 0.1}, {"loss": [2.0, 1.0, 1.5]})
    d = get(server, project.key, "/api/v1/tracking/runs/d1").json()
    assert d["status"] == "finished" and d["config"] == {"lr": 0.1}
    assert (d["summaries"]["loss"]["min"], d["summaries"]["loss"]["last"]) == (1.0, 1.5)


TRACKING_ROUTES = [
    ("get", "/api/v1/runs/{run}/metrics", {}),
    ("get", "/api/v1/runs/{run}/chart", {"key": "loss"}),
    ("get", "/api/v1/charts", {"key": "loss", "run": "{run}"}),
    ("get", "/api/v1/runs/{run}/points", {"key": "loss"}),
    ("get", "/api/v1/runs/{run}/log", {}),
    ("get", "/api/v1/tracking/runs/{run}", {}),
    ("get", "/runs/{run}", {}),
    ("get", "/compare", {"run": ["{run}", "{run2}"]}),
    ("get", "/ui/data/runs/{run}", {}),
    ("get", "/ui/data/chart", {"key": "loss", "run": "{run}"}),
    ("get", "/runs/{run}/checkpoints/ckpt-1", {}),
]
#: routes that list the caller's project: another project's run must not appear in them
LISTING_ROUTES = ["/", "/runs", "/ui/data/table", "/api/v1/tracking/runs"]


@pytest.fixture
def two_projects(server):
    """Project ``a`` and project ``b``; ``b`` holds runs with a checkpoint."""
    from benchkit.store.http import HttpStore

    a, b = server.quick_project(), server.quick_project()
    for rid in ("secret-run", "secret-two"):
        make_run(server, b.key, rid, "b-secret", {"lr": 0.5}, {"loss": [42.0]})
        line = [{"t": 1.0, "message": "b-secret log line"}]
        assert ingest(server, b.key, rid, line, writer="w1").status_code == 200
    store = HttpStore(server.url, b.key)
    store.put("checkpoints/secret-run/ckpt-1", b"b-secret weights")
    store.close()
    return a, b


def _signed_in(server, key: str) -> requests.Session:
    """A browser-like session signed in with ``key`` through the sign-in form."""
    import re

    s = requests.Session()
    form = s.get(f"{server.url}/signin", timeout=60).text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    r = s.post(f"{server.url}/signin", data={"csrf": token, "api_key": key},
               headers={"Origin": server.url}, allow_redirects=False, timeout=60)  # fmt: skip
    assert r.status_code == 303, r.text
    return s


def _call(server, who, method: str, path: str, params: dict) -> requests.Response:
    def fill(v):
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v.replace("{run2}", "secret-two").replace("{run}", "secret-run")

    kw = {"headers": headers(who)} if isinstance(who, str) else {}
    call = requests.request if isinstance(who, str) else who.request
    return call(method, server.url + fill(path), params={k: fill(v) for k, v in params.items()},
                timeout=60, allow_redirects=False, **kw)  # fmt: skip


def _auths(path: str) -> list[str]:
    """How a route is reached: the API with a key only (it ignores cookies, see below), the
    dashboard with a key or a signed-in session."""
    return ["key"] if path.startswith("/api/") else ["key", "session"]


def _callers(server, a, b, auth: str):
    if auth == "key":
        return a.key, b.key
    return _signed_in(server, a.key), _signed_in(server, b.key)


@pytest.mark.parametrize(
    "auth, method, path, params",
    [(auth, *route) for route in TRACKING_ROUTES for auth in _auths(route[1])],
    ids=[f"{route[1]}-{auth}" for route in TRACKING_ROUTES for auth in _auths(route[1])],
)
def test_another_projects_key_or_session_sees_nothing_of_a_run(
    server, two_projects, auth, method, path, params
):
    stranger, owner = _callers(server, *two_projects, auth)
    r = _call(server, stranger, method, path, params)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "b-secret" not in r.text and "42.0" not in r.text
    own = _call(server, owner, method, path, params)
    assert own.status_code == 200, (path, own.status_code, own.text[:200])
    assert "b-secret" in own.text or "42.0" in own.text  # the probe sees what it must hide


@pytest.mark.parametrize(
    "auth, path",
    [(auth, path) for path in LISTING_ROUTES for auth in _auths(path)],
    ids=[f"{path}-{auth}" for path in LISTING_ROUTES for auth in _auths(path)],
)
def test_another_projects_runs_are_not_listed(server, two_projects, auth, path):
    stranger, owner = _callers(server, *two_projects, auth)
    r = _call(server, stranger, "get", path, {})
    assert r.status_code == 200 and "secret-run" not in r.text and "b-secret" not in r.text
    own = _call(server, owner, "get", path, {})
    assert own.status_code == 200 and "secret-run" in own.text


def test_the_api_ignores_a_session_cookie(server, two_projects):
    _, b = two_projects
    s = _signed_in(server, b.key)
    r = s.get(f"{server.url}/api/v1/tracking/runs/secret-run", timeout=60)
    assert r.status_code == 401 and "b-secret" not in r.text


def test_another_projects_runs_table_and_ingest_stay_apart(server):
    a, b = server.quick_project(), server.quick_project()
    make_run(server, b.key, "shared-id", "b-run", {"lr": 0.5}, {"loss": [1.0, 2.0]})
    assert get(server, a.key, "/api/v1/tracking/runs").json()["runs"] == []
    r = ingest(server, a.key, "shared-id", records({"loss": [9.0]}))  # its own run
    assert r.json()["inserted"] == 1
    mb = get(server, b.key, "/api/v1/runs/shared-id/metrics").json()
    assert mb["metrics"]["loss"]["count"] == 2 and mb["writers"] == {"w0": 3}
