"""Seam for the Bench server backend (``http(s)://``), which the server issue implements.

The server exposes the same key layout over a blob API; this client will implement
:class:`benchkit.store.base.Store` with ``requests`` and the API key from the credentials file.
"""

from __future__ import annotations

from benchkit.errors import UnsupportedStoreURL


class HttpStore:
    """Placeholder that fails clearly until the Bench server backend lands."""

    @classmethod
    def from_url(cls, url: str) -> HttpStore:
        raise UnsupportedStoreURL(
            f"store {url}: the Bench server backend (http/https) is not available in this "
            "version of BenchKit yet; use a directory, s3:// or gs:// store"
        )
