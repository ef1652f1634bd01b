"""Sample field types that are BenchKit's own: a file on the writing side, its bytes on the reading side.

``bench.File(path)`` in a sample means "carry this file's bytes unchanged, with its name".
While streaming, that field comes back as a :class:`ChunkFile`: a read-only binary file object
over those bytes, which ``PIL.Image.open`` reads directly. For ``torchvision.io.decode_image``
pass ``f.tensor()`` (a uint8 tensor of the bytes); for libraries that insist on a path,
``f.path()`` writes the bytes once to a temporary file in the cache directory and returns it.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import weakref
from pathlib import Path
from typing import Any

__all__ = ["ChunkFile", "File"]


class File:
    """A file whose bytes go into the dataset as they are, with its name.

    ``name`` defaults to the file's base name; readers see it as :attr:`ChunkFile.name`
    (libraries use its extension to pick a decoder).
    """

    __slots__ = ("name", "path")

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name if name is not None else self.path.name

    def size(self) -> int:
        """The file's size in bytes (``os.stat``)."""
        return os.stat(self.path).st_size

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def __repr__(self) -> str:
        return f"File({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and (self.path, self.name) == (other.path, other.name)

    def __hash__(self) -> int:
        return hash((self.path, self.name))


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class ChunkFile(io.RawIOBase):
    """A read-only binary file object over a stored file's bytes (what a ``File`` field decodes to).

    Works with ``PIL.Image.open(f)``, ``f.read()``, ``f.seek()``; ``len(f)`` is its size;
    ``f.getbuffer()`` is a read-only view of the bytes (no copy); ``f.tensor()`` gives them as a
    uint8 tensor, which is what ``torchvision.io.decode_image`` accepts; ``f.path()`` gives a
    real file path for libraries that need one.

    The bytes are not copied: a ``ChunkFile`` read from a memory-mapped chunk is a view of the
    (verified) mapping, which stays mapped while the object lives; one that crossed from a
    DataLoader worker in a batch (:class:`~benchkit.data.batch.FileBatch`) is a view of the
    batch's shared memory.
    """

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        name: str,
        origin: tuple[str, int, int] | None = None,
    ) -> None:
        super().__init__()
        #: (chunk file, its inode, offset of these bytes in it) when read from a mapped chunk
        self.origin = origin
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        self._view = view.toreadonly()
        self._pos = 0
        self.name = name
        self._path: str | None = None
        self._finalizer: Any = None

    # --- the file-object protocol (read-only) -------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError(f"{self.name}: I/O operation on closed file")
        n = len(self._view)
        end = n if size is None or size < 0 else min(n, self._pos + size)
        out = self._view[self._pos : end].tobytes() if end > self._pos else b""
        self._pos = max(self._pos, end)
        return out

    read1 = read

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        data = self._view[self._pos : self._pos + len(out)]
        out[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = len(self._view) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def write(self, b: Any) -> int:
        raise io.UnsupportedOperation(f"{self.name}: a stored file is read-only")

    def writelines(self, lines: Any) -> None:
        raise io.UnsupportedOperation(f"{self.name}: a stored file is read-only")

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation(f"{self.name}: a stored file is read-only")

    # --- the bytes -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._view)

    @property
    def size(self) -> int:
        """Number of bytes."""
        return len(self._view)

    def getbuffer(self) -> memoryview:
        """The bytes as a read-only view (no copy)."""
        return self._view

    def getvalue(self) -> bytes:
        """The bytes (a copy)."""
        return self._view.tobytes()

    def bytes(self) -> bytes:
        """The file's bytes (a copy)."""
        return self._view.tobytes()

    def tensor(self) -> Any:
        """The bytes as a 1-d ``torch.uint8`` tensor (input for ``torchvision.io.decode_image``)."""
        import torch

        if not len(self._view):
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(self._view), dtype=torch.uint8)

    as_tensor = tensor

    def path(self) -> str:
        """A real file holding these bytes, written on first call and removed with this object.

        The file lives in BenchKit's cache directory and keeps the original name's extension.
        """
        if self._path is None:
            from benchkit.settings import get_paths

            directory = get_paths().cache / "files"
            directory.mkdir(parents=True, exist_ok=True)
            stem, suffix = os.path.splitext(os.path.basename(self.name))
            fd, path = tempfile.mkstemp(prefix=f"{stem[:40]}-", suffix=suffix, dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(self._view)
            self._path = path
            self._finalizer = weakref.finalize(self, _unlink, path)
        return self._path

    # DataLoader workers send samples to the main process: send the bytes and the name only
    def __reduce__(self) -> Any:
        return (_rebuild_chunk_file, (self._view.tobytes(), self.name, self._pos))

    def __repr__(self) -> str:
        return f"ChunkFile({self.name!r}, {len(self._view)} bytes)"


def _rebuild_chunk_file(data: bytes, name: str, pos: int) -> ChunkFile:
    f = ChunkFile(data, name)
    f.seek(pos)
    return f
