"""Blobs: the store contract for one project, with uploads verified before they are visible.

Every key a client names is relative to its project and lands at
``projects/<project id>/<key>`` in the server's store; keys are checked first
(:func:`benchkit.store.http.check_remote_key`), so none can leave the project.

A single PUT streams its body into a staging file while hashing it; only when the declared
sha256 and length match does :meth:`Staging.commit` make it the object. Large objects use
upload sessions: bytes arrive in order (each part at the offset the server reports), and
completing checks the sha256 of the whole, fsyncs it and only then commits. A part
interrupted half way leaves the recorded offset where it was, so the client resumes from
there. Parts are not fsynced one by one: a killed server's page cache survives it, and after
a power cut the offset the client resumes from is never beyond the bytes the file still holds
(a lost tail is sent again; bytes damaged anyway fail the final sha256, which discards the
session and tells the client). Memory per request is a buffer or two, whatever the size.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, select

from benchkit.errors import InvalidKey, ObjectNotFound
from benchkit.fsutil import write_all
from benchkit.server.db.models import Upload, utcnow
from benchkit.server.db.session import Database
from benchkit.server.services import parts as parts_journal
from benchkit.server.services.catalog import Catalog, project_prefix
from benchkit.server.services.errors import BadRequest, Conflict, NotFound, TooLarge
from benchkit.server.services.staging import Staging
from benchkit.store import Store
from benchkit.store.base import check_prefix
from benchkit.store.http import check_remote_key

log = logging.getLogger(__name__)

READ_BLOCK = 1024 * 1024
REMOTE_BLOCK = 8 * 1024 * 1024
MAX_LIST = 10_000
SHA256_HEX = frozenset("0123456789abcdef")


def check_sha256(value: str | None) -> str:
    v = (value or "").strip().lower()
    if len(v) != 64 or not set(v) <= SHA256_HEX:
        raise BadRequest("give the body's SHA-256 as 64 hex digits in the X-Content-SHA256 header")
    return v


def check_declared(got: str, sha256: str | None) -> None:
    """Refuse a body whose SHA-256 (``got``, hex) is not the one its sender declared."""
    if got != check_sha256(sha256):
        raise BadRequest(
            f"the body's SHA-256 is {got}, not {sha256} as declared: nothing was stored"
        )


def composite_sha256(parts: list[str]) -> str:
    """What a parallel session records as its checksum: the SHA-256 of its parts' digests."""
    return hashlib.sha256(b"".join(bytes.fromhex(check_sha256(p)) for p in parts)).hexdigest()


def hash_file(path: Path, upto: int) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = upto
        while left > 0:
            block = f.read(min(READ_BLOCK * 8, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h


@dataclass(frozen=True)
class UploadInfo:
    id: str
    key: str
    received: int
    state: str
    created_at: datetime
    updated_at: datetime
    #: a parallel session's part size and the parts it holds (None for an in-order session)
    part_size: int | None = None
    parts: list[parts_journal.Part] | None = None


@dataclass(frozen=True)
class ReadPlan:
    """An object opened for reading (a local file is already open, so a replace meanwhile
    cannot mix two objects): its size, ``read(pos, n)`` for up to ``n`` bytes at ``pos`` (from
    any thread), the block size worth reading at once, and ``close()``."""

    size: int
    read: Callable[[int, int], bytes]
    close: Callable[[], None] = lambda: None
    block: int = READ_BLOCK
    #: names this version of the object (a replace changes it); None when the store has none
    etag: str | None = None

    def open(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` in blocks; closes the object when done."""
        try:
            pos = start
            while pos < end:
                data = self.read(pos, min(self.block, end - pos))
                if not data:
                    break
                pos += len(data)
                yield data
        finally:
            self.close()

    def read_all(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` at once (for small objects), then close."""
        return b"".join(self.open(start, end))


def _upload_info(u: Upload) -> UploadInfo:
    return UploadInfo(u.id, u.key, u.received, u.state, u.created_at, u.updated_at)


class Sink:
    """Bytes of one request body going into a staging file, hashed and counted as they come
    (each block as the pieces the socket gave: one ``writev``, no joined copy)."""

    def __init__(
        self, path: Path, limit: int, offset: int | None = None, h=None, truncate: bool = True
    ) -> None:
        """A new file, or with ``offset`` an existing one cut at ``offset`` (unless not
        ``truncate``: a numbered part among others) and written on from there (``h`` then holds
        the hash of the bytes before it)."""
        self.path = path
        self.limit = limit
        self.offset = offset or 0
        self.count = 0
        self.hash = h if h is not None else hashlib.sha256()
        mode = "wb" if offset is None else "r+b"
        self._f: BinaryIO = open(path, mode, buffering=0)  # noqa: SIM115 - closed by close()
        if offset is not None:
            self._f.seek(offset)
            if truncate:
                self._f.truncate()

    def write(self, pieces: list[bytes]) -> None:
        """Append ``pieces`` (one block of the body, in order)."""
        self.count += sum(map(len, pieces))
        if self.count > self.limit:
            raise TooLarge(f"the body is larger than the {self.limit} bytes allowed here")
        write_all(self._f.fileno(), pieces)
        for piece in pieces:  # just written, so still in this core's cache
            self.hash.update(piece)

    def flush(self, durable: bool = True) -> None:
        if durable:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


class Blobs:
    """The blob operations of every project over one store."""

    def __init__(
        self,
        db: Database,
        store: Store,
        staging: Staging,
        catalog: Catalog,
        max_put: int,
        max_upload: int,
    ) -> None:
        self.db = db
        self.store = store
        self.staging = staging
        self.catalog = catalog
        self.max_put = max_put
        self.max_upload = max_upload
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        #: (upload id, part number) of the numbered parts being written now
        self._in_flight: set[tuple[str, int]] = set()
        #: running hash of each upload at its received offset (lost at restart: recomputed)
        self._hashes: dict[str, tuple[int, hashlib._Hash]] = {}
        #: staged uploads whose written parts one background thread is putting on disk, so
        #: the disk works while the next part arrives and completing has little left to fsync
        #: (a speed-up only: durability comes from the fsync at completion)
        self._write_back: set[Path] = set()
        self._write_back_guard = threading.Lock()
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="bench-sync")

    # --- keys ----------------------------------------------------------------------------------

    def object_key(self, project_id: str, key: str) -> str:
        try:
            return project_prefix(project_id) + check_remote_key(key)
        except InvalidKey as e:
            raise BadRequest(str(e)) from e

    def _prefix(self, project_id: str, prefix: str) -> str:
        try:
            if prefix:
                check_remote_key(prefix.rstrip("/") or "x")
            return project_prefix(project_id) + check_prefix(prefix)
        except InvalidKey as e:
            raise BadRequest(str(e)) from e

    # --- single PUT ----------------------------------------------------------------------------

    def begin_put(self, project_id: str, key: str, sha256: str | None, length: int | None) -> Sink:
        """A sink for the body of a PUT to ``key``; pass it to :meth:`finish_put`."""
        self.object_key(project_id, key)
        check_sha256(sha256)
        if length is not None and length > self.max_put:
            raise TooLarge(
                f"a single PUT may send at most {self.max_put} bytes; use an upload session "
                "(POST /api/v1/uploads) for larger objects"
            )
        self.staging.check_room(length or 0)
        return Sink(self.staging.put_path(), self.max_put)

    def finish_put(
        self, project_id: str, key: str, sink: Sink, sha256: str, length: int | None
    ) -> int:
        """Verify what the sink received and make it the object; returns its size."""
        try:
            sink.flush()
            sink.close()
            if length is not None and sink.count != length:
                raise BadRequest(f"received {sink.count} bytes, Content-Length said {length}")
            check_declared(sink.hash.hexdigest(), sha256)
            self._commit(project_id, key, sink.path)
        finally:
            self.staging.discard(sink.path)
        return sink.count

    def put_bytes(self, project_id: str, key: str, sha256: str | None, data: bytes) -> int:
        """A whole (small) body at once: checked, written, fsynced and made the object."""
        sink = self.begin_put(project_id, key, sha256, len(data))
        try:
            sink.write([data])
        except BaseException:
            self.abort(sink)
            raise
        return self.finish_put(project_id, key, sink, sha256 or "", len(data))

    def create_bytes(self, project_id: str, key: str, sha256: str | None, data: bytes) -> bool:
        """A whole (small) body stored under ``key`` only if no object is there: checked, then
        handed to the store's own conditional create, so of racing creators (requests of this
        server, or servers sharing the store) exactly one wins. False when an object exists."""
        object_key = self.object_key(project_id, key)
        if len(data) > self.max_put:
            raise TooLarge(f"a conditional create may send at most {self.max_put} bytes")
        check_declared(hashlib.sha256(data).hexdigest(), sha256)
        items = self.catalog.mark(project_id, [key])
        created = False
        try:
            created = self.store.put_if_absent(object_key, data)
        finally:
            self.catalog.settle(project_id, items, written=key if created else None)
        return created

    def abort(self, sink: Sink) -> None:
        sink.close()
        self.staging.discard(sink.path)

    def _commit(self, project_id: str, key: str, path: Path) -> None:
        object_key = self.object_key(project_id, key)
        items = self.catalog.mark(project_id, [key])
        self.staging.commit(path, object_key)
        self.catalog.settle(project_id, items, written=key)

    # --- reading -------------------------------------------------------------------------------

    def stat(self, project_id: str, key: str) -> int:
        try:
            return self.store.stat(self.object_key(project_id, key)).size
        except ObjectNotFound:
            raise NotFound(f"no object {key!r}") from None

    def read(self, project_id: str, key: str) -> ReadPlan:
        """Open an object for reading."""
        object_key = self.object_key(project_id, key)
        path = None
        try:
            path = self.store.local_path(object_key)
        except ObjectNotFound:
            raise NotFound(f"no object {key!r}") from None
        if path is not None:
            try:
                # a file object, not a bare descriptor: a response dropped before its first
                # read still gets it closed (by the garbage collector)
                f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by ReadPlan.close
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise NotFound(f"no object {key!r}") from None
            fd = f.fileno()
            st = os.fstat(fd)
            etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
            return ReadPlan(st.st_size, lambda a, n: os.pread(fd, n, a), f.close, etag=etag)
        size = self.stat(project_id, key)
        return ReadPlan(
            size, lambda a, n: self.store.get_range(object_key, a, a + n), block=REMOTE_BLOCK
        )

    # --- listing and deleting ------------------------------------------------------------------

    def list(
        self, project_id: str, prefix: str = "", after: str = "", limit: int = 1000
    ) -> tuple[list[str], str | None]:
        """Keys starting with ``prefix`` and sorting after ``after``: one page, and the cursor
        of the next page (None at the end)."""
        full = self._prefix(project_id, prefix)
        limit = max(1, min(limit, MAX_LIST))
        cut = len(project_prefix(project_id))
        keys = [k[cut:] for k in self.store.list(full)]
        if after:
            keys = keys[bisect.bisect_right(keys, after) :]
        page = keys[:limit]
        return page, (page[-1] if len(keys) > limit else None)

    def list_dirs(self, project_id: str, prefix: str) -> list[str]:
        return self.store.list_dirs(self._prefix(project_id, prefix))

    def delete(self, project_id: str, key: str) -> bool:
        object_key = self.object_key(project_id, key)
        items = self.catalog.mark(project_id, [key])
        gone = self.store.delete(object_key)
        self.catalog.settle(project_id, items)
        return gone

    def delete_prefix(self, project_id: str, prefix: str) -> int:
        """Delete every object under ``prefix``, and the upload sessions of keys under it (what
        killed writers left); returns the number of objects."""
        if not prefix:
            raise BadRequest("refusing to delete an empty prefix (the whole project)")
        full = self._prefix(project_id, prefix)
        cut = len(project_prefix(project_id))
        keys = [k[cut:] for k in self.store.list(full)]
        items = self.catalog.mark(project_id, keys)
        n = 0
        for key in keys:
            n += self.store.delete(project_prefix(project_id) + key)
        self.catalog.settle(project_id, items)
        for upload in self.list_uploads(project_id, prefix):
            self.abort_upload(project_id, upload.id)
        return n

    # --- upload sessions -----------------------------------------------------------------------

    def create_upload(self, project_id: str, key: str, part_size: int | None = None) -> UploadInfo:
        """An upload session for ``key``: parts in order at the received offset, or with
        ``part_size`` numbered parts in any order, several at once (:meth:`begin_numbered`)."""
        self.object_key(project_id, key)
        lo, hi = parts_journal.MIN_PART_SIZE, parts_journal.MAX_PART_SIZE
        if part_size is not None and not lo <= part_size <= hi:
            raise BadRequest(f"part_size must be between {lo} and {hi} bytes, not {part_size}")
        upload_id = secrets.token_hex(16)
        now = utcnow()
        with self.db.write() as s:
            row = Upload(
                project_id=project_id,
                id=upload_id,
                key=key,
                received=0,
                state="open",
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            info = _upload_info(row)
        self.staging.upload_path(upload_id).touch()
        if part_size is not None:
            parts_journal.create(self.staging.parts_path(upload_id), part_size)
        return self._with_parts(info)

    def _with_parts(self, info: UploadInfo) -> UploadInfo:
        """``info`` with a parallel session's parts (and ``received``, their total)."""
        journal = parts_journal.read(self.staging.parts_path(info.id))
        if journal is None:
            return info
        part_size, held = journal
        parts = sorted(held.values(), key=lambda p: p.number)
        received = sum(p.size for p in parts)
        return replace(info, part_size=part_size, parts=parts, received=received)

    def _row(self, s, project_id: str, upload_id: str) -> Upload:
        row = s.get(Upload, (project_id, upload_id))
        if row is None:
            raise NotFound(
                f"no upload session {upload_id!r} (it completed, expired or was aborted)"
            )
        return row

    def get_upload(self, project_id: str, upload_id: str) -> UploadInfo:
        with self.db.read() as s:
            info = _upload_info(self._row(s, project_id, upload_id))
        if info.state == "open" and self.staging.parts_path(upload_id).exists():
            return self._with_parts(info)
        held = self._held(upload_id, info.received)
        return info if held == info.received else replace(info, received=held)

    def _held(self, upload_id: str, received: int) -> int:
        """The recorded offset, or less if the staged file is shorter (a power cut took its
        unsynced tail): where the client must resume."""
        if received == 0:
            return 0
        try:
            return min(received, self.staging.upload_path(upload_id).stat().st_size)
        except FileNotFoundError:
            return received  # begin_part and complete report the bytes as gone

    def list_uploads(self, project_id: str, prefix: str = "") -> list[UploadInfo]:
        """Open upload sessions of keys starting with ``prefix``."""
        with self.db.read() as s:
            rows = s.scalars(
                select(Upload)
                .where(Upload.project_id == project_id, Upload.state == "open")
                .order_by(Upload.created_at)
            )
            infos = [_upload_info(u) for u in rows if u.key.startswith(prefix)]
        return [self._with_parts(u) for u in infos]

    def _lock(self, upload_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(upload_id, threading.Lock())

    def begin_part(
        self, project_id: str, upload_id: str, offset: int, length: int | None
    ) -> tuple[Sink, threading.Lock]:
        """A sink for a part written at ``offset`` (at most the received count: a part resent
        after a lost answer overwrites from there). Holds the session's lock until
        :meth:`finish_part` or :meth:`abort_part`."""
        lock = self._lock(upload_id)
        if not lock.acquire(timeout=30):
            raise Conflict("another part of this upload is being written; retry")
        try:
            with self.db.read() as s:
                row = self._row(s, project_id, upload_id)
                received, state = row.received, row.state
            received = self._held(upload_id, received)
            if state != "open":
                raise Conflict("this upload session is complete", received=received)
            if self.staging.parts_path(upload_id).exists():
                raise Conflict("this upload session takes numbered parts (PUT .../parts/N)")
            if offset < 0 or offset > received:
                raise Conflict(
                    f"part offset {offset} does not follow the {received} bytes received; "
                    "resume at the received offset",
                    received=received,
                )
            if length is not None and offset + length > self.max_upload:
                raise TooLarge(f"an upload may hold at most {self.max_upload} bytes")
            self.staging.check_room(length or 0)
            path = self.staging.upload_path(upload_id)
            if not path.exists():
                raise NotFound(f"the bytes of upload session {upload_id!r} are gone; start again")
            cached = self._hashes.get(upload_id)
            h = cached[1].copy() if cached and cached[0] == offset else hash_file(path, offset)
            return Sink(path, self.max_upload - offset, offset=offset, h=h), lock
        except BaseException:
            lock.release()
            raise

    def finish_part(
        self, project_id: str, upload_id: str, sink: Sink, lock: threading.Lock, length: int | None
    ) -> UploadInfo:
        try:
            sink.flush(durable=False)  # the whole is fsynced once, when the upload completes
            sink.close()
            if length is not None and sink.count != length:
                raise BadRequest(f"received {sink.count} bytes, Content-Length said {length}")
            received = sink.offset + sink.count
            with self.db.write() as s:
                row = self._row(s, project_id, upload_id)
                row.received = received
                row.updated_at = utcnow()
                info = _upload_info(row)
            self._hashes[upload_id] = (received, sink.hash)
            self._start_write_back(sink.path)
            return info
        finally:
            lock.release()

    def _start_write_back(self, path: Path) -> None:
        with self._write_back_guard:
            if path in self._write_back:
                return  # already queued: that sync will cover this part too
            self._write_back.add(path)
        self._syncer.submit(self._sync_staged, path)

    def _sync_staged(self, path: Path) -> None:
        with self._write_back_guard:
            self._write_back.discard(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # completed (renamed) or dropped meanwhile
        try:
            os.fdatasync(fd)
        except OSError as e:  # the fsync at completion will report a real problem
            log.debug("background sync of %s failed: %s", path.name, e)
        finally:
            os.close(fd)

    def abort_part(self, sink: Sink, lock: threading.Lock) -> None:
        try:
            sink.close()
            self._hashes.pop(sink.path.name.removeprefix("upload-"), None)
        finally:
            lock.release()

    # --- parallel sessions: numbered parts ---------------------------------------------------

    def begin_numbered(
        self, project_id: str, upload_id: str, number: int, length: int | None
    ) -> Sink:
        """A sink for part ``number`` of a parallel session (bytes ``number * part_size`` on);
        other parts may be written at the same time. Pass it to :meth:`finish_numbered`."""
        if length is None:
            raise BadRequest("send a part with its Content-Length")
        path, journal_path = self.staging.upload_path(upload_id), self.staging.parts_path(upload_id)
        with self._lock(upload_id):
            with self.db.read() as s:
                state = self._row(s, project_id, upload_id).state
            if state != "open":
                raise Conflict("this upload session is complete")
            journal = parts_journal.read(journal_path)
            if journal is None:
                raise Conflict("this upload session takes its bytes in order (PUT ...?offset=N)")
            part_size, held = journal
            if length > part_size:
                raise BadRequest(
                    f"part {number} has {length} bytes, more than the session's part size "
                    f"{part_size}"
                )
            offset = number * part_size
            if offset + length > self.max_upload:
                raise TooLarge(f"an upload may hold at most {self.max_upload} bytes")
            if (upload_id, number) in self._in_flight:
                raise Conflict(f"part {number} of this upload is being written; retry")
            if not path.exists():
                raise NotFound(f"the bytes of upload session {upload_id!r} are gone; start again")
            self.staging.check_room(length)
            if number in held:  # written again: never mistake a half rewrite for the old part
                parts_journal.forget(journal_path, number)
            self._in_flight.add((upload_id, number))
        try:
            return Sink(path, length, offset=offset, truncate=False)
        except BaseException:
            self._in_flight.discard((upload_id, number))
            raise

    def finish_numbered(
        self,
        project_id: str,
        upload_id: str,
        number: int,
        sink: Sink,
        length: int,
        sha256: str | None,
    ) -> parts_journal.Part:
        """Check the part's length (and SHA-256 when declared) and record it."""
        try:
            sink.flush(durable=False)  # see parts.py: the whole is fsynced at completion
            sink.close()
            if sink.count != length:
                raise BadRequest(f"received {sink.count} bytes, Content-Length said {length}")
            got = sink.hash.hexdigest()
            if sha256 is not None and got != check_sha256(sha256):
                raise BadRequest(
                    f"part {number}'s SHA-256 is {got}, not {sha256} as declared: send it again"
                )
            part = parts_journal.Part(number, sink.count, got)
            with self._lock(upload_id), self.db.write() as s:
                row = self._row(s, project_id, upload_id)
                if row.state != "open":
                    raise Conflict("this upload session is complete")
                parts_journal.record(self.staging.parts_path(upload_id), part)
                row.updated_at = utcnow()  # a session taking parts does not expire
            self._start_write_back(sink.path)
            return part
        finally:
            self._in_flight.discard((upload_id, number))

    def abort_numbered(self, upload_id: str, number: int, sink: Sink) -> None:
        try:
            sink.close()
        finally:
            self._in_flight.discard((upload_id, number))

    def _check_parts(
        self, upload_id: str, journal: tuple[int, dict], size: int, shas: list[str] | None
    ) -> None:
        """Every part of an object of ``size`` bytes is held, whole, with the SHA-256 the
        client computed of it."""
        if shas is None:
            raise BadRequest(
                "this session takes numbered parts: complete it with the SHA-256 of each part "
                '("parts")'
            )
        part_size, held = journal
        count = -(-size // part_size)
        if len(shas) != count:
            raise BadRequest(
                f"an object of {size} bytes in parts of {part_size} has {count} parts, "
                f"not {len(shas)}"
            )
        if any(u == upload_id for u, _ in list(self._in_flight)):
            raise Conflict("parts of this upload are still being written; retry")
        for n, sha in enumerate(shas):
            want = min(part_size, size - n * part_size)
            got = held.get(n)
            if got is None or got.size != want:
                raise Conflict(f"part {n} ({want} bytes) is missing; send it, then complete")
            if got.sha256 != sha.lower():
                raise Conflict(
                    f"part {n} on the server has SHA-256 {got.sha256}, not {sha}; send it again"
                )

    # --- completing ----------------------------------------------------------------------------

    def complete_upload(
        self,
        project_id: str,
        upload_id: str,
        sha256: str | None,
        size: int,
        parts: list[str] | None = None,
    ) -> int:
        """Check the whole upload's size and SHA-256 (a parallel session: the SHA-256 of each
        part, and records the SHA-256 of their digests), then make it the object (idempotent: a
        repeated complete of a completed session with the same checksum succeeds)."""
        if parts is None and sha256 is None:
            raise BadRequest('complete an upload with the SHA-256 of the whole ("sha256")')
        sha256 = composite_sha256(parts) if parts is not None else check_sha256(sha256)
        with self._lock(upload_id):
            with self.db.read() as s:
                row = self._row(s, project_id, upload_id)
                key, received, state, done_sha = row.key, row.received, row.state, row.sha256
            if state == "complete":
                if done_sha == sha256 and received == size:
                    return size
                raise Conflict("this upload session completed with another checksum")
            path = self.staging.upload_path(upload_id)
            journal = parts_journal.read(self.staging.parts_path(upload_id))
            if journal is not None:
                if not path.exists():
                    raise NotFound(
                        f"the bytes of upload session {upload_id!r} are gone; start again"
                    )
                self._check_parts(upload_id, journal, size, parts)
                _truncate_and_sync(path, size)  # parts are durable: this only cuts and syncs
            else:
                if parts is not None:
                    raise BadRequest(
                        "this session took its bytes in order: complete it with the SHA-256 of "
                        "the whole"
                    )
                self._verify_in_order(project_id, upload_id, received, size, sha256)
            self._commit(project_id, key, path)
            with self.db.write() as s:
                row = self._row(s, project_id, upload_id)
                row.state, row.sha256, row.updated_at = "complete", sha256, utcnow()
                row.received = size
            self.staging.discard(self.staging.parts_path(upload_id))
        return size

    def _verify_in_order(
        self, project_id: str, upload_id: str, received: int, size: int, sha256: str
    ) -> None:
        received = self._held(upload_id, received)
        if size != received:
            raise Conflict(
                f"the upload holds {received} bytes, not {size}; send the rest first",
                received=received,
            )
        path = self.staging.upload_path(upload_id)
        if not path.exists():
            raise NotFound(f"the bytes of upload session {upload_id!r} are gone; start again")
        cached = self._hashes.pop(upload_id, None)
        h = cached[1] if cached and cached[0] == received else hash_file(path, received)
        _truncate_and_sync(path, received)  # drop the tail of a part cut off half way
        if h.hexdigest() != sha256:
            self._drop(project_id, upload_id)
            raise BadRequest(
                f"the upload's SHA-256 is {h.hexdigest()}, not {sha256}: nothing was stored "
                "and the session was discarded; upload again"
            )

    def abort_upload(self, project_id: str, upload_id: str) -> None:
        with self._lock(upload_id):
            with self.db.read() as s:
                self._row(s, project_id, upload_id)
            self._drop(project_id, upload_id)

    def _drop(self, project_id: str, upload_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(Upload).where(Upload.project_id == project_id, Upload.id == upload_id))
        self.staging.discard(self.staging.upload_path(upload_id))
        self.staging.discard(self.staging.parts_path(upload_id))
        self._hashes.pop(upload_id, None)
        with self._locks_guard:
            self._locks.pop(upload_id, None)

    def expire_uploads(self, ttl_s: float) -> int:
        """Remove sessions idle for longer than ``ttl_s`` (completed ones too)."""
        cutoff = utcnow() - timedelta(seconds=ttl_s)
        with self.db.read() as s:
            old = [
                (u.project_id, u.id)
                for u in s.scalars(select(Upload).where(Upload.updated_at < cutoff))
            ]
        for project_id, upload_id in old:
            self._drop(project_id, upload_id)
        return len(old)


def _truncate_and_sync(path: Path, size: int) -> None:
    """Cut the file at ``size`` and make its bytes durable (before it becomes the object)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
