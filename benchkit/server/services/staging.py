"""Where upload bytes wait until their checksum is verified, and how they become visible.

With a local-directory store the staging area is a hidden folder inside the store
(``<store>/.staging``, on the same file system), so committing is one ``os.replace``: the
object appears whole or not at all, and its bytes are written once. With any other store
(S3, GCS) staging is ``<data dir>/staging`` and committing is the store's own atomic
``put_file`` (parts, then a manifest), after which the staged file is removed.

Staged single PUTs are named ``put-*``; upload sessions ``upload-<id>``. Nothing survives a
restart except upload sessions: :meth:`Staging.sweep` removes stray ``put-*`` files.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
from pathlib import Path

from benchkit.errors import StoreError
from benchkit.fsutil import fsync_dir
from benchkit.server.services.errors import Conflict, InsufficientStorage
from benchkit.store import LocalStore, Store, check_key

log = logging.getLogger(__name__)


class Staging:
    """Temporary files for uploads and the commit of a verified file into the store."""

    def __init__(self, store: Store, fallback_dir: Path, reserve_bytes: int = 0) -> None:
        self.store = store
        self.local = isinstance(store, LocalStore)
        self.root = store.root / ".staging" if isinstance(store, LocalStore) else fallback_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.reserve_bytes = reserve_bytes

    def put_path(self) -> Path:
        """A fresh path for one single-PUT body."""
        return self.root / f"put-{secrets.token_hex(12)}"

    def upload_path(self, upload_id: str) -> Path:
        return self.root / f"upload-{upload_id}"

    def parts_path(self, upload_id: str) -> Path:
        """The journal of a parallel session's parts (:mod:`benchkit.server.services.parts`)."""
        return self.root / f"upload-{upload_id}.parts"

    def check_room(self, incoming: int) -> None:
        """Refuse an upload of ``incoming`` more bytes that would leave less than the reserve."""
        free = shutil.disk_usage(self.root).free
        if incoming + self.reserve_bytes > free:
            raise InsufficientStorage(
                f"the server has {free // 2**20} MiB free, not enough for {incoming // 2**20} MiB "
                "more; free some space on the server or delete objects"
            )

    def commit(self, path: Path, object_key: str) -> None:
        """Make the verified file at ``path`` the object ``object_key`` (atomically); the
        staged file is gone afterwards."""
        if self.local:
            assert isinstance(self.store, LocalStore)
            dest = self.store.root / check_key(object_key)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
            except (NotADirectoryError, FileExistsError, IsADirectoryError) as e:
                raise Conflict(
                    "a key on this key's path is an object, or the key is a prefix of other keys "
                    "(a directory store cannot hold both 'a' and 'a/b')"
                ) from e
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise InsufficientStorage("no space left on the server") from e
                raise StoreError(f"cannot store '{object_key}': {e}") from e
            fsync_dir(dest.parent)
            return
        try:
            self.store.put_file(object_key, path)
        finally:
            path.unlink(missing_ok=True)

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove single-PUT leftovers of a previous run (their requests are gone)."""
        n = 0
        for p in self.root.glob("put-*"):
            p.unlink(missing_ok=True)
            n += 1
        if n:
            log.info("removed %d unfinished uploads left by the previous run", n)
        return n
