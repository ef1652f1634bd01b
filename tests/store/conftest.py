"""Fixtures of the store contract suite: a store of every backend, with small parts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from storekit import BACKENDS, GCS, fresh_store_url

from benchkit.store import LocalStore, Store, open_store
from benchkit.store.base import is_hidden
from benchkit.store.http import HttpStore
from benchkit.store.s3 import S3Store
from benchkit.store.tensorstore import TensorStoreStore

MiB = 1024 * 1024
#: Part size for the tensorstore backends in the contract suite, so a few MB cross several parts.
PART = MiB


def open_test_store(url: str, part_size: int = PART) -> Store:
    """Open ``url`` as the suite does: tensorstore backends with ``part_size`` parts."""
    if url.startswith("s3://"):
        return S3Store.from_url(url, part_size=part_size)
    if url.startswith(("memory://", "tensorstore+file://", "gs://")):
        return TensorStoreStore.from_url(url, part_size=part_size)
    if url.startswith(("http://", "https://")):
        return HttpStore.from_url(url, part_size=part_size)
    return open_store(url)


@pytest.fixture(params=[*BACKENDS, GCS])
def store_url(request):
    """The contract suite's backends: those of tests/conftest.py plus GCS on its emulator."""
    return fresh_store_url(request)


@pytest.fixture
def store(store_url):
    """An empty store of each backend (see ``store_url`` in tests/conftest.py)."""
    s = open_test_store(store_url)
    yield s
    s.close()


def _hidden_bytes(store: Store) -> int:
    """Bytes the store holds under hidden names (temporary files, parts), which listing hides;
    for a Bench server, the bytes of its unfinished upload sessions."""
    if isinstance(store, HttpStore):
        return sum(u["received"] for u in store.uploads())
    if isinstance(store, LocalStore):
        total = 0
        for dirpath, _, files in os.walk(store.root):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), store.root)
                if is_hidden(rel.replace(os.sep, "/")):
                    total += os.path.getsize(os.path.join(dirpath, name))
        return total
    assert isinstance(store, TensorStoreStore)  # S3Store too: it reads the same layout
    parts = sum(len(store._read(k).value) for k in store._raw_keys() if is_hidden(k))
    if isinstance(store, S3Store):
        parts += store.unfinished_bytes()  # the parts of multipart uploads never completed
    return parts


@pytest.fixture(scope="session")
def big_file(tmp_path_factory) -> Path:
    """A 200 MiB file of random bytes (written once per session)."""
    path = tmp_path_factory.mktemp("big") / "blob.bin"
    with open(path, "wb") as f:
        for _ in range(25):
            f.write(os.urandom(8 * MiB))
    return path


@pytest.fixture
def hidden_bytes():
    """A function giving the bytes a store holds under hidden names (temp files, parts)."""
    return _hidden_bytes
