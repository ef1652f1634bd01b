"""Batches of stored files that cross from DataLoader workers to the training process uncopied.

A ``DataLoader`` worker sends each batch to the training process by pickling it through a pipe.
:func:`collate` is ``torch.utils.data.default_collate`` plus one rule: a batch field of stored
files (:class:`~benchkit.data.sample.ChunkFile`) becomes a :class:`FileBatch`, which crosses
without its bytes:

- files read from a memory-mapped chunk (every local or cached chunk) cross as references,
  ``(chunk file, inode, offset, size)``: the training process maps the same file and the
  batch's files are views of the same page cache the worker read (and verified). Nothing is
  copied at all; a chunk file replaced in between (another inode) is refused, not misread;
- other files are packed once into one uint8 tensor allocated in shared memory, of which only a
  handle crosses.

``StreamingDataLoader`` uses it unless given another ``collate_fn``. References only make
sense on the machine that made them: pickle ``batch.data`` to send bytes elsewhere.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import collate as _collate
from torch.utils.data._utils.collate import default_collate_fn_map

from benchkit.data.sample import ChunkFile
from benchkit.errors import CorruptChunk, DataError

__all__ = ["FileBatch", "collate"]

#: chunk files the training process keeps mapped for batches of references (least recently used
#: go first; views still held keep their mapping alive)
MAX_MAPPED = 16
_mapped: OrderedDict[tuple[str, int], memoryview] = OrderedDict()
_mapped_lock = threading.Lock()


def _mapping(path: str, inode: int) -> memoryview:
    """A read-only view of chunk file ``path``, which must still be the file of ``inode``."""
    key = (path, inode)
    with _mapped_lock:
        view = _mapped.get(key)
        if view is not None:
            _mapped.move_to_end(key)
            return view
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != inode:
                raise CorruptChunk(
                    f"chunk file {path} was replaced while a batch read from it was on its way "
                    "from a DataLoader worker; start the epoch again"
                )
            view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except FileNotFoundError as e:
        raise DataError(
            f"chunk file {path} disappeared while a batch read from it was on its way from a "
            "DataLoader worker (was the chunk cache cleared?)"
        ) from e
    with _mapped_lock:
        _mapped[key] = view
        while len(_mapped) > MAX_MAPPED:
            _mapped.popitem(last=False)
    return view


def _referenced(path: str, inode: int, at: int, size: int, name: str) -> ChunkFile:
    view = _mapping(path, inode)
    if at < 0 or at + size > len(view):
        raise CorruptChunk(
            f"chunk file {path}: a batch refers to bytes {at}-{at + size} past its end"
        )
    return ChunkFile(view[at : at + size], name, (path, inode, at))


class FileBatch:
    """A batch field of stored files: ``len(batch)`` :class:`ChunkFile` objects.

    ``batch[i]`` is the i-th file, a view (no copy) of the memory-mapped chunk it was read from,
    in whichever process it is used (see the module docstring for how it crosses from a worker).
    Files that came from elsewhere are packed into :attr:`data` (uint8, shared memory) with
    :attr:`offsets`; :attr:`data`/:attr:`offsets` pack any batch on demand, and
    :meth:`tensors` gives each file as a uint8 tensor (for ``torchvision.io.decode_jpeg``).
    """

    def __init__(
        self,
        files: list[ChunkFile] | None = None,
        *,
        data: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
        names: list[str] | None = None,
        refs: list[tuple[str, int, int, int]] | None = None,
    ) -> None:
        self._refs = refs
        if refs is not None and names is not None:
            files = [
                _referenced(path, inode, at, size, name)
                for (path, inode, at, size), name in zip(refs, names, strict=True)
            ]
        self._files = files
        self._data = data
        self._offsets = offsets
        self._names = names if names is not None else [f.name for f in files or ()]
        self._bounds: list[int] | None = offsets.tolist() if offsets is not None else None
        self._view: memoryview | None = None

    @classmethod
    def for_transfer(cls, files: list[ChunkFile]) -> FileBatch:
        """The batch as a worker sends it: references when every file has an origin in a
        mapped chunk, else packed into shared memory."""
        if all(f.origin is not None for f in files):
            refs = [(*f.origin, len(f)) for f in files]  # type: ignore[misc]
            return cls(files, refs=refs)
        return cls.pack(files)

    @classmethod
    def pack(cls, files: list[ChunkFile]) -> FileBatch:
        """Copy the files' bytes into one buffer: shared memory when called in a DataLoader worker."""
        bounds = np.zeros(len(files) + 1, dtype=np.int64)
        np.cumsum([len(f) for f in files], out=bounds[1:])
        total = int(bounds[-1])
        if get_worker_info() is not None and total:
            # allocated in shared memory, as default_collate does, so no copy is made to send it
            data = torch.empty(0, dtype=torch.uint8)
            data.set_(torch.UntypedStorage._new_shared(total), 0, (total,), (1,))
        else:
            data = torch.empty(total, dtype=torch.uint8)
        out = memoryview(data.numpy()) if total else memoryview(b"")
        for f, lo, hi in zip(files, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            out[lo:hi] = f.getbuffer()
        return cls(data=data, offsets=torch.from_numpy(bounds), names=[f.name for f in files])

    def _packed(self) -> FileBatch:
        if self._data is None:
            p = FileBatch.pack(self._files or [])
            self._data, self._offsets, self._bounds = p._data, p._offsets, p._bounds
        return self

    @property
    def data(self) -> torch.Tensor:
        """Every file's bytes, one after the other (uint8)."""
        return self._packed()._data  # type: ignore[return-value]

    @property
    def offsets(self) -> torch.Tensor:
        """Where file ``i`` starts (``offsets[i]``) and ends (``offsets[i + 1]``) in :attr:`data`."""
        return self._packed()._offsets  # type: ignore[return-value]

    @property
    def names(self) -> list[str]:
        return self._names

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i: int) -> ChunkFile:
        if self._files is not None:
            return self._files[i]
        n = len(self._names)
        if not -n <= i < n:
            raise IndexError(f"file {i} out of range: the batch holds {n}")
        i %= n
        if self._view is None:
            self._view = memoryview(self.data.numpy()).toreadonly()
        b = self._bounds
        assert b is not None
        return ChunkFile(self._view[b[i] : b[i + 1]], self._names[i])

    def __iter__(self) -> Iterator[ChunkFile]:
        if self._files is not None:
            return iter(self._files)
        return (self[i] for i in range(len(self._names)))

    def tensors(self) -> list[torch.Tensor]:
        """Each file's bytes as a 1-d uint8 tensor, a view of :attr:`data`."""
        data, b = self.data, self._bounds
        assert b is not None
        return [data[b[i] : b[i + 1]] for i in range(len(self._names))]

    def pin_memory(self) -> FileBatch:
        return FileBatch(data=self.data.pin_memory(), offsets=self.offsets, names=self._names)

    def __reduce__(self) -> Any:
        if self._refs is not None:
            return (_from_refs, (self._refs, self._names))
        return (_unpack, (self.data, self.offsets, self._names))

    def __repr__(self) -> str:
        return f"FileBatch({len(self._names)} files)"


def _unpack(data: torch.Tensor, offsets: torch.Tensor, names: list[str]) -> FileBatch:
    return FileBatch(data=data, offsets=offsets, names=names)


def _from_refs(refs: list[tuple[str, int, int, int]], names: list[str]) -> FileBatch:
    return FileBatch(refs=refs, names=names)


def _collate_files(batch: list[ChunkFile], *, collate_fn_map: Any = None) -> FileBatch:
    # in a worker the files must cross to the training process: as references to the mapped
    # chunks, or packed in shared memory; in the training process itself they already are
    # views of the mapped chunks
    return (
        FileBatch.for_transfer(batch) if get_worker_info() is not None else FileBatch(list(batch))
    )


_COLLATE_MAP = {**default_collate_fn_map, ChunkFile: _collate_files}


def collate(batch: list[Any]) -> Any:
    """``default_collate``, with a field of stored files packed into a :class:`FileBatch`."""
    return _collate(batch, collate_fn_map=_COLLATE_MAP)
