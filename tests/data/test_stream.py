"""Streaming: exactly-once sharding over ranks and workers, shuffle, transforms, the classic API,
integrity errors, and the same through remote stores (their cache path)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from streamkit import N_SAMPLES, ids, make_dataset

import benchkit as bench
from benchkit.data.loader import StreamingDataLoader
from benchkit.errors import CorruptChunk, DataError, DatasetNotFound


@pytest.fixture
def local_url(tmp_path):
    url = str(tmp_path / "store")
    make_dataset(url, tmp_path)
    return url


def rank_ids(url, rank, world, workers, shuffle, drop_last, batch=4, seed=7, epoch=0):
    ds = bench.open_dataset(
        "toy",
        store=url,
        rank=rank,
        world_size=world,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    ds.set_epoch(epoch)
    loader = StreamingDataLoader(ds, batch_size=batch, num_workers=workers)
    got = ids(loader)
    assert len(got) == len(ds)
    assert len(loader) == -(-len(ds) // batch)
    return got


@pytest.mark.multiprocess
@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_exactly_once_over_ranks_and_workers(local_url, world, workers):
    for shuffle in (False, True):
        for drop_last in (False, True):
            per_rank = [
                rank_ids(local_url, r, world, workers, shuffle, drop_last) for r in range(world)
            ]
            assert len({len(p) for p in per_rank}) == 1, "every rank yields the same count"
            counts = Counter(x for p in per_rank for x in p)
            if drop_last:
                assert len(per_rank[0]) == N_SAMPLES // world
                assert all(v == 1 for v in counts.values())
            else:
                assert len(per_rank[0]) == -(-N_SAMPLES // world)
                assert set(counts) == set(range(N_SAMPLES))
                extra = sum(counts.values()) - N_SAMPLES
                assert extra == (-N_SAMPLES) % world
            if not shuffle and world == 1:
                assert per_rank[0] == list(range(N_SAMPLES))[: len(per_rank[0])]


def test_workers_deliver_the_same_order_as_the_plain_dataset(local_url):
    ds = bench.open_dataset("toy", store=local_url, shuffle=True, seed=3)
    plain = [s[0] for s in ds]
    ds.set_epoch(0)
    assert ids(StreamingDataLoader(ds, batch_size=5, num_workers=2)) == plain


def test_same_seed_same_order_and_epochs_differ(local_url):
    a = bench.open_dataset("toy", store=local_url, shuffle=True, seed=11)
    b = bench.open_dataset("toy", store=local_url, shuffle=True, seed=11)
    first = [s[0] for s in a]
    assert first == [s[0] for s in b]
    assert sorted(first) == list(range(N_SAMPLES))
    assert first != list(range(N_SAMPLES))
    # a finished pass moves on to the next epoch; set_epoch selects one explicitly
    assert a.epoch == 1
    second = [s[0] for s in a]
    assert sorted(second) == sorted(first) and second != first
    a.set_epoch(0)
    assert [s[0] for s in a] == first
    c = bench.open_dataset("toy", store=local_url, shuffle=True, seed=12)
    assert [s[0] for s in c] != first


def test_len_is_per_rank_and_defaults_come_from_the_environment(local_url, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = bench.open_dataset("toy", store=local_url)
    assert ds.topology() == (1, 2)
    assert len(ds) == 52
    assert [s[0] for s in ds] == list(range(1, N_SAMPLES, 2)) + [0]  # padded with the first sample
    assert len(bench.open_dataset("toy", store=local_url, drop_last=True)) == 51
    assert len(bench.open_dataset("toy", store=local_url, rank=0, world_size=1)) == N_SAMPLES


def test_transform_runs_on_each_sample_in_workers(local_url):
    def tag(i, name):
        return i * 10, f"{name}@{os.getpid()}"

    ds = bench.open_dataset("toy", store=local_url, transform=tag)
    out = [
        s
        for b in StreamingDataLoader(ds, batch_size=8, num_workers=2)
        for s in zip(*b, strict=False)
    ]
    assert sorted(int(i) for i, _ in out) == [10 * i for i in range(N_SAMPLES)]
    assert {name.split("@")[1] for _, name in out} - {str(os.getpid())}, "transform ran in workers"


class CatDogChunk(bench.IterableChunk):
    """The original's subclassing style."""

    def __init__(self, name, cloud, is_train):
        super().__init__(name, cloud)
        self.is_train = is_train

    def _data_iterator(self):
        for labels, files in super()._data_iterator():
            yield labels, files[0].read().decode(), self.is_train


def make_classic(url, tmp_path, n=30):
    pics = tmp_path / "pics"
    pics.mkdir()
    samples = []
    for i in range(n):
        p = pics / f"{'cat' if i % 2 else 'dog'}{i}.txt"
        p.write_text(f"pixels of {i}")
        samples.append(([i, i % 2], [bench.File(p)]))
    make_dataset(url, tmp_path, name="pets", samples=samples, chunk_bytes=200)


def test_classic_subclass_and_get_dataset(tmp_path):
    url = str(tmp_path / "store")
    make_classic(url, tmp_path)
    loader = bench.get_dataset(CatDogChunk, url, "pets", 4, 2, True, shuffle=True, seed=1)
    assert isinstance(loader, torch.utils.data.DataLoader)
    assert isinstance(loader.dataset, CatDogChunk) and loader.dataset.shuffle
    rows = []
    for labels, texts, train in loader:
        assert all(train)
        for i, t in zip(labels[0].tolist(), texts, strict=False):
            rows.append(i)
            assert t == f"pixels of {i}"
    assert sorted(rows) == list(range(30)) and rows != list(range(30))


def test_get_dataset_cloud_flags(tmp_path, monkeypatch):
    # cloud=False: the project's staging area; cloud=True: the configured store
    project = tmp_path / "proj"
    project.mkdir()
    (project / "benchkit.toml").write_text('[project]\nname = "p"\n')
    monkeypatch.chdir(project)
    make_dataset(str(project / ".benchkit" / "staging"), tmp_path, name="staged", n=9)
    assert ids(bench.get_dataset(None, False, "staged", 4, 0)) == list(range(9))
    store = tmp_path / "configured"
    monkeypatch.setenv("BENCHKIT_STORE", str(store))
    make_dataset(str(store), tmp_path, name="remote", n=5)
    assert ids(bench.get_dataset(bench.IterableChunk, True, "remote", 2, 0)) == list(range(5))
    with pytest.raises(DatasetNotFound, match="staged"):
        bench.get_dataset(None, True, "staged", 4, 0).dataset.index  # noqa: B018


def test_open_dataset_with_chunk_class_and_args(tmp_path):
    url = str(tmp_path / "store")
    make_classic(url, tmp_path, n=6)
    ds = bench.open_dataset(
        "pets", store=url, chunk_class=CatDogChunk, chunk_args=(False,), world_size=2, rank=1
    )
    assert isinstance(ds, CatDogChunk) and ds.store.url == str((tmp_path / "store").resolve())
    assert [row[0][0] for row in ds] == [1, 3, 5]
    with pytest.raises(DataError, match="IterableChunk subclass"):
        bench.open_dataset("pets", store=url, chunk_class=dict)


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(DatasetNotFound, match="nope"):
        len(bench.open_dataset("nope", store=str(tmp_path / "empty")))


def _chunk_path(url, index, k=1):
    return os.path.join(url, "datasets", "toy", index.chunks[k].file)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_chunk_is_detected_and_named(tmp_path, damage, workers):
    url = str(tmp_path / "store")
    index = make_dataset(url, tmp_path)
    path = _chunk_path(url, index)
    data = bytearray(Path(path).read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[:-7]
    with open(path, "wb") as f:
        f.write(data)
    ds = bench.open_dataset("toy", store=url)
    with pytest.raises(CorruptChunk) as err:
        ids(StreamingDataLoader(ds, batch_size=4, num_workers=workers))
    msg = str(err.value)
    assert index.chunks[1].file in msg and "'toy'" in msg and url in msg


def test_a_chunk_changed_after_a_good_read_is_checked_again(tmp_path):
    url = str(tmp_path / "store")
    index = make_dataset(url, tmp_path)
    assert len([s for s in bench.open_dataset("toy", store=url)]) == N_SAMPLES
    path = _chunk_path(url, index, 0)
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CorruptChunk, match=index.chunks[0].file):
        list(bench.open_dataset("toy", store=url))


@pytest.mark.multiprocess
def test_streams_from_every_store_backend(store_url, tmp_path):
    make_dataset(store_url, tmp_path)
    ds = bench.open_dataset("toy", store=store_url, shuffle=True, seed=5)
    plain = [s[0] for s in ds]
    assert sorted(plain) == list(range(N_SAMPLES))
    for world in (1, 2):
        got = []
        for r in range(world):
            d = bench.open_dataset(
                "toy",
                store=store_url,
                shuffle=True,
                seed=5,
                rank=r,
                world_size=world,
                drop_last=True,
            )
            got += ids(StreamingDataLoader(d, batch_size=4, num_workers=2))
        assert sorted(got) == sorted(set(got)) and len(got) == N_SAMPLES // world * world
        if world == 1:
            assert got == plain


def test_corrupt_chunk_in_a_remote_store_is_named(tmp_path):
    url = f"tensorstore+file://{tmp_path / 'ts'}"
    index = make_dataset(url, tmp_path)
    path = tmp_path / "ts" / "datasets" / "toy" / index.chunks[2].file
    data = bytearray(path.read_bytes())
    data[40] ^= 0x10
    path.write_bytes(bytes(data))
    for workers in (0, 2):
        with pytest.raises(CorruptChunk) as err:
            ids(
                StreamingDataLoader(
                    bench.open_dataset("toy", store=url), batch_size=4, num_workers=workers
                )
            )
        msg = str(err.value)
        assert index.chunks[2].file in msg and "'toy'" in msg and "tensorstore+file://" in msg


@pytest.mark.multiprocess
def test_plain_dataloader_forked_from_a_tensorstore_user_says_what_to_do(tmp_path):
    url = f"tensorstore+file://{tmp_path / 'ts'}"
    make_dataset(url, tmp_path)
    ds = bench.open_dataset("toy", store=url)
    assert len(ds) == N_SAMPLES  # this process has used tensorstore: forked workers cannot
    with pytest.raises(DataError, match="StreamingDataLoader"):
        ids(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1))
    # the streaming loader downloads in the main process and the workers read the cache
    assert sorted(ids(StreamingDataLoader(ds, batch_size=4, num_workers=1))) == list(
        range(N_SAMPLES)
    )
