"""Stores served by tensorstore's kvstore: ``memory://``, ``tensorstore+file://``, ``gs://``.

``s3://`` URLs open :class:`~benchkit.store.s3.S3Store` (boto3), a subclass that keeps this
module's layout and settings and swaps the transport (see benchkit/store/s3.py for why);
``TensorStoreStore.from_url("s3://...")`` still gives tensorstore's S3 driver, which reads and
writes the same objects.

Large objects
-------------
tensorstore moves whole values only: no streaming, no multipart upload (one S3 PUT, at most
5 GB), no size call, and about 3x a value in memory while it is read or written (see
shared/notes/TENSORSTORE.md). So an object larger than ``part_size`` (default 32 MiB) is
written as parts at hidden sibling keys, then a small *manifest* at the key itself::

    a/b.bin                         <- manifest: MAGIC + {"size": N, "parts": [[key, size], ...]}
    a/.b.bin.parts/<upload-id>/000000
    a/.b.bin.parts/<upload-id>/000001 ...

The manifest is written last, so the object appears atomically: a put killed half way leaves
only hidden parts (never listed) and the old object, if any, untouched. Replacing an object
deletes the old upload's parts after the new manifest is in place; ``delete`` and
``delete_prefix`` remove the parts too, including leftovers of killed puts, and
``sweep_leftovers`` removes the leftovers of killed puts of objects that are kept. A small object
whose bytes happen to begin with the manifest magic is stored as a one-part object, so raw
bytes are never misread as a manifest.

Memory bound: ``put``/``put_file`` write one part at a time (the file is read part by part,
never whole); ``get_file``/``iter_blocks`` read parts as 8 MiB ranges, four in flight;
``get_range`` reads only the parts it covers. Peak memory is therefore a small multiple of
``part_size`` whatever the object's size: measured for a 200 MiB object with 32 MiB parts, the
process grew by about 100-170 MB through ``put_file`` + ``get_file`` (tensorstore copies each
value it writes, and the allocator keeps some freed memory), against 200 MiB for one copy.

Costs: ``get`` and ``stat`` read the value at the key whole (one request; a plain object is at
most ``part_size`` when written here, a manifest is small): tensorstore has no size call, so
``stat`` of a plain object costs a read of it; ``has_size`` checks a size with two one-byte
range reads instead. ``get_range``, ``iter_blocks`` and ``get_file``
first read the first bytes to tell a manifest from a plain value (one extra request), and
``put`` does the same to find the parts of the object it replaces. ``exists`` is a zero-byte
read. Manifests may only name parts inside the object's own parts folder, so a forged manifest
can neither be followed nor make a replace delete other keys.

Processes: tensorstore runs its own threads and aborts a process forked after they started.
Handles are therefore opened lazily per process, a store pickles as its spec (so spawn or
forkserver workers reopen it), and using a file, S3 or GCS store in a forked child of a
process that already used one raises :class:`StoreError` instead of aborting
(``fork_safe`` is False for those stores). ``memory://`` stores live in the process and are
fork-safe: a forked child sees a copy of the parent's objects.

Endpoints and credentials
-------------------------
S3: ``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1``; else the settings
``s3_endpoint``/``s3_region`` (``BENCHKIT_S3_ENDPOINT``/``BENCHKIT_S3_REGION``), else
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` and ``AWS_REGION``/``AWS_DEFAULT_REGION``
(region default ``us-east-1``). tensorstore ignores those variables itself, so they are put in
the spec. Credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, else
``~/.aws/credentials`` (profile ``AWS_PROFILE``), else anonymous access.
GCS: ``gs://bucket/prefix``; a local GCS-compatible server is selected with the environment
variable ``TENSORSTORE_GCS_HTTP_URL=http://127.0.0.1:PORT`` (tensorstore has no endpoint field);
the contract suite runs against ``gcp-storage-emulator`` that way (tests/store/gcs_emulator.py).
Requests are retried ``BENCHKIT_S3_RETRIES`` times (default 3, backoff 0.1 s to 1 s), so a dead
endpoint fails within seconds instead of minutes.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from benchkit.errors import (
    InvalidKey,
    ObjectNotFound,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    UnsupportedStoreURL,
)
from benchkit.fsutil import atomic_file
from benchkit.store.base import (
    DEFAULT_PART_SIZE,
    ObjectInfo,
    Store,
    check_key,
    check_prefix,
    is_hidden,
)

log = logging.getLogger(__name__)

#: First bytes of a manifest object (NUL first, so no text file starts with it by accident).
MAGIC = b"\x00BENCHKIT-PARTS/1\n"
#: Part writes left in flight while the next part is read (each costs 2-3x ``part_size``); 0
#: measured as fast as 1 against moto and a local disk, and holds less.
WRITE_AHEAD = 0
#: ``iter_blocks``/``get_file`` read parts as ranges of this size, this many in flight.
READ_BLOCK = 8 * 1024 * 1024
READ_AHEAD = 4
DEFAULT_RETRIES = 3
#: tensorstore's storage generation of a key that holds no value: a write with
#: ``if_equal=NO_VALUE`` only creates
NO_VALUE = b"\x02"
#: what to check when S3 refuses a request
S3_CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and ~/.aws/credentials) "
    "and the bucket policy"
)

# tensorstore aborts a forked child that touches it once its threads started in the parent;
# this remembers which process started them (the memory driver starts none).
_threads_pid: int | None = None
# memory://name -> the KvStore holding that store's objects in this process
_memory_handles: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _key_successor(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b""  # no upper bound
    p[-1] += 1
    return bytes(p)


def _ts() -> Any:
    """The tensorstore module, imported on first use: the S3 backend (a subclass) never needs
    it, and importing it costs a second or more on a loaded machine."""
    import tensorstore

    return tensorstore


def _prefix_range(prefix: str) -> Any:
    raw = prefix.encode()
    return _ts().KvStore.KeyRange(raw, _key_successor(raw))


def _split(data: bytes, block_size: int) -> Iterator[bytes]:
    """``data`` in blocks of at most ``block_size`` bytes, without a copy when it fits in one."""
    if len(data) <= block_size:
        if data:
            yield data
        return
    view = memoryview(data)
    for i in range(0, len(view), block_size):
        yield view[i : i + block_size].tobytes()


def _parts_dir(key: str) -> str:
    """Hidden folder holding the parts of ``key``: ``a/.b.bin.parts/``."""
    head, _, base = key.rpartition("/")
    return f"{head + '/' if head else ''}.{base}.parts/"


def _retries() -> dict[str, Any]:
    raw = os.environ.get("BENCHKIT_S3_RETRIES", "")
    try:
        n = int(raw) if raw.strip() else DEFAULT_RETRIES
    except ValueError as e:
        raise StoreError(f"BENCHKIT_S3_RETRIES must be a whole number, got {raw!r}") from e
    return {"max_retries": max(1, n), "initial_delay": "0.1s", "max_delay": "1s"}


def _aws_credentials() -> dict[str, Any]:
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return {"type": "environment"}
    cred_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or str(
        Path.home() / ".aws" / "credentials"
    )
    if os.path.isfile(cred_file):
        return {"type": "default", "profile": os.environ.get("AWS_PROFILE", "default")}
    log.info(
        "no AWS credentials in the environment or ~/.aws/credentials: using anonymous S3 access"
    )
    return {"type": "anonymous"}


def _s3_spec(bucket: str, path: str, query: dict[str, list[str]]) -> tuple[dict[str, Any], str]:
    """The tensorstore spec of an S3 store and a description of its endpoint."""
    endpoint = (query.get("endpoint") or [None])[0]
    region = (query.get("region") or [None])[0]
    if endpoint is None or region is None:
        from benchkit.settings import load_settings

        settings = load_settings()
        endpoint = endpoint or settings.get("s3_endpoint")
        region = region or settings.get("s3_region")
    endpoint = (
        endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    spec: dict[str, Any] = {
        "driver": "s3",
        "bucket": bucket,
        "path": path,
        "aws_region": region,
        "aws_credentials": _aws_credentials(),
        "context": {"s3_request_retries": _retries()},
        # conditional writes as S3 requests (If-None-Match), not a read then a write
        "use_conditional_write": True,
    }
    if endpoint:
        spec["endpoint"] = endpoint.rstrip("/")
    return spec, endpoint or f"AWS S3 ({region})"


class TensorStoreStore(Store):
    """A store over one tensorstore kvstore; large objects are kept as parts (see module doc)."""

    #: part writes left in flight while the next part is read (see WRITE_AHEAD)
    write_ahead = WRITE_AHEAD

    def __init__(
        self,
        spec: dict[str, Any],
        url: str,
        part_size: int = DEFAULT_PART_SIZE,
        endpoint: str | None = None,
    ) -> None:
        if part_size < 1024:
            raise StoreError(f"part_size must be at least 1 KiB, got {part_size}")
        self.spec = spec
        self.url = url
        self.part_size = int(part_size)
        self.endpoint = endpoint
        self.driver = spec["driver"]
        self.fork_safe = self.driver == "memory"
        self._kv: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._configure()

    def _configure(self) -> None:
        """Set up what a subclass adds to the spec's store (the S3 client's settings)."""

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, part_size: int = DEFAULT_PART_SIZE) -> TensorStoreStore:
        """Build the store for ``memory://name``, ``tensorstore+file:///path``, ``s3://`` or ``gs://``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "memory":
            name = (parts.netloc + parts.path).strip("/") or "default"
            return cls({"driver": "memory", "name": name}, f"memory://{name}", part_size)
        if scheme == "tensorstore+file":
            if parts.netloc not in ("", "localhost"):
                raise UnsupportedStoreURL(
                    f"store URL {url!r}: tensorstore+file needs an absolute path, "
                    "e.g. tensorstore+file:///data/store"
                )
            root = os.path.abspath(unquote(parts.path) or "/")
            return cls(
                {"driver": "file", "path": root.rstrip("/") + "/"},
                f"tensorstore+file://{root}",
                part_size,
            )
        if scheme in ("s3", "gs"):
            bucket = parts.netloc
            if not bucket:
                raise UnsupportedStoreURL(
                    f"store URL {url!r} names no bucket: use {scheme}://BUCKET/PREFIX"
                )
            prefix = unquote(parts.path).strip("/")
            path = prefix + "/" if prefix else ""
            clean = f"{scheme}://{bucket}/{prefix}".rstrip("/")
            if scheme == "s3":
                spec, endpoint = _s3_spec(bucket, path, parse_qs(parts.query))
            else:
                spec = {
                    "driver": "gcs",
                    "bucket": bucket,
                    "path": path,
                    "context": {"gcs_request_retries": _retries()},
                }
                endpoint = os.environ.get("TENSORSTORE_GCS_HTTP_URL") or "Google Cloud Storage"
            return cls(spec, clean, part_size, endpoint)
        raise UnsupportedStoreURL(
            f"{url!r} is not a tensorstore URL (memory://, tensorstore+file://, s3://, gs://)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # the spec travels, not the handle: each process opens its own (see module doc)
        return (type(self), (self.spec, self.url, self.part_size, self.endpoint))

    def usable_here(self) -> bool:
        return self.fork_safe or _threads_pid is None or _threads_pid == os.getpid()

    def _store(self) -> Any:
        """This process's kvstore handle, opened on first use."""
        global _threads_pid
        pid = os.getpid()
        if self._kv is not None and self._pid == pid:
            return self._kv
        with self._lock:
            if self._kv is not None and self._pid == pid:
                return self._kv
            if self.driver == "memory":
                name = self.spec["name"]
                with _memory_lock:
                    if name not in _memory_handles:
                        _memory_handles[name] = _ts().KvStore.open({"driver": "memory"}).result()
                    kv = _memory_handles[name]
            else:
                if _threads_pid is not None and _threads_pid != pid:
                    raise StoreError(
                        f"store {self.url} cannot be used in this process: it was forked from one "
                        "that already used a tensorstore store, and tensorstore does not survive "
                        "fork(). Start workers with multiprocessing_context='spawn' or "
                        "'forkserver' (e.g. DataLoader(..., multiprocessing_context='spawn'))"
                    )
                spec = {k: v for k, v in self.spec.items()}
                try:
                    kv = _ts().KvStore.open(spec).result()
                except ValueError as e:
                    raise self._error(e, None, "open") from e
                _threads_pid = pid
            self._kv, self._pid = kv, pid
            return kv

    # --- errors ------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"store {self.url}" + (f" (endpoint {self.endpoint})" if self.endpoint else "")

    def _error(self, e: Exception, key: str | None, op: str) -> Exception:
        """Map a tensorstore failure to a BenchKit error naming the store and what to check."""
        msg = str(e)
        code = msg.split(":", 1)[0].strip()
        short = msg.split(" [", 1)[0][:300]
        what = f"{op} '{key}'" if key else op
        if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            if self.driver == "s3":
                hint = S3_CREDENTIALS_HINT
            elif self.driver == "gcs":
                hint = "check GOOGLE_APPLICATION_CREDENTIALS (or `gcloud auth application-default login`) and the bucket's IAM"
            else:
                hint = "check the directory's owner and mode"
            return StorePermissionError(f"{self._where()} refused {what}: {short}. {hint}")
        connection = code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") or (
            code == "ABORTED" and ("CURL" in msg or "retry attempts" in msg)
        )
        if connection:
            return self._unreachable(what, short)
        if code == "NOT_FOUND" and self.driver in ("s3", "gcs"):
            return self._no_bucket(what)
        return StoreError(f"{self._where()}: {what} failed: {short}")

    def _unreachable(self, what: str, why: str) -> StoreConnectionError:
        setting = (
            "BENCHKIT_S3_ENDPOINT (or ?endpoint= in the store URL)"
            if self.driver == "s3"
            else "TENSORSTORE_GCS_HTTP_URL"
        )
        return StoreConnectionError(
            f"cannot reach {self._where()} during {what}: {why}. Check {setting} and the "
            "network; BENCHKIT_S3_RETRIES sets how often requests are retried"
        )

    def _no_bucket(self, what: str) -> StoreError:
        bucket = self.spec["bucket"]
        make = (
            f"aws s3 mb s3://{bucket}"
            + (f" --endpoint-url {self.endpoint}" if self.spec.get("endpoint") else "")
            if self.driver == "s3"
            else f"gcloud storage buckets create gs://{bucket}"
        )
        return StoreError(
            f"bucket '{bucket}' does not exist at {self.endpoint} ({what} in {self.url}): "
            f"create it first ({make}) or fix the store URL"
        )

    def _wait(self, future: Any, key: str | None, op: str) -> Any:
        try:
            return future.result()
        except ValueError as e:
            raise self._error(e, key, op) from e

    # --- low-level reads -----------------------------------------------------------------------

    def _read(self, key: str, byte_range: slice | None = None, *, op: str = "read") -> Any:
        kv = self._store()
        fut = kv.read(key, byte_range=byte_range) if byte_range is not None else kv.read(key)
        return self._wait(fut, key, op)

    # The layout above (parts, manifests, sweeping) reaches the kvstore only through _read,
    # _read_part and these five, so another transport (store/s3.py) can serve the same layout.

    def _write_async(self, key: str, value: bytes) -> Any:
        """Start writing ``value`` at ``key``; a future for :meth:`_wait`."""
        return self._store().write(key, value)

    def _write_value(self, key: str, value: bytes, op: str = "write") -> None:
        self._wait(self._write_async(key, value), key, op)

    def _remove(self, key: str) -> None:
        """Delete the value at ``key`` (nothing happens when there is none)."""
        self._wait(self._store().write(key, None), key, "delete")

    def _remove_prefix(self, prefix: str, op: str = "delete prefix") -> None:
        """Delete every key starting with ``prefix``, hidden ones included."""
        self._wait(self._store().delete_range(_prefix_range(prefix)), prefix, op)

    def _raw_keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, hidden ones (parts) included, in no set order."""
        kv = self._store()
        fut = kv.list(_prefix_range(prefix)) if prefix else kv.list()
        return [k.decode() for k in self._wait(fut, prefix or None, "list")]

    def _head(self, key: str) -> tuple[bytes | None, dict[str, Any] | None]:
        """``(value, None)`` for a plain object read whole, ``(None, manifest)`` for a parted one,
        or ``(None, None)`` for a plain object too large to have been read (not possible when
        written by this class, kept for objects written by other tools)."""
        check_key(key)
        try:
            res = self._read(key, slice(0, len(MAGIC)), op="read")
        except StoreError as e:
            if isinstance(e.__cause__, ValueError) and str(e.__cause__).startswith("OUT_OF_RANGE"):
                res = self._read(key)  # shorter than the magic: tiny, read it whole
                if res.state != "value":
                    raise self.not_found(key) from None
                return bytes(res.value), None
            raise
        if res.state != "value":
            raise self.not_found(key)
        if bytes(res.value) != MAGIC:
            return None, None
        return None, self._manifest(key)

    def _load(self, key: str) -> tuple[bytes, dict[str, Any] | None]:
        """Read ``key`` whole: ``(value, None)`` for a plain object, ``(b"", manifest)`` else."""
        check_key(key)
        res = self._read(key)
        if res.state != "value":
            raise self.not_found(key)
        value = res.value
        if value.startswith(MAGIC):
            return b"", self._parse_manifest(key, value)
        return value, None

    def _manifest(self, key: str) -> dict[str, Any]:
        res = self._read(key)
        if res.state != "value":
            raise self.not_found(key, "(it was deleted while being read)")
        return self._parse_manifest(key, res.value)

    def _parse_manifest(self, key: str, raw: bytes) -> dict[str, Any]:
        try:
            man = json.loads(raw[len(MAGIC) :])
            parts = [(str(k), int(n)) for k, n in man["parts"]]
            size = int(man["size"])
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(
                f"'{key}' in {self._where()} has a damaged part manifest ({e}); delete and re-upload it"
            ) from e
        home = _parts_dir(key)
        if any(not p.startswith(home) or "/../" in p for p, _ in parts):
            # never follow (or later delete) keys outside this object's own parts folder
            raise StoreError(
                f"'{key}' in {self._where()} has a manifest naming parts outside {home}; "
                "delete and re-upload it"
            )
        if sum(n for _, n in parts) != size:
            raise StoreError(
                f"'{key}' in {self._where()}: part sizes do not add up to {size}; re-upload it"
            )
        return {"size": size, "parts": parts}

    def _read_part(self, key: str, part: str, byte_range: slice | None = None) -> Any:
        kv = self._store()
        return kv.read(part, byte_range=byte_range) if byte_range is not None else kv.read(part)

    def _part_value(self, key: str, part: str, fut: Any) -> bytes:
        res = self._wait(fut, key, "read")
        if res.state != "value":
            raise self.not_found(
                key,
                f"(its part {part} is missing: the object was replaced or deleted while being read)",
            )
        return res.value

    # --- writing -----------------------------------------------------------------------------

    def _old_upload(self, key: str) -> str | None:
        """The parts folder of the object now at ``key``, if it is a parted one."""
        try:
            _, man = self._head(key)
        except ObjectNotFound:
            return None
        except StoreError:
            return None  # a damaged manifest is simply replaced
        if man is None or not man["parts"]:
            return None
        return man["parts"][0][0].rsplit("/", 1)[0] + "/"

    def _commit(
        self, key: str, manifest_or_value: bytes, old_upload: str | None, keep: str | None = None
    ) -> None:
        self._write_value(key, manifest_or_value)
        if old_upload and old_upload != keep:
            self._remove_prefix(old_upload, "delete old parts of")

    def _write_parts(self, key: str, blocks: Iterable[bytes]) -> tuple[bytes, str]:
        """Write ``blocks`` as parts of a new upload; returns the manifest and the upload folder."""
        upload = f"{_parts_dir(key)}{uuid.uuid4().hex[:16]}/"
        parts: list[list[Any]] = []
        pending: deque[tuple[str, Any]] = deque()
        total = 0
        try:
            for i, block in enumerate(blocks):
                part = f"{upload}{i:06d}"
                pending.append((part, self._write_async(part, block)))
                parts.append([part, len(block)])
                total += len(block)
                del block  # tensorstore holds what it needs; the next read must not add a copy
                while len(pending) > self.write_ahead:
                    pk, fut = pending.popleft()
                    self._wait(fut, pk, "write part")
            while pending:
                pk, fut = pending.popleft()
                self._wait(fut, pk, "write part")
        except BaseException:
            # best effort: the parts are hidden anyway, and delete() sweeps leftovers
            try:
                self._remove_prefix(upload)
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("could not remove the parts of a failed upload %s", upload, exc_info=True)
            raise
        manifest = (
            MAGIC + json.dumps({"size": total, "parts": parts}, separators=(",", ":")).encode()
        )
        return manifest, upload

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        check_key(key)
        view = memoryview(data).cast("B")
        old = self._old_upload(key)
        if len(view) <= self.part_size and view[: len(MAGIC)].tobytes() != MAGIC:
            self._commit(key, view.tobytes() if not isinstance(data, bytes) else data, old)
            return
        blocks = (
            view[i : i + self.part_size].tobytes()
            for i in range(0, max(len(view), 1), self.part_size)
        )
        manifest, upload = self._write_parts(key, blocks)
        self._commit(key, manifest, old, keep=upload)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """A conditional write (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``, local
        files by lock): exactly one of racing writers creates the object."""
        check_key(key)
        data = bytes(data)
        if len(data) > self.part_size or data.startswith(MAGIC):
            raise StoreError(f"put_if_absent takes small objects (at most one part): '{key}'")
        stamp = self._wait(self._store().write(key, data, if_equal=NO_VALUE), key, "create")
        return stamp.generation != b""

    def _open_upload(self, key: str, path: str | os.PathLike[str]) -> Any:
        """``path`` opened for reading, or a StoreError naming it and ``key``."""
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError as e:
            raise StoreError(f"cannot upload {path} to '{key}': the file does not exist") from e
        except OSError as e:
            raise StoreError(f"cannot upload {path} to '{key}' in {self.url}: {e}") from e

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        check_key(key)
        with self._open_upload(key, path) as f:
            st = os.fstat(f.fileno())
            old = self._old_upload(key)
            # pipes and devices report no size: stream them as parts too
            if stat.S_ISREG(st.st_mode) and st.st_size <= self.part_size:
                data = f.read()
                if not data.startswith(MAGIC):
                    self._commit(key, data, old)
                    return
                f.seek(0)
                del data

            blocks = iter(lambda: f.read(self.part_size), b"")
            manifest, upload = self._write_parts(key, blocks)
            self._commit(key, manifest, old, keep=upload)

    # --- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The whole object (one request for a plain object). A parted object is assembled in
        memory, briefly twice: use ``get_file``/``iter_blocks`` for large objects."""
        value, man = self._load(key)
        if man is None:
            return value
        return b"".join(self.iter_blocks(key, READ_BLOCK, manifest=man))

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end}) for '{key}'")
        value, man = self._head(key)
        if value is not None:
            return value[start:end]
        if man is None:
            return self._plain_range(key, start, end)
        end = min(end, man["size"])
        if start >= end:
            return b""
        futs = []
        offset = 0
        for part, n in man["parts"]:
            lo, hi = max(start, offset), min(end, offset + n)
            if lo < hi:
                futs.append((part, self._read_part(key, part, slice(lo - offset, hi - offset))))
            offset += n
        return b"".join(self._part_value(key, part, fut) for part, fut in futs)

    def _plain_range(self, key: str, start: int, end: int) -> bytes:
        if start == end:
            return b""
        for rng in (slice(start, end), slice(start, None)):
            try:
                res = self._read(key, rng)
            except StoreError as e:
                if isinstance(e.__cause__, ValueError) and str(e.__cause__).startswith(
                    "OUT_OF_RANGE"
                ):
                    continue
                raise
            if res.state != "value":
                raise self.not_found(key)
            return bytes(res.value)
        return b""  # start is past the end

    def iter_blocks(
        self,
        key: str,
        block_size: int = DEFAULT_PART_SIZE,
        *,
        manifest: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        if block_size < 1:
            raise ValueError("block_size must be positive")
        value, man = (None, manifest) if manifest is not None else self._head(key)
        if man is None:
            yield from _split(self.get(key) if value is None else value, block_size)
            return
        # parts are read as ranges of at most READ_BLOCK bytes, a few in flight: memory does
        # not depend on the part size, and S3 serves the ranges in parallel
        step = min(block_size, READ_BLOCK)
        ranges = (
            (part, lo, min(n, lo + step)) for part, n in man["parts"] for lo in range(0, n, step)
        )
        pending: deque[tuple[str, Any]] = deque()
        for part, lo, hi in ranges:
            if len(pending) >= READ_AHEAD:
                yield from self._drain(key, pending.popleft(), block_size)
            pending.append((part, self._read_part(key, part, slice(lo, hi))))
        while pending:
            yield from self._drain(key, pending.popleft(), block_size)

    def _drain(self, key: str, item: tuple[str, Any], block_size: int) -> Iterator[bytes]:
        part, fut = item
        yield from _split(self._part_value(key, part, fut), block_size)

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        blocks = iter(self.iter_blocks(key, READ_BLOCK))
        first = next(blocks, b"")  # fails before dest is touched if the key is missing
        with atomic_file(dest) as out:
            out.write(first)
            del first
            for block in blocks:
                out.write(block)
        return dest

    # --- metadata ----------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        """Size of ``key``: one read of its value, which for a plain object (at most
        ``part_size`` when written here) is the whole object, as tensorstore has no size call."""
        value, man = self._load(key)
        return ObjectInfo(key, man["size"] if man is not None else len(value))

    def has_size(self, key: str, size: int) -> bool:
        """Without reading the object: its first bytes (a manifest says its size), then for a
        plain object one byte at ``size - 1`` and none at ``size`` (range reads)."""
        value, man = self._head(key)
        if value is not None:
            return len(value) == size
        if man is not None:
            return man["size"] == size
        # a plain object at least as long as the magic (the head read that many bytes)
        if size < len(MAGIC):
            return False
        return self._has_byte(key, size - 1) and not self._has_byte(key, size)

    def _has_byte(self, key: str, offset: int) -> bool:
        try:
            res = self._read(key, slice(offset, offset + 1))
        except StoreError as e:
            if isinstance(e.__cause__, ValueError) and str(e.__cause__).startswith("OUT_OF_RANGE"):
                return False
            raise
        if res.state != "value":
            raise self.not_found(key)
        return len(res.value) == 1

    def exists(self, key: str) -> bool:
        check_key(key)
        return self._read(key, slice(0, 0), op="check").state == "value"

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        return sorted(k for k in self._raw_keys(prefix) if not is_hidden(k))

    # --- deleting ----------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        check_key(key)
        if not self.exists(key):
            return False
        # the key first, so the object disappears at once; then its parts, killed puts' too
        self._remove(key)
        self._remove_prefix(_parts_dir(key), "delete parts of")
        return True

    def sweep_leftovers(self, prefix: str) -> int:
        """Delete the parts of uploads that never got their manifest (killed ``put``s) for
        objects under ``prefix``; parts the current manifest of an object names are kept."""
        check_prefix(prefix)
        head = prefix.rpartition("/")[0]
        folder = f"{head}/" if head else ""
        uploads: dict[str, set[str]] = {}  # object key -> its parts' upload folders
        for raw in self._raw_keys(folder):
            segs = raw.split("/")
            for i, seg in enumerate(segs[:-2]):
                if seg.startswith(".") and seg.endswith(".parts") and len(seg) > 7:
                    key = "/".join([*segs[:i], seg[1:-6]])
                    if key.startswith(prefix):
                        uploads.setdefault(key, set()).add("/".join(segs[: i + 2]) + "/")
                    break
        removed = 0
        for key, found in sorted(uploads.items()):
            keep = self._old_upload(key)
            for upload in sorted(found - {keep}):
                self._remove_prefix(upload, "delete leftover parts of")
                removed += 1
        return removed

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise InvalidKey("refusing to delete an empty prefix (the whole store)")
        check_prefix(prefix)
        n = len(self.list(prefix))
        self._remove_prefix(prefix)
        # parts of objects directly in the prefix's folder whose name starts with its last part
        head, _, base = prefix.rpartition("/")
        if base:
            self._remove_prefix(f"{head + '/' if head else ''}.{base}")
        return n
