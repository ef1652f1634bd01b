"""A DataLoader that can say exactly where it stands: :class:`StreamingDataLoader`.

With ``num_workers > 0`` a ``DataLoader`` over an iterable dataset hands out its workers'
batches round-robin, in order. The dataset's plan gives worker ``w`` the rank's batch-sized
blocks ``w, w + K, ...``, so the batches the training loop receives are the rank's samples in
plan order; the number of batches received is therefore the whole state, whatever the
workers had prefetched. ``load_state_dict`` turns it back into a start position of the global
order, and the next iteration re-plans the rest over the workers.

Accelerate: ``Accelerator.prepare()`` would wrap an iterable dataset's loader again (shard it a
second time, or dispatch batches from rank 0). The dataset is already sharded by rank, so this
loader marks itself as prepared: ``prepare()`` returns it unchanged and registers it, and
``accelerator.save_state()``/``load_state()`` save and restore its ``state_dict`` (it declares
``use_stateful_dataloader``). Batches go to ``device`` when one is set
(``loader.device = accelerator.device``).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from benchkit.data.batch import collate
from benchkit.data.mix import MixedDataset
from benchkit.data.plan import samples_per_rank
from benchkit.data.stream import IterableChunk, build_dataset
from benchkit.errors import DataError

__all__ = ["StreamingDataLoader", "get_dataset"]

log = logging.getLogger(__name__)


class StreamingDataLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` over an :class:`IterableChunk` (or a mix of them,
    :class:`~benchkit.data.mix.MixedDataset`) with exact mid-epoch resume."""

    # accelerate: pass this loader through prepare() untouched (it is already sharded by rank),
    # and save/load its state_dict in save_state()/load_state()
    _is_accelerate_prepared = True
    use_stateful_dataloader = True

    def __init__(
        self,
        dataset: IterableChunk | MixedDataset,
        batch_size: int | None = 1,
        num_workers: int = 0,
        *,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dataset, (IterableChunk, MixedDataset)):
            raise DataError(
                f"StreamingDataLoader needs a benchkit IterableChunk (from bench.open_dataset) "
                f"or MixedDataset (bench.mix), got {type(dataset).__name__}"
            )
        if kwargs.get("shuffle"):
            raise DataError(
                "StreamingDataLoader: shuffle is a property of the dataset; use "
                "bench.open_dataset(name, shuffle=True, seed=...)"
            )
        kwargs.pop("shuffle", None)
        if batch_size is not None and kwargs.get("collate_fn") is None:
            kwargs["collate_fn"] = collate  # stored files cross from workers in shared memory
        super().__init__(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)
        self.device = device
        self._session = uuid.uuid4().hex
        # (epoch, start) of the pass in progress and the rank samples it has delivered
        self._active: tuple[int, int] | None = None
        self._delivered = 0

    @property
    def _ds(self) -> IterableChunk | MixedDataset:
        return self.dataset  # type: ignore[return-value]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (see :meth:`IterableChunk.set_epoch`)."""
        self._ds.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        ds = self._ds
        step = self.batch_size or 1
        ds.set_worker_block(step)
        total = ds.num_samples  # reads the index before the workers start, so they inherit it
        _, world = ds.topology()
        epoch, start = ds.epoch_state.epoch, ds.epoch_state.start
        per_rank = samples_per_rank(total, start, world, ds.drop_last)
        remote = self.num_workers > 0 and ds.remote
        if remote:
            ds.serve_workers(self._session)  # workers wait for what this process downloads
        lookahead = (self.prefetch_factor or 2) * max(1, self.num_workers) * step * world
        self._active, self._delivered = (epoch, start), 0
        prefetcher = None
        finished = False
        batches = super().__iter__()  # forks the workers (first pass) before any thread starts:
        # a fork while a prefetch thread holds a file lock would leave the lock held in the child
        # a remote store's chunks are downloaded for the workers from the start; local ones are
        # only read ahead into the page cache, which waits for the first batch so that it does
        # not queue in front of the first batch's own reads
        later = self.num_workers > 0 and bool(total) and not remote
        try:
            if self.num_workers > 0 and total and not later:
                prefetcher = ds.prefetcher(epoch, start, session=self._session if remote else None)
            for batch in batches:
                self._delivered = min(per_rank, self._delivered + step)
                if later:
                    prefetcher, later = ds.prefetcher(epoch, start), False
                if prefetcher is not None:
                    prefetcher.advance(start + self._delivered * world, lookahead)
                if self.device is not None:
                    from accelerate.utils import send_to_device

                    batch = send_to_device(batch, self.device)
                yield batch
            finished = True
        finally:
            if prefetcher is not None:
                prefetcher.close()
            if finished:
                self._active = None
                ds.finish_pass(epoch, start)
            elif not self.persistent_workers:
                # an error (say, a corrupt chunk) keeps this frame alive in its traceback, and
                # with it the workers: stop them now rather than when the traceback goes
                shutdown = getattr(batches, "_shutdown_workers", None)
                if callable(shutdown):
                    shutdown()

    def state_dict(self) -> dict[str, Any]:
        """The dataset's position after the batches this loader has delivered (every worker's)."""
        ds = self._ds
        if self._active is None:
            return ds.resume_state(ds.epoch_state.epoch, ds.epoch_state.start)
        epoch, start = self._active
        _, world = ds.topology()
        return ds.resume_state(epoch, start + self._delivered * world)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next pass yields exactly the batches that were left."""
        if isinstance(state, dict) and "dataset" in state and isinstance(state["dataset"], dict):
            state = state["dataset"]  # a wrapped state
        self._ds.load_state_dict(state)
        self._active, self._delivered = None, 0


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


def get_dataset(
    chunk_class: type | None,
    cloud: Any,
    name: str,
    batch_size: int,
    num_workers: int,
    *args: Any,
    **kwargs: Any,
) -> StreamingDataLoader:
    """The original helper: a DataLoader over ``chunk_class(name, cloud, *args, **kwargs)``.

    ``cloud``: True = the configured store, False = the local staging area, or a store URL.
    Streaming options (``shuffle``, ``seed``, ``drop_last``, ``rank``, ``world_size``, ...)
    and DataLoader options (``collate_fn``, ``pin_memory``, ``persistent_workers``, ...) may be
    passed as keywords unless the class's constructor takes a parameter of that name. Returns a
    :class:`~benchkit.data.loader.StreamingDataLoader` whose ``state_dict`` covers every worker.
    """
    cls = chunk_class or IterableChunk
    ds_opts = {
        k: kwargs.pop(k) for k in list(kwargs) if k in _DATASET_OPTIONS and not _accepts(cls, k)
    }
    loader_opts = {
        k: kwargs.pop(k) for k in list(kwargs) if k in _LOADER_OPTIONS and not _accepts(cls, k)
    }
    ds = build_dataset(cls, name, cloud, *args, **kwargs)
    if ds_opts:
        ds.configure(**ds_opts)
    drop_last_batch = loader_opts.pop("drop_last_batch", False)
    return StreamingDataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last_batch, **loader_opts
    )
