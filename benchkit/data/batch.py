"""Batches that cross from DataLoader workers to the training process through shared memory.

A ``DataLoader`` worker sends each batch to the training process by pickling it through a pipe;
tensors are the exception: their storage moves to shared memory and only a handle crosses.
:func:`collate` is ``torch.utils.data.default_collate`` plus one rule: a batch field of stored
files (:class:`~benchkit.data.sample.ChunkFile`) becomes a :class:`FileBatch`, the files'
bytes packed once into one uint8 tensor (allocated in shared memory inside a worker) with their
offsets and names. The training process then reads them in place: no pickling of the bytes, no
copy through the pipe. ``StreamingDataLoader`` uses it unless given another ``collate_fn``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import collate as _collate
from torch.utils.data._utils.collate import default_collate_fn_map

from benchkit.data.sample import ChunkFile

__all__ = ["FileBatch", "collate"]


class FileBatch:
    """A batch field of stored files: ``len(batch)`` :class:`ChunkFile` objects.

    ``batch[i]`` is the i-th file (a view, no copy). Made in a DataLoader worker, the files'
    bytes are packed into :attr:`data` (uint8, in shared memory) with :attr:`offsets` and
    :attr:`names`; made in the training process itself (``num_workers=0``) it simply holds the
    files, which are views of the memory-mapped chunks: zero copies. :meth:`tensors` gives each
    file as a uint8 tensor (for ``torchvision.io.decode_jpeg``).
    """

    def __init__(
        self,
        files: list[ChunkFile] | None = None,
        *,
        data: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
        names: list[str] | None = None,
    ) -> None:
        self._files = files
        self._data = data
        self._offsets = offsets
        self._names = names if names is not None else [f.name for f in files or ()]
        self._bounds: list[int] | None = offsets.tolist() if offsets is not None else None
        self._view: memoryview | None = None

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
        return (_unpack, (self.data, self.offsets, self._names))

    def __repr__(self) -> str:
        return f"FileBatch({len(self._names)} files)"


def _unpack(data: torch.Tensor, offsets: torch.Tensor, names: list[str]) -> FileBatch:
    return FileBatch(data=data, offsets=offsets, names=names)


def _collate_files(batch: list[ChunkFile], *, collate_fn_map: Any = None) -> FileBatch:
    # in a worker the bytes must cross to the training process: pack them in shared memory;
    # in the training process itself the files already are views of the mapped chunks
    return FileBatch.pack(batch) if get_worker_info() is not None else FileBatch(list(batch))


_COLLATE_MAP = {**default_collate_fn_map, ChunkFile: _collate_files}


def collate(batch: list[Any]) -> Any:
    """``default_collate``, with a field of stored files packed into a :class:`FileBatch`."""
    return _collate(batch, collate_fn_map=_COLLATE_MAP)
