"""What only the boto3 S3 backend does: share the part layout with the tensorstore backend, read
objects other tools wrote, survive fork(), retry a part whose body breaks off, resolve
credentials. The contract suite (test_contract.py) runs it too, against moto_server."""

from __future__ import annotations

import http.client
import http.server
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from urllib.parse import urlsplit

import boto3
import pytest
from botocore import UNSIGNED

from benchkit.errors import ObjectNotFound
from benchkit.store import open_store
from benchkit.store.s3 import S3Store
from benchkit.store.tensorstore import TensorStoreStore

pytestmark = pytest.mark.s3

MiB = 1024 * 1024


def _both(url: str) -> tuple[S3Store, TensorStoreStore]:
    return S3Store.from_url(url, part_size=MiB), TensorStoreStore.from_url(url, part_size=MiB)


def _hidden(store: TensorStoreStore) -> set[str]:
    return {k for k in store._raw_keys() if "/." in "/" + k}


def test_open_store_gives_the_boto3_backend(s3_store_url):
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store) and store.fork_safe and store.usable_here()


def test_layout_is_shared_with_the_tensorstore_backend(s3_store_url, tmp_path):
    s3, ts = _both(s3_store_url)
    big = os.urandom(3 * MiB + 5)
    ts.put("d/by-ts.bin", big)
    assert s3.get("d/by-ts.bin") == big and s3.stat("d/by-ts.bin").size == len(big)
    assert s3.get_range("d/by-ts.bin", MiB - 3, 2 * MiB + 9) == big[MiB - 3 : 2 * MiB + 9]
    assert b"".join(s3.iter_blocks("d/by-ts.bin", 300_000)) == big
    assert s3.get_file("d/by-ts.bin", tmp_path / "a.bin").read_bytes() == big

    other = os.urandom(2 * MiB + 1)
    s3.put("d/by-s3.bin", other)
    assert ts.get("d/by-s3.bin") == other and ts.stat("d/by-s3.bin").size == len(other)
    assert s3.list("d/") == ts.list("d/") == ["d/by-s3.bin", "d/by-ts.bin"]

    # replacing an object written by the other backend removes its parts
    old_parts = _hidden(ts)
    s3.put("d/by-ts.bin", b"small now")
    assert ts.get("d/by-ts.bin") == b"small now"
    assert not any(k.startswith("d/.by-ts.bin.parts/") for k in _hidden(ts))
    assert _hidden(ts) < old_parts
    assert ts.delete("d/by-s3.bin") and not s3.exists("d/by-s3.bin")
    assert _hidden(s3) == set()


def test_plain_object_written_by_another_tool_is_read_in_ranges(moto_server, s3_bucket, tmp_path):
    data = os.urandom(3 * MiB + 7)  # larger than the parts, and not a manifest
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key="pre/ext/raw.bin", Body=data)
    store = S3Store.from_url(f"s3://{s3_bucket}/pre?endpoint={moto_server}", part_size=MiB)
    assert store.stat("ext/raw.bin").size == len(data) and store.has_size("ext/raw.bin", len(data))
    blocks = list(store.iter_blocks("ext/raw.bin", 300_000))
    assert b"".join(blocks) == data and max(map(len, blocks)) <= 300_000
    assert store.get("ext/raw.bin") == data
    assert store.get_range("ext/raw.bin", 2 * MiB, 10 * MiB) == data[2 * MiB :]
    assert store.list() == ["ext/raw.bin"]


def test_large_objects_are_multipart_uploads_of_plain_objects(moto_server, s3_bucket, tmp_path):
    store = S3Store.from_url(f"s3://{s3_bucket}/mp?endpoint={moto_server}", part_size=MiB)
    assert store.upload_part == 5 * MiB  # S3's smallest part
    data = os.urandom(11 * MiB + 3)  # three parts
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store.put_file("ckpt/model.pt", src)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    head = client.head_object(Bucket=s3_bucket, Key="mp/ckpt/model.pt")
    # a plain object (what `aws s3 cp` reads), uploaded as 3 parts, nothing hidden beside it
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-3")
    assert client.get_object(Bucket=s3_bucket, Key="mp/ckpt/model.pt")["Body"].read() == data
    assert _hidden(store) == set() and store.unfinished_uploads() == []
    assert store.get_file("ckpt/model.pt", tmp_path / "back.bin").read_bytes() == data
    ts = TensorStoreStore.from_url(store.url + f"?endpoint={moto_server}", part_size=MiB)
    assert ts.get("ckpt/model.pt") == data  # the tensorstore backend reads it whole

    # a put that fails half way (its source breaks) aborts its upload: nothing is left
    def broken():
        yield os.urandom(5 * MiB)
        raise OSError("source broke")

    with pytest.raises(OSError, match="source broke"):
        store._multipart("ckpt/broken.pt", broken(), None)
    assert store.unfinished_uploads() == [] and not store.exists("ckpt/broken.pt")
    assert store.get("ckpt/model.pt") == data


FORK_CHILD = textwrap.dedent(
    """
    import os, sys
    from benchkit.store import open_store
    store = open_store(sys.argv[1])
    store.put("f/k", b"parent")
    assert store.get("f/k") == b"parent"  # client and request threads started here
    pid = os.fork()
    if pid == 0:
        ok = store.get("f/k") == b"parent" and store.list("f/") == ["f/k"]
        store.put("f/child", os.urandom(3 * 1024 * 1024))  # parts, through the child's pool
        os._exit(0 if ok and store.stat("f/child").size == 3 * 1024 * 1024 else 3)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_a_forked_child_uses_the_store_the_parent_used(s3_store_url):
    res = subprocess.run(
        [sys.executable, "-c", FORK_CHILD, s3_store_url],
        capture_output=True,
        text=True,
        timeout=100,
        env=os.environ.copy(),
    )
    assert res.returncode == 0 and "child exit 0" in res.stdout, res.stdout + res.stderr[-3000:]
    store = open_store(s3_store_url)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.url == store.url and clone.get("f/k") == b"parent"


class _CuttingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards GETs to moto; the first GET of each key and range sends half its body, then
    hangs up."""

    upstream = ""
    cut: set[str] = set()
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request("GET", self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        what = f"{self.path} {self.headers.get('Range', '')}"
        with self.lock:
            first = resp.status < 300 and len(body) > 1 and what not in self.cut
            self.cut.add(what)
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if first else body)
        self.wfile.flush()
        if first:
            self.close_connection = True
        conn.close()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.timeout(120)
def test_a_part_whose_body_breaks_off_is_fetched_again(s3_store_url, tmp_path):
    parted = os.urandom(4 * MiB + 3)  # a manifest and 5 parts (the tensorstore layout)
    TensorStoreStore.from_url(s3_store_url, part_size=MiB).put("cut/parted.bin", parted)
    plain = os.urandom(11 * MiB + 3)  # a multipart upload: one plain object, one streamed GET
    S3Store.from_url(s3_store_url, part_size=MiB).put("cut/plain.bin", plain)
    query = urlsplit(s3_store_url).query
    endpoint = dict(p.split("=", 1) for p in query.split("&"))["endpoint"]
    handler = type("Proxy", (_CuttingProxy,), {"upstream": endpoint, "cut": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxied = s3_store_url.replace(endpoint, f"http://127.0.0.1:{server.server_address[1]}")
        store = S3Store.from_url(proxied, part_size=MiB)
        assert store.get_file("cut/parted.bin", tmp_path / "a.bin").read_bytes() == parted
        assert store.get_file("cut/plain.bin", tmp_path / "b.bin").read_bytes() == plain
        # every part was cut off once and read whole again; the plain object's one streamed GET
        # was resumed from the first byte it lacked each time it broke off
        assert sum(".parts/" in what for what in handler.cut) == 5
        resumed = sorted(w for w in handler.cut if "plain.bin bytes=" in w and "-65535" not in w)
        assert len(resumed) >= 3 and resumed[0].endswith("bytes=0-")
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_from_env_then_profile_file_then_anonymous(
    moto_server, s3_bucket, monkeypatch, tmp_path
):
    url = f"s3://{s3_bucket}/c?endpoint={moto_server}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    store = S3Store.from_url(url)
    store.put("k", b"v")
    assert store._client()._request_signer._credentials.access_key == "from-env"

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    creds = tmp_path / "credentials"
    creds.write_text("[bk]\naws_access_key_id = from-file\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "bk")
    store = S3Store.from_url(url)
    assert store.get("k") == b"v"
    assert store._client()._request_signer._credentials.access_key == "from-file"

    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store = S3Store.from_url(url)
    assert store._client().meta.config.signature_version is UNSIGNED
    with pytest.raises(ObjectNotFound):
        store.get("missing")  # an unsigned request, answered
