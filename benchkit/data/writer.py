"""Chunking: a declared dataset's samples into chunk files plus ``index.json``, in parallel.

How the work is split:

- The main process iterates the user's generator (cheap: paths and labels), encodes each
  sample's small fields and measures its files with ``os.stat`` (:func:`encode_parts`), so every
  record's size is known up front. It cuts the stream into chunks of about ``chunk_bytes`` from
  those sizes alone, which makes the layout deterministic whatever the scheduling.
- Worker processes (``spawn``, all cores by default) read the files, assemble the records and
  write one chunk each. At most two chunks per worker are in flight, so memory stays bounded
  whatever the dataset's size. The main process fsyncs each written chunk in a background
  thread while the workers go on (at most one chunk per worker waits for it), and every chunk
  is durable before ``index.json`` is written.
- Everything is written into a hidden temporary directory next to the destination; only when
  every chunk is written does ``index.json`` go in and the directory get renamed into place.
  A generator that raises, a worker that dies or a killed process leaves no ``index.json``.

Chunk files hold no timestamps and their names hold their checksum, so the same input gives
byte-identical chunks with identical names, and an upload of an unchanged dataset sends nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchkit.data.format import (
    FORMAT_VERSION,
    HEADER_SIZE,
    check_schema,
    encode_parts,
    sample_schema,
    write_records,
)
from benchkit.data.index import INDEX_FILE, ChunkInfo, DatasetIndex, dataset_prefix
from benchkit.data.sample import File
from benchkit.errors import BenchKitError, DataError
from benchkit.fsutil import atomic_file, fsync_dir, sync_file

log = logging.getLogger(__name__)

__all__ = ["STAGING_DIR", "ChunkStats", "chunk_dataset", "chunk_samples", "staging_root"]

#: Where chunked datasets wait for upload, relative to the project root; laid out like a store.
STAGING_DIR = Path(".benchkit") / "staging"
#: Chunks in flight per worker (bounds memory: each is about ``chunk_bytes``).
IN_FLIGHT_PER_WORKER = 2


def staging_root(project_root: str | os.PathLike[str]) -> Path:
    """``<project>/.benchkit/staging``: open it with ``LocalStore`` to read staged datasets."""
    return Path(project_root) / STAGING_DIR


@dataclass
class ChunkStats:
    """What a chunking run did."""

    index: DatasetIndex
    seconds: float
    workers: int

    @property
    def samples_per_s(self) -> float:
        return self.index.num_samples / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.index.total_bytes / 1e6 / self.seconds if self.seconds else 0.0


Items = list[tuple[int, list[bytes | File], int]]  # (sample index, parts, record size)


def _write_task(
    directory: str, k: int, items: Items, durable: bool = True
) -> tuple[int, ChunkInfo]:
    """Worker: read the files straight into chunk ``k``; returns (k, its index entry).

    With ``durable=False`` the chunk is not fsynced here: the main process does it (in
    :class:`_Syncer`) while the workers go on with the next chunks."""
    tmp = os.path.join(directory, f".part-{k:06d}.bkc")
    w = write_records(tmp, items, durable=durable)
    name = f"chunk-{k:06d}-{w.sha256[:16]}.bkc"
    os.replace(tmp, os.path.join(directory, name))
    return k, ChunkInfo(name, w.samples, w.size, w.sha256, w.blocks, w.block_bytes)


def _worker_init(parent: int) -> None:
    """Exit when the main process is gone (a killed migration must not leave idle workers)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="benchkit-parent-watch", daemon=True).start()


class _Syncer:
    """Makes the chunks the workers wrote durable (``fsync``) in background threads.

    Each worker's next chunk is read, hashed and written while the kernel flushes the last, so
    the flush is not on the workers' path. At most ``limit`` chunks wait to be flushed (the
    dirty pages stay bounded); :meth:`drain` returns once every chunk is durable, and is called
    before ``index.json`` goes in.
    """

    def __init__(self, name: str, work: Path, limit: int) -> None:
        self.name = name
        self.work = work
        self.limit = limit
        self.pool = ThreadPoolExecutor(limit, thread_name_prefix="benchkit-fsync")
        self.pending: dict[Future, ChunkInfo] = {}

    def add(self, info: ChunkInfo) -> None:
        while len(self.pending) >= self.limit:
            self._collect(wait(self.pending, return_when=FIRST_COMPLETED)[0])
        self.pending[self.pool.submit(sync_file, self.work / info.file)] = info

    def drain(self) -> None:
        while self.pending:
            self._collect(wait(self.pending, return_when=FIRST_COMPLETED)[0])

    def _collect(self, done: set[Future]) -> None:
        for fut in done:
            info = self.pending.pop(fut)
            try:
                fut.result()
            except OSError as e:
                raise DataError(
                    f"dataset '{self.name}': chunk {info.file} could not be written to disk "
                    f"({self.work}): {e.strerror or e}. Nothing was published; free space or "
                    "fix the disk and run the migration again"
                ) from e

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Progress:
    """A progress bar with samples/s and MB/s, or nothing."""

    def __init__(self, name: str, total: int | None, enabled: bool) -> None:
        self.bar: Any = None
        self.bytes = 0
        self.start = time.monotonic()
        if not enabled:
            return
        from benchkit.console import make_progress

        self.bar = make_progress("chunking", unit="samples", info=True)
        self.task = self.bar.add_task(name, total=total, info="")
        self.bar.start()

    def advance(self, samples: int, nbytes: int) -> None:
        self.bytes += nbytes
        if self.bar is None:
            return
        elapsed = max(time.monotonic() - self.start, 1e-6)
        self.bar.update(self.task, advance=samples, info=f"{self.bytes / 1e6 / elapsed:,.1f} MB/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _sample_error(name: str, index: int, e: BaseException) -> DataError:
    if isinstance(e, BenchKitError):
        msg = str(e)
        if not msg.startswith("sample "):
            msg = f"sample {index}: {msg}"
        return (
            type(e)(f"dataset '{name}': {msg}")
            if isinstance(e, DataError)
            else DataError(f"dataset '{name}': {msg}")
        )
    return DataError(f"dataset '{name}': sample {index}: {type(e).__name__}: {e}")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def chunk_samples(
    samples: Iterator[Any] | Any,
    name: str,
    root: str | os.PathLike[str],
    *,
    chunk_bytes: int,
    workers: int | None = None,
    total: int | None = None,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> ChunkStats:
    """Chunk ``samples`` into ``<root>/datasets/<name>/`` (``root`` is laid out like a store).

    Replaces a previous version of the dataset there only once the new one is complete.
    Raises :class:`DataError` naming the sample index and the cause when a sample cannot be
    produced, encoded or read.
    """
    root = Path(root)
    final = root / dataset_prefix(name).rstrip("/")
    tmp_parent = root / ".tmp"
    tmp_parent.mkdir(parents=True, exist_ok=True)
    for stale in tmp_parent.glob(f"{name}.*"):
        # left by a killed run (its pid is in the name): it never got an index, nothing reads it
        if not _pid_alive(stale.name.rsplit(".", 2)[-2]):
            _remove(stale)
    work = Path(tempfile.mkdtemp(prefix=f"{name}.{os.getpid()}.", dir=tmp_parent))
    os.chmod(work, 0o755)  # mkdtemp makes it private; the published dataset is a plain directory
    workers = max(1, workers or os.cpu_count() or 1)
    started = time.monotonic()
    bar = _Progress(name, total, progress)
    pool: ProcessPoolExecutor | None = None
    pending: dict[Future, tuple[int, int, int]] = {}  # future -> (chunk, first sample, last sample)
    results: dict[int, ChunkInfo] = {}
    schema: dict[str, Any] | None = None
    syncer = _Syncer(name, work, workers)

    def died(spans: list[tuple[int, int, int]]) -> DataError:
        lo, hi = min(s[1] for s in spans), max(s[2] for s in spans)
        return DataError(
            f"dataset '{name}': a chunking worker process died (killed, or out of "
            f"memory?) while writing chunks {min(s[0] for s in spans)}-"
            f"{max(s[0] for s in spans)} (samples {lo}-{hi}). Nothing was published; "
            "run the migration again"
        )

    def collect(done: set[Future]) -> None:
        for fut in done:
            k, first, last = pending.pop(fut)
            try:
                _, info = fut.result()
            except BrokenProcessPool as e:
                # every chunk in flight fails with the pool, so name them all
                raise died([(k, first, last), *pending.values()]) from e
            except BaseException as e:
                raise _sample_error(name, first, e) from e
            syncer.add(info)
            results[k] = info
            bar.advance(info.samples, info.bytes)

    def inline(k: int, items: Items) -> None:
        try:
            _, info = _write_task(str(work), k, items)
        except Exception as e:
            raise _sample_error(name, items[0][0], e) from e
        results[k] = info
        bar.advance(info.samples, info.bytes)

    def submit(k: int, items: Items) -> None:
        nonlocal pool
        if pool is None:
            if workers == 1:
                inline(k, items)
                return
            pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        while len(pending) >= workers * IN_FLIGHT_PER_WORKER:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
        try:
            fut = pool.submit(_write_task, str(work), k, items, False)
        except BrokenProcessPool as e:
            # the pool broke after the last result was collected: the same error, naming the
            # chunks in flight and this one
            raise died([(k, items[0][0], items[-1][0]), *pending.values()]) from e
        pending[fut] = (k, items[0][0], items[-1][0])

    try:
        it = iter(samples)
        batch: Items = []
        batch_bytes = 0
        k = 0
        i = 0
        while True:
            try:
                sample = next(it)
            except StopIteration:
                break
            except Exception as e:
                raise _sample_error(name, i, e) from e
            if schema is None:
                schema = sample_schema(sample)
            try:
                parts, size = encode_parts(sample, i)
            except Exception as e:
                raise _sample_error(name, i, e) from e
            diff = check_schema(schema, sample)
            if diff:
                raise DataError(
                    f"dataset '{name}': sample {i} does not match the first sample: {diff}. "
                    "Every sample must have the same structure"
                )
            if batch and batch_bytes + size + 8 > chunk_bytes:  # + its entry in the offsets table
                submit(k, batch)
                k += 1
                batch, batch_bytes = [], HEADER_SIZE + 8
            if not batch:
                batch_bytes = HEADER_SIZE + 8
            batch.append((i, parts, size))
            batch_bytes += size + 8
            i += 1
        if batch:
            if pool is None:
                # everything fits in one chunk: not worth starting processes
                inline(k, batch)
            else:
                submit(k, batch)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
        syncer.drain()  # every chunk durable before the index that names them
        if i == 0:
            raise DataError(f"dataset '{name}' yielded no samples; check the paths it reads")
        chunks = [results[j] for j in range(len(results))]
        index = DatasetIndex(
            name=name,
            num_samples=i,
            chunks=chunks,
            schema=schema or {},
            format_version=FORMAT_VERSION,
            created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            chunk_bytes=chunk_bytes,
            extra=dict(extra or {}),
        )
        with atomic_file(work / INDEX_FILE) as f:
            f.write(index.to_json().encode())
        _publish(work, final)
    except BaseException:
        if pool is not None:
            # let running tasks finish (at most one chunk per worker) so none writes after the cleanup
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        syncer.close()
        _remove(work)
        raise
    finally:
        bar.close()
        syncer.close()
        if pool is not None:
            pool.shutdown(wait=True)
    seconds = time.monotonic() - started
    return ChunkStats(index, seconds, workers)


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(work: Path, final: Path) -> None:
    """Swap the finished directory into place (the old version is removed after the swap)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = work.parent / f"{work.name}.old"
        os.replace(final, old)
    os.replace(work, final)
    fsync_dir(final.parent)
    if old is not None:
        _remove(old)


def chunk_dataset(
    decl: Any,
    root: str | os.PathLike[str] | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> ChunkStats:
    """Chunk a :class:`~benchkit.data.declare.DeclaredDataset` into ``root`` (default: the
    project's staging area, ``<project>/.benchkit/staging``)."""
    root = Path(root) if root is not None else staging_root(decl.project_root)
    try:
        total = decl.size_hint()
    except BenchKitError:
        raise
    except Exception as e:
        raise DataError(f"dataset '{decl.name}': {type(e).__name__}: {e}") from e
    try:
        samples = decl.samples()
    except BenchKitError:
        raise
    except Exception as e:
        raise DataError(f"dataset '{decl.name}': sample 0: {type(e).__name__}: {e}") from e
    return chunk_samples(
        samples,
        decl.name,
        root,
        chunk_bytes=decl.chunk_bytes,
        workers=workers,
        total=total,
        progress=progress,
    )
