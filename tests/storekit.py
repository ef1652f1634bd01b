"""The store backends the fixtures run over, shared by tests/conftest.py and tests/store (the
contract suite adds GCS on its emulator). Each backend ``b`` has a fixture ``<b>_store_url``
(dashes as underscores) giving the URL of a fresh, empty store."""

from __future__ import annotations

import pytest

BACKENDS = [
    "local",
    "memory",
    "tensorstore-file",
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("http", marks=pytest.mark.server),
    pytest.param("http-pg", marks=pytest.mark.server),
]
GCS = pytest.param("gs", marks=pytest.mark.gcs)


def fresh_store_url(request) -> str:
    """The URL from the ``<backend>_store_url`` fixture of ``request.param``."""
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_store_url")
