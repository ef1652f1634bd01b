"""Streaming a chunked dataset into PyTorch: :class:`IterableChunk`, :func:`open_dataset`, :func:`get_dataset`.

::

    ds = bench.open_dataset("train", shuffle=True, seed=7)      # a torch IterableDataset
    loader = bench.get_dataset(CatDogChunk, True, "train", 32, 2, True)

Which samples a rank and worker read, and in which order, is decided by :mod:`benchkit.data.plan`
(a pure function of the index, seed, epoch and topology); local-directory stores are
memory-mapped in place, remote stores go through :mod:`benchkit.data.cache`. The resume state
is the number of samples of the epoch's global order already consumed (see docs/DATA.md).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from benchkit.data.index import DatasetIndex, check_dataset_name, dataset_prefix, load_index
from benchkit.data.plan import DEFAULT_WINDOW, GlobalOrder, Shard, samples_per_rank
from benchkit.errors import CorruptChunk, DataError, ObjectNotFound, StoreError
from benchkit.store import Store, open_store

__all__ = ["IterableChunk", "apply_transform", "get_dataset", "open_dataset", "staging_store"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
_INT63 = (1 << 63) - 1
# the shared per-iteration settings, in one int64 tensor so persistent workers see changes
_EPOCH, _START, _SEED, _SHUFFLE, _WINDOW = range(5)


def apply_transform(fn: Callable[..., Any] | None, sample: Any) -> Any:
    """``fn`` applied to a sample: a tuple's fields as positional arguments, anything else whole."""
    if fn is None:
        return sample
    if isinstance(sample, (tuple, list)):
        return fn(*sample)
    return fn(sample)


def staging_store() -> Store:
    """The local staging area ``migrate data --chunk`` writes to (``<project>/.benchkit/staging``)."""
    from benchkit.data.writer import staging_root
    from benchkit.settings import find_project_file

    project = find_project_file()
    return open_store(staging_root(project.parent if project else Path.cwd()))


def _resolve_store(source: Any) -> Store:
    """``True``: the configured store; ``False``: the local staging area; else a URL or Store."""
    if source is True or source is None:
        return open_store(None)
    if source is False:
        return staging_store()
    return open_store(source)


def _parent_is(ppid: int) -> bool:
    return os.getppid() == ppid


def _topology() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialized, else RANK/WORLD_SIZE, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as e:
        raise DataError(f"RANK/WORLD_SIZE must be integers ({e})") from e


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
        self._source = store if store is not None else cloud
        self._shared = torch.zeros(5, dtype=torch.int64)
        self._shared.share_memory_()
        self._store: Store | None = None
        self._index: DatasetIndex | None = None
        self._rank_arg: int | None = None
        self._world_arg: int | None = None
        self._frozen_topology: tuple[int, int] | None = None
        self.drop_last = False
        self.transform: Callable[..., Any] | None = None
        self.cache_limit = cache_limit
        self._block = 1
        self._session: str | None = None  # set by StreamingDataLoader when it fetches for workers
        self._consumed_here = 0  # raw samples this process's current iteration handed out
        self._readers: dict[int, Any] = {}
        self._local: bool | None = None
        self._cache: Any = None
        self._marks: Any = None
        self._configure(
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            transform=transform,
            shuffle_window=shuffle_window,
        )

    # --- configuration ---------------------------------------------------------------------

    def _configure(self, **options: Any) -> IterableChunk:
        """Set streaming options after construction (what ``open_dataset`` does for subclasses)."""
        for key, value in options.items():
            if key == "store":
                if value is not None:
                    self._source, self._store, self._index, self._local = value, None, None, None
            elif key == "shuffle":
                self._shared[_SHUFFLE] = int(bool(value))
            elif key == "seed":
                self._shared[_SEED] = int(value) & _INT63
            elif key == "shuffle_window":
                if int(value) < 1:
                    raise DataError(
                        f"dataset '{self.name}': shuffle_window must be >= 1 chunk, got {value}"
                    )
                self._shared[_WINDOW] = int(value)
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

    @property
    def shuffle(self) -> bool:
        return bool(self._shared[_SHUFFLE])

    @property
    def seed(self) -> int:
        return int(self._shared[_SEED])

    @property
    def shuffle_window(self) -> int:
        return int(self._shared[_WINDOW])

    @property
    def epoch(self) -> int:
        return int(self._shared[_EPOCH])

    @property
    def _start(self) -> int:
        return int(self._shared[_START])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its shuffle order). A different epoch starts from its beginning;
        the current one keeps its position (so a resumed epoch is not restarted)."""
        if int(epoch) != self.epoch:
            self._shared[_EPOCH] = int(epoch)
            self._shared[_START] = 0
        self._consumed_here = 0

    def topology(self) -> tuple[int, int]:
        """(rank, world size) this dataset shards for."""
        if self._frozen_topology is not None:
            return self._frozen_topology
        rank, world = _topology()
        if self._world_arg is not None:
            world = self._world_arg
        if self._rank_arg is not None:
            rank = self._rank_arg
        if not 0 <= rank < world:
            raise DataError(f"dataset '{self.name}': rank {rank} is outside world size {world}")
        return rank, world

    # --- store and index -------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = _resolve_store(self._source)
        return self._store

    @property
    def index(self) -> DatasetIndex:
        """The dataset's ``index.json`` (read once)."""
        if self._index is None:
            self._index = load_index(self.store, self.name)
        return self._index

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

    def _label(self, c: int) -> str:
        return f"'{self.index.chunks[c].file}' of dataset '{self.name}' in store {self.store.url}"

    def _key(self, c: int) -> str:
        return dataset_prefix(self.name) + self.index.chunks[c].file

    def _is_local(self) -> bool:
        if self._local is None:
            try:
                self._local = (
                    self.store.local_path(dataset_prefix(self.name) + "index.json") is not None
                )
            except ObjectNotFound:
                self._local = False
        return self._local

    def _get_cache(self) -> Any:
        if self._cache is None:
            from benchkit.data.cache import ChunkCache

            self._cache = ChunkCache(self.store, limit=self.cache_limit)
        return self._cache

    def _get_marks(self) -> Any:
        if self._marks is None:
            from benchkit.data.cache import VerifiedMarks

            self._marks = VerifiedMarks()
        return self._marks

    # --- opening chunks --------------------------------------------------------------------

    def _prepare_chunk(self, c: int) -> Path:
        """Make chunk ``c`` readable here and verified: its path (downloads remote chunks)."""
        info = self.index.chunks[c]
        if self._is_local():
            try:
                path = self.store.local_path(self._key(c))
            except ObjectNotFound as e:
                raise CorruptChunk(
                    f"chunk {self._label(c)} is missing; repair the dataset with "
                    f"`python -m benchkit datasets verify {self.name} --repair`"
                ) from e
            assert path is not None
            self._get_marks().open_verified(path, info.sha256, self._label(c)).close()
            return path
        try:
            return self._get_cache().fetch(self._key(c), info.sha256, info.bytes, self._label(c))
        except ObjectNotFound as e:
            raise CorruptChunk(
                f"chunk {self._label(c)} is missing from the store; repair the dataset with "
                f"`python -m benchkit datasets verify {self.name} --repair`"
            ) from e
        except StoreError as e:
            raise DataError(f"cannot download chunk {self._label(c)}: {e}") from e

    def _open_chunk(self, c: int, prefetcher: Any = None) -> Any:
        """A reader for chunk ``c`` (checked on first open; remote chunks come through the cache)."""
        from benchkit.data.format import ChunkReader

        info = self.index.chunks[c]
        label = self._label(c)
        if self._is_local():
            if prefetcher is not None:
                prefetcher.get(c)
            try:
                path = self.store.local_path(self._key(c))
            except ObjectNotFound as e:
                raise CorruptChunk(
                    f"chunk {label} is missing; repair the dataset with "
                    f"`python -m benchkit datasets verify {self.name} --repair`"
                ) from e
            return self._get_marks().open_verified(path, info.sha256, label)
        from benchkit.data.cache import pin, unpin

        cache = self._get_cache()
        for attempt in range(5):
            if prefetcher is not None and attempt == 0:
                path = prefetcher.get(c)[0]
            elif self.store.usable_here():
                path = self._prepare_chunk(c)
            elif self._session is not None:
                alive = functools.partial(_parent_is, os.getppid())
                path = cache.wait_for(info.sha256, label, self._session, alive)
            else:
                raise self._fork_error()
            try:
                fd = pin(path)
            except FileNotFoundError:
                continue  # evicted between fetch and open: fetch again
            try:
                reader = ChunkReader(path, label=label)
            except BaseException:
                unpin(fd)
                raise
            reader._benchkit_pin = fd
            cache.touch(info.sha256)
            return reader
        raise DataError(
            f"chunk {label} keeps disappearing from the cache {cache.root}; is cache_limit "
            f"({cache.limit // 10**6} MB) smaller than the chunks being read?"
        )

    def _fork_error(self) -> DataError:
        return DataError(
            f"dataset '{self.name}': DataLoader workers forked from this process cannot "
            f"download from store {self.store.url} (tensorstore does not survive fork). "
            "Use bench.get_dataset(...) or benchkit.data.loader.StreamingDataLoader, which "
            "download in the main process, or DataLoader(..., multiprocessing_context='spawn')"
        )

    def _close_reader(self, reader: Any) -> None:
        reader.close()
        fd = getattr(reader, "_benchkit_pin", None)
        if fd is not None:
            from benchkit.data.cache import unpin

            unpin(fd)
            reader._benchkit_pin = None

    # --- iteration -------------------------------------------------------------------------

    def _order(self, epoch: int | None = None) -> GlobalOrder:
        return GlobalOrder(
            [c.samples for c in self.index.chunks],
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shuffle=self.shuffle,
            window=self.shuffle_window,
        )

    def _shard(self) -> Shard:
        rank, world = self.topology()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return Shard(
            rank, world, worker, workers, self._block if info is not None else 1, self.drop_last
        )

    def _prefetch_entries(self, order: GlobalOrder, start: int) -> list[tuple[int, int, int]]:
        """``(first needed, no longer needed, chunk)`` for every chunk ``G[start:]`` reads, in plan
        order, plus the chunks of the padding samples at the end. O(chunks): a window's chunks
        are all needed from the window's first sample to its last."""
        import numpy as np

        total = order.total
        entries: list[tuple[int, int, int]] = []
        if total == 0 or start >= total:
            return entries
        for w in range(int(order.window_of(start)), order.num_windows):
            lo, hi = int(order.window_starts[w]), int(order.window_starts[w + 1])
            entries.extend((max(start, lo), hi, int(c)) for c in order.window_chunks(w))
        _, world = self.topology()
        pad = -(total - start) % world if not self.drop_last else 0
        if pad:
            chunks, _ = order.lookup(np.arange(min(pad, total)))
            entries.extend((total, total + world, int(c)) for c in dict.fromkeys(chunks.tolist()))
        return entries

    def _prefetch_hold(self, c: int) -> tuple[Path, int | None]:
        """Prepare chunk ``c`` and, for a cached one, pin it until the prefetcher lets go."""
        from benchkit.data.cache import pin

        for _attempt in range(5):
            path = self._prepare_chunk(c)
            if self._is_local():
                return path, None
            try:
                return path, pin(path)
            except FileNotFoundError:
                continue
        raise DataError(
            f"chunk {self._label(c)} keeps disappearing from the cache; is cache_limit too small?"
        )

    def _make_prefetcher(self, order: GlobalOrder, start: int, on_error: Any = None) -> Any:
        """Background preparation of the chunks ``G[start:]`` needs, in order of first use."""
        from benchkit.data.cache import Prefetcher

        entries = self._prefetch_entries(order, start)
        if not entries:
            return None

        def release(result: tuple[Path, int | None]) -> None:
            if result[1] is not None:
                from benchkit.data.cache import unpin

                unpin(result[1])

        return Prefetcher(
            self._prefetch_hold,
            entries,
            depth=2 * self.shuffle_window,
            threads=4,
            release=release,
            on_error=on_error,
        )

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
            raise self._fork_error()  # before reading the index through the store
        index = self.index
        epoch, start = self.epoch, self._start
        order = self._order(epoch)
        shard = self._shard()
        total = index.num_samples
        self._consumed_here = 0
        prefetcher = None
        if info is None and not (self._is_local() and len(index.chunks) <= 1):
            prefetcher = self._make_prefetcher(order, start)
        chunk_window = {}
        for w in range(order.num_windows):
            for c in order.window_chunks(w):
                chunk_window[int(c)] = w
        readers: dict[int, Any] = {}
        current_window = -1
        try:
            for positions in shard.positions(total, start):
                chunks, idxs = order.lookup(positions)
                for p, c, i in zip(
                    positions.tolist(), chunks.tolist(), idxs.tolist(), strict=False
                ):
                    reader = readers.get(c)
                    if reader is None:
                        w = chunk_window[c]
                        if w != current_window:
                            for old in [k for k in readers if chunk_window[k] != w]:
                                self._close_reader(readers.pop(old))
                            current_window = w
                            if prefetcher is not None:
                                prefetcher.advance(p)
                        reader = readers[c] = self._open_chunk(c, prefetcher)
                    sample = reader[i]
                    self._consumed_here += 1
                    yield sample
        finally:
            for r in readers.values():
                self._close_reader(r)
            if prefetcher is not None:
                prefetcher.close()
        if info is None:
            self._finish_pass(epoch, start)

    def _finish_pass(self, epoch: int, start: int) -> None:
        """A pass of ``epoch`` from ``start`` ran to its end: move on to the next epoch, unless
        someone already chose another position meanwhile (set_epoch, load_state_dict)."""
        if self.epoch == epoch and self._start == start:
            self._shared[_EPOCH] = epoch + 1
            self._shared[_START] = 0
            self._consumed_here = 0

    def __iter__(self) -> Iterator[Any]:
        fn = self.transform
        if fn is None:
            yield from self._data_iterator()
        else:
            for sample in self._data_iterator():
                yield apply_transform(fn, sample)

    # --- resume ----------------------------------------------------------------------------

    def _consumed(self, rank_samples: int) -> int:
        """Global positions consumed once every rank has taken ``rank_samples`` since the start."""
        _, world = self.topology()
        return min(self.num_samples, self._start + rank_samples * world)

    def _state(self, epoch: int, consumed: int) -> dict[str, Any]:
        _, world = self.topology()
        return {
            "version": STATE_VERSION,
            "dataset": self.name,
            "num_samples": self.num_samples,
            "fingerprint": self.fingerprint(),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_window": self.shuffle_window,
            "epoch": epoch,
            "consumed": consumed,
            "world_size": world,
            "drop_last": self.drop_last,
        }

    def state_dict(self) -> dict[str, Any]:
        """Where this epoch stands: the samples of its global order consumed by all ranks.

        Counts what this process's iteration handed out (use the loader's ``state_dict`` with
        DataLoader workers). Plain ints and strings: safe for ``torch.save``/JSON.
        """
        return self._state(self.epoch, self._consumed(self._consumed_here))

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
        self._configure(
            seed=state["seed"], shuffle=state["shuffle"], shuffle_window=state["shuffle_window"]
        )
        if bool(state.get("drop_last", self.drop_last)) != self.drop_last:
            log.info(
                "dataset '%s': resuming with drop_last=%s (saved with %s)",
                self.name,
                self.drop_last,
                state.get("drop_last"),
            )
        self._shared[_EPOCH] = int(state["epoch"])
        self._shared[_START] = consumed
        self._consumed_here = 0

    # --- pickling (DataLoader workers) -----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # workers need the index and the topology of the process that made them
        try:
            state["_index"] = self.index
            state["_local"] = self._is_local()
        except Exception:  # noqa: BLE001 - a dataset that cannot open still pickles
            pass
        state["_frozen_topology"] = self._frozen_topology or self.topology()
        state["_readers"] = {}
        state["_cache"] = None
        state["_marks"] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, store={getattr(self._store, 'url', self._source)!r})"


# --- the public helpers --------------------------------------------------------------------

_DATASET_OPTIONS = (
    "shuffle",
    "seed",
    "rank",
    "world_size",
    "drop_last",
    "transform",
    "shuffle_window",
    "cache_limit",
    "store",
)
_LOADER_OPTIONS = (
    "collate_fn",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "multiprocessing_context",
    "timeout",
    "worker_init_fn",
    "device",
    "drop_last_batch",
)


def _accepts(cls: type, name: str) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in params and cls.__init__ is not IterableChunk.__init__


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
        if not isinstance(getattr(ds, "_shared", None), torch.Tensor):
            raise DataError(f"{cls.__name__}.__init__ must call super().__init__(name, cloud)")
        ds._configure(store=source if store is not None else None)
    ds._configure(
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        shuffle_window=shuffle_window,
        cache_limit=cache_limit,
    )
    if transform is not None:
        ds._configure(transform=transform)
    return ds


def get_dataset(
    chunk_class: type | None,
    cloud: Any,
    name: str,
    batch_size: int,
    num_workers: int,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """The original helper: a DataLoader over ``chunk_class(name, cloud, *args, **kwargs)``.

    ``cloud``: True = the configured store, False = the local staging area, or a store URL.
    Streaming options (``shuffle``, ``seed``, ``drop_last``, ``rank``, ``world_size``, ...)
    and DataLoader options (``collate_fn``, ``pin_memory``, ``persistent_workers``, ...) may be
    passed as keywords unless the class's constructor takes a parameter of that name. Returns a
    :class:`~benchkit.data.loader.StreamingDataLoader` whose ``state_dict`` covers every worker.
    """
    from benchkit.data.loader import StreamingDataLoader

    cls = chunk_class or IterableChunk
    if not (isinstance(cls, type) and issubclass(cls, IterableChunk)):
        raise DataError(
            f"get_dataset: the first argument must be an IterableChunk subclass, got {cls!r}"
        )
    ds_opts = {
        k: kwargs.pop(k) for k in list(kwargs) if k in _DATASET_OPTIONS and not _accepts(cls, k)
    }
    loader_opts = {
        k: kwargs.pop(k) for k in list(kwargs) if k in _LOADER_OPTIONS and not _accepts(cls, k)
    }
    ds = cls(name, cloud, *args, **kwargs)
    if not isinstance(getattr(ds, "_shared", None), torch.Tensor):
        raise DataError(f"{cls.__name__}.__init__ must call super().__init__(name, cloud)")
    if ds_opts:
        ds._configure(**ds_opts)
    drop_last_batch = loader_opts.pop("drop_last_batch", False)
    return StreamingDataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last_batch, **loader_opts
    )
