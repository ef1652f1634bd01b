"""A Bench server as a store (``http://host:port``, ``https://host[/path]``).

The server keeps each project's objects under its own prefix and exposes them through
``/api/v1/blobs``; the project comes from the API key (see :mod:`benchkit.api_client` for
credentials, retries and errors). Every method of :class:`~benchkit.store.base.Store` maps to
one or a few requests:

===================  ==================================================================
``put``              ``PUT /blobs/<key>`` with ``X-Content-SHA256``: the server stores the
                     object only if the bytes it received hash to that value
``put_file``         the same up to ``part_size`` (default 32 MiB); a larger file goes through
                     a parallel upload session: ``parallel`` (default 1) numbered parts in
                     flight on their own connections, each read from the file as it is sent
                     and hashed on both sides; a part whose connection broke is sent again
                     unless the server holds it with the same SHA-256; then completed with
                     every part's SHA-256. Unsized sources (pipes) go through an in-order
                     session, one part at a time, resumed at the server's offset, then
                     completed with the sha256 of the whole. A failed upload aborts its session
``get`` / range      ``GET /blobs/<key>`` (``Range: bytes=a-b``)
``get_file``         ranged GETs into a temporary file, renamed when whole: the first
                     ``FIRST_RANGE`` bytes, then ``part_size`` ranges, ``parallel`` at once,
                     each pinned to the first answer's ``ETag`` (``If-Match``: an object
                     replaced meanwhile restarts the download) and retried on its own
``stat`` / exists    ``HEAD /blobs/<key>``
``list``             ``GET /blobs?prefix=`` (pages of 1000 keys)
``delete[_prefix]``  ``DELETE /blobs/<key>``, ``DELETE /blobs?prefix=``
===================  ==================================================================

Memory: a few 1 MiB blocks per part or range in flight, whatever the object's size. Processes: the store pickles as its URL and key (spawned DataLoader workers
reopen it) and a forked child opens its own connections, so it is fork-safe.

Keys follow :func:`~benchkit.store.base.check_key` plus what HTTP needs
(:func:`check_remote_key`): at most 1024 bytes (255 per segment), no control characters
and no percent-escapes, so a key means the same thing before and after URL decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import stat as stat_module
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, BinaryIO

import requests

from benchkit.api_client import (
    CONDITIONAL_CREATE,
    SEND_BLOCK,
    ApiClient,
    Catalog,
    find_credentials,
    normalize_url,
)
from benchkit.errors import InvalidKey, StoreConnectionError, StoreError
from benchkit.fsutil import atomic_file
from benchkit.store.base import DEFAULT_PART_SIZE, ObjectInfo, Store, check_key, check_prefix

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
LIST_PAGE = 1000
#: the largest body of a conditional create (the server reads it whole)
SMALL_CREATE = 1024 * 1024
DOWNLOAD_BLOCK = 1024 * 1024
#: the first range of a download: small objects take one request, and it names the version
FIRST_RANGE = 4 * 1024 * 1024
#: parts (uploads) and ranges (downloads) of one large object in flight at once. 1 by default:
#: on a 2-core machine over loopback 4 were no faster than 1 (docs/BENCHMARKS.md, "Bench
#: server"); several connections are for links where one TCP connection is the limit
DEFAULT_PARALLEL = 1
#: a pipe's part is sent early once it holds this much and the producer pauses
MIN_STREAM_PART = 1024 * 1024
STREAM_PAUSE_S = 0.2
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_remote_key(key: str) -> str:
    """``check_key`` plus the limits of keys that travel in URLs."""
    check_key(key)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"invalid store key {key[:60]!r}...: longer than {MAX_KEY_BYTES} bytes")
    if any(len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES for seg in key.split("/")):
        raise InvalidKey(
            f"invalid store key {key[:60]!r}: a segment is longer than {MAX_SEGMENT_BYTES} bytes"
        )
    if _CONTROL.search(key):
        raise InvalidKey(f"invalid store key {key!r}: control characters are not allowed")
    if _ESCAPE.search(key):
        raise InvalidKey(
            f"invalid store key {key!r}: percent-escapes such as %2e are not allowed in keys"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"invalid store key {key!r}: not valid Unicode") from None
    return key


def _check_prefix(prefix: str) -> str:
    check_prefix(prefix)
    if prefix:
        check_remote_key(prefix.rstrip("/") or "x")
    return prefix


class HttpStore(Store):
    """The objects of one Bench server project."""

    fork_safe = True

    def __init__(
        self,
        url: str,
        api_key: str | None,
        project_id: str | None = None,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        resume_s: float | None = None,
        parallel: int | None = None,
    ) -> None:
        self.client = ApiClient(url, api_key, project_id)
        self.url = self.client.url
        self.part_size = part_size
        #: parts or ranges of one large object in flight at once (1: one at a time, in order)
        self.parallel = max(
            1,
            int(os.environ.get("BENCHKIT_HTTP_PARALLEL", DEFAULT_PARALLEL))
            if parallel is None
            else parallel,
        )
        #: how long a large upload keeps resuming after connection failures
        self.resume_s = float(
            os.environ.get("BENCHKIT_HTTP_RESUME_S", 120) if resume_s is None else resume_s
        )

    @classmethod
    def from_url(cls, url: str, part_size: int = DEFAULT_PART_SIZE) -> HttpStore:
        """Open ``url`` with the credentials of :func:`benchkit.api_client.find_credentials`."""
        url = normalize_url(url)
        creds = find_credentials(url)
        return cls(url, creds.api_key, creds.project_id, part_size=part_size)

    def catalog(self) -> Catalog:
        return Catalog(self.client)

    def close(self) -> None:
        self.client.close()

    # --- requests ------------------------------------------------------------------------------

    def _blob(self, key: str) -> str:
        return self.client.path("blobs", check_remote_key(key))

    def _req(self, method: str, url: str, **kw: Any) -> requests.Response:
        return self.client.request(method, url, **kw)

    # --- writing -------------------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        url = self._blob(key)
        if len(data) > self.part_size:
            self._upload(key, _BytesSource(memoryview(data)))
            return
        self._put_body(url, bytes(data), what=f"writing '{key}'")

    def _put_body(
        self, url: str, body: bytes, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        """One PUT of a whole (small) body, with its SHA-256 for the server to check."""
        return self._req(
            "PUT",
            url,
            data=body,
            headers={"X-Content-SHA256": hashlib.sha256(body).hexdigest(),
                     "Content-Type": "application/octet-stream", **(headers or {})},
            **kw,
        )  # fmt: skip

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """One conditional PUT (``If-None-Match: *``): the server hands it to its store's own
        conditional create, so of racing writers exactly one gets True. A server too old to
        offer it gets the check-then-write of the base class, with its warning."""
        url = self._blob(key)
        if not self._server_has(CONDITIONAL_CREATE):
            return super().put_if_absent(key, data)
        body = bytes(data)
        if len(body) > SMALL_CREATE:
            raise StoreError(f"put_if_absent takes small objects (at most 1 MiB): '{key}'")
        resp = self._put_body(
            url,
            body,
            headers={"If-None-Match": "*"},
            expect=(200, 412),
            what=f"creating '{key}'",
        )
        return resp.status_code == 200

    def _server_has(self, feature: str) -> bool:
        info = self.client.info or self.client.check_server()  # the handshake, once
        return feature in info.get("features", ())

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._blob(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise StoreError(f"cannot upload {path} to '{key}': the file does not exist") from e
        except OSError as e:
            raise StoreError(f"cannot upload {path} to '{key}' in store {self.url}: {e}") from e
        with f:
            st = os.fstat(f.fileno())
            regular = stat_module.S_ISREG(st.st_mode)
            if regular and st.st_size <= self.part_size:
                self.put(key, f.read())
                return
            self._upload(key, _FileSource(f) if regular else _StreamSource(f))

    def _upload(self, key: str, source: _Source) -> None:
        """An upload session: parallel numbered parts from a seekable source, or parts in
        order (a pipe, or ``parallel=1``), resumed at the server's offset, then complete."""
        if source.seekable and self.parallel > 1:
            self._upload_parallel(key, source)
            return
        session = self.client.json(
            "POST", "uploads", json={"key": key}, expect=(201,), what=f"uploading '{key}'"
        )
        upload_id, offset = session["id"], 0
        deadline = time.monotonic() + self.resume_s
        while True:
            part = source.part(offset, self.part_size)
            if not len(part):
                break
            offset = self._send_part(key, upload_id, offset, part, source, deadline)
        sha = source.sha256(offset)
        self._retrying(
            deadline,
            lambda: self.client.request(
                "POST",
                self.client.path("uploads", upload_id, "complete"),
                json={"sha256": sha, "size": offset},
                timeout=(5, 3600),
                what=f"completing the upload of '{key}'",
            ),
        )

    def _send_part(
        self, key: str, upload_id: str, offset: int, part: Any, source: _Source, deadline: float
    ) -> int:
        """Send ``part`` (bytes, or a :class:`_Part` read as it is sent) at ``offset``; after a
        failure ask the server what it has and go on from there. Returns the new offset."""
        url = self.client.path("uploads", upload_id)
        while True:
            if isinstance(part, _Part):
                part.seek(0)
            try:
                self.client.request(
                    "PUT",
                    url,
                    params={"offset": offset},
                    data=part,
                    headers={"Content-Type": "application/octet-stream"},
                    what=f"uploading '{key}'",
                )
                return source.hashed_to(offset + len(part))
            except StoreConnectionError:
                if time.monotonic() > deadline:
                    raise
            except StoreError as e:
                if "does not follow" not in str(e) or time.monotonic() > deadline:
                    raise
            received = self._retrying(
                deadline, lambda: self.client.json("GET", "uploads", upload_id)
            )["received"]
            if received == offset + len(part):
                return source.hashed_to(received)  # the part arrived; its answer was lost
            if received != offset:
                return source.hashed_to(received)  # the server has less than we thought

    def _upload_parallel(self, key: str, source: _Source) -> None:
        """Numbered parts, ``parallel`` at once, then complete with their SHA-256s; on any
        failure the session is aborted (nothing of it stays on the server)."""
        size, part_size = source._size(), self.part_size
        session = self.client.json(
            "POST",
            "uploads",
            json={"key": key, "part_size": part_size},
            expect=(201,),
            what=f"uploading '{key}'",
        )
        upload_id = session["id"]
        deadline = time.monotonic() + self.resume_s
        spans = [
            (n * part_size, min(part_size, size - n * part_size))
            for n in range(-(-size // part_size))
        ]
        try:
            shas = _all_at_once(
                self.parallel,
                [
                    lambda n=n, at=at, length=length: self._send_numbered(
                        key, upload_id, n, source, at, length, deadline
                    )
                    for n, (at, length) in enumerate(spans)
                ],
            )
            self._retrying(
                deadline,
                lambda: self.client.request(
                    "POST",
                    self.client.path("uploads", upload_id, "complete"),
                    json={"size": size, "parts": shas},
                    timeout=(5, 3600),
                    what=f"completing the upload of '{key}'",
                ),
                busy=True,
            )
        except BaseException:
            self._abort_session(upload_id)
            raise

    def _send_numbered(
        self,
        key: str,
        upload_id: str,
        number: int,
        source: _Source,
        offset: int,
        size: int,
        deadline: float,
    ) -> str:
        """Send part ``number`` until the server holds it with the SHA-256 of the file's bytes;
        returns that SHA-256."""
        url = self.client.path("uploads", upload_id, "parts", str(number))
        what = f"uploading part {number} of '{key}'"
        damaged = 0
        while True:
            body = _HashedPart(source, offset, size)
            try:
                held = self.client.request(
                    "PUT",
                    url,
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                    what=what,
                ).json()
                digest = body.hexdigest() or _hash_span(source, offset, size)
                if held["sha256"] == digest and held["size"] == size:
                    return digest
                damaged += 1
                if damaged == 3:
                    raise StoreError(
                        f"part {number} of '{key}' reached {self.url} damaged 3 times (SHA-256 "
                        f"{held['sha256']}, the file's is {digest}); check the network"
                    )
                continue
            except StoreConnectionError:
                if time.monotonic() > deadline:
                    raise
            except StoreError as e:
                if "being written" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)  # the server still ends the part a broken connection left
                continue
            # the connection broke: the part may have arrived all the same
            session = self._retrying(
                deadline, lambda: self.client.json("GET", "uploads", upload_id, what=what)
            )
            digest = _hash_span(source, offset, size)
            if {"number": number, "size": size, "sha256": digest} in (session.get("parts") or []):
                return digest

    def _abort_session(self, upload_id: str) -> None:
        """Drop a failed upload's session and bytes (best effort: an unreachable server
        expires it, and ``sweep_leftovers`` removes it)."""
        with contextlib.suppress(StoreError):
            self.client.request(
                "DELETE", self.client.path("uploads", upload_id), expect=(204, 404), timeout=(5, 30)
            )

    def _retrying(self, deadline: float, call: Any, busy: bool = False) -> Any:
        """``call()``, repeated with backoff on connection errors until ``deadline`` (and, with
        ``busy``, while the server says parts are still being written)."""
        delay = 0.25
        while True:
            try:
                return call()
            except StoreConnectionError:
                if time.monotonic() + delay > deadline:
                    raise
            except StoreError as e:
                if not busy or "being written" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 4.0)

    # --- reading -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        resp = self._req("GET", self._blob(key), expect=(200, 404), what=f"reading '{key}'")
        if resp.status_code == 404:
            raise self.not_found(key)
        return resp.content

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end}) for '{key}'")
        if end == start:
            self.stat(key)
            return b""
        resp = self._req(
            "GET",
            self._blob(key),
            headers={"Range": f"bytes={start}-{end - 1}"},
            expect=(200, 206, 404, 416),
            what=f"reading '{key}'",
        )
        if resp.status_code == 404:
            raise self.not_found(key)
        if resp.status_code == 416:
            return b""
        if resp.status_code == 200:
            return resp.content[start:end]
        return resp.content

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        for attempt in range(3):
            try:
                with atomic_file(dest) as out:
                    self._download(key, out.fileno())
                return dest
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                if attempt == 2:
                    raise self.client.unreachable(e) from None
            except StoreConnectionError:
                if attempt == 2:
                    raise
            except _Replaced:
                if attempt == 2:
                    raise StoreError(
                        f"'{key}' was replaced on {self.url} during each of 3 downloads; "
                        "download it again when nothing writes it"
                    ) from None
            time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _download(self, key: str, fd: int) -> None:
        """The object into ``fd``: its first range, then the rest in ranges ``parallel`` at
        once, all of the version the first answer names (``ETag``)."""
        url = self._blob(key)
        first = {"Range": f"bytes=0-{FIRST_RANGE - 1}"} if self.parallel > 1 else {}
        with self._req(
            "GET",
            url,
            stream=True,
            headers=first,
            expect=(200, 206, 404, 416),
            what=f"reading '{key}'",
        ) as resp:
            if resp.status_code == 404:
                raise self.not_found(key)
            if resp.status_code == 416:
                return  # an empty object
            etag = resp.headers.get("ETag")
            size = int(resp.headers.get("X-Object-Size", -1))
            if resp.status_code == 206 and (etag is None or size < 0):
                first = {}  # no version to pin ranges to: the whole in one answer
            else:
                _write_body(resp, fd, 0, key, self.url)
                if resp.status_code == 200:
                    return  # the whole object (a server that ignores ranges)
        if not first:
            with self._req("GET", url, stream=True, what=f"reading '{key}'") as resp:
                _write_body(resp, fd, 0, key, self.url)
            return
        spans = [
            (a, min(a + self.part_size, size)) for a in range(FIRST_RANGE, size, self.part_size)
        ]
        _all_at_once(
            self.parallel,
            [lambda a=a, b=b: self._get_span(url, key, fd, a, b, etag) for a, b in spans],
        )

    def _get_span(self, url: str, key: str, fd: int, start: int, end: int, etag: str) -> None:
        """Bytes ``[start, end)`` of the version ``etag`` into ``fd``; a broken answer is
        fetched again (twice at most)."""
        headers = {"Range": f"bytes={start}-{end - 1}", "If-Match": etag}
        for attempt in range(3):
            try:
                with self._req(
                    "GET", url, stream=True, headers=headers, expect=(206, 404, 412, 416),
                    what=f"reading '{key}'",
                ) as resp:  # fmt: skip
                    if resp.status_code != 206:
                        raise _Replaced()
                    _write_body(resp, fd, start, key, self.url)
                return
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                StoreConnectionError,
            ):
                if attempt == 2:
                    raise
                time.sleep(0.25 * (attempt + 1))

    # --- metadata ------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        resp = self._req("HEAD", self._blob(key), expect=(200, 404), what=f"reading '{key}'")
        if resp.status_code == 404:
            raise self.not_found(key)
        return ObjectInfo(
            key, int(resp.headers.get("X-Object-Size") or resp.headers["Content-Length"])
        )

    def list(self, prefix: str = "") -> list[str]:
        _check_prefix(prefix)
        keys: list[str] = []
        after = ""
        while True:
            page = self.client.json(
                "GET",
                "blobs",
                params={"prefix": prefix, "after": after, "limit": LIST_PAGE},
                what=f"listing '{prefix}'",
            )
            keys.extend(page["keys"])
            after = page.get("next")
            if not after:
                return keys

    def list_dirs(self, prefix: str) -> list[str]:
        _check_prefix(prefix)
        return self.client.json("GET", "blob-dirs", params={"prefix": prefix})["names"]

    def uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        """Unfinished upload sessions of keys under ``prefix`` (``id``, ``key``, ``received``):
        what killed writers left, cleared by ``delete_prefix``."""
        _check_prefix(prefix)
        return self.client.json("GET", "uploads", params={"prefix": prefix})["uploads"]

    def sweep_leftovers(self, prefix: str) -> int:
        """Abort the unfinished upload sessions of keys under ``prefix`` (what killed writers
        left); returns how many. Like every backend's, safe while nobody else writes there."""
        removed = 0
        for upload in self.uploads(prefix):
            resp = self.client.request(
                "DELETE", self.client.path("uploads", upload["id"]), expect=(204, 404)
            )
            removed += resp.status_code == 204
        return removed

    # --- deleting ------------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        return bool(
            self.client.request("DELETE", self._blob(key), what=f"deleting '{key}'").json()[
                "deleted"
            ]
        )

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise InvalidKey("refusing to delete an empty prefix (the whole store)")
        _check_prefix(prefix)
        return int(
            self.client.json(
                "DELETE", "blobs", params={"prefix": prefix}, what=f"deleting '{prefix}'"
            )["deleted"]
        )


# --- parts in flight ---------------------------------------------------------------------------


class _Replaced(Exception):
    """The object changed between the ranges of one download."""


def _all_at_once(parallel: int, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on up to ``parallel`` threads; their results in order. The first failure
    cancels the calls not yet started and is raised once the running ones have ended."""
    if len(calls) <= 1:
        return [c() for c in calls]
    with ThreadPoolExecutor(min(parallel, len(calls)), thread_name_prefix="bench-http") as pool:
        futures: list[Future] = [pool.submit(c) for c in calls]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            wait(futures)
            raise failed.exception()
    return [f.result() for f in futures]


def _write_body(resp: requests.Response, fd: int, at: int, key: str, url: str) -> None:
    """The body of ``resp`` into ``fd`` from byte ``at``, all of it or a connection error."""
    expected = int(resp.headers.get("Content-Length", -1))
    n = 0
    for block in resp.iter_content(DOWNLOAD_BLOCK):
        os.pwrite(fd, block, at + n)
        n += len(block)
    if expected >= 0 and n != expected:
        raise StoreConnectionError(f"the download of '{key}' from {url} was cut short")


def _hash_span(source: _Source, offset: int, size: int) -> str:
    h = hashlib.sha256()
    for pos in range(offset, offset + size, DOWNLOAD_BLOCK * 8):
        h.update(source._read(pos, min(DOWNLOAD_BLOCK * 8, offset + size - pos)))
    return h.hexdigest()


# --- sources of an upload session --------------------------------------------------------------


class _Source:
    """Bytes to upload, read one part at a time; keeps the running sha256 of what was read."""

    #: False when bytes cannot be read again (a pipe): an upload can then only go forward
    seekable = True

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._hashed = 0

    def block(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; bytes read for the first time are hashed (bytes
        read again for a resend are not)."""
        data = self._read(offset, size)
        end = offset + len(data)
        if offset <= self._hashed < end:
            self._hash.update(memoryview(data)[self._hashed - offset :])
            self._hashed = end
        return data

    def part(self, offset: int, size: int) -> _Part | bytes:
        """The part at ``offset``: read while it is sent (a seekable source), or read now and
        kept until the server has it (a pipe)."""
        if not self.seekable:
            return self.block(offset, size)
        return _Part(self, offset, min(size, max(0, self._size() - offset)))

    def _size(self) -> int:
        raise NotImplementedError

    def sha256(self, size: int) -> str:
        assert self._hashed == size, (self._hashed, size)
        return self._hash.hexdigest()

    def hashed_to(self, offset: int) -> int:
        """Make the running hash cover exactly the first ``offset`` bytes (the bytes the server
        holds: a part cut off, or one whose answer was lost); returns ``offset``."""
        if self._hashed > offset or (self._hashed < offset and not self.seekable):
            self.rewind(offset)
        while self._hashed < offset:
            self.block(self._hashed, min(DEFAULT_PART_SIZE, offset - self._hashed))
        return offset

    def rewind(self, offset: int) -> None:
        """Go back (or forward) to ``offset``, the bytes the server holds."""
        if not self.seekable:
            raise StoreError(
                f"the server holds {offset} bytes of this upload, not what was sent, and the "
                "source (a pipe) cannot be read again; upload it again"
            )
        self._hash, self._hashed = hashlib.sha256(), 0
        for pos in range(0, offset, DEFAULT_PART_SIZE):
            self.block(pos, min(DEFAULT_PART_SIZE, offset - pos))

    def _read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError


class _FileSource(_Source):
    """A regular file, read at any offset."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.f = f

    def _read(self, offset: int, size: int) -> bytes:
        return os.pread(self.f.fileno(), size, offset)

    def _size(self) -> int:
        return os.fstat(self.f.fileno()).st_size


class _StreamSource(_Source):
    """A pipe or socket: read once, in order. A part is sent when it is full, or when it holds
    at least ``MIN_STREAM_PART`` bytes and the producer has paused, so a slow producer's bytes
    reach the server as they come (and a part is kept in memory until it is sent)."""

    seekable = False

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.fd = f.fileno()

    def _read(self, offset: int, size: int) -> bytes:
        chunks, n = [], 0
        while n < size:
            if n >= MIN_STREAM_PART and not select.select([self.fd], [], [], STREAM_PAUSE_S)[0]:
                break
            chunk = os.read(self.fd, min(size - n, 4 * 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        return b"".join(chunks)


class _BytesSource(_Source):
    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self.data = data

    def _read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def _size(self) -> int:
        return len(self.data)


class _Part:
    """One part of a seekable source as a request body: requests sends it with its
    ``Content-Length`` and urllib3 reads it in ``SEND_BLOCK`` blocks, so reading, hashing and
    sending overlap with the server's work (no whole part in memory), and urllib3 can rewind
    it (``seek``) to resend after a dropped connection."""

    def __init__(self, source: _Source, offset: int, size: int) -> None:
        self.source, self.offset, self.size, self.pos = source, offset, size, 0

    def __len__(self) -> int:
        return self.size

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else self.size + pos)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        data = self._fetch(self.offset + self.pos, n)
        if len(data) != n:
            raise StoreError(
                f"the file being uploaded shrank during the upload (at byte "
                f"{self.offset + self.pos + len(data)}): upload it again once it is complete"
            )
        self._took(data)
        self.pos += n
        return data

    def _fetch(self, at: int, n: int) -> bytes:
        return self.source.block(at, n)

    def _took(self, data: bytes) -> None:
        """Called with each block read, before the position moves past it."""

    def __iter__(self):
        return iter(lambda: self.read(SEND_BLOCK), b"")


class _HashedPart(_Part):
    """A part of a parallel upload: read straight from the source (from any thread) and
    hashed on its own; ``hexdigest`` is its SHA-256 once read whole from the start, else ''."""

    def __init__(self, source: _Source, offset: int, size: int) -> None:
        super().__init__(source, offset, size)
        self._hash, self._hashed = hashlib.sha256(), 0

    def seek(self, pos: int, whence: int = 0) -> int:
        pos = super().seek(pos, whence)
        if pos == 0:
            self._hash, self._hashed = hashlib.sha256(), 0  # urllib3 rewinds to resend
        return pos

    def _fetch(self, at: int, n: int) -> bytes:
        return self.source._read(at, n)

    def _took(self, data: bytes) -> None:
        if self._hashed == self.pos:
            self._hash.update(data)
            self._hashed += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest() if self._hashed == self.size else ""
