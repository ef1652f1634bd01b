"""Where a dataset's chunks are read from: a :class:`ChunkSource`, chosen once per dataset.

- :class:`LocalChunks`: a local-directory store. Chunks are memory-mapped in place, never
  copied, and checked block by block as they are first read, every reader of the machine
  sharing one record of the blocks checked; a fully checked file is remembered
  (:class:`~benchkit.data.cache.VerifiedMarks`). Prefetching reads them into the page cache.
- :class:`CachedChunks`: any other store (S3, GCS, a Bench server, tensorstore ``memory``/``file``).
  Chunks are downloaded into the verified local cache (:class:`~benchkit.data.cache.ChunkCache`)
  and read from there; a chunk being read or waiting to be read is pinned, so the cache never
  evicts it. DataLoader workers forked from a process that uses tensorstore cannot download:
  they wait for the files that the loader's process downloads for them (:meth:`serve_workers`).

Both offer the same four operations, which the prefetcher and the dataset use without knowing
which kind they hold: :meth:`~ChunkSource.prepare` (make a chunk readable and verified here,
returning a hold on it), :meth:`~ChunkSource.release` (drop that hold),
:meth:`~ChunkSource.open` (a :class:`~benchkit.data.format.ChunkReader`) and
:meth:`~ChunkSource.close`. :class:`Window` keeps the chunks of the plan's current window open.
"""

from __future__ import annotations

import contextlib
import functools
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from benchkit.data.cache import ChunkCache, VerifiedMarks, pin, unpin
from benchkit.data.format import BLOCK_DIGEST_HEX, ChunkReader
from benchkit.data.index import DatasetIndex, dataset_prefix
from benchkit.data.plan import GlobalOrder
from benchkit.data.prefetch import Prefetcher
from benchkit.errors import CorruptChunk, DataError, ObjectNotFound, StoreError
from benchkit.store import Store

__all__ = ["CachedChunks", "ChunkSource", "LocalChunks", "Window", "fork_error", "open_source"]

#: a cached chunk evicted between its download and its opening is fetched again this often
_ATTEMPTS = 5


def fork_error(name: str, store: Store) -> DataError:
    """What a DataLoader worker forked from a tensorstore user says when it would download."""
    return DataError(
        f"dataset '{name}': DataLoader workers forked from this process cannot "
        f"download from store {store.url} (tensorstore does not survive fork). "
        "Use bench.get_dataset(...) or benchkit.data.loader.StreamingDataLoader, which "
        "download in the main process, or DataLoader(..., multiprocessing_context='spawn')"
    )


def _parent_is(ppid: int) -> bool:
    return os.getppid() == ppid


class ChunkSource(ABC):
    """Opens the verified chunks of one dataset in one store."""

    #: True when chunks are read in place (no cache, nothing to download)
    local: bool = False

    def __init__(self, store: Store, name: str, index: DatasetIndex) -> None:
        self.store = store
        self.name = name
        self.index = index

    def label(self, c: int) -> str:
        """How error messages name chunk ``c``: file, dataset and store."""
        return f"'{self.index.chunks[c].file}' of dataset '{self.name}' in store {self.store.url}"

    def key(self, c: int) -> str:
        return dataset_prefix(self.name) + self.index.chunks[c].file

    @abstractmethod
    def prepare(self, c: int) -> Any:
        """Make chunk ``c`` readable here and verified; returns a hold for :meth:`release`."""

    def release(self, hold: Any) -> None:  # noqa: B027 - most holds need no release
        """Drop a hold from :meth:`prepare`."""

    @abstractmethod
    def open(self, c: int, prefetcher: Prefetcher | None = None) -> ChunkReader:
        """A reader over chunk ``c``; ``prefetcher`` is preparing chunks ahead, if one runs."""

    def close(self, reader: ChunkReader) -> None:
        """Close a reader from :meth:`open`."""
        reader.close()

    def serve_workers(self, session: str | None) -> None:  # noqa: B027 - local: nothing to serve
        """Worker processes of ``session`` wait for the chunks this process prepares."""

    def record_error(self, c: int, session: str, error: BaseException) -> None:  # noqa: B027
        """Tell the workers of ``session`` waiting for chunk ``c`` that preparing it failed."""

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LocalChunks(ChunkSource):
    """Chunks memory-mapped in place from a local-directory store, checked on first open."""

    local = True

    def __init__(self, store: Store, name: str, index: DatasetIndex) -> None:
        super().__init__(store, name, index)
        self.marks = VerifiedMarks()

    def _path(self, c: int) -> Path:
        try:
            path = self.store.local_path(self.key(c))
        except ObjectNotFound as e:
            raise CorruptChunk(
                f"chunk {self.label(c)} is missing; repair the dataset with "
                f"`python -m benchkit datasets verify {self.name} --repair`"
            ) from e
        assert path is not None
        return path

    def prepare(self, c: int) -> Any:
        """Get chunk ``c`` ready ahead of its readers. With block digests: ask the kernel to read
        the file into the page cache, then check its blocks in file order as they arrive, in the
        shared block map, so the readers find them checked (a block a reader needs first it
        checks itself; either way each is hashed about once per machine). A mismatch is left for
        the reader of that block to report. An older chunk without block digests is checked
        whole. Either check is remembered: a verified file is not read here again."""
        info, path, label = self.index.chunks[c], self._path(c), self.label(c)
        if not info.blocks:
            self.marks.open_verified(path, info.sha256, label).close()
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise CorruptChunk(f"chunk {label}: file {path} is missing") from e
        try:
            st = os.fstat(fd)
            if self.marks.is_verified(path, info.sha256, st):
                return None
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
        with contextlib.suppress(CorruptChunk):  # its reader raises it, naming the sample
            reader = self._lazy_reader(c, path, st)
            try:
                reader.verify_all()
            finally:
                reader.close()
        return None

    def _lazy_reader(self, c: int, path: Path, st: os.stat_result) -> ChunkReader:
        """A reader of chunk ``c`` checking each block when first read, in the shared map."""
        info = self.index.chunks[c]
        count = len(info.blocks) // BLOCK_DIGEST_HEX
        return ChunkReader(
            path,
            blocks=info.blocks,
            block_bytes=info.block_bytes,
            checked=self.marks.block_map(path, info.sha256, st, count),
            on_verified=functools.partial(self.marks.mark, path, info.sha256, st),
            label=self.label(c),
        )

    def open(self, c: int, prefetcher: Prefetcher | None = None) -> ChunkReader:
        """A reader of chunk ``c``: unchecked if this machine already verified the file;
        else, for chunks with block digests, checking each block when first read (so the first
        sample does not wait for the whole chunk's hash); else checked whole first."""
        info, path, label = self.index.chunks[c], self._path(c), self.label(c)
        if not info.blocks:
            if prefetcher is not None:
                prefetcher.get(c)  # its whole-chunk check is under way: wait rather than redo it
            return self.marks.open_verified(path, info.sha256, label)
        try:
            st = os.stat(path)
        except FileNotFoundError as e:
            raise CorruptChunk(f"chunk {label}: file {path} is missing") from e
        if self.marks.is_verified(path, info.sha256, st):
            return ChunkReader(path, label=label)
        return self._lazy_reader(c, path, st)


class CachedChunks(ChunkSource):
    """Chunks of a remote store, read from the verified local cache."""

    def __init__(
        self, store: Store, name: str, index: DatasetIndex, cache_limit: str | int | None = None
    ) -> None:
        super().__init__(store, name, index)
        self.cache = ChunkCache(store, limit=cache_limit)
        self.session: str | None = None
        self._pins: dict[int, int] = {}  # id(reader) -> pinned descriptor

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pins": {}}

    def serve_workers(self, session: str | None) -> None:
        self.session = session

    def record_error(self, c: int, session: str, error: BaseException) -> None:
        self.cache.record_error(self.index.chunks[c].sha256, session, str(error))

    def _fetch(self, c: int) -> Path:
        info = self.index.chunks[c]
        try:
            return self.cache.fetch(self.key(c), info.sha256, info.bytes, self.label(c))
        except ObjectNotFound as e:
            raise CorruptChunk(
                f"chunk {self.label(c)} is missing from the store; repair the dataset with "
                f"`python -m benchkit datasets verify {self.name} --repair`"
            ) from e
        except StoreError as e:
            raise DataError(f"cannot download chunk {self.label(c)}: {e}") from e

    def _locate(self, c: int) -> Path:
        """The cached file of chunk ``c``: downloaded here, or by the loader's process."""
        if self.store.usable_here():
            return self._fetch(c)
        if self.session is not None:
            alive = functools.partial(_parent_is, os.getppid())
            return self.cache.wait_for(
                self.index.chunks[c].sha256, self.label(c), self.session, alive
            )
        raise fork_error(self.name, self.store)

    def _too_small(self, c: int) -> DataError:
        return DataError(
            f"chunk {self.label(c)} keeps disappearing from the cache {self.cache.root}; is "
            f"cache_limit ({self.cache.limit // 10**6} MB) smaller than the chunks being read?"
        )

    def prepare(self, c: int) -> tuple[Path, int]:
        """Download chunk ``c`` (if absent) and pin it until :meth:`release`."""
        for _ in range(_ATTEMPTS):
            path = self._fetch(c)
            try:
                return path, pin(path)
            except FileNotFoundError:
                continue  # evicted right after the download: fetch again
        raise self._too_small(c)

    def release(self, hold: Any) -> None:
        unpin(hold[1])

    def open(self, c: int, prefetcher: Prefetcher | None = None) -> ChunkReader:
        """A reader of the cached chunk ``c`` (verified while downloading), pinned until closed."""
        for attempt in range(_ATTEMPTS):
            if prefetcher is not None and attempt == 0:
                path = prefetcher.get(c)[0]  # downloaded (and held) by the prefetcher
            else:
                path = self._locate(c)
            try:
                fd = pin(path)
            except FileNotFoundError:
                continue  # evicted between fetch and open: fetch again
            try:
                reader = ChunkReader(path, label=self.label(c))
            except BaseException:
                unpin(fd)
                raise
            self._pins[id(reader)] = fd
            self.cache.touch(self.index.chunks[c].sha256)
            return reader
        raise self._too_small(c)

    def close(self, reader: ChunkReader) -> None:
        reader.close()
        fd = self._pins.pop(id(reader), None)
        if fd is not None:
            unpin(fd)


def is_local_store(store: Store, name: str) -> bool:
    """True when ``store`` holds dataset ``name`` as files on this machine (memory-mappable)."""
    try:
        return store.local_path(dataset_prefix(name) + "index.json") is not None
    except ObjectNotFound:
        return False


def open_source(
    store: Store,
    name: str,
    index: DatasetIndex,
    *,
    local: bool | None = None,
    cache_limit: str | int | None = None,
) -> ChunkSource:
    """The chunk source for dataset ``name`` in ``store``: in place if local, else the cache."""
    if local is None:
        local = is_local_store(store, name)
    if local:
        return LocalChunks(store, name, index)
    return CachedChunks(store, name, index, cache_limit)


class Window:
    """The open readers of one pass: the chunks of the plan's current window.

    Moving into a new window closes the previous window's readers and tells the prefetcher
    (if any) where the pass stands, so it can prepare what comes next and release the rest.
    """

    def __init__(
        self, source: ChunkSource, order: GlobalOrder, prefetcher: Prefetcher | None = None
    ) -> None:
        self.source = source
        self.prefetcher = prefetcher
        self._window_of = {
            int(c): w for w in range(order.num_windows) for c in order.window_chunks(w)
        }
        self._readers: dict[int, ChunkReader] = {}
        self._current = -1

    def reader(self, c: int, position: int) -> ChunkReader:
        """The open reader of chunk ``c``, needed at plan ``position``."""
        reader = self._readers.get(c)
        if reader is not None:
            return reader
        w = self._window_of[c]
        if w != self._current:
            for old in [k for k in self._readers if self._window_of[k] != w]:
                self.source.close(self._readers.pop(old))
            self._current = w
            if self.prefetcher is not None:
                self.prefetcher.advance(position)
        reader = self._readers[c] = self.source.open(c, self.prefetcher)
        return reader

    def will_read(self, positions: Any, chunks: Any, idxs: Any) -> None:
        """The samples at plan ``positions`` (``chunks``/``idxs`` from the order's lookup) come
        next: have the kernel read them (and their unchecked blocks) all at once, in the
        background, rather than one page fault at a time (see ``ChunkReader.will_read``). Only
        the window of the first position, so no reader is opened ahead of its window."""
        if not len(positions):
            return
        w = self._window_of[int(chunks[0])]
        wanted: dict[int, list[int]] = {}
        first: dict[int, int] = {}
        for p, c, i in zip(positions.tolist(), chunks.tolist(), idxs.tolist(), strict=True):
            if self._window_of[c] == w:
                wanted.setdefault(c, []).append(i)
                first.setdefault(c, p)
        for c, indices in wanted.items():
            self.reader(c, first[c]).will_read(indices)

    def close(self) -> None:
        for reader in self._readers.values():
            self.source.close(reader)
        self._readers = {}
