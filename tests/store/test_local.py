"""What only the local directory store does: plain files readers can map, and its limits."""

from __future__ import annotations

import mmap
import os
import stat

import pytest

from benchkit.errors import ObjectNotFound, StoreError
from benchkit.store import LocalStore, open_store


def test_plain_path_and_file_url_open_a_local_store(tmp_path):
    assert isinstance(open_store(tmp_path / "a"), LocalStore)
    store = open_store(f"file://{tmp_path / 'b'}")
    assert isinstance(store, LocalStore) and store.root == tmp_path / "b"


def test_local_path_can_be_memory_mapped(tmp_path):
    store = LocalStore(tmp_path)
    store.put("chunks/0.bin", b"0123456789")
    path = store.local_path("chunks/0.bin")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m[2:5] == b"234"
    with pytest.raises(ObjectNotFound):
        store.local_path("chunks/1.bin")


def test_objects_are_plain_readable_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b.json", b"{}")
    mode = stat.S_IMODE(os.stat(tmp_path / "a" / "b.json").st_mode)
    assert mode == 0o644
    assert sorted(os.listdir(tmp_path / "a")) == ["b.json"]  # no temporary file left


def test_key_under_an_object_is_refused_clearly(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a", b"1")
    with pytest.raises(StoreError, match="cannot hold both") as info:
        store.put("a/b", b"2")
    assert "'a/b'" in str(info.value) and str(tmp_path) in str(info.value)
    store.put("d/e", b"1")
    with pytest.raises(StoreError, match="cannot hold both"):
        store.put("d", b"2")
    assert store.get("a") == b"1" and store.list() == ["a", "d/e"]


def test_uploading_a_directory_names_it(tmp_path):
    store = LocalStore(tmp_path / "store")
    with pytest.raises(StoreError, match="cannot upload") as info:
        store.put_file("x", tmp_path)
    assert str(tmp_path) in str(info.value)
    assert not store.exists("x")


def test_delete_prunes_empty_directories(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b/c/d", b"1")
    store.delete("a/b/c/d")
    assert os.listdir(tmp_path) == []


def test_unwritable_root_is_a_permission_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory modes")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(StoreError, match="writable"):
        LocalStore(ro / "store")
