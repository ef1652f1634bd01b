"""The catalog: datasets, code versions, runs and checkpoints indexed when their blobs are
written, served under /api/v1, and the listing functions giving exactly what they give on a
local store holding the same objects."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serverkit import child_env, start_server

from benchkit.code.package import list_versions
from benchkit.store import LocalStore
from benchkit.store.http import HttpStore
from benchkit.training import checkpoints as ckpt
from benchkit.training import runs

RUN_A = "20260101-000000-alpha-0001"
RUN_B = "20260102-000000-beta-0002"


def _index(name: str, samples: list[int]) -> dict:
    return {
        "name": name,
        "num_samples": sum(samples),
        "chunks": [
            {"file": f"chunk-{i:06d}.bkc", "samples": n, "bytes": 100 * n, "sha256": "0" * 64}
            for i, n in enumerate(samples)
        ],
        "schema": {"kind": "int"},
        "format_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "chunk_bytes": 1000,
    }


def fill(store) -> None:
    """The same objects for any store: two datasets (one incomplete), two code versions (one
    half-written), two runs with checkpoints (one unrecorded checkpoint)."""
    store.put("datasets/train/chunk-000000.bkc", b"c0")
    store.put("datasets/train/chunk-000001.bkc", b"c1")
    store.put_json("datasets/train/index.json", _index("train", [3, 4]))
    store.put("datasets/half/chunk-000000.bkc", b"c0")
    for v in (1, 2, 3):
        store.put(f"code/{v}/code.tar.gz", b"tar" * v)
    for v in (1, 3):
        store.put_json(
            f"code/{v}/manifest.json",
            {"version": v, "entry_point": "train.py", "files": [], "requirements": [],
             "requirements_source": "imports", "python": "3.11", "torch": None,
             "accelerate": None, "benchkit": "0.1.0", "message": f"v{v}"},
        )  # fmt: skip
    for rid, name, saved in ((RUN_A, "alpha", ["epoch-0002", "epoch-0001"]), (RUN_B, "beta", [])):
        rec = runs.RunRecord(
            id=rid,
            name=name,
            status="finished",
            config={"lr": 0.1},
            started="2026-01-01T00:00:00+00:00",
        )
        rec.checkpoints = [
            {"name": n, "epoch": i, "step": 10 * i, "time": "t", "size": 5}
            for i, n in enumerate(saved)
        ]
        runs.save_record(store, rec)
        for n in saved:
            store.put(runs.checkpoint_key(rid, n), b"ckpt!")
    store.put(runs.checkpoint_key(RUN_B, "orphan"), b"123")


@pytest.fixture
def pair(bench_server, tmp_path):
    project = bench_server.quick_project()
    http = HttpStore(bench_server.url, project.key, project.id)
    local = LocalStore(tmp_path / "local")
    fill(http)
    fill(local)
    return http, local


def test_listings_through_the_catalog_match_a_local_store(pair):
    http, local = pair
    assert http.catalog() is not None and local.catalog() is None
    assert [r.to_json() for r in runs.list_records(http)] == [
        r.to_json() for r in runs.list_records(local)
    ]
    assert runs.list_run_ids(http) == runs.list_run_ids(local) == [RUN_A, RUN_B]
    assert [m.to_dict() for m in list_versions(http)] == [m.to_dict() for m in list_versions(local)]
    assert [m.version for m in list_versions(http)] == [1, 3]
    assert ckpt.list_checkpoints(http) == ckpt.list_checkpoints(local)
    assert [c.ref for c in ckpt.list_checkpoints(http)] == [
        f"{RUN_A}/epoch-0002", f"{RUN_A}/epoch-0001", f"{RUN_B}/orphan"
    ]  # fmt: skip
    assert ckpt.list_checkpoints(http, RUN_B) == ckpt.list_checkpoints(local, RUN_B)


def _cli_json(store_url: str, *args: str, env: dict) -> object:
    res = subprocess.run(
        [sys.executable, "-m", "benchkit", *args, "--store", store_url, "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_listing_commands_print_the_same_for_a_server_and_a_local_store(
    pair, bench_server, monkeypatch
):
    http, local = pair
    env = child_env(BENCHKIT_API_KEY=http.client.api_key)
    for args in (
        ("datasets", "list"),
        ("versions", "list"),
        ("checkpoints", "list"),
        ("runs", "list"),
    ):
        from_server = _cli_json(http.url, *args, env=env)
        from_local = _cli_json(str(local.root), *args, env=env)
        for rows in (from_server, from_local):  # durations of unfinished runs tick
            for r in rows:
                r.pop("duration", None)
        assert from_server == from_local, args
    datasets = _cli_json(http.url, "datasets", "list", env=env)
    assert [(d["name"], d["complete"], d["samples"], d["chunks"]) for d in datasets] == [
        ("half", False, None, None), ("train", True, 7, 2)
    ]  # fmt: skip


def test_catalog_follows_rewrites_and_deletes(bench_server):
    project = bench_server.quick_project()
    store = HttpStore(bench_server.url, project.key, project.id)
    cat = store.catalog()
    store.put("datasets/d/chunk-000000.bkc", b"x")
    assert [(d["name"], d["complete"]) for d in cat.datasets()] == [("d", False)]
    store.put_json("datasets/d/index.json", _index("d", [2]))
    assert [(d["name"], d["complete"], d["samples"]) for d in cat.datasets()] == [("d", True, 2)]
    store.put("datasets/d/index.json", b"{ not json")
    assert [(d["name"], d["complete"]) for d in cat.datasets()] == [("d", False)]
    assert store.delete_prefix("datasets/d/") == 2
    assert cat.datasets() == []
    rec = runs.RunRecord(id=RUN_A, name="a")
    runs.save_record(store, rec)
    rec.status = "failed"
    runs.save_record(store, rec)
    assert [r["status"] for r in cat.runs()] == ["failed"]
    runs.delete_run(store, RUN_A)
    assert cat.runs() == []
    store.put_json("code/7/manifest.json", {"version": 7, "files": []})
    assert [v["version"] for v in cat.versions()] == [7]
    store.delete("code/7/manifest.json")
    assert cat.versions() == []


def test_catalog_routes_answer_one_item_or_404(bench_server):
    from serverkit import Api

    project = bench_server.quick_project()
    store = HttpStore(bench_server.url, project.key, project.id)
    fill(store)
    api = Api(bench_server.url, project.key)
    assert api("GET", "/datasets/train").json()["samples"] == 7
    assert api("GET", f"/runs/{RUN_B}").json()["name"] == "beta"
    assert api("GET", "/versions/3").json()["message"] == "v3"
    assert api("GET", "/versions/2").status_code == 404  # half-written: not a version
    assert api("GET", "/datasets/nope").status_code == 404


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A SQLite server of these tests' own, which they stop, kill and restart (one start for
    both; each test works in a fresh project)."""
    server = start_server(tmp_path_factory.mktemp("own"))
    yield server
    server.close()


@pytest.fixture
def own(own_server):
    """``own_server``, running (again, if a test before failed while it was down)."""
    if own_server.proc is None or own_server.proc.poll() is not None:
        own_server.start()
    return own_server


@pytest.mark.slow
def test_reindex_rebuilds_the_catalog_from_the_blobs(own):
    server = own
    project = server.quick_project()
    store = HttpStore(server.url, project.key, project.id)
    fill(store)
    expected = (
        store.catalog().datasets(),
        store.catalog().runs(),
        store.catalog().checkpoints(),
    )
    server.stop()
    import sqlite3

    with sqlite3.connect(server.data_dir / "benchkit.db") as db:  # lose the catalog
        for table in ("datasets", "runs", "checkpoints", "code_versions"):
            db.execute(f"DELETE FROM {table}")
    out = server.cli("reindex").stdout
    assert f"project {project.name}: " in out
    server.start()
    assert (
        store.catalog().datasets(),
        store.catalog().runs(),
        store.catalog().checkpoints(),
    ) == expected
    assert [v["version"] for v in store.catalog().versions()] == [1, 3]


@pytest.mark.slow
def test_items_left_pending_by_a_killed_server_are_indexed_at_start(own):
    """The server died after writing a blob and before indexing it: the next start indexes it."""
    server = own
    project = server.quick_project()
    store = HttpStore(server.url, project.key, project.id)
    server.kill()
    rec = runs.RunRecord(id=RUN_A, name="after-crash", status="finished")
    blob = server.data_dir / "store" / "projects" / project.id / runs.run_key(RUN_A)
    blob.parent.mkdir(parents=True)
    blob.write_text(json.dumps(rec.to_json()))
    import sqlite3

    with sqlite3.connect(server.data_dir / "benchkit.db") as db:
        db.execute(
            "INSERT INTO catalog_pending (project_id, key) VALUES (?, ?)",
            (project.id, runs.run_key(RUN_A)),
        )
    server.start()
    assert [r["name"] for r in store.catalog().runs()] == ["after-crash"]
