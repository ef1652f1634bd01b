"""The tracking API on a real server over HTTP: ingest semantics, charts, points, logs, the
runs table; every route scoped to the caller's project."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import requests
from trackkit import headers, ingest, make_run, put_record, record, records


@pytest.fixture
def project(sqlite_server):
    return sqlite_server.quick_project()


def get(server, api_key, path, **params):
    return requests.get(f"{server.url}{path}", params=params, headers=headers(api_key), timeout=60)


def test_a_retried_batch_is_stored_once_and_a_gap_gets_the_expected_seq(sqlite_server, project):
    recs = records({"loss": [1.0, 0.5, 0.25]})
    first = ingest(sqlite_server, project.key, "r1", recs)
    assert first.json() == {
        "writer": "w0", "next_seq": 4, "acked_through": 3, "inserted": 3, "skipped": 0,
    }  # fmt: skip
    again = ingest(sqlite_server, project.key, "r1", recs)
    assert (again.status_code, again.json()["inserted"], again.json()["skipped"]) == (200, 0, 3)
    gap = ingest(sqlite_server, project.key, "r1", recs, first_seq=7)
    assert gap.status_code == 409
    assert gap.json()["expected_seq"] == 4
    m = get(sqlite_server, project.key, "/api/v1/runs/r1/metrics").json()
    assert m["writers"] == {"w0": 4}
    assert m["metrics"]["loss"]["count"] == 3


def test_a_gzipped_batch_is_accepted_and_an_oversized_one_refused(sqlite_server, project):
    body = json.dumps({"writer": "w", "first_seq": 1, "records": records({"a": [1.0] * 50})})
    r = requests.post(
        f"{sqlite_server.url}/api/v1/runs/gz/metrics",
        data=gzip.compress(body.encode()),
        headers={**headers(project.key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["inserted"] == 50
    big = b'{"writer": "w", "first_seq": 50, "records": [' + b" " * (5 * 1024 * 1024) + b"]}"
    r = requests.post(
        f"{sqlite_server.url}/api/v1/runs/gz/metrics", data=big, headers=headers(project.key),
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
def test_a_malformed_batch_is_a_400_with_the_reason(sqlite_server, project, body, match):
    r = requests.post(
        f"{sqlite_server.url}/api/v1/runs/bad/metrics", json=body, headers=headers(project.key),
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 400 and match in r.json()["detail"]


def test_a_read_only_key_cannot_ingest(sqlite_server, project):
    ro = sqlite_server.keys().create_key(project.id, "read").token
    assert ingest(sqlite_server, ro, "r1", records({"a": [1.0]})).status_code == 403


def test_non_finite_values_survive_the_round_trip(sqlite_server, project):
    ingest(
        sqlite_server, project.key, "nf", records({"loss": [1.0, "NaN", "Infinity", "-Infinity"]})
    )
    pts = get(sqlite_server, project.key, "/api/v1/runs/nf/points", key="loss").json()["points"]
    assert [p["value"] for p in pts] == [1.0, "NaN", "Infinity", "-Infinity"]
    ch = get(sqlite_server, project.key, "/api/v1/runs/nf/chart", key="loss").json()["series"][0]
    assert ch["nonfinite"] == [[1, "nan"], [2, "inf"], [3, "-inf"]]


def test_the_chart_has_at_most_n_buckets_and_rebuckets_a_zoomed_range(sqlite_server, project):
    n = 5000
    ingest(
        sqlite_server, project.key, "big", records({"loss": [math.sin(i / 50) for i in range(n)]})
    )
    whole = get(sqlite_server, project.key, "/api/v1/runs/big/chart", key="loss", n=100).json()
    s = whole["series"][0]
    assert len(s["x"]) <= 100 and sum(s["count"]) == n and s["points"] == n
    zoom = get(
        sqlite_server, project.key, "/api/v1/runs/big/chart", key="loss", n=100, x0=1000, x1=1099
    )
    z = zoom.json()["series"][0]
    assert z["x"] == list(range(1000, 1100)) and set(z["count"]) == {1}
    bad = get(sqlite_server, project.key, "/api/v1/runs/big/chart", key="loss", n=5000)
    assert bad.status_code == 422


def test_compare_overlays_several_runs(sqlite_server, project):
    for rid, lr in (("c1", 0.1), ("c2", 0.01)):
        make_run(sqlite_server, project.key, rid, f"lr{lr}", {"lr": lr}, {"loss": [lr, lr / 2]})
    r = get(sqlite_server, project.key, "/api/v1/charts", key="loss", run=["c1", "c2"])
    assert [s["run"] for s in r.json()["series"]] == ["c1", "c2"]
    assert [s["name"] for s in r.json()["series"]] == ["lr0.1", "lr0.01"]


def test_messages_are_the_run_log(sqlite_server, project):
    put_record(sqlite_server, project.key, record("lg", "logged"))
    recs = [{"t": 10.0, "message": "epoch 1 done"}, {"t": 11.0, "message": "saved <ckpt>"}]
    assert ingest(sqlite_server, project.key, "lg", recs).status_code == 200
    lines = get(sqlite_server, project.key, "/api/v1/runs/lg/log").json()["lines"]
    assert [line["text"] for line in lines] == ["epoch 1 done", "saved <ckpt>"]


def test_the_runs_table_sorts_by_the_criterion_and_filters_by_hyperparameters(
    sqlite_server, project
):
    for rid, lr, acc in (("t1", 0.1, [0.5, 0.7]), ("t2", 0.01, [0.6, 0.9]), ("t3", 0.001, [0.2])):
        make_run(sqlite_server, project.key, rid, f"run-{rid}", {"lr": lr, "opt": {"name": "sgd"}},
                 {"val_accuracy": acc, "loss": [1.0]}, monitor="val_accuracy", mode="max")  # fmt: skip
    t = get(sqlite_server, project.key, "/api/v1/tracking/runs").json()
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
    t = get(
        sqlite_server, project.key, "/api/v1/tracking/runs", sort="config.lr", order="asc"
    ).json()
    assert [r["id"] for r in t["runs"]] == ["t3", "t2", "t1"]
    t = get(
        sqlite_server, project.key, "/api/v1/tracking/runs", q="lr>=0.01 val_accuracy>0.6"
    ).json()
    assert [r["id"] for r in t["runs"]] == ["t2", "t1"]
    t = get(sqlite_server, project.key, "/api/v1/tracking/runs", q="name~T3").json()
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
    sqlite_server, project, params, match
):
    make_run(sqlite_server, project.key, "s1", "s1", {"lr": 0.1}, {"loss": [1.0]})
    r = get(sqlite_server, project.key, "/api/v1/tracking/runs", **params)
    assert r.status_code == 400 and match in r.json()["detail"]


def test_run_detail_has_summaries_and_status(sqlite_server, project):
    make_run(sqlite_server, project.key, "d1", "detail", {"lr": 0.1}, {"loss": [2.0, 1.0, 1.5]})
    d = get(sqlite_server, project.key, "/api/v1/tracking/runs/d1").json()
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
    ("get", "/ui/data/runs/{run}", {}),
    ("get", "/ui/data/chart", {"key": "loss", "run": "{run}"}),
    ("get", "/runs/{run}/checkpoints/ckpt-1", {}),
]


@pytest.mark.parametrize(
    "method, path, params", TRACKING_ROUTES, ids=[r[1] for r in TRACKING_ROUTES]
)
def test_another_projects_key_sees_nothing_of_a_run(sqlite_server, method, path, params):
    a, b = sqlite_server.quick_project(), sqlite_server.quick_project()
    make_run(sqlite_server, b.key, "secret-run", "b-secret", {"lr": 0.5}, {"loss": [42.0]})
    fill = lambda s: s.replace("{run}", "secret-run")  # noqa: E731
    url = sqlite_server.url + fill(path)
    r = requests.request(
        method, url, params={k: fill(v) for k, v in params.items()}, headers=headers(a.key),
        timeout=60, allow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "b-secret" not in r.text and "42.0" not in r.text
    own = requests.request(
        method, url, params={k: fill(v) for k, v in params.items()}, headers=headers(b.key),
        timeout=60, allow_redirects=False,
    )  # fmt: skip
    assert own.status_code in (200, 404 if "checkpoints" in path else 200), path


def test_another_projects_runs_table_and_ingest_stay_apart(sqlite_server):
    a, b = sqlite_server.quick_project(), sqlite_server.quick_project()
    make_run(sqlite_server, b.key, "shared-id", "b-run", {"lr": 0.5}, {"loss": [1.0, 2.0]})
    assert get(sqlite_server, a.key, "/api/v1/tracking/runs").json()["runs"] == []
    r = ingest(sqlite_server, a.key, "shared-id", records({"loss": [9.0]}))  # its own run
    assert r.json()["inserted"] == 1
    mb = get(sqlite_server, b.key, "/api/v1/runs/shared-id/metrics").json()
    assert mb["metrics"]["loss"]["count"] == 2 and mb["writers"] == {"w0": 3}
