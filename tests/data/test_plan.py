"""The epoch plan (pure index math): global order, sharding, padding, resume positions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from benchkit.data.plan import GlobalOrder, Shard, samples_per_rank

SIZES = [7, 5, 9, 3, 8, 6, 4]  # 42 samples in uneven chunks


def flat(order: GlobalOrder, positions) -> list[tuple[int, int]]:
    c, i = order.lookup(np.asarray(positions, dtype=np.int64))
    return list(zip(c.tolist(), i.tolist(), strict=False))


def rank_order(order, rank, world, workers=1, block=1, drop_last=False, start=0):
    """A rank's samples in the order its DataLoader delivers them (round-robin worker blocks)."""
    streams = []
    for w in range(workers):
        sh = Shard(rank, world, w, workers, block, drop_last)
        pos = [p for seg in sh.positions(order.total, start) for p in seg.tolist()]
        streams.append([pos[k : k + block] for k in range(0, len(pos), block)])
    out = []
    for turn in range(max(len(s) for s in streams)):
        for s in streams:
            if turn < len(s):
                out.extend(s[turn])
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_global_order_is_a_permutation(shuffle):
    order = GlobalOrder(SIZES, seed=3, epoch=1, shuffle=shuffle, window=3)
    samples = flat(order, range(order.total))
    assert sorted(samples) == sorted((c, i) for c, n in enumerate(SIZES) for i in range(n))
    if not shuffle:
        assert samples == [(c, i) for c, n in enumerate(SIZES) for i in range(n)]


def test_shuffle_is_deterministic_and_differs_across_epochs_and_seeds():
    a = flat(GlobalOrder(SIZES, seed=7, epoch=0, shuffle=True), range(42))
    assert a == flat(GlobalOrder(SIZES, seed=7, epoch=0, shuffle=True), range(42))
    assert a != flat(GlobalOrder(SIZES, seed=7, epoch=1, shuffle=True), range(42))
    assert a != flat(GlobalOrder(SIZES, seed=8, epoch=0, shuffle=True), range(42))


def test_shuffle_window_bounds_the_chunks_in_play():
    order = GlobalOrder([10] * 12, seed=1, shuffle=True, window=4)
    for w in range(order.num_windows):
        lo, hi = order.window_starts[w], order.window_starts[w + 1]
        chunks = {c for c, _ in flat(order, range(lo, hi))}
        assert chunks == set(order.window_chunks(w).tolist())
        assert len(chunks) == 4


def test_first_use_lists_every_chunk_once_in_plan_order():
    order = GlobalOrder(SIZES, seed=5, shuffle=True, window=3)
    uses = order.first_use()
    assert sorted(uses) == list(range(len(SIZES)))
    seen = []
    for c, _ in flat(order, range(order.total)):
        if c not in seen:
            seen.append(c)
    assert uses == seen
    # from the middle: only what is still ahead
    mid = order.total // 2
    ahead = []
    for c, _ in flat(order, range(mid, order.total)):
        if c not in ahead:
            ahead.append(c)
    assert order.first_use(mid) == ahead


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("block", [1, 4])
def test_exactly_once_across_ranks_and_workers(world, workers, block):
    total = 42
    for drop_last in (False, True):
        per_rank = samples_per_rank(total, 0, world, drop_last)
        got = []
        for r in range(world):
            mine = rank_order(_Order(total), r, world, workers, block, drop_last)
            assert len(mine) == per_rank
            got += mine
        counts = Counter(got)
        if total % world == 0 or drop_last:
            assert all(v == 1 for v in counts.values())
            assert len(counts) == per_rank * world
        else:
            # padding: every sample once, plus a few repeats of the first positions
            assert set(counts) == set(range(total))
            assert sum(counts.values()) == per_rank * world
            assert {p for p, v in counts.items() if v > 1} <= set(range(world))


class _Order:
    def __init__(self, total):
        self.total = total


def test_rank_order_is_the_interleaved_global_order():
    # with block == batch size, the DataLoader's round-robin gives back G's interleave exactly
    for workers in (1, 2, 3):
        for block in (1, 3, 5):
            assert rank_order(_Order(40), 1, 2, workers, block) == list(range(1, 40, 2))


@pytest.mark.parametrize("old_world,new_world", [(2, 3), (3, 1), (1, 2)])
def test_resume_with_another_world_size_loses_and_repeats_nothing(old_world, new_world):
    total = 60
    j = 7  # every old rank consumed 7 samples
    consumed = [p for r in range(old_world) for p in rank_order(_Order(total), r, old_world)[:j]]
    start = j * old_world
    assert sorted(consumed) == list(range(start))  # a prefix of G
    rest = [
        p for r in range(new_world) for p in rank_order(_Order(total), r, new_world, start=start)
    ]
    counts = Counter(consumed + rest)
    assert set(counts) == set(range(total))
    repeated = {p for p, v in counts.items() if v > 1}
    # only padding repeats, and only when the rest does not divide evenly
    assert len(repeated) == (-(total - start)) % new_world


def test_resume_same_world_size_continues_the_same_sequence():
    for r in range(3):
        full = rank_order(_Order(50), r, 3, workers=2, block=4)
        rest = rank_order(_Order(50), r, 3, workers=2, block=4, start=8 * 3)
        assert rest == full[8:]


def test_shard_validates_its_arguments():
    with pytest.raises(ValueError):
        Shard(rank=2, world_size=2)
    with pytest.raises(ValueError):
        Shard(worker=3, num_workers=3)
    with pytest.raises(ValueError):
        GlobalOrder([1], window=0)


def test_empty_and_tiny_datasets():
    assert samples_per_rank(0, 0, 3, False) == 0
    assert samples_per_rank(1, 0, 3, False) == 1
    assert samples_per_rank(1, 0, 3, True) == 0
    sh = Shard(2, 3)
    assert [p.tolist() for p in sh.positions(1)] == [[0]]
    assert GlobalOrder([], shuffle=True).first_use() == []


def test_unique_first_is_np_unique_with_first_indices():
    from benchkit.data.plan import unique_first

    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 500):
        values = rng.integers(0, 9, n)
        got, first = unique_first(values)
        want, want_first = np.unique(values, return_index=True)
        assert got.tolist() == want.tolist() and first.tolist() == want_first.tolist()
