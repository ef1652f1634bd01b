"""Cross-project access on every route of the OpenAPI document: project A's key on project B's
objects, uploads, datasets, versions, runs and checkpoints gets exactly what it gets for
identifiers that exist nowhere (404 for a thing, an empty or A-only listing), never B's data,
and B's data is unchanged afterwards.

The routes are read from the application itself, so a new route is probed automatically; one
whose parameters or body this test cannot fill fails, and the table below must learn it.
"""

from __future__ import annotations

import json
import tempfile
import uuid

import pytest
from serverkit import Api

from benchkit.server.app import create_app
from benchkit.server.config import ServerConfig
from benchkit.store.http import HttpStore

#: routes that answer without a key (by design)
PUBLIC = {("get", "/api/v1/info")}
MARK = "B-MARKER-7f3a"


def app_routes() -> list[tuple[str, str]]:
    doc = create_app(ServerConfig(data_dir=tempfile.mkdtemp(prefix="bk-openapi-"))).openapi()
    return sorted((m, p) for p, ops in doc["paths"].items() for m in ops if (m, p) not in PUBLIC)


ROUTES = app_routes()


def _fill(server):
    b = server.quick_project()
    store = HttpStore(server.url, b.key, b.id)
    run_id = f"20260101-000000-brun-{uuid.uuid4().hex[:4]}"
    store.put(f"iso/{MARK}.bin", MARK.encode())
    store.put_json(
        "datasets/bds/index.json",
        {"name": "bds", "num_samples": 1, "schema": {"kind": "int", "note": MARK},
         "chunks": [{"file": "chunk-000000.bkc", "samples": 1, "bytes": 3, "sha256": "0" * 64}],
         "format_version": 1, "created": MARK, "chunk_bytes": 10},
    )  # fmt: skip
    store.put("code/1/code.tar.gz", b"archive")
    store.put_json("code/1/manifest.json", {"version": 1, "message": MARK, "files": []})
    store.put_json(f"runs/{run_id}/run.json", {"id": run_id, "name": MARK, "status": "finished"})
    store.put(f"checkpoints/{run_id}/epoch-0001", MARK.encode())
    metrics = [{"t": 1.0, "step": 0, "values": {MARK: 1.5, "loss": 2.5}, "message": MARK}]
    store.client.json(
        "POST", f"runs/{run_id}/metrics", json={"writer": MARK, "first_seq": 1, "records": metrics}
    )
    upload = store.client.json("POST", "uploads", json={"key": f"up/{MARK}"}, expect=(201,))
    job_id = _ended_job(server, b.id, run_id, store)
    ids = {
        "job_id": job_id,
        "key": f"iso/{MARK}.bin",
        "upload_id": upload["id"],
        "number": "0",
        "name": "bds",
        "version": "1",
        "run_id": run_id,
    }
    return b, store, ids


def _ended_job(server, project_id: str, run_id: str, store) -> str:
    """A job of B that has ended (its row and its log), without running anything."""
    from benchkit.remote import joblog
    from benchkit.server.db.jobs import Job
    from benchkit.server.db.models import utcnow

    with server.keys().db.write() as s:
        s.add(Job(project_id=project_id, id=run_id, run_id=run_id, name=MARK, version=1,
                  state="succeeded", executor="local", spec={"job_id": run_id}, message=MARK,
                  log_bytes=0, metric_parts=0, released=True, created_at=utcnow()))  # fmt: skip
    store.put(joblog.segment_key(run_id, 1, 0), MARK.encode())
    return run_id


_victims: dict[str, tuple] = {}


def victim_of(server):
    if server.url not in _victims:
        _victims[server.url] = _fill(server)
    return _victims[server.url]


def nowhere() -> dict[str, str]:
    """Identifiers of things that exist in no project."""
    return {
        "key": f"iso/none-{uuid.uuid4().hex}.bin",
        "upload_id": uuid.uuid4().hex,
        "number": "0",
        "name": f"none{uuid.uuid4().hex[:8]}",
        "version": "999",
        "run_id": f"20260101-000000-none-{uuid.uuid4().hex[:4]}",
        "job_id": f"20260101-000000-none-{uuid.uuid4().hex[:4]}",
    }


def _body(op: dict, ids: dict[str, str]) -> dict:
    content = op.get("requestBody", {}).get("content", {})
    if not content:
        return {}
    if "application/octet-stream" in content:
        return {"data": b"attacker bytes"}
    schema = content["application/json"]["schema"]
    name = schema.get("$ref", "").rsplit("/", 1)[-1] or schema.get("title", "")
    batch = {"writer": "attacker", "first_seq": 1, "records": [{"t": 1.0, "values": {"loss": 9.0}}]}
    bodies = {
        "NewUpload": {"key": ids["key"]},
        "Complete": {"sha256": "0" * 64, "size": 1},
        "JobIn": {"version": 1, "name": "probe"},
        "IngestBatch": batch,
    }
    assert name in bodies, f"teach test_isolation a body for schema {name!r}"
    return {"json": bodies[name]}


def _request(api: Api, doc: dict, method: str, path: str, ids: dict[str, str]):
    """The request for this route with these identifiers, and the identifiers it used."""
    op = doc["paths"][path][method]
    used = {"key"} if "requestBody" in op else set()
    url = path.removeprefix("/api/v1")
    params = {}
    for p in op.get("parameters", []):
        if p["in"] == "path":
            assert p["name"] in ids, (
                f"teach test_isolation a value for path parameter {p['name']!r}"
            )
            used.add(p["name"])
            url = url.replace("{" + p["name"] + "}", ids[p["name"]])
            url = url.replace("{" + p["name"] + ":path}", ids[p["name"]])
        elif p["in"] == "query" and p.get("required") and p["name"] != "run":
            params[p["name"]] = {"offset": 0, "prefix": "iso/", "key": "loss"}[p["name"]]
        elif p["in"] == "query" and p["name"] in ("prefix", "run"):
            params[p["name"]] = {"prefix": "", "run": ids["run_id"]}[p["name"]]
            if p["name"] == "run":
                used.add("run_id")
    return api(method.upper(), url, params=params, **_body(op, ids)), used


def _normalised(r, ids: dict[str, str], used: set[str], caller) -> tuple[int, str]:
    """Status and body with the request's identifiers and the caller's own names masked."""
    text = r.text
    for own in (caller.id, caller.name, caller.key.split("_")[1]):
        text = text.replace(own, "<caller>")
    for name in sorted(used, key=lambda n: -len(ids[n])):
        text = text.replace(ids[name], f"<{name}>")
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            for k in ("id", "created_at", "updated_at"):  # a fresh upload session of A's own
                body.pop(k, None)
        text = json.dumps(body, sort_keys=True)
    except ValueError:
        pass
    return r.status_code, text


def test_the_routes_probed_are_the_servers(bench_server):
    import requests

    live = requests.get(bench_server.url + "/openapi.json", timeout=30).json()["paths"]
    assert sorted((m, p) for p, ops in live.items() for m in ops if (m, p) not in PUBLIC) == ROUTES


@pytest.mark.parametrize("method,path", ROUTES, ids=[f"{m.upper()} {p}" for m, p in ROUTES])
def test_another_projects_things_are_not_found(bench_server, method, path):
    b, b_store, b_ids = victim_of(bench_server)
    doc = json.loads(
        __import__("requests").get(bench_server.url + "/openapi.json", timeout=30).text
    )
    a, c = bench_server.quick_project(), bench_server.quick_project()
    r_b, used = _request(Api(bench_server.url, a.key), doc, method, path, b_ids)
    other = nowhere()
    r_none, _ = _request(Api(bench_server.url, c.key), doc, method, path, other)
    seen = _normalised(r_b, b_ids, used, a)  # what A asked for (B's identifiers) may be echoed
    assert MARK not in seen[1] and b.id not in seen[1], r_b.text
    assert r_b.status_code < 500, r_b.text
    assert seen == _normalised(r_none, other, used, c), (r_b.text, r_none.text)
    # and B still has everything
    assert b_store.get(b_ids["key"]) == MARK.encode()
    assert b_store.exists("datasets/bds/index.json") and b_store.exists("code/1/manifest.json")
    assert [r["id"] for r in b_store.catalog().runs()] == [b_ids["run_id"]]
    assert [c["name"] for c in b_store.catalog().checkpoints()] == ["epoch-0001"]
    assert [u["id"] for u in b_store.uploads()] == [b_ids["upload_id"]]
    [job] = b_store.client.json("GET", "jobs")["jobs"]
    assert (
        job["id"] == b_ids["job_id"] and job["state"] == "succeeded" and not job["cancel_requested"]
    )
    tracked = b_store.client.json("GET", f"runs/{b_ids['run_id']}/metrics")
    assert tracked["writers"] == {MARK: 2} and tracked["metrics"]["loss"]["count"] == 1
