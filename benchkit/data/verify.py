"""Checking a dataset in a store against its index, and repairing it from the staging area.

:func:`verify_dataset` reads every chunk ``index.json`` lists and compares its size and sha256
with the index, telling a missing chunk, a wrong size, a checksum mismatch and an unreadable
object apart. It costs one full read of the dataset (``stat`` first, so a missing or
wrong-sized chunk costs no download). Connection and permission errors are raised as they are:
a store that cannot be reached is not a dataset with bad chunks.

:func:`repair_dataset` re-uploads each bad chunk from the project's staging area
(``<project>/.benchkit/staging``) when the staged copy matches the index, checks it again in
the store, and sweeps what interrupted uploads left behind. Chunks it cannot repair are
reported with the reason; the command that rebuilds them is :func:`rebuild_command`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit.data.index import INDEX_FILE, ChunkInfo, DatasetIndex, dataset_prefix, load_index
from benchkit.errors import (
    ObjectNotFound,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)
from benchkit.store import Store, open_store

__all__ = [
    "ChunkProblem",
    "VerifyReport",
    "object_sha256",
    "rebuild_command",
    "repair_dataset",
    "verify_dataset",
]

MISSING = "missing"
WRONG_SIZE = "wrong size"
MISMATCH = "checksum mismatch"
UNREADABLE = "unreadable"
#: chunks checked at once (remote stores serve them in parallel)
VERIFY_THREADS = 4
BLOCK = 8 * 1024 * 1024


@dataclass
class ChunkProblem:
    """One chunk that does not match the index."""

    file: str
    problem: str  # MISSING, WRONG_SIZE, MISMATCH or UNREADABLE
    detail: str
    repaired: bool = False
    #: why it was not repaired (empty when it was, or when no repair was tried)
    note: str = ""


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` (and :func:`repair_dataset`) found."""

    name: str
    store: str
    chunks: int
    bytes: int
    problems: list[ChunkProblem] = field(default_factory=list)
    #: visible objects under the dataset's prefix that the index does not list
    stray: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: leftovers of interrupted uploads removed by a repair
    swept: int = 0
    #: the module that declared the dataset, relative to its project (from the index)
    declared_in: str | None = None

    @property
    def ok(self) -> bool:
        """True when every chunk matches the index (or was repaired)."""
        return all(p.repaired for p in self.problems)

    @property
    def unrepaired(self) -> list[ChunkProblem]:
        return [p for p in self.problems if not p.repaired]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def object_sha256(
    store: Store, key: str, advance: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """sha256 and size of an object, read in blocks (memory does not grow with its size)."""
    digest = hashlib.sha256()
    n = 0
    for block in store.iter_blocks(key, BLOCK):
        digest.update(block)
        n += len(block)
        if advance is not None:
            advance(len(block))
    return digest.hexdigest(), n


def check_chunk(
    store: Store, key: str, info: ChunkInfo, advance: Callable[[int], None] | None = None
) -> ChunkProblem | None:
    """The problem with one stored chunk, or None when it matches ``info``."""
    try:
        size = store.stat(key).size
    except ObjectNotFound:
        return ChunkProblem(info.file, MISSING, "not in the store")
    if size != info.bytes:
        return ChunkProblem(info.file, WRONG_SIZE, f"{size} bytes (index: {info.bytes})")
    try:
        digest, n = object_sha256(store, key, advance)
    except (StoreConnectionError, StorePermissionError):
        raise
    except StoreError as e:  # a damaged part manifest, a part gone missing
        return ChunkProblem(info.file, UNREADABLE, str(e))
    if n != info.bytes:
        return ChunkProblem(info.file, WRONG_SIZE, f"{n} bytes read (index: {info.bytes})")
    if digest != info.sha256:
        return ChunkProblem(
            info.file, MISMATCH, f"sha256 {digest[:12]} (index: {info.sha256[:12]})"
        )
    return None


def verify_dataset(
    name: str,
    store: Store | str | None,
    *,
    threads: int = VERIFY_THREADS,
    advance: Callable[[int], None] | None = None,
    index: DatasetIndex | None = None,
) -> VerifyReport:
    """Check every chunk of dataset ``name`` in ``store`` against its ``index.json``.

    ``advance(n)`` is called with the bytes read as the check goes (for a progress bar).
    """
    store = open_store(store)
    started = time.monotonic()
    index = index if index is not None else load_index(store, name)
    prefix = dataset_prefix(name)
    with ThreadPoolExecutor(max(1, min(threads, len(index.chunks) or 1))) as pool:
        found = list(
            pool.map(lambda c: check_chunk(store, prefix + c.file, c, advance), index.chunks)
        )
    listed = {prefix + c.file for c in index.chunks} | {prefix + INDEX_FILE}
    return VerifyReport(
        name=name,
        store=store.url,
        chunks=len(index.chunks),
        bytes=index.total_bytes,
        problems=[p for p in found if p is not None],
        stray=sorted(k[len(prefix) :] for k in store.list(prefix) if k not in listed),
        seconds=time.monotonic() - started,
        declared_in=index.extra.get("declared_in"),
    )


def _staged_copy(staging: Store, key: str, info: ChunkInfo) -> tuple[Path | None, str]:
    """The staged file holding chunk ``info`` intact, or None and why there is none."""
    try:
        path = staging.local_path(key)
    except ObjectNotFound:
        return None, "no staged copy"
    if path is None:
        return None, "staging is not local"
    problem = check_chunk(staging, key, info)
    if problem is not None:
        return None, f"staged copy: {problem.problem}"
    return path, ""


def repair_dataset(
    name: str,
    store: Store | str | None,
    staging: Store,
    *,
    report: VerifyReport | None = None,
    advance: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify dataset ``name`` (unless ``report`` is given) and re-upload its bad chunks from
    ``staging`` where the staged copy matches the index; each re-uploaded chunk is checked
    again in the store. Leftovers of interrupted uploads are swept afterwards."""
    store = open_store(store)
    index = load_index(store, name)
    if report is None:
        report = verify_dataset(name, store, advance=advance, index=index)
    prefix = dataset_prefix(name)
    infos = {c.file: c for c in index.chunks}
    for problem in report.problems:
        key = prefix + problem.file
        path, why = _staged_copy(staging, key, infos[problem.file])
        if path is None:
            problem.note = why
            continue
        store.put_file(key, path)
        again = check_chunk(store, key, infos[problem.file])
        if again is None:
            problem.repaired = True
        else:
            problem.note = f"still bad after re-upload: {again.problem}"
    report.swept = store.sweep_leftovers(prefix)
    return report


def rebuild_command(name: str, declared_in: str | None) -> str:
    """The command that chunks dataset ``name`` again and uploads it, re-checking every
    checksum in the store and replacing the stored version without asking."""
    module = declared_in or "path/to/train.py"
    return f"python -m benchkit migrate data {module} {name} --verify --yes"
