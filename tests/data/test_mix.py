"""Mixing datasets: realised proportions, the epoch's definition, determinism, coverage, exactly-once
over ranks and workers, and exact resume (in a new process, with another world size, under torchrun)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from streamkit import ids, make_dataset

import benchkit as bench
from benchkit.data.loader import StreamingDataLoader
from benchkit.data.plan import MixedOrder
from benchkit.errors import DataError

#: dataset "a" holds ids 0..299, "b" ids 1000..1099: an id says which dataset it came from
SIZES = {"a": 300, "b": 100}
BASE = {"a": 0, "b": 1000}
WEIGHTS = {"a": 0.7, "b": 0.3}
CHILD = Path(__file__).with_name("mix_child.py")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    u = str(tmp / "store")
    for name, n in SIZES.items():
        samples = ((BASE[name] + i, f"{name}-{i}") for i in range(n))
        make_dataset(u, tmp, name=name, samples=samples, chunk_bytes=600)
    return u


def which(i: int) -> str:
    return "b" if i >= 1000 else "a"


def stream(url, **kw):
    return [s[0] for s in bench.mix(WEIGHTS, url, **kw)]


def test_realised_proportions_follow_the_weights_at_every_point(url):
    got = stream(url, shuffle=True, seed=3)
    for upto in (100, 200, len(got)):
        counts = Counter(which(i) for i in got[:upto])
        assert abs(counts["a"] - 0.7 * upto) <= 2 and abs(counts["b"] - 0.3 * upto) <= 2


def test_an_epoch_ends_when_the_first_dataset_would_run_out(url):
    got = stream(url, shuffle=True, seed=3)
    counts = Counter(which(i) for i in got)
    # b (100 samples at 0.3) runs out first: every b sample once, a at 0.7/0.3 of that
    assert sorted(i for i in got if i >= 1000) == list(range(1000, 1100))
    assert len(set(got)) == len(got), "nothing repeats within an epoch"
    assert abs(counts["a"] - 100 * 7 / 3) <= 2
    assert len(bench.mix(WEIGHTS, url)) == len(got)


def test_a_set_epoch_length_repeats_a_dataset_with_a_new_order_each_time(url):
    got = stream(url, shuffle=True, seed=3, epoch_samples=1000)
    b = [i for i in got if i >= 1000]
    assert len(got) == 1000 and abs(len(b) - 300) <= 2
    first, second = b[:100], b[100:200]
    assert sorted(first) == sorted(second) == list(range(1000, 1100))  # whole passes of b
    assert first != second, "each pass over b has its own order"


def test_same_seed_same_order_other_epochs_and_seeds_differ(url):
    ds = bench.mix(WEIGHTS, url, shuffle=True, seed=5)
    e0 = [s[0] for s in ds]
    e1 = [s[0] for s in ds]  # a finished pass moves to the next epoch
    assert e0 == stream(url, shuffle=True, seed=5)
    assert e0 != e1 and Counter(map(which, e0)) == Counter(map(which, e1))
    assert e0 != stream(url, shuffle=True, seed=6)
    ds.set_epoch(0)
    assert [s[0] for s in ds] == e0


def test_without_shuffle_datasets_interleave_evenly_in_their_stored_order(url):
    got = stream(url)
    assert [i for i in got if i < 1000] == list(range(len([i for i in got if i < 1000])))
    assert [i for i in got if i >= 1000] == list(range(1000, 1100))
    gaps = np.diff([k for k, i in enumerate(got) if i >= 1000])
    assert gaps.max() <= 4, "b is spread through the epoch, not bunched"


@pytest.mark.multiprocess
@pytest.mark.parametrize("world,workers", [(1, 2), (2, 0), (2, 2), (3, 1)])
def test_ranks_and_workers_split_the_mix_exactly_once(url, world, workers):
    reference = stream(url, shuffle=True, seed=9)
    per_rank = []
    for r in range(world):
        ds = bench.mix(WEIGHTS, url, shuffle=True, seed=9, rank=r, world_size=world, drop_last=True)
        got = ids(StreamingDataLoader(ds, batch_size=4, num_workers=workers))
        assert len(got) == len(ds)
        per_rank.append(got)
    assert len({len(p) for p in per_rank}) == 1
    union = [i for p in per_rank for i in p]
    assert len(union) == len(set(union)) == len(reference) // world * world
    assert set(union) <= set(reference)
    if world == 1:
        assert per_rank[0] == reference, "workers deliver the order of the plain iteration"


def test_state_dict_resumes_exactly_and_refuses_another_mix(url):
    full = stream(url, shuffle=True, seed=2)
    ds = bench.mix(WEIGHTS, url, shuffle=True, seed=2)
    loader = StreamingDataLoader(ds, batch_size=5, num_workers=2)
    it = iter(loader)
    head = ids(next(it) for _ in range(7))
    state = loader.state_dict()
    del it
    json.dumps(state)
    assert state["consumed"] == 35 and head == full[:35]
    again = StreamingDataLoader(bench.mix(WEIGHTS, url, shuffle=True, seed=2), batch_size=5)
    again.load_state_dict(state)
    assert ids(again) == full[35:]
    with pytest.raises(DataError, match="changed since"):
        bench.mix({"a": 0.5, "b": 0.5}, url).load_state_dict(state)
    with pytest.raises(DataError, match="not a mixed streaming state"):
        bench.mix(WEIGHTS, url).load_state_dict(bench.open_dataset("a", url).state_dict())


@pytest.mark.parametrize("old_world,new_world", [(2, 3), (3, 1)])
def test_resume_with_another_world_size_loses_and_repeats_nothing(url, old_world, new_world):
    consumed, states = [], []
    for r in range(old_world):
        ds = bench.mix(WEIGHTS, url, shuffle=True, seed=4, rank=r, world_size=old_world)
        loader = StreamingDataLoader(ds, batch_size=4, num_workers=1)
        it = iter(loader)
        consumed += ids(next(it) for _ in range(3))
        states.append(loader.state_dict())
        del it
    assert all(s == states[0] for s in states)
    rest = []
    for r in range(new_world):
        ds = bench.mix(WEIGHTS, url, shuffle=True, seed=4, rank=r, world_size=new_world)
        loader = StreamingDataLoader(ds, batch_size=4, num_workers=1)
        loader.load_state_dict(states[0])
        rest += ids(loader)
    total = len(stream(url, shuffle=True, seed=4))
    counts = Counter(consumed + rest)
    assert len(counts) == total
    assert sum(counts.values()) - total == (-(total - len(consumed))) % new_world  # padding only


class Doubled(bench.IterableChunk):
    def _data_iterator(self):
        for i, name in super()._data_iterator():
            yield 2 * i, name


def test_bad_mixes_are_refused_with_a_clear_message(url):
    with pytest.raises(DataError, match="_data_iterator override"):
        bench.mix(WEIGHTS, url, dataset_options={"a": {"chunk_class": Doubled}})
    with pytest.raises(DataError, match="positive"):
        bench.mix({"a": 0.7, "b": 0}, url)
    with pytest.raises(DataError, match="at least one dataset"):
        bench.mix({}, url)
    with pytest.raises(ValueError):
        MixedOrder([1.0, -1.0], 10)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_torchrun_two_ranks_two_workers_mix_and_resume_exactly(url, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(CHILD),
            url,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["state"] == ranks[1]["state"], "every rank saves the same state"
    seen = [i for r in ranks for i in r["head"] + r["rest"]]
    reference = stream(url, shuffle=True, seed=21)
    assert Counter(seen) == Counter(reference[: len(reference) // 2 * 2])
    assert all(len(r["head"]) + len(r["rest"]) == len(reference) // 2 for r in ranks)


def test_run_loader_takes_a_dict_of_weights(url):
    from accelerate.state import AcceleratorState, GradientState, PartialState

    try:
        with bench.Run({"batch_size": 4, "seed": 3}, name="mixed", store=url, cpu=True) as run:
            loader = run.loader(WEIGHTS, shuffle=True, num_workers=1)
            got = ids(loader)
            assert got == stream(url, shuffle=True, seed=3)
            assert loader.state_dict()["mix"] == WEIGHTS
            assert len(ids(run.loader(WEIGHTS, epoch_samples=40))) == 40
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()


@pytest.mark.multiprocess
def test_mix_from_a_remote_store_downloads_for_its_workers(tmp_path):
    remote = f"tensorstore+file://{tmp_path / 'ts'}"
    for name, n in SIZES.items():
        samples = ((BASE[name] + i, f"{name}-{i}") for i in range(n))
        make_dataset(remote, tmp_path, name=name, samples=samples, chunk_bytes=600)
    ds = bench.mix(WEIGHTS, remote, shuffle=True, seed=8)
    assert len(ds) > 0  # this process has used tensorstore: forked workers wait for its downloads
    got = ids(StreamingDataLoader(ds, batch_size=4, num_workers=2))
    assert got == [s[0] for s in bench.mix(WEIGHTS, remote, shuffle=True, seed=8)]
