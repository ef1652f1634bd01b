"""Large objects through a real server with several parts (uploads) or ranges (downloads) in
flight at once: they really overlap, a part broken off mid-way is sent again and the upload
completes, a part failing for good aborts the session and leaves nothing, a download pinned to
one version is refused (412) once the object is replaced, and the server's numbered-part
protocol checks every part."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import requests

from benchkit.errors import StoreError
from benchkit.store import http as http_module
from benchkit.store.http import HttpStore

MiB = 1024 * 1024
PART = 1 * MiB
SIZE = 6 * MiB + 12345  # 7 parts, the last one short


@pytest.fixture
def store(sqlite_server):
    project = sqlite_server.quick_project()
    return HttpStore(sqlite_server.url, project.key, project.id, part_size=PART, parallel=4)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, data


def _wrap_reads(monkeypatch, on_read) -> None:
    """Call ``on_read(part, data)`` after each read the client makes of a part it sends."""
    original = http_module._HashedPart.read

    def read(self, n=-1):
        data = original(self, n)
        on_read(self, data)
        return data

    monkeypatch.setattr(http_module._HashedPart, "read", read)


def test_parts_of_one_upload_are_in_flight_at_once(store, source, monkeypatch, tmp_path):
    path, data = source
    together = threading.Barrier(3, timeout=60)  # three sends must be under way together
    met: set[int] = set()

    def on_read(part, block):
        if part.pos == len(block) and part.offset // PART < 3 and part.offset not in met:
            met.add(part.offset)
            together.wait()  # raises BrokenBarrierError if parts went one after another

    _wrap_reads(monkeypatch, on_read)
    store.put_file("ckpt/big.bin", path)
    assert len(met) == 3  # the three first parts went through the parallel path, together
    assert store.get_file("ckpt/big.bin", tmp_path / "back.bin").read_bytes() == data
    assert store.uploads() == []


def test_a_part_broken_off_mid_way_is_sent_again_and_the_upload_completes(
    store, source, monkeypatch, tmp_path
):
    path, data = source
    broken: list[int] = []
    sends: dict[int, int] = {}

    def on_read(part, block):
        number = part.offset // PART
        if part.pos == len(block):
            sends[number] = sends.get(number, 0) + 1
        if number == 2 and not broken and part.pos > PART // 2:
            broken.append(number)
            raise ConnectionResetError("the connection broke mid-part (test)")

    _wrap_reads(monkeypatch, on_read)
    store.put_file("ckpt/big.bin", path)
    assert broken == [2] and sends[2] >= 2 and sends[0] == 1
    assert store.get_file("ckpt/big.bin", tmp_path / "back.bin").read_bytes() == data
    assert store.uploads() == []


def test_a_part_failing_for_good_aborts_the_upload_and_leaves_nothing(
    store, source, monkeypatch, sqlite_server
):
    path, _ = source

    def on_read(part, block):
        if part.offset // PART == 4:
            raise StoreError("the disk under the source failed (test)")

    staging = sqlite_server.data_dir / "store" / ".staging"
    before = set(staging.glob("upload-*"))  # other tests' sessions on the shared server
    _wrap_reads(monkeypatch, on_read)
    with pytest.raises(StoreError, match="disk under the source failed"):
        store.put_file("ckpt/big.bin", path)
    assert not store.exists("ckpt/big.bin")
    assert store.uploads() == []
    assert set(staging.glob("upload-*")) <= before


def test_ranges_of_one_download_are_in_flight_at_once(store, source, monkeypatch, tmp_path):
    path, data = source
    store.put_file("ckpt/big.bin", path)
    together = threading.Barrier(3, timeout=60)
    original = HttpStore._get_span
    spans: list[int] = []

    def get_span(self, url, key, fd, start, end, etag):
        spans.append(start)
        if start < http_module.FIRST_RANGE + 3 * PART:
            together.wait()
        return original(self, url, key, fd, start, end, etag)

    monkeypatch.setattr(HttpStore, "_get_span", get_span)
    assert store.get_file("ckpt/big.bin", tmp_path / "back.bin").read_bytes() == data
    assert len(spans) == 3  # 4 MiB first, then three 1 MiB ranges, together


def test_a_range_of_a_replaced_object_is_refused_with_412(store, sqlite_server):
    store.put("v/x.bin", b"first version" * 1000)
    url = store.client.path("blobs", "v/x.bin")
    headers = {"Authorization": f"Bearer {store.client.api_key}"}
    first = requests.get(url, headers={**headers, "Range": "bytes=0-9"}, timeout=30)
    etag = first.headers["ETag"]
    again = requests.get(
        url, headers={**headers, "Range": "bytes=10-19", "If-Match": etag}, timeout=30
    )
    assert again.status_code == 206 and again.content == (b"first version" * 1000)[10:20]
    store.put("v/x.bin", b"second version" * 1000)
    stale = requests.get(
        url, headers={**headers, "Range": "bytes=10-19", "If-Match": etag}, timeout=30
    )
    assert stale.status_code == 412


def test_numbered_parts_arrive_in_any_order_and_complete_checks_each(store):
    c = store.client
    session = c.json("POST", "uploads", json={"key": "p/x.bin", "part_size": PART}, expect=(201,))
    uid = session["id"]
    parts = [os.urandom(PART), os.urandom(PART), b"tail"]
    shas = [hashlib.sha256(p).hexdigest() for p in parts]
    for n in (2, 0):
        held = c.request("PUT", c.path("uploads", uid, "parts", str(n)), data=parts[n]).json()
        assert held == {"number": n, "size": len(parts[n]), "sha256": shas[n]}
    complete = c.path("uploads", uid, "complete")
    total = sum(map(len, parts))
    with pytest.raises(StoreError, match="part 1 .* is missing"):
        c.request("POST", complete, json={"size": total, "parts": shas})
    with pytest.raises(StoreError, match="SHA-256 .* not"):  # a declared digest that differs
        c.request(
            "PUT",
            c.path("uploads", uid, "parts", "1"),
            data=parts[1],
            headers={"X-Content-SHA256": "0" * 64},
        )
    c.request("PUT", c.path("uploads", uid, "parts", "1"), data=parts[1])
    with pytest.raises(StoreError, match="part 0 on the server has SHA-256"):
        c.request("POST", complete, json={"size": total, "parts": ["1" * 64, *shas[1:]]})
    assert not store.exists("p/x.bin")  # nothing visible before a complete that checks out
    c.request("POST", complete, json={"size": total, "parts": shas})
    c.request("POST", complete, json={"size": total, "parts": shas})  # idempotent
    assert store.get("p/x.bin") == b"".join(parts)


def test_a_part_larger_than_the_sessions_part_size_is_refused(store):
    c = store.client
    uid = c.json("POST", "uploads", json={"key": "p/y.bin", "part_size": PART}, expect=(201,))["id"]
    with pytest.raises(StoreError, match="more than the session's part size"):
        c.request("PUT", c.path("uploads", uid, "parts", "0"), data=b"x" * (PART + 1))
    with pytest.raises(StoreError, match="numbered parts"):
        c.request("PUT", c.path("uploads", uid), params={"offset": 0}, data=b"x")


def test_parts_recorded_before_a_reboot_are_not_trusted(tmp_path, monkeypatch):
    from benchkit.server.services import parts

    journal = tmp_path / "upload-x.parts"
    parts.create(journal, PART)
    parts.record(journal, parts.Part(0, PART, "a" * 64))
    parts.record(journal, parts.Part(1, PART, "b" * 64))
    parts.forget(journal, 1)
    assert parts.read(journal) == (PART, {0: parts.Part(0, PART, "a" * 64)})
    monkeypatch.setattr(parts, "boot_id", lambda: "another-boot")  # the machine rebooted
    assert parts.read(journal) == (PART, {})  # unsynced bytes may be lost: send them again
