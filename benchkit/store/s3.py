"""The ``s3://`` store: boto3 requests, the same part layout as the tensorstore backend.

Why boto3 and not tensorstore for S3 (the default for ``s3://``): measured on one
``moto_server``, four 64 MiB objects read four at a time (``benchmarks/s3_store.py``, loaded
machine, docs/BENCHMARKS.md), tensorstore's S3 driver read 49-55 MB/s, this backend 111-112 MB/s
on the same manifest-and-parts objects and 156-161 MB/s on objects it wrote (one streamed GET
each), while plain boto3 GETs reached 188-273 MB/s in the same minute. GCS stays on tensorstore:
boto3 speaks GCS only through its S3-compatible XML API, which needs HMAC keys instead of the
usual Google credentials and which gcp-storage-emulator does not serve.

Layout: that of :class:`~benchkit.store.tensorstore.TensorStoreStore` for reading (this class
is a subclass that swaps the transport): an object the tensorstore backend wrote larger than its
``part_size`` is a small manifest at the key naming parts at hidden sibling keys
(``a/.b.bin.parts/<upload>/000000``...), and is read, replaced, deleted and swept here as there,
so datasets, checkpoints and code archives already migrated keep reading
(``tests/store/test_s3.py`` writes with one backend and reads with the other).

Writes: an object of at most ``max(part_size, 5 MiB)`` (S3's smallest part) is one ``PutObject``;
a larger one is an S3 **multipart upload** of parts of that size (``WRITE_AHEAD`` in flight while the next part is
read from the file), so the object at the key is the plain object every S3 tool reads
(``aws s3 cp``), it appears atomically when the upload completes, and memory stays a few parts
whatever its size. A put that fails aborts its upload; one killed half way leaves an unfinished
upload, invisible to reads and listings, which ``delete``, ``delete_prefix`` and
``sweep_leftovers`` abort (as they remove the leftover parts of the manifest layout). Bytes that
begin with the manifest magic are still written as a manifest and parts, so raw bytes are never
misread as a manifest. The tensorstore backend reads a multipart object as any plain object
(whole, as it has no streaming read). ``put_if_absent`` is one ``PutObject`` with
``If-None-Match: *``: of racing writers exactly one creates the object.

Reads: ``get_file``/``iter_blocks`` issue whole-part GETs of a parted object, up to
``READ_AHEAD_BYTES`` in flight on the process's request pool (``MAX_REQUESTS`` threads and
pooled connections), and yield each part's bytes in order as 1 MiB pieces; a large plain object
is one streamed GET read ahead into a queue of ``READ_AHEAD_BYTES`` (on moto_server a range of a
plain object costs the server a read of the whole object, and one streamed GET per object, four
objects at a time as the loader fetches chunks, came closest to the plain GET rate).
Memory is that read-ahead, whatever the object's size. The first request of ``iter_blocks``, ``stat``,
``has_size`` and ``get_range`` reads the first 64 KiB of the key, which holds a whole manifest or
small object, and gives a plain object's size (``Content-Range``): one request where the
tensorstore backend needs two. ``exists`` is a ``HEAD``.

Processes: the client and the request threads belong to one process; a forked child (a
DataLoader worker) makes its own on first use, so the store is fork-safe and spawn workers
reopen it from its pickled spec. The boto3 *session* (the parsed service model) is kept across
fork, which makes the child's client 5x cheaper; a session whose credentials refresh themselves
(an assumed role) forked while refreshing could leave the child waiting on the refresh lock, a
risk this trades for the start-up time (static keys and profiles do not refresh). Importing
this module does not load tensorstore.

Settings: the same as the tensorstore backend's (the spec is built by the same code): endpoint
and region from the URL query, the settings ``s3_endpoint``/``s3_region``, or
``AWS_ENDPOINT_URL(_S3)``/``AWS_REGION``; credentials from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``), else ``~/.aws/credentials`` (profile
``AWS_PROFILE``), else anonymous requests. Requests are retried ``BENCHKIT_S3_RETRIES`` times
(default 3, backoff 0.1 s to 1 s), a part whose body breaks off half way included. Request
checksums are sent only where S3 requires them (``DeleteObjects``), which every S3-compatible
server accepts; the bytes of chunks are checked against the index by the reader anyway.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import stat as statmod
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bx
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config

from benchkit.errors import (
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    UnsupportedStoreURL,
)
from benchkit.store.base import DEFAULT_PART_SIZE, ObjectInfo, check_key, check_prefix
from benchkit.store.tensorstore import (
    DEFAULT_RETRIES,
    MAGIC,
    S3_CREDENTIALS_HINT,
    TensorStoreStore,
)

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3's smallest multipart part (every part but the last)
MIN_PART = 5 * MiB
#: S3's largest number of parts in one multipart upload
MAX_PARTS = 10_000
#: whole parts in flight per object read (bytes of parts; at least two parts)
READ_AHEAD_BYTES = 96 * MiB
#: part uploads in flight while the next part is read from the file
WRITE_AHEAD = 2
#: a part's body is read, and yielded, in pieces of this size
PIECE = MiB
#: the first request for a key reads this many bytes: a whole manifest or small object
HEAD_BYTES = 64 * 1024
#: concurrent requests of one process (its thread pool and connection pool)
MAX_REQUESTS = 32
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
    "AccountProblem",
    "403",
}
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_THROTTLED = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
}
_BROKEN = (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError)

# one boto3 client and one request pool per process and client settings (both are thread-safe;
# neither survives fork(), so a forked child builds its own, keyed by its pid)
_clients: dict[tuple[Any, ...], Any] = {}
_pools: dict[int, ThreadPoolExecutor] = {}
# boto3 sessions by client settings, kept across fork(): a session holds the parsed service
# model, and a client made from an inherited one costs a DataLoader worker 0.1-0.2 s instead of
# the 0.8-1 s of a new session (measured on the loaded 2-core machine)
_sessions: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def _after_fork() -> None:
    global _lock
    _clients.clear()
    _pools.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _pool() -> ThreadPoolExecutor:
    pid = os.getpid()
    pool = _pools.get(pid)
    if pool is None:
        with _lock:
            pool = _pools.get(pid)
            if pool is None:
                pool = ThreadPoolExecutor(MAX_REQUESTS, thread_name_prefix="benchkit-s3")
                _pools[pid] = pool
    return pool


class _Result(NamedTuple):
    """A read, shaped like tensorstore's: ``state`` is ``"value"`` or ``"missing"``."""

    state: str
    value: bytes | None


class _Head(NamedTuple):
    head: bytes  # the object's first bytes (all of it when total <= len(head))
    total: int  # the object's size


def _status(e: bx.ClientError) -> tuple[str, int]:
    err = e.response.get("Error", {})
    return str(err.get("Code", "")), int(
        e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    )


def _retryable(e: BaseException) -> bool:
    if isinstance(e, bx.ClientError):
        code, status = _status(e)
        return status >= 500 or code in _THROTTLED
    return isinstance(e, _BROKEN)


class S3Store(TensorStoreStore):
    """An S3 bucket (or prefix) through boto3; the part layout of the tensorstore backend."""

    #: multipart parts in flight while the next is read (the tensorstore backend keeps none)
    write_ahead = WRITE_AHEAD

    def _configure(self) -> None:
        self.fork_safe = True
        self._bucket = self.spec["bucket"]
        self._root = self.spec.get("path", "")
        retries = self.spec.get("context", {}).get("s3_request_retries", {})
        self._attempts = 1 + max(0, int(retries.get("max_retries", DEFAULT_RETRIES)))
        #: the size of multipart parts, and the largest object written with one PutObject
        self.upload_part = max(self.part_size, MIN_PART)

    @classmethod
    def from_url(cls, url: str, part_size: int = DEFAULT_PART_SIZE) -> S3Store:
        """Build the store for ``s3://bucket/prefix[?endpoint=...&region=...]``."""
        if urlsplit(url).scheme.lower() != "s3":
            raise UnsupportedStoreURL(f"{url!r} is not an s3:// URL")
        store = super().from_url(url, part_size)
        assert isinstance(store, S3Store)
        return store

    def usable_here(self) -> bool:
        return True

    def _store(self) -> Any:
        raise AssertionError("S3Store talks to S3 through boto3, never through tensorstore")

    # --- requests ----------------------------------------------------------------------------

    def _client(self) -> Any:
        spec = self.spec
        creds = spec.get("aws_credentials", {})
        kind, profile = creds.get("type", "environment"), creds.get("profile")
        env = (
            (os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"))
            if kind == "environment"
            else None
        )
        ident = (os.getpid(), spec.get("endpoint"), spec["aws_region"], kind, profile, env)
        client = _clients.get(ident)
        if client is not None:
            return client
        with _lock:
            client = _clients.get(ident)
            if client is None:
                client = self._make_client(kind, profile, ident[1:])
                _clients[ident] = client
        return client

    def _make_client(self, kind: str, profile: str | None, settings: tuple[Any, ...]) -> Any:
        region = self.spec["aws_region"]
        endpoint = self.spec.get("endpoint")
        options: dict[str, Any] = {
            "region_name": region,
            "retries": {"total_max_attempts": 1},  # retried here, body reads included
            "max_pool_connections": MAX_REQUESTS,
            "connect_timeout": 10,
            "read_timeout": 60,
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            # the spec already holds the endpoint resolved from BenchKit's settings and AWS_*
            "ignore_configured_endpoint_urls": True,
        }
        if endpoint:
            options["s3"] = {"addressing_style": "path"}
        if kind == "anonymous":
            options["signature_version"] = UNSIGNED
        try:
            session = _sessions.get(settings) or self._make_session(kind, profile, region)
            _sessions[settings] = session
            return session.client("s3", endpoint_url=endpoint, config=Config(**options))
        except bx.ProfileNotFound as e:
            raise StorePermissionError(
                f"{self._where()}: AWS profile {profile!r} is not in ~/.aws/credentials or "
                "~/.aws/config; set AWS_PROFILE to one that is, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            ) from e

    @staticmethod
    def _make_session(kind: str, profile: str | None, region: str) -> Any:
        if kind == "environment":
            session = boto3.session.Session(
                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                region_name=region,
            )
        elif kind == "default":
            session = boto3.session.Session(profile_name=profile or None, region_name=region)
        else:
            # anonymous, as with the tensorstore backend, even when AWS_PROFILE names a
            # profile that no file holds (boto3 would refuse to start)
            bare = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
            session = boto3.session.Session(botocore_session=bare, region_name=region)
        return session

    def _call(self, op: str, key: str | None, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)``, retried on connection failures, throttling and 5xx answers, with
        every failure mapped to a BenchKit error naming the store, the key and what to check."""
        delay = 0.1
        for attempt in range(self._attempts):
            try:
                return fn(self._client())
            except (bx.ClientError, bx.BotoCoreError) as e:
                if attempt + 1 < self._attempts and _retryable(e):
                    time.sleep(delay)
                    delay = min(1.0, delay * 2)
                    continue
                raise self._s3_error(e, key, op) from e
        raise AssertionError("unreachable")

    def _s3_error(self, e: Exception, key: str | None, op: str) -> Exception:
        what = f"{op} '{key}'" if key else op
        if isinstance(e, bx.ClientError):
            code, status = _status(e)
            message = str(e.response.get("Error", {}).get("Message") or "")
            short = f"{code or status}: {message}"[:300] if message else (code or str(status))
            if code in _DENIED or status == 403:
                return StorePermissionError(
                    f"{self._where()} refused {what}: {short}. {S3_CREDENTIALS_HINT}"
                )
            if code == "NoSuchBucket":
                return self._no_bucket(what)
            if status >= 500 or code in _THROTTLED:
                return StoreConnectionError(
                    f"{self._where()} answered {short} to {what} {self._attempts} times; "
                    "BENCHKIT_S3_RETRIES sets how often requests are retried"
                )
            return StoreError(f"{self._where()}: {what} failed: {short}")
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return StorePermissionError(
                f"{self._where()} refused {what}: {e}. {S3_CREDENTIALS_HINT}"
            )
        if isinstance(e, _BROKEN):
            return self._unreachable(what, str(e)[:300])
        return StoreError(f"{self._where()}: {what} failed: {e}"[:600])

    def _wait(self, future: Any, key: str | None, op: str) -> Any:
        # requests run through _call in the pool, so their errors are already BenchKit's
        return future.result()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return _pool().submit(fn, *args)

    def _object(self, key: str) -> str:
        return self._root + key

    def _get(self, key: str, lo: int | None = None, hi: int | None = None) -> list[bytes] | None:
        """Bytes ``[lo, hi)`` of ``key`` (all of it without ``lo``) as pieces of at most
        ``PIECE`` bytes; None when the key (or the bucket) does not exist; ``[]`` for a range
        that starts at or past the end."""

        def get(client: Any) -> list[bytes] | None:
            args: dict[str, Any] = {"Bucket": self._bucket, "Key": self._object(key)}
            if lo is not None:
                args["Range"] = f"bytes={lo}-{'' if hi is None else hi - 1}"
            try:
                body = client.get_object(**args)["Body"]
            except bx.ClientError as e:
                code, status = _status(e)
                if code in _MISSING:
                    return None
                if code == "InvalidRange" or status == 416:
                    return []
                raise
            with body:
                return list(iter(lambda: body.read(PIECE), b""))

        if lo is not None and hi is not None and hi <= lo:
            return []
        return self._call("read", key, get)

    def _get_head(self, key: str) -> _Head | None:
        """The first ``HEAD_BYTES`` of ``key`` and its size (one request), or None."""

        def head(client: Any) -> _Head | None:
            args = {"Bucket": self._bucket, "Key": self._object(key)}
            try:
                resp = client.get_object(**args, Range=f"bytes=0-{HEAD_BYTES - 1}")
            except bx.ClientError as e:
                code, status = _status(e)
                if code in _MISSING:
                    return None
                if code == "InvalidRange" or status == 416:  # an empty object
                    return _Head(b"", int(e.response.get("Error", {}).get("ActualObjectSize") or 0))
                raise
            with resp["Body"] as body:
                data = body.read(HEAD_BYTES)
            rng = resp.get("ContentRange") or ""  # "bytes 0-65535/1234567"
            total = int(rng.rsplit("/", 1)[1]) if "/" in rng else int(resp["ContentLength"])
            return _Head(data, total)

        return self._call("read", key, head)

    # --- the transport primitives of TensorStoreStore ------------------------------------------

    def _read(self, key: str, byte_range: slice | None = None, *, op: str = "read") -> Any:
        lo = hi = None
        if byte_range is not None:
            lo, hi = byte_range.start or 0, byte_range.stop
        pieces = self._get(key, lo, hi)
        return _Result("missing", None) if pieces is None else _Result("value", b"".join(pieces))

    def _read_part(self, key: str, part: str, byte_range: slice | None = None) -> Any:
        return self._submit(self._read, part, byte_range)

    def _write_async(self, key: str, value: bytes) -> Any:
        def put(client: Any) -> None:
            client.put_object(Bucket=self._bucket, Key=self._object(key), Body=value)

        return self._submit(self._call, "write", key, put)

    def _remove(self, key: str) -> None:
        self._call(
            "delete", key, lambda c: c.delete_object(Bucket=self._bucket, Key=self._object(key))
        )

    def _remove_prefix(self, prefix: str, op: str = "delete prefix") -> None:
        keys = self._raw_keys(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._object(k)} for k in keys[i : i + 1000]]

            def delete(client: Any, batch: list[dict[str, str]] = batch) -> Any:
                return client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True}
                )

            failed = self._call(op, prefix, delete).get("Errors") or []
            if failed:
                first = failed[0]
                raise StoreError(
                    f"{self._where()}: {op} '{prefix}': {len(failed)} keys not deleted, e.g. "
                    f"'{first.get('Key')}': {first.get('Code')} {first.get('Message')}"
                )

    def _raw_keys(self, prefix: str = "") -> list[str]:
        def listing(client: Any) -> list[str]:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._object(prefix)
            )
            cut = len(self._root)
            return [o["Key"][cut:] for page in pages for o in page.get("Contents", [])]

        return self._call("list", prefix or None, listing)

    # --- reads -----------------------------------------------------------------------------------

    def _probe(self, key: str) -> tuple[bytes | None, dict[str, Any] | None, int]:
        """``(value, manifest, size)`` of ``key`` from one request: the value of a small plain
        object, or the manifest of a parted one (a second request only for manifests over
        ``HEAD_BYTES``), or neither for a large plain object."""
        check_key(key)
        got = self._get_head(key)
        if got is None:
            raise self.not_found(key)
        if got.head.startswith(MAGIC):
            raw = got.head if got.total <= len(got.head) else self._read(key).value
            if raw is None:
                raise self.not_found(key, "(it was deleted while being read)")
            man = self._parse_manifest(key, raw)
            return None, man, man["size"]
        if got.total <= len(got.head):
            return got.head, None, got.total
        return None, None, got.total

    def _head(self, key: str) -> tuple[bytes | None, dict[str, Any] | None]:
        value, man, _ = self._probe(key)
        return value, man

    def _plain_range(self, key: str, start: int, end: int) -> bytes:
        pieces = self._get(key, start, end)
        if pieces is None:
            raise self.not_found(key)
        return b"".join(pieces)

    def iter_blocks(
        self,
        key: str,
        block_size: int = DEFAULT_PART_SIZE,
        *,
        manifest: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        """The object in order, in blocks of at most ``min(block_size, 1 MiB)`` bytes, its
        parts (or ``part_size`` ranges of a large plain object) fetched whole, a few in flight."""
        if block_size < 1:
            raise ValueError("block_size must be positive")
        value, size = None, 0
        if manifest is None:
            value, manifest, size = self._probe(key)
        if value is not None:
            for i in range(0, len(value), block_size):
                yield value[i : i + block_size]
            return
        if manifest is None:  # a large plain object (a multipart upload, another tool's)
            yield from self._stream_plain(key, size, block_size)
            return
        segments = [(part, None, None, n) for part, n in manifest["parts"] if n]
        yield from self._stream(key, segments, block_size)

    def _stream_plain(self, key: str, size: int, block_size: int) -> Iterator[bytes]:
        """A plain object of ``size`` bytes as one streamed GET, read ahead by a pool thread
        into a queue of ``READ_AHEAD_BYTES``; a body that breaks off is requested again from
        the first byte not yet received (a ranged GET), as long as each attempt brings bytes
        (else up to the retry count)."""
        pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(
            max(2, READ_AHEAD_BYTES // PIECE)
        )
        stop = threading.Event()

        def give(item: bytes | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    pieces.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def opened(got: int, client: Any) -> Any:
            try:
                resp = client.get_object(
                    Bucket=self._bucket, Key=self._object(key), Range=f"bytes={got}-"
                )
            except bx.ClientError as e:
                if _status(e)[0] in _MISSING:
                    return None
                raise
            return resp["Body"]

        def pump() -> None:
            got, breaks, at_break = 0, 0, -1
            try:
                while got < size:
                    body = self._call("read", key, functools.partial(opened, got))
                    if body is None:
                        raise self.not_found(key, "(it was deleted while being read)")
                    try:
                        with body:
                            for piece in iter(functools.partial(body.read, PIECE), b""):
                                got += len(piece)
                                if got > size or not give(piece):
                                    break
                    except _BROKEN as e:
                        # only breaks that brought no bytes since the last one count
                        breaks, at_break = (0 if got > at_break else breaks + 1), got
                        if breaks >= self._attempts:
                            raise self._s3_error(e, key, "read") from e
                        continue
                    if stop.is_set():
                        return
                    if got != size:
                        raise StoreError(
                            f"'{key}' in {self._where()} holds {got} bytes where {size} were "
                            "expected; the object was changed while being read (read it again)"
                        )
                give(None)
            except BaseException as e:  # noqa: BLE001 - handed to the reader
                give(e)

        fut = self._submit(pump)
        try:
            while True:
                item = pieces.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if len(item) <= block_size:
                    yield item
                else:
                    for i in range(0, len(item), block_size):
                        yield item[i : i + block_size]
        finally:
            stop.set()
            fut.result()

    def _stream(
        self, key: str, segments: list[tuple[str, int | None, int | None, int]], block_size: int
    ) -> Iterator[bytes]:
        ahead = max(2, READ_AHEAD_BYTES // max(1, self.part_size))
        todo = iter(segments)
        pending: deque[tuple[str, int, Future]] = deque()

        def submit() -> None:
            seg = next(todo, None)
            if seg is not None:
                name, lo, hi, n = seg
                pending.append((name, n, self._submit(self._get, name, lo, hi)))

        for _ in range(ahead):
            submit()
        try:
            while pending:
                name, n, fut = pending.popleft()
                pieces = fut.result()
                if pieces is None:
                    raise self.not_found(
                        key,
                        f"(its part {name} is missing: the object was replaced or deleted "
                        "while being read)"
                        if name != key
                        else "(it was deleted while being read)",
                    )
                got = sum(len(p) for p in pieces)
                if got != n:
                    raise StoreError(
                        f"'{key}' in {self._where()}: {name} holds {got} bytes where {n} were "
                        "expected; the object was changed while being read, or is damaged "
                        "(re-upload it)"
                    )
                pieces.reverse()
                while pieces:
                    piece = pieces.pop()
                    if len(piece) <= block_size:
                        yield piece
                    else:
                        for i in range(0, len(piece), block_size):
                            yield piece[i : i + block_size]
                del pieces
                submit()
        finally:
            for *_, fut in pending:
                fut.cancel()

    # --- metadata ----------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        """Size of ``key`` from its first 64 KiB (one request, whatever its size)."""
        return ObjectInfo(key, self._probe(key)[2])

    def has_size(self, key: str, size: int) -> bool:
        return self._probe(key)[2] == size

    def exists(self, key: str) -> bool:
        check_key(key)

        def head(client: Any) -> bool:
            try:
                client.head_object(Bucket=self._bucket, Key=self._object(key))
            except bx.ClientError as e:
                if _status(e)[0] in _MISSING:
                    return False
                raise
            return True

        return self._call("check", key, head)

    # --- writes --------------------------------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """One conditional PUT (``If-None-Match: *``): of racing writers exactly one creates
        the object, the others get False."""
        check_key(key)
        data = bytes(data)
        if len(data) > self.part_size or data.startswith(MAGIC):
            raise StoreError(f"put_if_absent takes small objects (at most one part): '{key}'")

        def create(client: Any) -> bool:
            try:
                client.put_object(
                    Bucket=self._bucket, Key=self._object(key), Body=data, IfNoneMatch="*"
                )
            except bx.ClientError as e:
                code, status = _status(e)
                if code == "PreconditionFailed" or status == 412:
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    # another conditional write of the key is in flight: ask again
                    raise bx.ClientError(
                        {"Error": {"Code": "OperationAborted", "Message": code}}, "PutObject"
                    ) from e
                raise
            return True

        return self._call("create", key, create)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """One ``PutObject`` up to ``upload_part`` bytes, else a multipart upload."""
        check_key(key)
        view = memoryview(data).cast("B")
        if view[: len(MAGIC)].tobytes() == MAGIC:
            super().put(key, data)  # as a manifest and parts: never misread as a manifest
            return
        old = self._old_upload(key)
        if len(view) <= self.upload_part:
            self._commit(key, data if isinstance(data, bytes) else view.tobytes(), old)
            return
        step = self.upload_part
        blocks = (view[i : i + step].tobytes() for i in range(0, len(view), step))
        self._multipart(key, blocks, old)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """The file read one part at a time (pipes too): one ``PutObject`` for a small file,
        else a multipart upload with ``WRITE_AHEAD`` parts in flight."""
        check_key(key)
        with self._open_upload(key, path) as f:
            st = os.fstat(f.fileno())
            step = self.upload_part
            first = f.read(step)
            rest = iter(lambda: f.read(step), b"")
            old = self._old_upload(key)
            if first.startswith(MAGIC):
                manifest, upload = self._write_parts(key, itertools.chain([first], rest))
                self._commit(key, manifest, old, keep=upload)
                return
            # a short read is the end of the file (buffered reads fill up to EOF, pipes too)
            if len(first) < step or (statmod.S_ISREG(st.st_mode) and st.st_size <= step):
                self._commit(key, first, old)
                return
            self._multipart(key, itertools.chain([first], rest), old)

    def _multipart(self, key: str, blocks: Iterable[bytes], old_upload: str | None) -> None:
        """Upload ``blocks`` as the parts of one multipart upload of ``key`` and complete it (the
        object appears then, whole); abort it on any failure. Then drop ``old_upload``."""
        obj = self._object(key)
        upload_id = self._call(
            "start an upload of",
            key,
            lambda c: c.create_multipart_upload(Bucket=self._bucket, Key=obj)["UploadId"],
        )

        def send(number: int, body: bytes, client: Any) -> str:
            return client.upload_part(
                Bucket=self._bucket, Key=obj, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]

        done: list[dict[str, Any]] = []
        pending: deque[tuple[int, Future]] = deque()
        try:
            for number, block in enumerate(blocks, 1):
                if number > MAX_PARTS:
                    raise StoreError(
                        f"'{key}' is larger than {MAX_PARTS} parts of {self.upload_part} bytes "
                        f"(S3's limit): open the store with a larger part_size"
                    )
                call = functools.partial(send, number, block)
                pending.append((number, self._submit(self._call, "upload a part of", key, call)))
                del block, call  # the request holds the bytes; the next read must not add a copy
                while len(pending) > self.write_ahead:
                    n, fut = pending.popleft()
                    done.append({"PartNumber": n, "ETag": fut.result()})
            while pending:
                n, fut = pending.popleft()
                done.append({"PartNumber": n, "ETag": fut.result()})
            self._call(
                "finish the upload of",
                key,
                lambda c: c.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=obj,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                ),
            )
        except BaseException:
            for _, fut in pending:
                fut.cancel()
            try:  # best effort: an unfinished upload is invisible, and sweep_leftovers aborts it
                self._abort(key, upload_id)
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("could not abort the upload %s of %s", upload_id, key, exc_info=True)
            raise
        if old_upload:
            self._remove_prefix(old_upload, "delete old parts of")

    # --- unfinished multipart uploads (killed puts) ------------------------------------------

    def unfinished_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        """``(key, upload id)`` of the multipart uploads under ``prefix`` that were started and
        neither completed nor aborted: puts killed half way (or still running elsewhere)."""

        def listing(client: Any) -> list[tuple[str, str]]:
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self._bucket, Prefix=self._object(prefix)
            )
            cut = len(self._root)
            return [
                (u["Key"][cut:], u["UploadId"]) for page in pages for u in page.get("Uploads", [])
            ]

        return self._call("list uploads", prefix or None, listing)

    def unfinished_bytes(self, prefix: str = "") -> int:
        """Bytes held by the parts of :meth:`unfinished_uploads` (S3 bills them)."""

        def size(key: str, upload_id: str, client: Any) -> int:
            pages = client.get_paginator("list_parts").paginate(
                Bucket=self._bucket, Key=self._object(key), UploadId=upload_id
            )
            return sum(p["Size"] for page in pages for p in page.get("Parts", []))

        return sum(
            self._call("list parts", key, functools.partial(size, key, uid))
            for key, uid in self.unfinished_uploads(prefix)
        )

    def _abort(self, key: str, upload_id: str) -> None:
        def abort(client: Any) -> None:
            try:
                client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._object(key), UploadId=upload_id
                )
            except bx.ClientError as e:
                if _status(e)[0] not in ("NoSuchUpload", *_MISSING):
                    raise

        self._call("abort an upload of", key, abort)

    def _abort_under(self, prefix: str, exact: str | None = None) -> int:
        found = [(k, u) for k, u in self.unfinished_uploads(prefix) if exact is None or k == exact]
        for key, upload_id in found:
            self._abort(key, upload_id)
        return len(found)

    def delete(self, key: str) -> bool:
        deleted = super().delete(key)
        self._abort_under(key, exact=key)
        return deleted

    def delete_prefix(self, prefix: str) -> int:
        n = super().delete_prefix(prefix)
        self._abort_under(prefix)
        return n

    def sweep_leftovers(self, prefix: str) -> int:
        """Also abort the unfinished multipart uploads of keys under ``prefix`` (killed puts)."""
        check_prefix(prefix)
        return super().sweep_leftovers(prefix) + self._abort_under(prefix)
