"""What only the tensorstore backend does: URLs to specs, credentials, error mapping, the part
layout, and living across processes (pickling, spawn workers, fork)."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchkit.errors import (
    ObjectNotFound,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    UnsupportedStoreURL,
)
from benchkit.store import Store, open_store
from benchkit.store.tensorstore import MAGIC, TensorStoreStore

MiB = 1024 * 1024


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    """No AWS variables and an empty home, so only what a test sets counts."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_SHARED_CREDENTIALS_FILE",
        "BENCHKIT_S3_ENDPOINT",
        "BENCHKIT_S3_REGION",
        "BENCHKIT_S3_RETRIES",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


# --- URLs and specs ----------------------------------------------------------------------------


def test_s3_url_query_gives_endpoint_and_region(clean_aws_env):
    s = TensorStoreStore.from_url("s3://bkt/a/b/?endpoint=http://127.0.0.1:9000/&region=eu-west-1")
    assert s.url == "s3://bkt/a/b"
    assert s.spec["bucket"] == "bkt" and s.spec["path"] == "a/b/"
    assert s.spec["endpoint"] == "http://127.0.0.1:9000"
    assert s.spec["aws_region"] == "eu-west-1"
    assert s.endpoint == "http://127.0.0.1:9000/"


def test_s3_endpoint_and_region_precedence(clean_aws_env):
    clean_aws_env.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    clean_aws_env.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    s = TensorStoreStore.from_url("s3://bkt")
    assert s.spec["endpoint"] == "http://generic:1" and s.spec["aws_region"] == "ap-south-1"
    assert s.spec["path"] == "" and s.url == "s3://bkt"
    clean_aws_env.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:2")
    clean_aws_env.setenv("AWS_REGION", "eu-central-1")
    s = TensorStoreStore.from_url("s3://bkt/p")
    assert s.spec["endpoint"] == "http://s3-specific:2" and s.spec["aws_region"] == "eu-central-1"
    clean_aws_env.setenv("BENCHKIT_S3_ENDPOINT", "http://benchkit:3")
    clean_aws_env.setenv("BENCHKIT_S3_REGION", "us-west-2")
    s = TensorStoreStore.from_url("s3://bkt/p")
    assert s.spec["endpoint"] == "http://benchkit:3" and s.spec["aws_region"] == "us-west-2"
    s = TensorStoreStore.from_url("s3://bkt/p?endpoint=http://query:4")
    assert s.spec["endpoint"] == "http://query:4" and s.spec["aws_region"] == "us-west-2"


def test_s3_defaults_to_aws_in_us_east_1(clean_aws_env):
    s = TensorStoreStore.from_url("s3://bkt/p")
    assert "endpoint" not in s.spec
    assert s.spec["aws_region"] == "us-east-1"


def test_s3_credentials_from_env_then_file_then_anonymous(clean_aws_env, tmp_path):
    assert TensorStoreStore.from_url("s3://b/p").spec["aws_credentials"] == {"type": "anonymous"}
    creds = tmp_path / "home" / ".aws" / "credentials"
    creds.parent.mkdir(parents=True)
    creds.write_text("[work]\naws_access_key_id = a\naws_secret_access_key = b\n")
    clean_aws_env.setenv("AWS_PROFILE", "work")
    assert TensorStoreStore.from_url("s3://b/p").spec["aws_credentials"] == {
        "type": "default",
        "profile": "work",
    }
    clean_aws_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert TensorStoreStore.from_url("s3://b/p").spec["aws_credentials"] == {"type": "environment"}


def test_retries_are_few_and_configurable(clean_aws_env):
    spec = TensorStoreStore.from_url("s3://b/p").spec
    assert spec["context"]["s3_request_retries"]["max_retries"] <= 3
    clean_aws_env.setenv("BENCHKIT_S3_RETRIES", "7")
    assert (
        TensorStoreStore.from_url("s3://b/p").spec["context"]["s3_request_retries"]["max_retries"]
        == 7
    )
    clean_aws_env.setenv("BENCHKIT_S3_RETRIES", "lots")
    with pytest.raises(StoreError, match="BENCHKIT_S3_RETRIES"):
        TensorStoreStore.from_url("s3://b/p")


def test_gs_url(clean_aws_env):
    clean_aws_env.setenv("TENSORSTORE_GCS_HTTP_URL", "http://127.0.0.1:4443")
    s = TensorStoreStore.from_url("gs://bkt/some/prefix")
    assert s.spec["driver"] == "gcs" and s.spec["bucket"] == "bkt"
    assert s.spec["path"] == "some/prefix/"
    assert s.url == "gs://bkt/some/prefix" and s.endpoint == "http://127.0.0.1:4443"


@pytest.mark.parametrize(
    "url", ["s3:///prefix", "gs://", "tensorstore+file://host/path", "ftp://x/y"]
)
def test_bad_tensorstore_urls(url):
    with pytest.raises(UnsupportedStoreURL):
        TensorStoreStore.from_url(url)


def test_tiny_part_size_rejected():
    with pytest.raises(StoreError, match="part_size"):
        TensorStoreStore.from_url("memory://tiny", part_size=10)


# --- error mapping against real endpoints ------------------------------------------------------


@pytest.mark.s3
def test_missing_bucket_names_it_and_how_to_create_it(moto_server):
    store = open_store(f"s3://bk-never-made/p?endpoint={moto_server}")
    with pytest.raises(StoreError, match="bk-never-made") as info:
        store.put("a/b", b"x")
    assert "create it" in str(info.value) and "aws s3 mb s3://bk-never-made" in str(info.value)
    with pytest.raises(StoreError, match="does not exist"):
        store.list()
    with pytest.raises(ObjectNotFound):
        store.get("a/b")


class _Deny(http.server.BaseHTTPRequestHandler):
    """An S3-like endpoint that refuses every request, as S3 does with bad credentials."""

    def _deny(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>"
        )
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _deny

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def denying_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Deny)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(60)
def test_refused_credentials_say_what_to_check(denying_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = open_store(f"s3://locked/p?endpoint={denying_endpoint}&region=us-east-1")
    for op in (lambda: store.put("a/b", b"x"), lambda: store.get("a/b"), lambda: store.list()):
        with pytest.raises(StorePermissionError) as info:
            op()
        msg = str(info.value)
        assert "s3://locked/p" in msg and denying_endpoint in msg
        assert "AWS_ACCESS_KEY_ID" in msg and "bucket policy" in msg


@pytest.mark.timeout(30)
def test_dead_gcs_endpoint_fails_fast_naming_it(monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", f"http://127.0.0.1:{port}")
    store = open_store("gs://bkt/p")
    with pytest.raises(StoreConnectionError) as info:
        store.get("a/b")
    assert f"127.0.0.1:{port}" in str(info.value) and "TENSORSTORE_GCS_HTTP_URL" in str(info.value)


# --- the part layout ---------------------------------------------------------------------------


def test_large_object_is_parts_behind_a_manifest():
    store = TensorStoreStore.from_url("memory://layout", part_size=MiB)
    data = os.urandom(3 * MiB + 1)
    store.put("d/obj.bin", data)
    kv = store._store()
    raw = sorted(k.decode() for k in kv.list().result())
    parts = [k for k in raw if k != "d/obj.bin"]
    assert len(parts) == 4 and all(k.startswith("d/.obj.bin.parts/") for k in parts)
    manifest = kv.read("d/obj.bin").result().value
    assert manifest.startswith(MAGIC)
    body = json.loads(manifest[len(MAGIC) :])
    assert body["size"] == len(data) and [n for _, n in body["parts"]] == [MiB] * 3 + [1]
    assert store.stat("d/obj.bin").size == len(data)
    store.delete("d/obj.bin")
    assert kv.list().result() == []


def test_plain_object_written_by_another_tool_is_read_as_is(tmp_path):
    # a value larger than part_size that is not a manifest (e.g. uploaded with the AWS CLI)
    store = TensorStoreStore.from_url(f"tensorstore+file://{tmp_path}", part_size=MiB)
    data = os.urandom(2 * MiB + 5)
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "raw.bin").write_bytes(data)
    assert store.get("ext/raw.bin") == data
    assert store.stat("ext/raw.bin").size == len(data)
    assert store.get_range("ext/raw.bin", MiB, 10 * MiB) == data[MiB:]
    assert b"".join(store.iter_blocks("ext/raw.bin", MiB)) == data


def test_parallel_uploads_from_threads(tmp_path):
    store = TensorStoreStore.from_url(f"tensorstore+file://{tmp_path}", part_size=MiB)
    blobs = {f"par/{i}": os.urandom(MiB * (i % 3) + i) for i in range(12)}
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda kv: store.put(*kv), blobs.items()))
    assert store.list("par/") == sorted(blobs)
    for key, data in blobs.items():
        assert store.get(key) == data


# --- processes ---------------------------------------------------------------------------------


def test_store_pickles_as_its_spec(tmp_path):
    store = TensorStoreStore.from_url(f"tensorstore+file://{tmp_path}", part_size=2 * MiB)
    store.put("k", b"v")  # opens the handle, which must not travel
    clone = pickle.loads(pickle.dumps(store))
    assert clone.url == store.url and clone.part_size == 2 * MiB and clone._kv is None
    assert clone.get("k") == b"v"
    assert not store.fork_safe and TensorStoreStore.from_url("memory://m").fork_safe


def _read_in_worker(store: Store, key: str) -> tuple[int, bytes]:
    return os.getpid(), store.get(key)


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_spawned_workers_reopen_the_store(store_url):
    if store_url.startswith("memory://"):
        pytest.skip("memory:// lives in one process: a spawned worker has its own, empty one")
    store = (
        TensorStoreStore.from_url(store_url, part_size=MiB)
        if store_url.startswith(("tensorstore+file://", "s3://", "gs://"))
        else open_store(store_url)
    )
    data = os.urandom(2 * MiB + 3)
    store.put("w/obj", data)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_read_in_worker, [(store, "w/obj")] * 2)
    assert all(pid != os.getpid() and got == data for pid, got in results)


FORK_CHILD = textwrap.dedent(
    """
    import os, sys
    from benchkit.errors import StoreError
    from benchkit.store import open_store
    disk = open_store("tensorstore+file://" + sys.argv[1])
    mem = open_store("memory://forked")
    disk.put("k", b"on disk")
    mem.put("k", b"in memory")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            disk.get("k")
            code = 3
        except StoreError as e:
            code = 0 if "spawn" in str(e) and disk.url in str(e) else 4
        if code == 0 and mem.get("k") != b"in memory":
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.multiprocess
@pytest.mark.timeout(60)
def test_forked_child_gets_a_clear_error_not_an_abort(tmp_path):
    """tensorstore aborts a forked child that uses it; the store raises StoreError first.
    A memory:// store is fork-safe: the child sees the parent's objects."""
    res = subprocess.run(
        [sys.executable, "-c", FORK_CHILD, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "child exit 0" in res.stdout, res.stdout + res.stderr[-2000:]


def test_manifest_pointing_outside_its_parts_is_refused_and_never_followed():
    store = TensorStoreStore.from_url("memory://hostile", part_size=MiB)
    store.put("datasets/keep", b"precious")
    forged = MAGIC + json.dumps({"size": 8, "parts": [["datasets/keep", 8]]}).encode()
    store._store().write("x/obj", forged).result()  # as another tool could have written it
    with pytest.raises(StoreError, match="outside"):
        store.get("x/obj")
    store.put("x/obj", os.urandom(2 * MiB))  # replacing it must not delete what it named
    assert store.get("datasets/keep") == b"precious"
