"""Getting chunks onto local disk before they are read: the remote chunk cache and checksum marks.

Remote stores (S3, GCS, a Bench server, tensorstore ``memory``/``file``) have no local path, so
chunks are downloaded ahead of use into ``<cache dir>/chunks/<store hash>/<sha256>.bkc``:

- **Atomic and shared.** A download goes to a temporary file, is checked against the index's
  sha256 while it is written, and is renamed into place; a per-chunk file lock makes the ranks
  and workers of one machine download each chunk once. A file in the cache is therefore always
  whole and verified (its name is its checksum).
- **Bounded.** Before a download, least-recently-used chunks are evicted until the new one fits
  under ``cache_limit`` (setting, default 20GB). A chunk that a reader has open holds a shared
  ``flock`` on it, and eviction skips it: a chunk in use is never evicted.
- **Ahead of use.** :mod:`benchkit.data.prefetch` prepares the next chunks of the plan on a few
  threads, a bounded number of chunks ahead of the reading position.

Local-directory stores are read in place (memory-mapped), never copied. Their chunks are
checked the first time they are opened; :class:`VerifiedMarks` remembers a good check per
machine (by path, size, mtime and inode), so DataLoader workers and later epochs do not hash the
same unchanged file again, while any write to it (new mtime, size or inode) forces a new check.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchkit.data.format import ChunkReader
from benchkit.errors import CorruptChunk, DataError
from benchkit.fsutil import fsync_dir
from benchkit.store.base import Store
from benchkit.units import parse_size

__all__ = [
    "ChunkCache",
    "VerifiedMarks",
    "cache_limit_bytes",
    "pin",
    "unpin",
    "process_lock",
]

log = logging.getLogger(__name__)

CHUNK_SUFFIX = ".bkc"
_DOWNLOAD_BLOCK = 8 * 1024 * 1024
#: a temporary download file untouched this long belongs to a killed process
_STALE_DOWNLOAD_S = 3600


def cache_limit_bytes(value: str | int | None = None) -> int:
    """The cache size limit in bytes: ``value``, else the ``cache_limit`` setting (``"20GB"``)."""
    if value is None:
        from benchkit.settings import load_settings

        value = load_settings().get("cache_limit") or "20GB"
    return parse_size(value)


def _cache_base() -> Path:
    from benchkit.settings import get_paths

    return get_paths().cache


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
_held_lock_fds: set[int] = set()


def _after_fork_in_child() -> None:
    # A forked child starts with no thread holding anything. Its copies of the lock files'
    # descriptors would keep the parent's flock held (the lock belongs to the open file, which
    # the copy keeps open) and deadlock the child when it takes the same lock: close them.
    global _thread_locks, _thread_locks_guard
    _thread_locks, _thread_locks_guard = {}, threading.Lock()
    for fd in list(_held_lock_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_lock_fds.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def process_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive lock on ``path`` between processes and between threads.

    ``flock`` on a lock file, plus a thread lock (flock does not order threads that share a
    descriptor). A DataLoader worker forked while a thread holds the lock closes its inherited
    copy of the descriptor (see ``_after_fork_in_child``) and simply waits for the parent to
    release it. (POSIX ``lockf`` locks are not inherited, but the kernel reports false
    deadlocks for them between multi-threaded processes.)
    """
    key = os.path.abspath(path)
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    with tlock:
        fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        _held_lock_fds.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            _held_lock_fds.discard(fd)
            os.close(fd)


def pin(path: Path) -> int:
    """Open ``path`` and hold a shared lock on it (evictors skip it) until :func:`unpin`.

    Raises ``FileNotFoundError`` if the file is gone or was replaced while locking.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except BaseException:
        os.close(fd)
        raise
    _held_lock_fds.add(fd)  # a forked child drops its copy (see _after_fork_in_child)
    return fd


def unpin(fd: int) -> None:
    """Release a :func:`pin`."""
    _held_lock_fds.discard(fd)
    os.close(fd)


class ChunkCache:
    """Verified chunk files of one remote store on local disk, LRU-evicted under a size limit."""

    def __init__(
        self,
        store: Store,
        *,
        root: str | os.PathLike[str] | None = None,
        limit: str | int | None = None,
    ) -> None:
        self.store = store
        tag = hashlib.sha256(store.url.encode()).hexdigest()[:16]
        self.root = Path(root) if root is not None else _cache_base() / "chunks" / tag
        self.limit = cache_limit_bytes(limit)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def path(self, sha256: str) -> Path:
        """Where the chunk with this checksum lives in the cache (it may not be there yet)."""
        return self.root / f"{sha256}{CHUNK_SUFFIX}"

    def error_path(self, sha256: str) -> Path:
        return self.root / f".{sha256}.error"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def usage(self) -> int:
        """Bytes of chunks in the cache now."""
        total = 0
        for p in self._chunks():
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def _chunks(self) -> list[Path]:
        try:
            return [
                p
                for p in self.root.iterdir()
                if p.suffix == CHUNK_SUFFIX and not p.name.startswith(".")
            ]
        except FileNotFoundError:
            return []

    def touch(self, sha256: str) -> None:
        """Mark a chunk as just used (LRU order is by modification time)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(sha256))

    def fetch(self, key: str, sha256: str, size: int, label: str) -> Path:
        """The cached path of ``key``, downloading and verifying it first if it is absent.

        Safe to call from many threads and processes at once: one downloads, the others wait.
        Raises :class:`CorruptChunk` (naming ``label``) if the store's bytes fail the checksum.
        """
        dest = self.path(sha256)
        if dest.is_file():
            return dest
        self.root.mkdir(parents=True, exist_ok=True)
        with process_lock(self.root / f".{sha256}.lock"):
            if dest.is_file():
                return dest
            fd, tmp = self.make_room(size, reserve_for=sha256)
            try:
                digest = hashlib.sha256()
                n = 0
                with os.fdopen(fd, "wb") as out:
                    for block in self.store.iter_blocks(key, _DOWNLOAD_BLOCK):
                        digest.update(block)
                        out.write(block)
                        n += len(block)
                    out.flush()
                    os.fsync(out.fileno())
                if n != size or digest.hexdigest() != sha256:
                    raise CorruptChunk(
                        f"corrupt chunk {label}: the store holds {n} bytes with sha256 "
                        f"{digest.hexdigest()[:16]}..., the index says {size} bytes and "
                        f"{sha256[:16]}.... Check and repair the stored dataset with "
                        f"`python -m benchkit datasets verify {key.split('/')[1]} --repair`"
                    )
                # renames happen under the eviction lock, so its directory scan never misses
                # a chunk that is changing name
                with process_lock(self.root / ".evict.lock"):
                    os.replace(tmp, dest)
                fsync_dir(self.root)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        log.debug("cached %s (%d bytes) as %s", key, size, dest)
        return dest

    def make_room(self, needed: int, reserve_for: str | None = None) -> tuple[int, str] | None:
        """Evict least-recently-used chunks nobody has open until ``needed`` more bytes fit.

        With ``reserve_for``, also create the download's temporary file at its full size while
        still holding the eviction lock (returns its fd and path), so concurrent downloads see
        each other's space and together stay under the limit.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with process_lock(self.root / ".evict.lock"):
            entries = []
            used = 0
            for p in self.root.iterdir():
                is_chunk = p.suffix == CHUNK_SUFFIX and not p.name.startswith(".")
                if not (is_chunk or p.suffix == ".tmp"):
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if not is_chunk and time.time() - st.st_mtime > _STALE_DOWNLOAD_S:
                    p.unlink(missing_ok=True)  # left by a killed download
                    continue
                used += st.st_size  # downloads in progress count at their final size
                if is_chunk:
                    entries.append((st.st_mtime_ns, p, st.st_size))
            if used + needed > self.limit:
                for _, p, size in sorted(entries, key=lambda e: e[0]):
                    if used + needed <= self.limit:
                        break
                    if self._evict(p):
                        used -= size
            if used + needed > self.limit:
                log.warning(
                    "chunk cache %s: %d MB needed exceeds cache_limit (%d MB) because the chunks "
                    "being read are never evicted; raise cache_limit "
                    "(`benchkit config set cache_limit 40GB`)",
                    self.root,
                    -(-(used + needed) // 10**6),
                    self.limit // 10**6,
                )
            if reserve_for is None:
                return None
            fd, tmp = tempfile.mkstemp(prefix=f".{reserve_for}.", suffix=".tmp", dir=self.root)
            os.ftruncate(fd, needed)
            return fd, tmp

    def _evict(self, p: Path) -> bool:
        """Delete one cached chunk unless a reader holds it; True if it went."""
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False  # in use by a reader
        try:
            p.unlink()
            log.debug("evicted %s from the chunk cache", p.name)
        finally:
            os.close(fd)
        return True

    # --- errors seen by a downloader, for readers in other processes ------------------------

    def record_error(self, sha256: str, session: str, message: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{sha256}.{os.getpid()}.errtmp"
        tmp.write_text(f"{session}\n{message}")
        os.replace(tmp, self.error_path(sha256))

    def read_error(self, sha256: str, session: str) -> str | None:
        try:
            text = self.error_path(sha256).read_text()
        except OSError:
            return None
        sess, _, message = text.partition("\n")
        return message if sess == session else None

    def wait_for(
        self,
        sha256: str,
        label: str,
        session: str,
        alive: Callable[[], bool] = lambda: True,
    ) -> Path:
        """Wait until another process (the loader's prefetcher) has put the chunk in the cache."""
        dest = self.path(sha256)
        delay, waited, warned = 0.002, 0.0, False
        while not dest.is_file():
            message = self.read_error(sha256, session)
            if message is not None:
                raise CorruptChunk(message) if message.startswith("corrupt") else DataError(message)
            if not alive():
                raise DataError(f"chunk {label}: the process fetching it is gone")
            time.sleep(delay)
            waited += delay
            delay = min(0.05, delay * 2)
            if waited > 60 and not warned:
                log.warning("still waiting for chunk %s to be downloaded after 60 s", label)
                warned = True
        return dest


class VerifiedMarks:
    """Per-machine record of chunk files whose checksum was verified, keyed by file identity."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else _cache_base() / "verified"
        self._seen: set[tuple[str, str, int, int, int]] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_seen": set()}

    def _marker(self, path: Path) -> Path:
        return self.root / hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()[:40]

    @staticmethod
    def _ident(sha256: str, st: os.stat_result) -> str:
        return f"{sha256} {st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_dev}"

    def is_verified(self, path: Path, sha256: str, st: os.stat_result) -> bool:
        if (str(path), sha256, st.st_size, st.st_mtime_ns, st.st_ino) in self._seen:
            return True
        try:
            return self._marker(path).read_text() == self._ident(sha256, st)
        except OSError:
            return False

    def mark(self, path: Path, sha256: str, st: os.stat_result) -> None:
        self._seen.add((str(path), sha256, st.st_size, st.st_mtime_ns, st.st_ino))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            marker = self._marker(path)
            tmp = marker.with_name(f".{marker.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(self._ident(sha256, st))
            os.replace(tmp, marker)
        except OSError as e:  # a read-only cache only costs re-checking
            log.debug("cannot record checksum mark for %s: %s", path, e)

    def block_map(self, path: Path, sha256: str, st: os.stat_result, count: int) -> Any:
        """A shared, writable map of ``count`` bytes, one per block of the file: 1 once some
        process of this machine has checked that block. Every reader of the file (DataLoader
        workers, ranks, later epochs) shares it, so each block is hashed once per machine even
        when no single reader reads the whole chunk. None if it cannot be made (then the reader
        keeps its own). A changed file (size, mtime, inode) gets a fresh map."""
        ident = hashlib.sha256(self._ident(sha256, st).encode()).hexdigest()[:16]
        where = Path(f"{self._marker(path)}-{ident}.blocks")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            log.debug("cannot share block checks of %s: %s", path, e)
            return None
        try:
            if os.fstat(fd).st_size != count:
                os.ftruncate(fd, count)  # zeros: nothing checked (same size for every process)
            return mmap.mmap(fd, count, access=mmap.ACCESS_WRITE)
        except OSError as e:
            log.debug("cannot share block checks of %s: %s", path, e)
            return None
        finally:
            os.close(fd)

    def open_verified(self, path: Path, sha256: str, label: str) -> Any:
        """A :class:`~benchkit.data.format.ChunkReader` on ``path``, checked unless already known good."""
        try:
            st = os.stat(path)
        except FileNotFoundError as e:
            raise CorruptChunk(f"chunk {label}: file {path} is missing") from e
        if self.is_verified(path, sha256, st):
            return ChunkReader(path, label=label)
        self.root.mkdir(parents=True, exist_ok=True)
        # one process checks a file at a time; the others then find the mark
        with process_lock(str(self._marker(path)) + ".lock"):
            if self.is_verified(path, sha256, st):
                return ChunkReader(path, label=label)
            reader = ChunkReader(path, expected_sha256=sha256, label=label)
            self.mark(path, sha256, st)
            return reader
