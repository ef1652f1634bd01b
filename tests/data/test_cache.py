"""The remote chunk cache: verified atomic downloads, one per chunk, LRU eviction under the size
limit that never evicts a chunk in use, checksum marks, and streaming through a small cache."""

from __future__ import annotations

import os
import queue
import threading

import pytest
from streamkit import N_SAMPLES, ids, make_dataset

import benchkit as bench
from benchkit.data.cache import ChunkCache, VerifiedMarks, pin, unpin
from benchkit.data.index import dataset_prefix
from benchkit.data.loader import StreamingDataLoader
from benchkit.errors import CorruptChunk
from benchkit.store.local import LocalStore


class FarStore(LocalStore):
    """A real directory store that offers no local paths, so readers must go through the cache
    (like S3), and counts whole-object downloads."""

    def __init__(self, root):
        super().__init__(root)
        self.url = f"far://{self.root}"
        self.downloads: list[str] = []
        self._count_lock = threading.Lock()

    def local_path(self, key):
        return None

    def iter_blocks(self, key, block_size=1 << 20):
        with self._count_lock:
            self.downloads.append(key)
        yield from super().iter_blocks(key, block_size)


@pytest.fixture
def far(tmp_path):
    store = FarStore(tmp_path / "far")
    index = make_dataset(str(store.root), tmp_path, n=200, chunk_bytes=200)
    return store, index


def chunk_args(index, k):
    c = index.chunks[k]
    return dataset_prefix("toy") + c.file, c.sha256, c.bytes, f"'{c.file}' of dataset 'toy'"


def test_fetch_downloads_once_even_when_many_ask_at_once(far):
    store, index = far
    cache = ChunkCache(store, limit="1GB")
    paths = []
    threads = [
        threading.Thread(target=lambda: paths.append(cache.fetch(*chunk_args(index, 0))))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and len(store.downloads) == 1
    assert (
        paths[0].read_bytes()
        == (store.root / dataset_prefix("toy") / index.chunks[0].file).read_bytes()
    )
    assert [p.name for p in cache.root.iterdir() if p.suffix == ".tmp"] == []
    cache.fetch(*chunk_args(index, 0))
    assert len(store.downloads) == 1


def test_a_corrupt_download_raises_and_leaves_nothing(far):
    store, index = far
    path = store.root / dataset_prefix("toy") / index.chunks[1].file
    data = bytearray(path.read_bytes())
    data[30] ^= 0x40
    path.write_bytes(bytes(data))
    cache = ChunkCache(store, limit="1GB")
    with pytest.raises(CorruptChunk, match=index.chunks[1].file):
        cache.fetch(*chunk_args(index, 1))
    assert not cache.has(index.chunks[1].sha256)
    assert [p for p in cache.root.iterdir() if p.suffix in (".bkc", ".tmp")] == []


def test_eviction_is_lru_under_the_limit_and_spares_chunks_in_use(far):
    store, index = far
    size = max(c.bytes for c in index.chunks[:6])
    cache = ChunkCache(store, limit=int(size * 3.5))
    shas = [index.chunks[k].sha256 for k in range(6)]
    for k in range(3):
        cache.fetch(*chunk_args(index, k))
        os.utime(cache.path(shas[k]), ns=(10**9 * (k + 1), 10**9 * (k + 1)))  # distinct ages
    cache.touch(shas[0])  # chunk 0 is now the most recently used
    cache.fetch(*chunk_args(index, 3))
    assert [cache.has(s) for s in shas[:4]] == [True, False, True, True]  # chunk 1 was the LRU
    assert cache.usage() <= cache.limit
    fd = pin(cache.path(shas[2]))  # oldest now, but in use
    try:
        os.utime(cache.path(shas[2]), ns=(1, 1))
        cache.fetch(*chunk_args(index, 4))
        assert cache.has(shas[2]) and not cache.has(shas[0]) and cache.has(shas[4])
    finally:
        unpin(fd)
    cache.fetch(*chunk_args(index, 5))
    assert not cache.has(shas[2])  # released, so evictable again
    assert cache.usage() <= cache.limit


def test_cache_limit_comes_from_the_setting(far, monkeypatch):
    monkeypatch.setenv("BENCHKIT_CACHE_LIMIT", "3MB")
    assert ChunkCache(far[0]).limit == 3_000_000
    assert ChunkCache(far[0], limit="2GiB").limit == 2 * 2**30


def test_verified_marks_skip_rechecks_until_the_file_changes(tmp_path):
    url = str(tmp_path / "store")
    index = make_dataset(url, tmp_path, n=20)
    path = tmp_path / "store" / dataset_prefix("toy") / index.chunks[0].file
    marks = VerifiedMarks(tmp_path / "marks")
    sha = index.chunks[0].sha256
    assert not marks.is_verified(path, sha, os.stat(path))
    marks.open_verified(path, sha, "c0").close()
    other = VerifiedMarks(tmp_path / "marks")  # another process: only the marker file
    assert other.is_verified(path, sha, os.stat(path))
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert not other.is_verified(path, sha, os.stat(path))
    with pytest.raises(CorruptChunk, match="c0"):
        other.open_verified(path, sha, "c0")


@pytest.mark.multiprocess
@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_through_a_small_cache_stays_exact_and_bounded(far, workers):
    store, index = far
    sizes = sorted(c.bytes for c in index.chunks)
    limit = sum(sizes[-20:])  # room for 20 chunks: the window, the prefetch depth and a little more
    assert len(index.chunks) > 30
    ds = bench.open_dataset("toy", store=store, shuffle=True, seed=4, cache_limit=limit)
    plain = [
        s[0] for s in bench.open_dataset("toy", store=str(store.root), shuffle=True, seed=4)
    ]  # in place
    got = ids(StreamingDataLoader(ds, batch_size=5, num_workers=workers))
    assert got == plain and sorted(got) == list(range(200))
    cache = ds.chunks.cache
    assert cache.usage() <= limit
    assert len(list(cache.root.glob("*.bkc"))) < len(index.chunks), "older chunks were evicted"


def test_first_sample_does_not_download_the_whole_dataset(far):
    store, index = far
    ds = bench.open_dataset("toy", store=store, shuffle=True, seed=1)
    it = iter(ds)
    next(it)
    fetched = len(set(store.downloads))
    assert fetched <= 3 * ds.shuffle_window < len(index.chunks)
    rest = list(it)
    assert len(rest) == 199 and len(set(store.downloads)) == len(index.chunks)


@pytest.mark.s3
@pytest.mark.multiprocess
def test_streams_from_s3_through_the_cache(s3_store_url, tmp_path):
    make_dataset(s3_store_url, tmp_path)
    got = []
    for r in range(2):
        ds = bench.open_dataset(
            "toy", store=s3_store_url, shuffle=True, seed=9, rank=r, world_size=2
        )
        got += ids(StreamingDataLoader(ds, batch_size=4, num_workers=2))
    assert sorted(set(got)) == list(range(N_SAMPLES)) and len(got) == N_SAMPLES + 1
    assert not ds.chunks.local and ds.chunks.cache.usage() > 0


def _take_lock(path, out):
    from benchkit.data.cache import process_lock

    with process_lock(path):
        out.put("got it")


@pytest.mark.multiprocess
def test_a_child_forked_while_a_thread_holds_a_lock_waits_instead_of_deadlocking(tmp_path):
    import multiprocessing

    from benchkit.data.cache import process_lock

    lock = tmp_path / "x.lock"
    held, release = threading.Event(), threading.Event()

    def holder():
        with process_lock(lock):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_take_lock, args=(lock, out))
    child.start()  # forked while the lock is held by a thread of this process
    with pytest.raises(queue.Empty):  # the child is still waiting for the lock
        out.get(timeout=0.5)
    release.set()
    t.join()
    assert out.get(timeout=20) == "got it"
    child.join(20)
    assert child.exitcode == 0
