"""Stores: one interface (:class:`Store`), a backend per URL scheme.

=====================================  ==============================================
URL                                    backend
=====================================  ==============================================
``/path`` or ``file:///path``          :class:`LocalStore`, plain files (the default)
``memory://name``                      tensorstore ``memory`` driver (tests)
``tensorstore+file:///path``           tensorstore ``file`` driver (contract tests)
``s3://bucket/prefix``                 :class:`~benchkit.store.s3.S3Store` (boto3; same layout)
``gs://bucket/prefix``                 tensorstore ``gcs`` driver
``http(s)://host[:port]``              a Bench server (``benchkit server``)
=====================================  ==============================================
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

from benchkit.errors import UnsupportedStoreURL
from benchkit.fsutil import atomic_file
from benchkit.settings import load_settings
from benchkit.store.base import DEFAULT_PART_SIZE, ObjectInfo, Store, check_key
from benchkit.store.local import LocalStore

__all__ = [
    "DEFAULT_PART_SIZE",
    "LocalStore",
    "ObjectInfo",
    "SUPPORTED_SCHEMES",
    "Store",
    "atomic_file",
    "check_key",
    "open_store",
]

SUPPORTED_SCHEMES = ("file", "memory", "tensorstore+file", "s3", "gs", "http", "https")

_memory_stores: dict[str, Store] = {}
_memory_lock = threading.Lock()


def open_store(url: str | os.PathLike[str] | Store | None = None) -> Store:
    """Open the store named by ``url``; ``None`` means the configured one (see ``benchkit config``)."""
    if isinstance(url, Store):
        return url
    if url is None:
        url = load_settings().store
    url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise UnsupportedStoreURL(
            f"empty store URL; supported schemes: {', '.join(SUPPORTED_SCHEMES)}"
        )
    url = url.strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "":
        return LocalStore(Path(url))
    if scheme == "file":
        return LocalStore(Path(urlsplit(url).path))
    if scheme == "s3":
        from benchkit.store.s3 import S3Store

        return S3Store.from_url(url)
    if scheme in ("memory", "tensorstore+file", "gs"):
        from benchkit.store.tensorstore import TensorStoreStore

        if scheme == "memory":
            # one store per name and process, like a module-level dict
            with _memory_lock:
                if url not in _memory_stores:
                    _memory_stores[url] = TensorStoreStore.from_url(url)
                return _memory_stores[url]
        return TensorStoreStore.from_url(url)
    if scheme in ("http", "https"):
        from benchkit.store.http import HttpStore

        return HttpStore.from_url(url)
    raise UnsupportedStoreURL(
        f"unsupported store URL {url!r} (scheme {scheme!r}); supported: a directory path, "
        + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
    )
