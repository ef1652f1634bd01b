"""A server killed (SIGKILL) in the middle of a 200 MB upload, or stopped (SIGTERM) in the middle
of a smaller one: no partial object is ever visible, the client's retry resumes and completes
after a restart, and the bytes read back are the bytes sent. Each database gets one server for
both tests (each test leaves it restarted and running)."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from serverkit import start_server

from benchkit.store.http import HttpStore

MiB = 1024 * 1024
SIZE = 200 * MiB
PART = 16 * MiB
#: the SIGTERM test needs a part in flight, not a big object
TERM_SIZE, TERM_PART = 64 * MiB, 8 * MiB


def _source(path, size: int) -> tuple:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // (8 * MiB)):
            block = os.urandom(8 * MiB)
            h.update(block)
            f.write(block)
    return path, h.hexdigest()


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    return _source(tmp_path_factory.mktemp("crash") / "big.bin", SIZE)


@pytest.fixture(scope="module")
def term_source(tmp_path_factory):
    return _source(tmp_path_factory.mktemp("crash") / "term.bin", TERM_SIZE)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def own_server(request, tmp_path_factory):
    """A server of these tests' own (they kill it), on each database."""
    db = (
        request.getfixturevalue("postgres").create_database()
        if request.param == "postgresql"
        else None
    )
    server = start_server(tmp_path_factory.mktemp(f"own-{request.param}"), db)
    yield server
    server.close()


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 * MiB), b""):
            h.update(block)
    return h.hexdigest()


class Uploader(threading.Thread):
    def __init__(self, store: HttpStore, key: str, path) -> None:
        super().__init__(daemon=True)
        self.store, self.key, self.path = store, key, path
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.store.put_file(self.key, self.path)
        except BaseException as e:  # reported by the test
            self.error = e


def _staged(server, upload_id: str) -> int:
    path = server.data_dir / "store" / ".staging" / f"upload-{upload_id}"
    return path.stat().st_size if path.exists() else 0


def _wait_mid_part(server, observer: HttpStore, size: int = SIZE, deadline_s: float = 120) -> dict:
    """Poll until the server is writing a part: staged bytes beyond the recorded offset, in the
    first half of the object (so plenty is left to send after the restart)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for u in observer.uploads():
            staged = _staged(server, u["id"])
            if u["received"] < staged and staged < size // 2:
                return u
        time.sleep(0.005)
    raise AssertionError("never saw a part in flight")


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("parallel", [1, 4], ids=["in-order", "4-parts-in-flight"])
def test_sigkill_mid_upload_then_restart_resumes_and_nothing_partial_is_visible(
    own_server, big_source, tmp_path, parallel
):
    src, digest = big_source
    project = own_server.quick_project()
    observer = HttpStore(own_server.url, project.key, project.id)
    observer.put("ckpt/other.bin", b"unrelated")
    uploader = Uploader(
        HttpStore(own_server.url, project.key, project.id, part_size=PART, parallel=parallel),
        "ckpt/big.bin",
        src,
    )
    uploader.start()
    session = _wait_mid_part(own_server, observer)
    own_server.kill()  # SIGKILL half way through a part
    assert uploader.is_alive(), uploader.error
    own_server.start()
    # right after the restart: the upload is unfinished, and nothing of it is visible
    assert not observer.exists("ckpt/big.bin")
    assert observer.list("ckpt/") == ["ckpt/other.bin"]
    [left] = [u for u in observer.uploads() if u["id"] == session["id"]]
    assert left["received"] % PART == 0 and left["received"] < SIZE
    uploader.join(300)
    assert not uploader.is_alive() and uploader.error is None, uploader.error
    assert observer.stat("ckpt/big.bin").size == SIZE
    back = observer.get_file("ckpt/big.bin", tmp_path / "back.bin")
    assert _sha256(back) == digest
    assert observer.uploads() == []
    assert not list((own_server.data_dir / "store" / ".staging").glob("*"))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_mid_upload_stops_cleanly_and_the_client_completes_after_restart(
    own_server, term_source, tmp_path
):
    src, digest = term_source
    project = own_server.quick_project()
    observer = HttpStore(own_server.url, project.key, project.id)
    uploader = Uploader(
        HttpStore(own_server.url, project.key, project.id, part_size=TERM_PART), "ckpt/big.bin", src
    )
    logged = len(own_server.log())
    uploader.start()
    _wait_mid_part(own_server, observer, TERM_SIZE)
    # graceful: the part in flight finishes, then the server exits (uvicorn re-raises the
    # signal once it has shut down, as a service manager expects)
    assert own_server.stop() in (0, -15)
    log = own_server.log()[logged:]
    assert "Traceback" not in log and "Finished server process" in log
    assert uploader.is_alive(), uploader.error
    own_server.start()
    assert not observer.exists("ckpt/big.bin")
    uploader.join(300)
    assert uploader.error is None, uploader.error
    assert _sha256(observer.get_file("ckpt/big.bin", tmp_path / "back.bin")) == digest
