"""Exact mid-epoch resume: in a new process, through workers, with another world size, with accelerate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from streamkit import N_SAMPLES, ids, make_dataset

import benchkit as bench
from benchkit.data.loader import StreamingDataLoader
from benchkit.errors import DataError

CHILD = Path(__file__).with_name("resume_child.py")


@pytest.fixture
def url(tmp_path):
    u = str(tmp_path / "store")
    make_dataset(u, tmp_path)
    return u


def reference(url, epoch=2, **kw):
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=7, **kw)
    ds.set_epoch(epoch)
    return [s[0] for s in ds]


def run_child(url, state, tmp_path, workers, batch=4, rank=0, world=1):
    state_file, out_file = tmp_path / "state.pt", tmp_path / "rest.json"
    torch.save(state, state_file)
    subprocess.run(
        [
            sys.executable,
            str(CHILD),
            url,
            str(state_file),
            str(out_file),
            str(workers),
            str(batch),
            str(rank),
            str(world),
        ],
        check=True,
        timeout=120,
    )
    return json.loads(out_file.read_text())


@pytest.mark.multiprocess
def test_dataset_resumes_in_a_new_process_with_exactly_the_rest(url, tmp_path):
    full = reference(url)
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=7)
    ds.set_epoch(2)
    it = iter(ds)
    seen = [next(it)[0] for _ in range(37)]
    state = ds.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 37
    json.dumps(state)  # plain values
    assert seen == full[:37]
    assert run_child(url, state, tmp_path, workers=-1) == full[37:]


@pytest.mark.multiprocess
def test_loader_with_workers_resumes_in_a_new_process(url, tmp_path):
    full = reference(url)
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=7)
    ds.set_epoch(2)
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=3)
    it = iter(loader)
    seen = ids(next(it) for _ in range(6))  # the workers have prefetched more than this
    state = loader.state_dict()
    del it
    assert seen == full[:24] and state["consumed"] == 24
    # the new process uses another number of workers: the order does not depend on it
    assert run_child(url, state, tmp_path, workers=2) == full[24:]


@pytest.mark.parametrize("old_world,new_world", [(2, 3), (3, 2)])
def test_resume_with_another_world_size_loses_and_repeats_nothing(url, old_world, new_world):
    kw = dict(shuffle=True, seed=7)
    consumed, states = [], []
    for r in range(old_world):
        ds = bench.open_dataset("toy", store=url, rank=r, world_size=old_world, **kw)
        loader = StreamingDataLoader(ds, batch_size=4, num_workers=1)
        it = iter(loader)
        consumed += ids(next(it) for _ in range(3))
        states.append(loader.state_dict())
        del it
    assert all(s == states[0] for s in states), "every rank saves the same state"
    rest = []
    for r in range(new_world):
        ds = bench.open_dataset("toy", store=url, rank=r, world_size=new_world)
        loader = StreamingDataLoader(ds, batch_size=4, num_workers=1)
        loader.load_state_dict(states[0])
        rest += ids(loader)
    counts = Counter(consumed + rest)
    assert set(counts) == set(range(N_SAMPLES))
    left = N_SAMPLES - len(consumed)
    assert sum(counts.values()) - N_SAMPLES == (-left) % new_world  # only the padding repeats


def test_state_after_a_finished_epoch_and_set_epoch(url):
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=7)
    loader = StreamingDataLoader(ds, batch_size=10, num_workers=0)
    batches = 0
    for _ in loader:
        batches += 1
        state = loader.state_dict()
    assert batches == 11 and state["epoch"] == 0 and state["consumed"] == N_SAMPLES
    # resuming a finished epoch yields nothing more of it
    fresh = StreamingDataLoader(bench.open_dataset("toy", store=url), batch_size=10)
    fresh.load_state_dict(state)
    fresh.set_epoch(0)
    assert ids(fresh) == []
    # after the pass the loader is on the next epoch
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["consumed"] == 0


@pytest.mark.multiprocess
def test_persistent_workers_follow_epochs_and_resume(url):
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=7)
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    e0, e1 = ids(loader), ids(loader)
    assert e0 == reference(url, epoch=0) and e1 == reference(url, epoch=1) and e0 != e1
    loader.set_epoch(2)
    it = iter(loader)
    first = ids(next(it) for _ in range(5))
    state = loader.state_dict()
    loader.load_state_dict(state)
    assert first + ids(loader) == reference(url, epoch=2)


class Doubler(bench.IterableChunk):
    def _data_iterator(self):
        for i, name in super()._data_iterator():
            yield i * 2, name


def test_subclass_iterator_resumes_exactly(url):
    def run(state=None, stop=None):
        ds = bench.open_dataset("toy", store=url, chunk_class=Doubler, shuffle=True, seed=3)
        loader = StreamingDataLoader(ds, batch_size=3, num_workers=2)
        if state:
            loader.load_state_dict(state)
        out = []
        for b in loader:
            out += [int(x) for x in b[0]]
            if stop and len(out) >= stop:
                return out, loader.state_dict()
        return out, None

    full, _ = run()
    head, state = run(stop=30)
    rest, _ = run(state=state)
    assert head + rest == full and sorted(full) == [2 * i for i in range(N_SAMPLES)]


def test_load_state_rejects_other_datasets(url, tmp_path):
    state = bench.open_dataset("toy", store=url).state_dict()
    other = str(tmp_path / "other")
    make_dataset(other, tmp_path / "o", n=50)
    with pytest.raises(DataError, match="changed since"):
        bench.open_dataset("toy", store=other).load_state_dict(state)
    make_dataset(other, tmp_path / "o2", name="pets", n=5)
    with pytest.raises(DataError, match="belongs to dataset 'toy'"):
        bench.open_dataset("pets", store=other).load_state_dict(state)
    with pytest.raises(DataError, match="not a streaming state"):
        bench.open_dataset("toy", store=url).load_state_dict({"epoch": 1})


def test_accelerate_passes_the_loader_through_and_saves_its_state(url, tmp_path):
    from accelerate import Accelerator

    full = reference(url, epoch=0)
    acc = Accelerator(cpu=True)
    ds = bench.open_dataset("toy", store=url, shuffle=True, seed=7)
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=1)
    prepared = acc.prepare(loader)
    assert prepared is loader, "accelerate must not re-wrap (and re-shard) the loader"
    it = iter(prepared)
    seen = ids(next(it) for _ in range(4))
    del it
    acc.save_state(str(tmp_path / "ckpt"))

    acc2 = Accelerator(cpu=True)
    loader2 = acc2.prepare(
        StreamingDataLoader(bench.open_dataset("toy", store=url), batch_size=4, num_workers=1)
    )
    acc2.load_state(str(tmp_path / "ckpt"))
    assert seen + ids(loader2) == full
