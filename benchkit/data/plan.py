"""The epoch plan: which sample each rank and DataLoader worker reads, in which order. Pure index math.

One epoch has a **global order** ``G``: a sequence of all ``N`` sample positions that depends only
on the chunk sizes, the seed, the epoch, ``shuffle`` and the shuffle window, never on the number
of ranks or workers. With shuffling, the chunks are permuted, cut into windows of
``window`` consecutive chunks, and the samples of each window are permuted together; without,
``G`` is the stored order.

Ranks take interleaved positions of ``G`` (rank ``r`` of ``R`` takes ``start + r``,
``start + r + R``, ...), so after every rank has consumed ``j`` samples the consumed samples are
exactly the prefix ``G[:start + j*R]``: the resume state is one number (``consumed``), and a run
resumed with another world size re-splits the rest of ``G`` with nothing lost or repeated.
Within a rank, DataLoader workers take blocks of ``block`` consecutive rank-local samples in
turn (worker ``w`` of ``K`` takes blocks ``w``, ``w + K``, ...). With ``block`` equal to the
batch size this is exactly the order in which a ``DataLoader`` hands out its workers' batches,
so the batches the training loop sees are the rank's order, batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.random  # noqa: F401 - numpy imports it lazily: here, before DataLoader workers fork

__all__ = [
    "DEFAULT_WINDOW",
    "GlobalOrder",
    "Shard",
    "chunk_spans",
    "samples_per_rank",
]

#: Chunks whose samples are mixed together when shuffling (see docs/DATA.md for the memory cost).
DEFAULT_WINDOW = 4
_MASK64 = (1 << 64) - 1
#: Rank-local positions computed per numpy step when walking a worker's share.
_SEGMENT = 1 << 16


def unique_first(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``values``, sorted, and the index of each one's first occurrence:
    ``np.unique(values, return_index=True)``, without the ``numpy.ma`` import ``np.unique``
    does on its first call (0.15-0.3 s on a loaded machine, in every fresh DataLoader worker)."""
    values = np.asarray(values)
    if values.size == 0:
        return values, np.empty(0, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.empty(len(ordered), dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return ordered[new], order[new]


def _rng(seed: int, *words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & _MASK64, *words])))


class GlobalOrder:
    """``G`` for one epoch: maps global positions to ``(chunk, sample within chunk)``.

    Window permutations are computed on demand and the last two are kept, so walking the
    positions in increasing order costs O(window samples) memory, whatever the dataset's size.
    """

    def __init__(
        self,
        chunk_sizes: Sequence[int],
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = False,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if window < 1:
            raise ValueError(f"shuffle window must be at least 1 chunk, got {window}")
        self.sizes = np.asarray(chunk_sizes, dtype=np.int64)
        self.num_chunks = len(self.sizes)
        self.total = int(self.sizes.sum())
        self.seed, self.epoch, self.shuffle, self.window = (
            int(seed),
            int(epoch),
            bool(shuffle),
            int(window),
        )
        if self.shuffle:
            self.chunk_order = _rng(self.seed, self.epoch, 0).permutation(self.num_chunks)
        else:
            self.chunk_order = np.arange(self.num_chunks)
            self.window = 1  # windows are only the unit readers open and release
        ordered = self.sizes[self.chunk_order]
        #: global position where each chunk (in plan order) starts
        self._chunk_starts = np.concatenate([[0], np.cumsum(ordered)])
        n_windows = max(1, -(-self.num_chunks // self.window))
        bounds = np.minimum(np.arange(n_windows + 1) * self.window, self.num_chunks)
        #: global position where each window starts (last entry: total)
        self.window_starts = self._chunk_starts[bounds]
        self._perms: dict[int, np.ndarray] = {}

    @property
    def num_windows(self) -> int:
        return len(self.window_starts) - 1

    def window_chunks(self, w: int) -> np.ndarray:
        """The chunk ids of window ``w``, in plan order."""
        return self.chunk_order[w * self.window : (w + 1) * self.window]

    def window_of(self, positions: np.ndarray | int) -> np.ndarray | int:
        """The window holding each global position."""
        return np.searchsorted(self.window_starts, positions, side="right") - 1

    def _perm(self, w: int) -> np.ndarray:
        p = self._perms.get(w)
        if p is None:
            n = int(self.window_starts[w + 1] - self.window_starts[w])
            p = _rng(self.seed, self.epoch, w + 1).permutation(n)
            if len(self._perms) >= 2:
                self._perms.pop(next(iter(self._perms)))
            self._perms[w] = p
        return p

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(chunk ids, sample indices within the chunk)`` of global positions ``0 <= p < total``."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.shuffle:
            slots = np.empty_like(positions)
            wins = self.window_of(positions)
            for w in unique_first(wins)[0]:
                sel = wins == w
                base = self.window_starts[w]
                slots[sel] = base + self._perm(int(w))[positions[sel] - base]
        else:
            slots = positions
        k = np.searchsorted(self._chunk_starts, slots, side="right") - 1
        return self.chunk_order[k], slots - self._chunk_starts[k]

    def first_use(self, start: int = 0) -> list[int]:
        """Chunk ids in the order ``G[start:]`` first touches them (what to fetch first)."""
        if self.total == 0 or start >= self.total:
            return []
        first_w = int(self.window_of(start))
        out: list[int] = []
        for w in range(first_w, self.num_windows):
            chunks = self.window_chunks(w)
            if not self.shuffle or len(chunks) == 1:
                out.extend(int(c) for c in chunks)
                continue
            lo = max(start, int(self.window_starts[w]))
            hi = int(self.window_starts[w + 1])
            # the first sample of each chunk in this window's order decides its rank
            cids, _ = self.lookup(np.arange(lo, hi))
            _, first = unique_first(cids)
            out.extend(int(cids[i]) for i in np.sort(first))
        return out


def chunk_spans(
    order: GlobalOrder, start: int, world_size: int, drop_last: bool
) -> list[tuple[int, int, int]]:
    """``(first needed, no longer needed, chunk)`` for every chunk ``G[start:]`` reads, in plan
    order, plus the chunks of the padding samples at the end (positions past ``total``).

    O(chunks): a window's chunks are all needed from the window's first sample to its last.
    This is what a prefetcher walks: what to prepare next, and when to let go of it.
    """
    total = order.total
    spans: list[tuple[int, int, int]] = []
    if total == 0 or start >= total:
        return spans
    for w in range(int(order.window_of(start)), order.num_windows):
        lo, hi = int(order.window_starts[w]), int(order.window_starts[w + 1])
        spans.extend((max(start, lo), hi, int(c)) for c in order.window_chunks(w))
    pad = 0 if drop_last else -(total - start) % world_size
    if pad:
        chunks, _ = order.lookup(np.arange(min(pad, total)))
        spans.extend((total, total + world_size, int(c)) for c in dict.fromkeys(chunks.tolist()))
    return spans


def samples_per_rank(total: int, start: int, world_size: int, drop_last: bool) -> int:
    """How many samples each rank yields for the positions ``[start, total)`` of ``G``.

    Every rank yields the same number: the remainder is dropped (``drop_last``) or padded by
    repeating the first samples of ``G``.
    """
    remaining = max(0, total - start)
    if remaining == 0:
        return 0
    return remaining // world_size if drop_last else -(-remaining // world_size)


@dataclass(frozen=True)
class Shard:
    """One consumer of an epoch: a rank, and a DataLoader worker within it."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    #: rank-local samples per worker turn (the DataLoader batch size; 1 without one)
    block: int = 1
    drop_last: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if not 0 <= self.worker < self.num_workers:
            raise ValueError(f"worker {self.worker} is outside {self.num_workers} workers")
        if self.block < 1:
            raise ValueError(f"block must be at least 1, got {self.block}")

    def rank_count(self, total: int, start: int = 0) -> int:
        return samples_per_rank(total, start, self.world_size, self.drop_last)

    def worker_local_indices(self, total: int, start: int = 0) -> Iterator[np.ndarray]:
        """This worker's rank-local indices (0-based from ``start``), in order, as numpy segments."""
        n = self.rank_count(total, start)
        b, k = self.block, self.num_workers
        period = b * k
        seg = max(period, (_SEGMENT // period) * period)
        for lo in range(self.worker * b, n, seg):
            hi = min(n, lo + seg)
            # blocks of this worker in [lo, hi): offsets of every period, each b long
            starts = np.arange(lo, hi, period, dtype=np.int64)
            idx = (starts[:, None] + np.arange(b, dtype=np.int64)[None, :]).reshape(-1)
            yield idx[idx < hi] if len(idx) and idx[-1] >= hi else idx

    def global_positions(self, local: np.ndarray, total: int, start: int = 0) -> np.ndarray:
        """Global positions of rank-local indices; positions past the end wrap (padding)."""
        p = start + self.rank + local * self.world_size
        return p % total if total else p

    def positions(self, total: int, start: int = 0) -> Iterator[np.ndarray]:
        """This worker's global positions of ``G``, in the order it yields them."""
        for local in self.worker_local_indices(total, start):
            yield self.global_positions(local, total, start)


#: positions of a mixed epoch whose dataset labels are laid out together (see MixedOrder)
MIX_BLOCK = 4096
_WEIGHT_SCALE = 1 << 40


class MixedOrder:
    """The global order of a mixed epoch: which dataset, and which of its draws, each position is.

    ``weights`` (positive, any sum) are turned into exact integers ``W_d``. The count of
    dataset ``d`` in the first ``x`` positions, at every block boundary ``x`` (a multiple of
    ``block``), is ``floor(x * W_d / S)`` for every dataset but the heaviest, which takes the
    rest: so realised proportions are exact to within one sample per dataset (the heaviest:
    within the number of datasets) at every block boundary, whatever the epoch's length. Inside
    a block the labels are laid out evenly, then (``shuffle``) permuted with a generator seeded
    by ``(seed, epoch, block)`` (all but a last, partial block). Like :class:`GlobalOrder` it depends on nothing about ranks
    or workers, and any position is found without walking the ones before it.

    Position ``m`` is dataset ``d``'s draw number ``j``: the ``j``-th time the mix takes a sample
    from ``d`` in this epoch. What sample that is, is up to the caller (its own global order).
    """

    def __init__(
        self,
        weights: Sequence[float],
        total: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = False,
        block: int = MIX_BLOCK,
    ) -> None:
        w = [float(x) for x in weights]
        if not w or any(not x > 0 for x in w):
            raise ValueError(f"mixing weights must be positive numbers, got {list(weights)}")
        if block < len(w) * len(w):
            raise ValueError(f"mix block {block} is too small for {len(w)} datasets")
        s = sum(w)
        self.W = [max(1, round(x / s * _WEIGHT_SCALE)) for x in w]
        self.S = sum(self.W)
        self.heavy = max(range(len(w)), key=lambda d: (self.W[d], -d))
        self.num = len(w)
        self.total = int(total)
        self.block = int(block)
        self.seed, self.epoch, self.shuffle = int(seed), int(epoch), bool(shuffle)
        self._labels: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def counts_at_boundary(self, x: int) -> list[int]:
        """Draws of each dataset among the first ``x`` positions, ``x`` a block boundary."""
        counts = [x * w // self.S for w in self.W]
        counts[self.heavy] = x - (sum(counts) - counts[self.heavy])
        return counts

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset label, draw index within the block) of each position of block ``b``."""
        got = self._labels.get(b)
        if got is not None:
            return got
        lo = self.counts_at_boundary(b * self.block)
        hi = self.counts_at_boundary((b + 1) * self.block)
        n = [h - q for h, q in zip(hi, lo, strict=True)]
        # even spread: the k-th of n draws of a dataset sits at (k + 0.5) / n of the block
        keys = np.concatenate([(np.arange(k) + 0.5) / k for k in n if k])
        labels = np.concatenate([np.full(k, d, dtype=np.int64) for d, k in enumerate(n) if k])
        labels = labels[np.argsort(keys, kind="stable")]
        if self.shuffle and (b + 1) * self.block <= self.total:
            # a last, partial block keeps the even layout, so how many draws of each dataset
            # an epoch makes does not depend on the seed (see until_first_exhausted)
            labels = labels[_rng(self.seed, self.epoch, b + 1).permutation(len(labels))]
        occ = np.empty(len(labels), dtype=np.int64)
        for d in range(self.num):
            sel = labels == d
            occ[sel] = lo[d] + np.arange(int(sel.sum()))
        if len(self._labels) >= 2:
            self._labels.pop(next(iter(self._labels)))
        self._labels[b] = (labels, occ)
        return labels, occ

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dataset ids, draw numbers)`` of mixed positions ``0 <= m < total``."""
        positions = np.asarray(positions, dtype=np.int64)
        ds = np.empty_like(positions)
        draws = np.empty_like(positions)
        blocks = positions // self.block
        for b in unique_first(blocks)[0]:
            sel = blocks == b
            labels, occ = self._block(int(b))
            off = positions[sel] - int(b) * self.block
            ds[sel], draws[sel] = labels[off], occ[off]
        return ds, draws

    def draws_before(self, m: int) -> list[int]:
        """How many draws of each dataset the positions ``[0, m)`` make."""
        b, off = divmod(int(m), self.block)
        counts = self.counts_at_boundary(b * self.block)
        if off:
            labels, _ = self._block(b)
            counts = [
                c + int(k)
                for c, k in zip(counts, np.bincount(labels[:off], minlength=self.num), strict=True)
            ]
        return counts

    def position_of(self, d: int, j: int) -> int:
        """The position of dataset ``d``'s draw ``j`` (``total`` if the epoch never makes it)."""
        lo, hi = 0, -(-self.total // self.block)  # the last block boundary with <= j draws
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.counts_at_boundary(mid * self.block)[d] <= j:
                lo = mid
            else:
                hi = mid - 1
        base = lo * self.block
        if base >= self.total:
            return self.total
        labels, occ = self._block(lo)
        hit = np.flatnonzero((labels == d) & (occ == j))
        m = base + int(hit[0]) if len(hit) else self.total
        return min(m, self.total)

    @staticmethod
    def until_first_exhausted(
        weights: Sequence[float], sizes: Sequence[int], block: int = MIX_BLOCK
    ) -> int:
        """The largest epoch length at which no dataset is drawn more often than it has samples."""
        probe = MixedOrder(weights, 0, block=block)

        def fits(m: int) -> bool:
            return all(c <= n for c, n in zip(probe.draws_before(m), sizes, strict=True))

        lo, hi = 0, sum(int(n) for n in sizes)
        while lo < hi:  # draws_before is monotone in m: binary search the last m that fits
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo
