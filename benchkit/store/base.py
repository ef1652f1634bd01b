"""The store interface: the one way BenchKit moves bytes.

Every backend gives the same operations on string keys such as ``datasets/train/index.json``.
Keys are relative, use ``/`` as separator, and no segment may start with ``.``: dot names are
reserved for the store's own bookkeeping (temporary files, the parts of large objects), which
is why listing never shows them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.errors import InvalidKey, ObjectNotFound
from benchkit.fsutil import atomic_file

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Objects larger than this are moved in parts of this size on backends that hold whole values
#: in memory (tensorstore), so memory stays bounded whatever the object's size.
DEFAULT_PART_SIZE = 32 * MiB
#: Buffer used when copying between files and stores.
COPY_BUFFER = 8 * MiB


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object."""

    key: str
    size: int


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str):
        raise InvalidKey(f"store keys are strings, got {type(key).__name__}: {key!r}")
    if not key or key.startswith("/") or key.endswith("/"):
        raise InvalidKey(f"invalid store key {key!r}: keys are relative paths such as 'a/b.bin'")
    for seg in key.split("/"):
        if not seg or seg.startswith(".") or "\\" in seg or "\x00" in seg:
            raise InvalidKey(
                f"invalid store key {key!r}: segments must be non-empty, must not start with '.' "
                "and must not contain '\\' or NUL"
            )
    return key


def check_prefix(prefix: str) -> str:
    """Validate a listing prefix (empty means everything)."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"store prefixes are strings, got {type(prefix).__name__}")
    if prefix:
        check_key(prefix.rstrip("/") or "x")
    return prefix


def is_hidden(key: str) -> bool:
    """True for the store's own bookkeeping keys (any segment starting with a dot)."""
    return any(seg.startswith(".") for seg in key.split("/"))


class Store(ABC):
    """A flat namespace of immutable-once-written objects.

    Writes are atomic: a reader sees the old object, the new one, or nothing, never part of
    one. ``put_file``/``get_file`` move objects of any size with bounded memory.
    """

    #: The URL this store was opened with, normalised; shown in every error message.
    url: str
    #: False when the store cannot be used in a process forked after this one used it (the
    #: tensorstore backends): start DataLoader workers with ``multiprocessing_context="spawn"``
    #: or ``"forkserver"`` then; the store pickles and reopens itself in the worker.
    fork_safe: bool = True

    def usable_here(self) -> bool:
        """False in a process that cannot use this store (a forked child of a tensorstore user)."""
        return True

    # --- writing ---------------------------------------------------------------------------

    @abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Store the contents of a local file, streaming it (memory does not grow with size)."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` only if nothing is there; True when this call created
        it. For small objects (claims, markers). The local and tensorstore backends do it
        atomically, against other processes and machines (a conditional write); this default,
        for backends without one, checks then writes, which two writers can both pass."""
        log.warning(
            "store %s has no conditional write: creating '%s' only if absent is not atomic",
            self.url,
            key,
        )
        if self.exists(key):
            return False
        self.put(key, data)
        return True

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON document (sorted keys, so equal values give equal bytes)."""
        self.put(key, json.dumps(value, indent=1, sort_keys=True).encode())

    # --- reading ---------------------------------------------------------------------------

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the whole object. Raises :class:`ObjectNotFound`."""

    @abstractmethod
    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Return bytes ``[start, end)``; ``end`` past the object's size is clamped."""

    def get_json(self, key: str) -> Any:
        """Read a JSON document."""
        return json.loads(self.get(key))

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        """Copy an object into a local file atomically, with bounded memory; returns ``dest``."""
        dest = Path(dest)
        src = self.local_path(key)
        with atomic_file(dest) as out:
            if src is not None:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, COPY_BUFFER)
            else:
                for block in self.iter_blocks(key):
                    out.write(block)
        return dest

    def iter_blocks(self, key: str, block_size: int = DEFAULT_PART_SIZE) -> Iterable[bytes]:
        """Yield the object in consecutive blocks of at most ``block_size`` bytes."""
        size = self.stat(key).size
        for start in range(0, size, block_size):
            yield self.get_range(key, start, min(size, start + block_size))

    def local_path(self, key: str) -> Path | None:
        """A path on this machine holding the object (for ``mmap``), or None if there is none."""
        return None

    # --- metadata --------------------------------------------------------------------------

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size of one object. Raises :class:`ObjectNotFound`."""

    def has_size(self, key: str, size: int) -> bool:
        """True when ``key`` holds exactly ``size`` bytes (cheaper than ``stat`` on backends
        without a size call). Raises :class:`ObjectNotFound`."""
        return self.stat(key).size == size

    def exists(self, key: str) -> bool:
        """True when ``key`` holds an object."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix`` (a plain string prefix), sorted."""

    def list_dirs(self, prefix: str) -> list[str]:
        """The distinct next path segments below ``prefix`` (which should end with '/')."""
        names = {k[len(prefix) :].split("/", 1)[0] for k in self.list(prefix)}
        return sorted(names)

    # --- deleting --------------------------------------------------------------------------

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete one object; returns False when it did not exist."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix``; returns how many."""
        if not prefix:
            raise InvalidKey("refusing to delete an empty prefix (the whole store)")
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def sweep_leftovers(self, prefix: str) -> int:
        """Remove what interrupted writes left under ``prefix``: hidden temporary files and
        parts no object refers to. Returns how many were removed (0 where a backend leaves
        nothing behind). Safe while nobody else writes under ``prefix``: a write still in
        progress there may fail (it never leaves a damaged object)."""
        check_prefix(prefix)
        return 0

    def catalog(self) -> Any | None:
        """An index of what the store holds, kept by the backend (a Bench server's, with
        ``datasets()``, ``versions()``, ``runs()`` and ``checkpoints(run_id)``), or None when
        listings must walk the objects (every other backend)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or threads the backend holds."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def not_found(self, key: str, hint: str = "") -> ObjectNotFound:
        """The error to raise for a missing ``key`` in this store."""
        return ObjectNotFound(key, self.url, hint)
