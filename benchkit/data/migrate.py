"""Migrating a dataset: chunk it into the staging area, test it, upload it to a store.

The staging area (``<project>/.benchkit/staging``) is laid out like a store, so each step works
on stores: chunking writes ``datasets/<name>/`` there, testing streams it back from
``LocalStore(staging)``, uploading copies it to the configured store.

Upload order keeps readers safe and makes an interrupted upload resume: chunk files first (in
parallel; those already in the store with the same size and checksum are skipped, and chunk
names carry their checksum), then ``index.json``, then the removal of chunks the new index no
longer lists. Until ``index.json`` lands, readers see the previous version or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit.data.format import ChunkReader, check_schema
from benchkit.data.index import INDEX_FILE, DatasetIndex, dataset_prefix, load_index
from benchkit.data.writer import ChunkStats, chunk_dataset, staging_root
from benchkit.errors import BenchKitError, DataError, DatasetNotFound, ObjectNotFound
from benchkit.store import LocalStore, Store, open_store

log = logging.getLogger(__name__)

__all__ = [
    "TestReport",
    "UploadReport",
    "chunk",
    "ensure_migrated",
    "staging_store",
    "check_dataset",
    "upload_dataset",
]

#: Chunks up to this size found in the store without an index are compared by content hash.
HASH_CHECK_MAX = 8 * 1024 * 1024
UPLOAD_THREADS = 8


def staging_store(project_root: str | os.PathLike[str]) -> LocalStore:
    """The project's staging area as a store."""
    return LocalStore(staging_root(project_root))


def chunk(
    decl: Any,
    *,
    workers: int | None = None,
    progress: bool = False,
    project_root: str | os.PathLike[str] | None = None,
) -> ChunkStats:
    """Chunk a declared dataset into its project's staging area."""
    root = staging_root(project_root if project_root is not None else decl.project_root)
    return chunk_dataset(decl, root, workers=workers, progress=progress)


# --- testing -------------------------------------------------------------------------------------


@dataclass
class TestReport:
    """What ``migrate data --test`` checked."""

    __test__ = False  # not a pytest class

    name: str
    samples: int
    chunks: int
    streamed: int | None
    seconds: float
    transform: bool
    notes: list[str] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        n = self.streamed if self.streamed is not None else self.samples
        return n / self.seconds if self.seconds else 0.0


def _verify_chunks(name: str, store: Store, index: DatasetIndex) -> int:
    """Open every chunk with its checksum, decode every sample, check it against the schema."""
    prefix = dataset_prefix(name)
    n = 0
    for c in index.chunks:
        key = prefix + c.file
        path = store.local_path(key)
        label = f"dataset '{name}' chunk '{c.file}' in store {store.url}"
        with ChunkReader(path, expected_sha256=c.sha256, label=label) as reader:
            if len(reader) != c.samples:
                raise DataError(f"{label} holds {len(reader)} samples, its index says {c.samples}")
            for j in range(len(reader)):
                diff = check_schema(index.schema, reader[j])
                if diff:
                    raise DataError(f"{label}: sample {n + j} does not match the schema: {diff}")
        n += c.samples
    if n != index.num_samples:
        raise DataError(
            f"dataset '{name}': chunks hold {n} samples, index.json says {index.num_samples}"
        )
    return n


def check_dataset(
    decl: Any, *, project_root: str | os.PathLike[str] | None = None, num_workers: int = 2
) -> TestReport:
    """Stream a staged dataset back: checksums, count, schema, and the transform.

    Every chunk is opened with its checksum and every sample decoded and checked against the
    schema; the transform is run on the first sample here (so its errors name the sample);
    then the whole dataset streams through the dataset's transform and ``IterableChunk`` in a
    DataLoader with ``num_workers`` workers, and the count is checked.
    """
    root = project_root if project_root is not None else decl.project_root
    staging = staging_store(root)
    name = decl.name
    try:
        index = load_index(staging, name)
    except DatasetNotFound as e:
        raise DatasetNotFound(
            f"dataset '{name}' is not chunked yet (nothing in {staging.url}); "
            "run `python -m benchkit migrate data --chunk` first"
        ) from e
    started = time.monotonic()
    count = _verify_chunks(name, staging, index)
    notes: list[str] = []
    if decl.transform_fn is not None:
        first = ChunkReader(staging.local_path(dataset_prefix(name) + index.chunks[0].file))
        try:
            decl.apply_transform(first[0])
        except Exception as e:
            raise DataError(
                f"dataset '{name}': the transform {getattr(decl.transform_fn, '__name__', '')} "
                f"failed on sample 0: {type(e).__name__}: {e}"
            ) from e
        finally:
            first.close()
    streamed = _stream_all(decl, staging, num_workers, notes)
    if streamed is not None and streamed != count:
        raise DataError(
            f"dataset '{name}': streaming yielded {streamed} samples, the dataset holds {count}"
        )
    return TestReport(
        name,
        count,
        len(index.chunks),
        streamed,
        time.monotonic() - started,
        decl.transform_fn is not None,
        notes,
    )


def _stream_all(decl: Any, staging: Store, num_workers: int, notes: list[str]) -> int | None:
    from torch.utils.data import DataLoader

    from benchkit.data.stream import open_dataset

    ds = open_dataset(
        decl.name,
        store=staging,
        transform=decl.transform_fn,
        chunk_class=decl.chunk_class,
        chunk_args=decl.chunk_args,
        chunk_kwargs=decl.chunk_kwargs,
        shuffle=False,
        rank=0,
        world_size=1,  # the whole dataset, even when run under torchrun
    )
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    n = 0
    for _ in loader:
        n += 1
    return n


# --- uploading -----------------------------------------------------------------------------------


@dataclass
class UploadReport:
    """What ``migrate data --upload`` did."""

    name: str
    store: str
    uploaded: int
    skipped: int
    bytes_uploaded: int
    removed: int
    index_written: bool
    seconds: float


def _already_there(
    store: Store, key: str, info: Any, existing: set[str], remote: dict[str, Any]
) -> bool:
    if key not in existing:
        return False
    known = remote.get(info.file)
    if known is not None and known.bytes == info.bytes and known.sha256 == info.sha256:
        return True
    try:
        if store.stat(key).size != info.bytes:
            return False
    except ObjectNotFound:
        return False
    # chunk names hold their checksum, so an equal name and size is the same chunk; small ones
    # are cheap to compare outright
    if info.bytes <= HASH_CHECK_MAX:
        return hashlib.sha256(store.get(key)).hexdigest() == info.sha256
    return True


def upload_dataset(
    name: str,
    staging: Store,
    store: Store | str | None,
    *,
    threads: int = UPLOAD_THREADS,
    progress: bool = False,
) -> UploadReport:
    """Copy dataset ``name`` from ``staging`` to ``store``: missing chunks, then ``index.json``."""
    store = open_store(store)
    started = time.monotonic()
    try:
        local = load_index(staging, name)
    except DatasetNotFound as e:
        raise DatasetNotFound(
            f"dataset '{name}' is not chunked yet (nothing in {staging.url}); "
            "run `python -m benchkit migrate data --chunk` first"
        ) from e
    prefix = dataset_prefix(name)
    try:
        remote_index: DatasetIndex | None = load_index(store, name)
    except DatasetNotFound:
        remote_index = None
    except DataError as e:
        log.warning("ignoring the unreadable index of dataset '%s' in %s: %s", name, store.url, e)
        remote_index = None
    remote = {c.file: c for c in remote_index.chunks} if remote_index else {}
    existing = set(store.list(prefix))
    todo = [
        c for c in local.chunks if not _already_there(store, prefix + c.file, c, existing, remote)
    ]
    skipped = len(local.chunks) - len(todo)
    total = sum(c.bytes for c in todo)
    bar = _upload_progress(name, total, progress and bool(todo))
    done_bytes = 0
    try:
        if todo:
            with ThreadPoolExecutor(max(1, min(threads, len(todo)))) as pool:
                futures = {
                    pool.submit(
                        store.put_file, prefix + c.file, staging.local_path(prefix + c.file)
                    ): c
                    for c in todo
                }
                for fut in as_completed(futures):
                    c = futures[fut]
                    try:
                        fut.result()
                    except BenchKitError:
                        for f in futures:
                            f.cancel()
                        raise
                    except Exception as e:
                        for f in futures:
                            f.cancel()
                        raise DataError(
                            f"uploading chunk '{c.file}' of dataset '{name}' to {store.url} failed: "
                            f"{type(e).__name__}: {e}. Run the upload again: it resumes"
                        ) from e
                    done_bytes += c.bytes
                    if bar is not None:
                        bar.update(bar.task_ids[0], advance=c.bytes)
    finally:
        if bar is not None:
            bar.stop()
    same_index = (
        remote_index is not None
        and [(c.file, c.sha256) for c in remote_index.chunks]
        == [(c.file, c.sha256) for c in local.chunks]
        and remote_index.schema == local.schema
    )
    if not same_index or todo:
        # last: from this moment readers see the new version
        store.put(prefix + INDEX_FILE, staging.get(prefix + INDEX_FILE))
    keep = {prefix + c.file for c in local.chunks} | {prefix + INDEX_FILE}
    removed = 0
    for key in sorted(existing - keep):
        store.delete(key)
        removed += 1
    return UploadReport(
        name,
        store.url,
        len(todo),
        skipped,
        done_bytes,
        removed,
        not same_index or bool(todo),
        time.monotonic() - started,
    )


def _upload_progress(name: str, total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from benchkit.console import make_progress

    bar = make_progress("uploading", unit="bytes")
    bar.add_task(name, total=total)
    bar.start()
    return bar


# --- for the training runner ---------------------------------------------------------------------


def ensure_migrated(
    decl: Any, store: Store | str | None, project_root: str | os.PathLike[str] | None = None
) -> bool:
    """Make sure ``decl`` is in ``store``; chunk and upload it (with a notice) if not.

    Returns True when it migrated the dataset, False when it was already there. Processes of
    one project calling it at once (ranks of a torchrun job) take turns on a lock file in the
    staging area: one migrates, the others wait and then find the dataset in place.
    """
    store = open_store(store)
    if _in_store(store, decl.name):
        return False
    root = Path(project_root) if project_root is not None else decl.project_root
    with _migration_lock(staging_root(root), decl.name):
        if _in_store(store, decl.name):
            return False
        from benchkit.console import err_console as console

        console.print(
            f"[yellow]dataset '{decl.name}' is not in store {store.url}: migrating it now "
            f"(chunk + upload; `python -m benchkit migrate data` does this ahead of time)[/yellow]",
            highlight=False,
            soft_wrap=True,
        )
        interactive = console.is_terminal
        chunk(decl, progress=interactive, project_root=root)
        upload_dataset(decl.name, staging_store(root), store, progress=interactive)
    return True


def _in_store(store: Store, name: str) -> bool:
    try:
        load_index(store, name)
    except DatasetNotFound:
        return False
    return True


@contextlib.contextmanager
def _migration_lock(staging: Path, name: str) -> Iterator[None]:
    """An exclusive lock per dataset and staging area (a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_dir = staging / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
