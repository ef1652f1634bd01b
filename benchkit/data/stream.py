"""Streaming a chunked dataset into PyTorch: :class:`IterableChunk` and :func:`open_dataset`.

::

    ds = bench.open_dataset("train", shuffle=True, seed=7)      # a torch IterableDataset
    loader = bench.get_dataset(CatDogChunk, True, "train", 32, 2, True)

The dataset class is a thin layer over named parts, each in its own module:

- :mod:`benchkit.data.epoch`: the :class:`~benchkit.data.epoch.EpochState` (epoch, start,
  seed, shuffle, window), shared with DataLoader workers;
- :mod:`benchkit.data.plan`: which samples a rank and worker read, in which order (pure);
- :mod:`benchkit.data.source`: where chunks come from, chosen once (memory-mapped local
  directory, or the cache over a remote store), opening verified chunks;
- :mod:`benchkit.data.prefetch`: chunks prepared ahead of the reader.

The resume state is the number of samples of the epoch's global order already consumed (see
docs/DATA.md). :class:`~benchkit.data.loader.StreamingDataLoader` drives a pass through the
public methods below (``set_worker_block``, ``serve_workers``, ``prefetcher``,
``resume_state``, ``finish_pass``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from benchkit.data.epoch import EpochState
from benchkit.data.index import DatasetIndex, check_dataset_name, load_index
from benchkit.data.plan import DEFAULT_WINDOW, GlobalOrder, Shard, chunk_spans, samples_per_rank
from benchkit.data.prefetch import Prefetcher
from benchkit.data.source import ChunkSource, Window, fork_error, open_source
from benchkit.data.writer import staging_root
from benchkit.errors import DataError
from benchkit.settings import find_project_file
from benchkit.store import Store, open_store

__all__ = [
    "IterableChunk",
    "apply_transform",
    "open_dataset",
    "prefetch_threads",
    "resolve_store",
    "resolve_topology",
    "staging_store",
]

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: chunks prepared ahead of the reader, in shuffle windows
PREFETCH_WINDOWS = 2
#: downloads in flight for a remote store; local chunks are checked by one thread (CPU-bound
#: hashing, which must not starve the readers: they check the blocks they read meanwhile)
PREFETCH_THREADS = 4


def prefetch_threads(remote: bool) -> int:
    return PREFETCH_THREADS if remote else 1


def apply_transform(fn: Callable[..., Any] | None, sample: Any) -> Any:
    """``fn`` applied to a sample: a tuple's fields as positional arguments, anything else whole."""
    if fn is None:
        return sample
    if isinstance(sample, (tuple, list)):
        return fn(*sample)
    return fn(sample)


def staging_store() -> Store:
    """The local staging area ``migrate data --chunk`` writes to (``<project>/.benchkit/staging``)."""
    project = find_project_file()
    return open_store(staging_root(project.parent if project else Path.cwd()))


def resolve_store(source: Any) -> Store:
    """``True``/None: the configured store; ``False``: the local staging area; else a URL or Store."""
    if source is True or source is None:
        return open_store(None)
    if source is False:
        return staging_store()
    return open_store(source)


def _topology() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialized, else RANK/WORLD_SIZE, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as e:
        raise DataError(f"RANK/WORLD_SIZE must be integers ({e})") from e


def resolve_topology(rank: int | None, world_size: int | None, what: str) -> tuple[int, int]:
    """(rank, world size): the given ones, else those of :func:`_topology`; checked."""
    env_rank, env_world = _topology()
    world = env_world if world_size is None else world_size
    rank = env_rank if rank is None else rank
    if not 0 <= rank < world:
        raise DataError(f"{what}: rank {rank} is outside world size {world}")
    return rank, world


class IterableChunk(IterableDataset):
    """A chunked dataset streamed from a store, sharded over ranks and DataLoader workers.

    ``cloud``: ``True`` for the configured store, ``False`` for the local staging area, or a
    store URL / :class:`~benchkit.store.Store` (``store=`` says the same and wins).
    Subclass it the original way: override :meth:`_data_iterator`, call the super one (it
    yields the raw samples, ``(labels, files)`` for classic datasets) and yield what the model
    needs. ``transform`` (if any) is applied to what :meth:`_data_iterator` yields.
    """

    def __init__(
        self,
        name: str,
        cloud: Any = True,
        *,
        store: Any = None,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        transform: Callable[..., Any] | None = None,
        shuffle_window: int = DEFAULT_WINDOW,
        cache_limit: str | int | None = None,
    ) -> None:
        super().__init__()
        self.name = check_dataset_name(name)
        self._where = store if store is not None else cloud
        self._epoch_state = EpochState()
        self._store: Store | None = None
        self._index: DatasetIndex | None = None
        self._chunks: ChunkSource | None = None
        self._rank_arg: int | None = None
        self._world_arg: int | None = None
        self._frozen_topology: tuple[int, int] | None = None
        self.drop_last = False
        self.transform: Callable[..., Any] | None = None
        self.cache_limit = cache_limit
        self._block = 1
        self._session: str | None = None  # set by StreamingDataLoader when it fetches for workers
        self._consumed_here = 0  # raw samples this process's current iteration handed out
        self.configure(
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            transform=transform,
            shuffle_window=shuffle_window,
        )

    # --- configuration ---------------------------------------------------------------------

    def configure(self, **options: Any) -> IterableChunk:
        """Set streaming options after construction (what ``open_dataset`` does for subclasses):
        ``store``, ``shuffle``, ``seed``, ``shuffle_window``, ``rank``, ``world_size``,
        ``drop_last``, ``transform``, ``cache_limit``."""
        for key, value in options.items():
            if key == "store":
                if value is not None:
                    self._where, self._store, self._index, self._chunks = value, None, None, None
            elif key == "shuffle":
                self._epoch_state.shuffle = value
            elif key == "seed":
                self._epoch_state.seed = value
            elif key == "shuffle_window":
                if int(value) < 1:
                    raise DataError(
                        f"dataset '{self.name}': shuffle_window must be >= 1 chunk, got {value}"
                    )
                self._epoch_state.window = int(value)
            elif key == "rank":
                self._rank_arg = None if value is None else int(value)
            elif key == "world_size":
                self._world_arg = None if value is None else int(value)
            elif key == "drop_last":
                self.drop_last = bool(value)
            elif key == "transform":
                self.transform = value
            elif key == "cache_limit":
                self.cache_limit = value
            else:
                raise TypeError(f"unknown streaming option {key!r}")
        if self._world_arg is not None and self._world_arg < 1:
            raise DataError(
                f"dataset '{self.name}': world_size must be >= 1, got {self._world_arg}"
            )
        if (
            self._rank_arg is not None
            and self._world_arg is not None
            and not 0 <= self._rank_arg < self._world_arg
        ):
            raise DataError(
                f"dataset '{self.name}': rank {self._rank_arg} is outside world size {self._world_arg}"
            )
        return self

    _configure = configure  # the name subclasses and older callers used

    @property
    def epoch_state(self) -> EpochState:
        """Epoch, start position, seed, shuffle and window (shared with DataLoader workers)."""
        return self._epoch_state

    @property
    def shuffle(self) -> bool:
        return self._epoch_state.shuffle

    @property
    def seed(self) -> int:
        return self._epoch_state.seed

    @property
    def shuffle_window(self) -> int:
        return self._epoch_state.window

    @property
    def epoch(self) -> int:
        return self._epoch_state.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its shuffle order). A different epoch starts from its beginning;
        the current one keeps its position (so a resumed epoch is not restarted)."""
        self._epoch_state.select_epoch(epoch)
        self._consumed_here = 0

    def topology(self) -> tuple[int, int]:
        """(rank, world size) this dataset shards for."""
        if self._frozen_topology is not None:
            return self._frozen_topology
        return resolve_topology(self._rank_arg, self._world_arg, f"dataset '{self.name}'")

    def set_worker_block(self, block: int) -> None:
        """DataLoader workers take turns in blocks of ``block`` rank samples (the batch size)."""
        self._block = max(1, int(block))

    # --- store, index, chunks --------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = resolve_store(self._where)
        return self._store

    @property
    def index(self) -> DatasetIndex:
        """The dataset's ``index.json`` (read once)."""
        if self._index is None:
            self._index = load_index(self.store, self.name)
        return self._index

    @property
    def chunks(self) -> ChunkSource:
        """Where the chunks are read from (chosen once: in place, or through the cache)."""
        if self._chunks is None:
            self._chunks = open_source(
                self.store, self.name, self.index, cache_limit=self.cache_limit
            )
            self._chunks.serve_workers(self._session)
        return self._chunks

    @property
    def num_samples(self) -> int:
        """Samples in the whole dataset."""
        return self.index.num_samples

    def fingerprint(self) -> str:
        """Identifies the dataset's content (its chunks' checksums)."""
        h = hashlib.sha256()
        for c in self.index.chunks:
            h.update(f"{c.file}:{c.samples}:{c.sha256};".encode())
        return h.hexdigest()[:24]

    def __len__(self) -> int:
        """Samples this rank yields in a full epoch (the same on every rank)."""
        _, world = self.topology()
        return samples_per_rank(self.num_samples, 0, world, self.drop_last)

    @property
    def remote(self) -> bool:
        """True when chunks come through the cache (downloaded), not read in place."""
        return not self.chunks.local

    def serve_workers(self, session: str | None) -> None:
        """DataLoader workers of ``session`` wait for the chunks this process downloads
        (remote stores; tensorstore cannot download in forked workers)."""
        self._session = session
        if self._chunks is not None:
            self._chunks.serve_workers(session)

    # --- a pass ----------------------------------------------------------------------------

    def order(self, epoch: int | None = None) -> GlobalOrder:
        """The global order ``G`` of ``epoch`` (default: the current one)."""
        st = self._epoch_state
        return GlobalOrder(
            [c.samples for c in self.index.chunks],
            seed=st.seed,
            epoch=st.epoch if epoch is None else epoch,
            shuffle=st.shuffle,
            window=st.window,
        )

    def prefetcher(
        self, epoch: int, start: int, *, session: str | None = None
    ) -> Prefetcher | None:
        """Background preparation of the chunks ``G[start:]`` of ``epoch`` needs, in order of
        first use; None when there is nothing to read. With ``session``, a chunk that cannot be
        prepared is reported to the workers of that session waiting for it."""
        _, world = self.topology()
        spans = chunk_spans(self.order(epoch), start, world, self.drop_last)
        if not spans:
            return None
        source = self.chunks
        on_error = None
        if session is not None:

            def on_error(c: int, error: BaseException) -> None:
                source.record_error(c, session, error)

        return Prefetcher(
            source.prepare,
            spans,
            depth=PREFETCH_WINDOWS * self.shuffle_window,
            threads=prefetch_threads(not source.local),
            release=source.release,
            on_error=on_error,
        )

    def _shard(self, in_worker: Any) -> Shard:
        rank, world = self.topology()
        worker, workers = (in_worker.id, in_worker.num_workers) if in_worker else (0, 1)
        block = self._block if in_worker is not None else 1
        return Shard(rank, world, worker, workers, block, self.drop_last)

    def _data_iterator(self) -> Iterator[Any]:
        """The raw samples of this rank's (and worker's) share, in plan order.

        Override in a subclass, call ``super()._data_iterator()`` and yield what the model
        needs; the resume position counts the raw samples taken from here.
        """
        info = get_worker_info()
        if (
            info is not None
            and self._index is None
            and self._session is None
            and not self.store.usable_here()
        ):
            raise fork_error(self.name, self.store)  # before reading the index through the store
        total = self.index.num_samples
        epoch, start = self._epoch_state.epoch, self._epoch_state.start
        order = self.order(epoch)
        source = self.chunks
        self._consumed_here = 0
        prefetcher = None
        wanted = info is None and not (source.local and len(self.index.chunks) <= 1)
        if wanted and not source.local:
            prefetcher = self.prefetcher(epoch, start)
        # local chunks are read ahead only once the first sample is out (see the loader)
        later = wanted and source.local
        window = Window(source, order, prefetcher)
        hint = source.local  # the first batch's reads, issued at once (cold page cache)
        try:
            for positions in self._shard(info).positions(total, start):
                chunks, idxs = order.lookup(positions)
                if hint:
                    n, hint = self._block, False
                    window.will_read(positions[:n], chunks[:n], idxs[:n])
                for p, c, i in zip(positions.tolist(), chunks.tolist(), idxs.tolist(), strict=True):
                    sample = window.reader(c, p)[i]
                    self._consumed_here += 1
                    yield sample
                    if later:
                        prefetcher = window.prefetcher = self.prefetcher(epoch, start)
                        later = False
        finally:
            window.close()
            if prefetcher is not None:
                prefetcher.close()
        if info is None:
            self.finish_pass(epoch, start)

    def finish_pass(self, epoch: int, start: int) -> None:
        """A pass of ``epoch`` from ``start`` ran to its end: move on to the next epoch, unless
        someone already chose another position meanwhile (set_epoch, load_state_dict)."""
        self._epoch_state.finish(epoch, start)
        self._consumed_here = 0

    def __iter__(self) -> Iterator[Any]:
        fn = self.transform
        if fn is None:
            yield from self._data_iterator()
        else:
            for sample in self._data_iterator():
                yield apply_transform(fn, sample)

    # --- resume ----------------------------------------------------------------------------

    def resume_state(self, epoch: int, consumed: int) -> dict[str, Any]:
        """The resume state of ``epoch`` after ``consumed`` samples of its global order."""
        _, world = self.topology()
        st = self._epoch_state
        return {
            "version": STATE_VERSION,
            "dataset": self.name,
            "num_samples": self.num_samples,
            "fingerprint": self.fingerprint(),
            "seed": st.seed,
            "shuffle": st.shuffle,
            "shuffle_window": st.window,
            "epoch": epoch,
            "consumed": min(self.num_samples, consumed),
            "world_size": world,
            "drop_last": self.drop_last,
        }

    def state_dict(self) -> dict[str, Any]:
        """Where this epoch stands: the samples of its global order consumed by all ranks.

        Counts what this process's iteration handed out (use the loader's ``state_dict`` with
        DataLoader workers). Plain ints and strings: safe for ``torch.save``/JSON.
        """
        _, world = self.topology()
        st = self._epoch_state
        return self.resume_state(st.epoch, st.start + self._consumed_here * world)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields exactly what the epoch had left."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise DataError(
                f"dataset '{self.name}': not a streaming state (version {STATE_VERSION}): {state!r:.200}"
            )
        if state.get("dataset") != self.name:
            raise DataError(
                f"this streaming state belongs to dataset '{state.get('dataset')}', not '{self.name}'"
            )
        if (
            state.get("num_samples") != self.num_samples
            or state.get("fingerprint") != self.fingerprint()
        ):
            raise DataError(
                f"dataset '{self.name}' in store {self.store.url} changed since this state was saved "
                f"({state.get('num_samples')} samples then, {self.num_samples} now); an exact resume "
                "needs the same dataset. Start the epoch over with set_epoch()"
            )
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.num_samples:
            raise DataError(f"dataset '{self.name}': invalid consumed count {consumed} in state")
        self.configure(
            seed=state["seed"], shuffle=state["shuffle"], shuffle_window=state["shuffle_window"]
        )
        if bool(state.get("drop_last", self.drop_last)) != self.drop_last:
            log.info(
                "dataset '%s': resuming with drop_last=%s (saved with %s)",
                self.name,
                self.drop_last,
                state.get("drop_last"),
            )
        self._epoch_state.load_state_dict({"epoch": int(state["epoch"]), "start": consumed})
        self._consumed_here = 0

    # --- pickling (DataLoader workers) -----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # workers need the index, the chunk source and the topology of the process that made them
        try:
            state["_chunks"] = self.chunks
            state["_index"] = self.index
        except Exception:  # noqa: BLE001 - a dataset that cannot open still pickles
            pass
        state["_frozen_topology"] = self._frozen_topology or self.topology()
        return state

    def __repr__(self) -> str:
        where = getattr(self._store, "url", self._where)
        return f"{type(self).__name__}({self.name!r}, store={where!r})"


def _check_initialised(ds: Any) -> None:
    if not isinstance(getattr(ds, "_epoch_state", None), EpochState):
        raise DataError(f"{type(ds).__name__}.__init__ must call super().__init__(name, cloud)")


def open_dataset(
    name: str,
    store: Any = None,
    *,
    shuffle: bool = False,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    transform: Callable[..., Any] | None = None,
    chunk_class: type | None = None,
    chunk_args: tuple[Any, ...] | list[Any] = (),
    chunk_kwargs: dict[str, Any] | None = None,
    shuffle_window: int = DEFAULT_WINDOW,
    cache_limit: str | int | None = None,
) -> IterableChunk:
    """Open dataset ``name`` for streaming (``store``: URL or Store; None = the configured one).

    ``chunk_class`` (an :class:`IterableChunk` subclass) is built as
    ``chunk_class(name, store, *chunk_args, **chunk_kwargs)``, as the original did.
    """
    source = True if store is None else store
    cls = chunk_class or IterableChunk
    if not (isinstance(cls, type) and issubclass(cls, IterableChunk)):
        raise DataError(
            f"dataset '{name}': chunk_class must be an IterableChunk subclass, got {cls!r}"
        )
    if cls is IterableChunk:
        ds = IterableChunk(name, source)
    else:
        ds = cls(name, source, *chunk_args, **(chunk_kwargs or {}))
        _check_initialised(ds)
        ds.configure(store=source if store is not None else None)
    ds.configure(
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        shuffle_window=shuffle_window,
        cache_limit=cache_limit,
    )
    if transform is not None:
        ds.configure(transform=transform)
    return ds


def build_dataset(cls: type, name: str, cloud: Any, *args: Any, **kwargs: Any) -> IterableChunk:
    """``cls(name, cloud, *args, **kwargs)``, checked to be a properly initialised IterableChunk."""
    if not (isinstance(cls, type) and issubclass(cls, IterableChunk)):
        raise DataError(
            f"get_dataset: the first argument must be an IterableChunk subclass, got {cls!r}"
        )
    ds = cls(name, cloud, *args, **kwargs)
    _check_initialised(ds)
    return ds
