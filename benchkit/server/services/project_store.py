"""One project's objects as a :class:`~benchkit.store.Store`, for server-side code that uses
BenchKit's own modules (code manifests, run records, job logs) on a project's blobs.

Keys are relative to the project (``projects/<id>/`` in the server's store) and checked like
the blob API checks them; writes keep the catalog in step exactly as a PUT through the API
does (mark pending, write, settle).
"""

from __future__ import annotations

import os
from pathlib import Path

from benchkit.server.services.catalog import Catalog, project_prefix
from benchkit.store import ObjectInfo, Store
from benchkit.store.base import check_prefix
from benchkit.store.http import check_remote_key


class ProjectStore(Store):
    """The objects of project ``project_id`` in the server's ``store``."""

    def __init__(self, store: Store, catalog: Catalog, project_id: str) -> None:
        self.inner = store
        self._catalog = catalog
        self.project_id = project_id
        self.prefix = project_prefix(project_id)
        self.url = f"project {project_id}"

    def _key(self, key: str) -> str:
        return self.prefix + check_remote_key(key)

    def _write(self, key: str, write) -> None:
        items = self._catalog.mark(self.project_id, [key])
        write(self._key(key))
        self._catalog.settle(self.project_id, items, written=key)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._write(key, lambda k: self.inner.put(k, data))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._write(key, lambda k: self.inner.put_file(k, path))

    def get(self, key: str) -> bytes:
        return self.inner.get(self._key(key))

    def get_range(self, key: str, start: int, end: int) -> bytes:
        return self.inner.get_range(self._key(key), start, end)

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(self._key(key))

    def stat(self, key: str) -> ObjectInfo:
        info = self.inner.stat(self._key(key))
        return ObjectInfo(key, info.size)

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        cut = len(self.prefix)
        return [k[cut:] for k in self.inner.list(self.prefix + prefix)]

    def delete(self, key: str) -> bool:
        items = self._catalog.mark(self.project_id, [key])
        gone = self.inner.delete(self._key(key))
        self._catalog.settle(self.project_id, items)
        return gone

    def not_found(self, key: str, hint: str = ""):
        return self.inner.not_found(self.prefix + key, hint)
