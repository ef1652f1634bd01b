"""Several datasets streamed as one, at set proportions: :class:`MixedDataset` and :func:`mix`.

::

    loader = run.loader({"web": 0.7, "books": 0.3}, shuffle=True)
    ds = bench.mix({"web": 0.7, "books": 0.3}, store="s3://bucket/prefix", shuffle=True, seed=7)

How it works (docs/DATA.md, "Mixing"): a mixed epoch has its own global order
(:class:`~benchkit.data.plan.MixedOrder`) whose position ``m`` says which dataset it draws from
and which draw of that dataset it is; draw ``j`` of dataset ``d`` is position ``j mod N_d`` of
``d``'s own shuffled order, a fresh order each time ``d`` runs out (repetition ``j // N_d``).
Ranks and DataLoader workers split the mixed order exactly as they split one dataset's
(:class:`~benchkit.data.plan.Shard`), so exactly-once, determinism and resume (one number: the
mixed positions consumed, also to another world size) carry over unchanged.

**Epoch**: by default an epoch ends when the first dataset would be exhausted (no sample is
repeated within an epoch); ``epoch_samples=N`` sets the epoch's length instead, and datasets that
run out start again with a new order. Each dataset keeps its own ``transform``; a
subclass's ``_data_iterator`` override is not used when mixing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from benchkit.data.epoch import EpochState
from benchkit.data.plan import GlobalOrder, MixedOrder, Shard, chunk_spans, samples_per_rank
from benchkit.data.prefetch import Prefetcher
from benchkit.data.source import Window
from benchkit.data.stream import (
    PREFETCH_WINDOWS,
    IterableChunk,
    apply_transform,
    open_dataset,
    prefetch_threads,
    resolve_topology,
)
from benchkit.errors import DataError

__all__ = ["MixedDataset", "mix"]

MIX_STATE_VERSION = 1
_KEY = 1 << 32  # prefetch keys: dataset * _KEY + chunk
_MASK63 = (1 << 63) - 1


class _Sub:
    """The prefetcher seen from one dataset's readers: chunk ``c`` of dataset ``d``."""

    def __init__(self, prefetcher: Prefetcher, d: int) -> None:
        self._p, self._d = prefetcher, d

    def get(self, c: int) -> Any:
        return self._p.get(self._d * _KEY + c)[1]

    def advance(self, position: int, ahead: int = 0) -> None:
        pass  # the mix advances the real prefetcher in mixed positions


class MixedDataset(IterableDataset):
    """Datasets streamed as one at set proportions, sharded, deterministic and resumable."""

    def __init__(
        self,
        datasets: Mapping[str, IterableChunk],
        weights: Mapping[str, float],
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch_samples: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if not weights:
            raise DataError(
                "mix: give at least one dataset and its weight, e.g. {'web': 0.7, 'books': 0.3}"
            )
        bad = {n: w for n, w in weights.items() if not isinstance(w, (int, float)) or not w > 0}
        if bad:
            raise DataError(f"mix: weights must be positive numbers, got {bad}")
        if set(datasets) != set(weights):
            raise DataError(
                f"mix: datasets {sorted(datasets)} and weights {sorted(weights)} differ"
            )
        if epoch_samples is not None and int(epoch_samples) < 1:
            raise DataError(f"mix: epoch_samples must be >= 1, got {epoch_samples}")
        for name, ds in datasets.items():
            if type(ds)._data_iterator is not IterableChunk._data_iterator:
                raise DataError(
                    f"mix: dataset '{name}' streams through {type(ds).__name__}, whose "
                    "_data_iterator override mixing cannot apply (it reads each dataset by "
                    "position); do that work in a transform (@dataset.transform, or transforms=)"
                )
        self.names = list(weights)
        self.weights = [float(weights[n]) for n in self.names]
        self.datasets = [datasets[n] for n in self.names]
        self.epoch_samples = None if epoch_samples is None else int(epoch_samples)
        self.drop_last = bool(drop_last)
        self._rank_arg, self._world_arg = rank, world_size
        self._frozen_topology: tuple[int, int] | None = None
        self._epoch_state = EpochState(seed=seed, shuffle=shuffle, window=1)
        self._total: int | None = None
        self._block = 1
        self._consumed_here = 0
        if rank is not None and world_size is not None:
            resolve_topology(rank, world_size, "mix")

    # --- what the loader uses (the same as IterableChunk's) --------------------------------

    @property
    def epoch_state(self) -> EpochState:
        return self._epoch_state

    @property
    def epoch(self) -> int:
        return self._epoch_state.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; the current one keeps its position (see IterableChunk.set_epoch)."""
        self._epoch_state.select_epoch(epoch)
        self._consumed_here = 0

    def topology(self) -> tuple[int, int]:
        if self._frozen_topology is not None:
            return self._frozen_topology
        return resolve_topology(self._rank_arg, self._world_arg, "mix")

    def set_worker_block(self, block: int) -> None:
        self._block = max(1, int(block))

    @property
    def sizes(self) -> list[int]:
        """Samples in each dataset (reads their indexes)."""
        return [ds.num_samples for ds in self.datasets]

    @property
    def num_samples(self) -> int:
        """Positions of one mixed epoch (see the module docstring for the epoch's definition)."""
        if self._total is None:
            self._total = self.epoch_samples or MixedOrder.until_first_exhausted(
                self.weights, self.sizes
            )
        return self._total

    def __len__(self) -> int:
        _, world = self.topology()
        return samples_per_rank(self.num_samples, 0, world, self.drop_last)

    @property
    def remote(self) -> bool:
        return any(ds.remote for ds in self.datasets)

    def serve_workers(self, session: str | None) -> None:
        for ds in self.datasets:
            ds.serve_workers(session)

    def order(self, epoch: int | None = None) -> MixedOrder:
        st = self._epoch_state
        return MixedOrder(
            self.weights,
            self.num_samples,
            seed=st.seed,
            epoch=st.epoch if epoch is None else epoch,
            shuffle=st.shuffle,
        )

    def sub_order(self, d: int, epoch: int, repetition: int) -> GlobalOrder:
        """Dataset ``d``'s order for its ``repetition``-th pass within mixed ``epoch``."""
        st, ds = self._epoch_state, self.datasets[d]
        return GlobalOrder(
            [c.samples for c in ds.index.chunks],
            seed=(st.seed * 1_000_003 + d + 1) & _MASK63,
            epoch=epoch * 1_000_003 + repetition,
            shuffle=st.shuffle,
            window=ds.shuffle_window,
        )

    def _spans(self, epoch: int, start: int) -> list[tuple[int, int, int]]:
        """Prefetch entries in mixed positions: every chunk of every dataset the rest of the
        epoch reads, keyed ``d * 2**32 + chunk``, plus the chunks of the end-of-epoch padding."""
        order, total = self.order(epoch), self.num_samples
        before, after = order.draws_before(start), order.draws_before(total)
        spans = []
        for d, n in enumerate(self.sizes):
            for r in range(before[d] // n, -(-after[d] // n)):
                first = max(0, before[d] - r * n)
                for lo, hi, c in chunk_spans(self.sub_order(d, epoch, r), first, 1, True):
                    m_lo = order.position_of(d, r * n + lo)
                    m_hi = order.position_of(d, r * n + hi - 1) + 1
                    if m_lo < total:
                        spans.append((max(start, m_lo), min(total, m_hi), d * _KEY + c))
        _, world = self.topology()
        pad = 0 if self.drop_last or total <= start else -(total - start) % world
        if pad:
            for k in self._chunks_at(epoch, np.arange(min(pad, total))):
                spans.append((total, total + world, k))
        spans.sort()
        return spans

    def _chunks_at(self, epoch: int, positions: np.ndarray) -> list[int]:
        ds, draws = self.order(epoch).lookup(positions)
        keys = []
        for d, j in zip(ds.tolist(), draws.tolist(), strict=True):
            n = self.sizes[d]
            chunks, _ = self.sub_order(d, epoch, j // n).lookup(np.array([j % n]))
            keys.append(d * _KEY + int(chunks[0]))
        return list(dict.fromkeys(keys))

    def prefetcher(
        self, epoch: int, start: int, *, session: str | None = None
    ) -> Prefetcher | None:
        """Background preparation of every chunk the rest of ``epoch`` reads, in mixed order."""
        spans = self._spans(epoch, start)
        if not spans:
            return None
        sources = [ds.chunks for ds in self.datasets]

        def prepare(key: int) -> tuple[int, Any]:
            return key // _KEY, sources[key // _KEY].prepare(key % _KEY)

        def release(held: tuple[int, Any]) -> None:
            sources[held[0]].release(held[1])

        on_error: Callable[[int, BaseException], None] | None = None
        if session is not None:

            def on_error(key: int, error: BaseException) -> None:
                sources[key // _KEY].record_error(key % _KEY, session, error)

        depth = PREFETCH_WINDOWS * max(ds.shuffle_window for ds in self.datasets) * len(sources)
        return Prefetcher(
            prepare,
            spans,
            depth=depth,
            threads=prefetch_threads(self.remote),
            release=release,
            on_error=on_error,
        )

    # --- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        total = self.num_samples
        epoch, start = self._epoch_state.epoch, self._epoch_state.start
        order = self.order(epoch)
        rank, world = self.topology()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        block = self._block if info is not None else 1
        shard = Shard(rank, world, worker, workers, block, self.drop_last)
        sizes = np.asarray(self.sizes, dtype=np.int64)
        prefetcher = self.prefetcher(epoch, start) if info is None else None
        windows: dict[tuple[int, int], tuple[GlobalOrder, Window]] = {}
        self._consumed_here = 0

        def window(d: int, r: int) -> tuple[GlobalOrder, Window]:
            got = windows.get((d, r))
            if got is None:
                for old in [k for k in windows if k[0] == d]:  # an older repetition is done
                    windows.pop(old)[1].close()
                sub = _Sub(prefetcher, d) if prefetcher is not None else None
                o = self.sub_order(d, epoch, r)
                got = windows[(d, r)] = (o, Window(self.datasets[d].chunks, o, sub))
            return got

        try:
            for positions in shard.positions(total, start):
                ds, draws = order.lookup(positions)
                reps, subpos = draws // sizes[ds], draws % sizes[ds]
                chunks = np.empty_like(positions)
                idxs = np.empty_like(positions)
                for d, r in {
                    (int(a), int(b)) for a, b in zip(ds.tolist(), reps.tolist(), strict=True)
                }:
                    sel = (ds == d) & (reps == r)
                    chunks[sel], idxs[sel] = window(d, r)[0].lookup(subpos[sel])
                for m, d, r, p, c, i in zip(
                    positions.tolist(),
                    ds.tolist(),
                    reps.tolist(),
                    subpos.tolist(),
                    chunks.tolist(),
                    idxs.tolist(),
                    strict=True,
                ):
                    if prefetcher is not None:
                        prefetcher.advance(m)
                    sample = window(d, r)[1].reader(c, p)[i]
                    self._consumed_here += 1
                    yield apply_transform(self.datasets[d].transform, sample)
        finally:
            for _, w in windows.values():
                w.close()
            if prefetcher is not None:
                prefetcher.close()
        if info is None:
            self.finish_pass(epoch, start)

    def finish_pass(self, epoch: int, start: int) -> None:
        self._epoch_state.finish(epoch, start)
        self._consumed_here = 0

    # --- resume ----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, w, ds in zip(self.names, self.weights, self.datasets, strict=True):
            h.update(f"{name}={w!r}:{ds.fingerprint()};".encode())
        return h.hexdigest()[:24]

    def resume_state(self, epoch: int, consumed: int) -> dict[str, Any]:
        _, world = self.topology()
        st = self._epoch_state
        return {
            "version": MIX_STATE_VERSION,
            "mix": dict(zip(self.names, self.weights, strict=True)),
            "num_samples": self.num_samples,
            "fingerprint": self.fingerprint(),
            "seed": st.seed,
            "shuffle": st.shuffle,
            "epoch": epoch,
            "consumed": min(self.num_samples, consumed),
            "world_size": world,
            "drop_last": self.drop_last,
        }

    def state_dict(self) -> dict[str, Any]:
        """The mixed positions of this epoch consumed by all ranks (see IterableChunk.state_dict)."""
        _, world = self.topology()
        st = self._epoch_state
        return self.resume_state(st.epoch, st.start + self._consumed_here * world)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields exactly what the epoch had left."""
        if (
            not isinstance(state, dict)
            or state.get("version") != MIX_STATE_VERSION
            or "mix" not in state
        ):
            raise DataError(f"mix: not a mixed streaming state: {state!r:.200}")
        if (
            state.get("fingerprint") != self.fingerprint()
            or state.get("num_samples") != self.num_samples
        ):
            raise DataError(
                f"mix {state.get('mix')}: the datasets, weights or epoch length changed since this "
                f"state was saved (now {dict(zip(self.names, self.weights, strict=True))}, "
                f"{self.num_samples} samples an epoch); an exact resume needs the same mix"
            )
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.num_samples:
            raise DataError(f"mix: invalid consumed count {consumed} in state")
        self._epoch_state.load_state_dict(
            {
                "seed": state["seed"],
                "shuffle": state["shuffle"],
                "epoch": int(state["epoch"]),
                "start": consumed,
            }
        )
        self._consumed_here = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        try:
            state["_total"] = self.num_samples  # reads every index, which the workers inherit
            for ds in self.datasets:
                ds.chunks  # noqa: B018 - the chunk sources too
        except Exception:  # noqa: BLE001 - a mix that cannot open still pickles
            pass
        state["_frozen_topology"] = self._frozen_topology or self.topology()
        return state

    def __repr__(self) -> str:
        return f"MixedDataset({dict(zip(self.names, self.weights, strict=True))})"


def mix(
    weights: Mapping[str, float],
    store: Any = None,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch_samples: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    transforms: Mapping[str, Callable[..., Any] | None] | None = None,
    dataset_options: Mapping[str, Mapping[str, Any]] | None = None,
    datasets: Mapping[str, IterableChunk] | None = None,
    **options: Any,
) -> MixedDataset:
    """Stream the datasets named in ``weights`` as one, at those proportions.

    ``store``: URL or Store holding them (None = the configured one). ``epoch_samples``: the
    epoch's length (default: until the first dataset would be exhausted). ``transforms``: a
    transform per dataset name; ``dataset_options``: more :func:`open_dataset` keywords per
    name (``chunk_class``, ``chunk_args``, ...); ``datasets``: already opened datasets to use
    for some names. Other keywords (``shuffle_window``, ``cache_limit``) go to every
    :func:`open_dataset`.
    """
    opened = dict(datasets or {})
    for name in weights:
        if name not in opened:
            own = {**options, **(dataset_options or {}).get(name, {})}
            if (transforms or {}).get(name) is not None:
                own["transform"] = transforms[name]  # type: ignore[index]
            opened[name] = open_dataset(name, store, **own)
    return MixedDataset(
        opened,
        weights,
        shuffle=shuffle,
        seed=seed,
        epoch_samples=epoch_samples,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
