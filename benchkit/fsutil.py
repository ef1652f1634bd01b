"""Local filesystem helpers shared by every layer: atomic writes, durable renames, one file
hash, writing many pieces in one call, one exclusive lock.

This module sits at the bottom of BenchKit (with ``errors``, ``units`` and ``settings``) and
imports nothing from BenchKit but ``errors``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

from benchkit.errors import LockTimeout

#: Block size for hashing files.
HASH_BLOCK = 8 * 1024 * 1024


class atomic_file:
    """Context manager writing a file atomically: temp file in the same directory, fsync, rename.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """

    def __init__(
        self, path: str | os.PathLike[str], mode: int = 0o644, *, fsync: bool = True
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.fsync = fsync  # False: the caller makes the file durable itself (see sync_file)
        self._tmp: str | None = None
        self._f: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        for attempt in range(3):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, self._tmp = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
                )
                break
            except FileNotFoundError:
                # a concurrent delete pruned the (then empty) directory: make it again
                if attempt == 2:
                    raise
        os.fchmod(fd, self.mode)
        self._f = os.fdopen(fd, "wb")
        return self._f

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._f is not None and self._tmp is not None
        try:
            if exc_type is None:
                self._f.flush()
                if self.fsync:
                    os.fsync(self._f.fileno())
            self._f.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
                if self.fsync:
                    fsync_dir(self.path.parent)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)


def sync_file(path: str | os.PathLike[str]) -> None:
    """Make a file's data durable (``fsync``), whichever process wrote it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def advise_willneed(path: str | os.PathLike[str]) -> None:
    """Ask the kernel to start reading ``path`` into the page cache now, without waiting.

    A hint only: errors are ignored (the real read reports them)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, AttributeError):
        pass
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened or synced)."""
    with contextlib.suppress(OSError):
        sync_file(path)


#: buffers per ``writev`` call (Linux's IOV_MAX; fewer where the system says so; sysconf
#: answers -1 where it sets no limit)
_IOV_MAX = max(1, min(1024, os.sysconf("SC_IOV_MAX"))) if hasattr(os, "sysconf") else 1


def write_all(fd: int, pieces: list[bytes] | list[memoryview]) -> int:
    """Write ``pieces`` one after another at ``fd``'s position with as few system calls as
    possible (``writev``, no joined copy), going on after a short write; returns the bytes
    written. Linear in the number of pieces, however small they are."""
    views = [memoryview(p) for p in pieces if len(p)]
    writev = getattr(os, "writev", None)
    total = i = 0  # views[:i] are written
    while i < len(views):
        done = writev(fd, views[i : i + _IOV_MAX]) if writev else os.write(fd, views[i])
        total += done
        while done:  # step past what was written, keep the rest of a piece written in part
            if done >= len(views[i]):
                done -= len(views[i])
                i += 1
            else:
                views[i], done = views[i][done:], 0
    return total


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in blocks (memory stays bounded whatever its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(
    path: str | os.PathLike[str], timeout: float | None = None, what: str = ""
) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created with its directory if missing)
    across processes and threads. ``timeout`` seconds (None: wait forever) then
    :class:`LockTimeout`, whose message names ``what`` the lock protects and the lock file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if timeout is None else timeout)
    try:
        lock.acquire()
    except Timeout:
        raise LockTimeout(
            f"{what or 'a BenchKit lock'} is held by another process (lock file {path}); "
            "wait for it to finish, or remove the lock file if no BenchKit process is running"
        ) from None
    try:
        yield
    finally:
        lock.release()
