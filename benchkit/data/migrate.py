"""Migrating a dataset: chunk it into the staging area, test it, upload it to a store.

The staging area (``<project>/.benchkit/staging``) is laid out like a store, so each step works
on stores: chunking writes ``datasets/<name>/`` there, testing streams it back from
``LocalStore(staging)``, uploading copies it to the configured store.

Upload order keeps readers safe and makes an interrupted upload resume: chunk files first (in
parallel), then ``index.json``, then the removal of chunks the new index no longer lists, then
a sweep of what interrupted uploads of this dataset left behind (hidden temporary files and
parts). Until ``index.json`` lands, readers see the previous version or nothing.

What an upload skips: a chunk already in the store under its name (names carry the chunk's
checksum) *with the right size*; every chunk's size is checked (a few small requests, no
download), so a missing or truncated one is sent again even when the stored index lists it. With ``verify=True`` the stored chunks' checksums
are compared too (a full read of the stored dataset), so a damaged chunk of the right size is
replaced; ``benchkit datasets verify NAME --repair`` does the same check on its own.

The staged ``index.json`` records a *fingerprint* of the declaration (a hash of every sample's
encoded fields, file names and sizes: no file contents) and the module that declared it, so
``run`` can tell cheaply whether the stored dataset still matches the declaration.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit.data.format import ChunkReader, check_schema, encode_parts
from benchkit.data.index import INDEX_FILE, DatasetIndex, dataset_prefix, load_index
from benchkit.data.verify import object_sha256
from benchkit.data.writer import ChunkStats, chunk_samples, staging_root
from benchkit.errors import (
    BenchKitError,
    DataError,
    DatasetNotFound,
    ObjectNotFound,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)
from benchkit.fsutil import exclusive_lock
from benchkit.store import LocalStore, Store, open_store

log = logging.getLogger(__name__)

__all__ = [
    "TestReport",
    "UploadReport",
    "check_dataset",
    "chunk",
    "clean_staging",
    "declaration_fingerprint",
    "ensure_migrated",
    "migration_lock",
    "probe_store",
    "stale_dataset",
    "staging_store",
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
    """Chunk a declared dataset into its project's staging area; its index records the
    declaration's fingerprint and the module that declared it."""
    root_dir = Path(project_root) if project_root is not None else decl.project_root
    extra: dict[str, Any] = {}
    if decl.module_file:
        module = Path(decl.module_file).resolve()
        try:
            extra["declared_in"] = module.relative_to(root_dir.resolve()).as_posix()
        except ValueError:
            extra["declared_in"] = str(module)
    return chunk_samples(
        # a declaration that fails raises from the first next(), which chunking names
        _fingerprinted(decl.samples, extra),
        decl.name,
        staging_root(root_dir),
        chunk_bytes=decl.chunk_bytes,
        workers=workers,
        total=_size_hint(decl),
        progress=progress,
        # filled in when the samples run out, before the index is written
        extra=extra,
    )


def _size_hint(decl: Any) -> int | None:
    """The sample count for the progress bar, None when unknown. A declaration that fails
    here gives None: the same call fails again, named, when chunking asks for the samples."""
    try:
        return decl.size_hint()
    except Exception:  # noqa: BLE001 - re-raised by decl.samples() right after
        return None


def _fingerprinted(samples: Callable[[], Iterable[Any]], into: dict[str, Any]) -> Iterator[Any]:
    """The samples ``samples()`` gives, unchanged; once they run out, ``into["fingerprint"]``
    holds their hash: the encoded fields and the files' names and sizes, not the files' bytes
    (cheap: no file is read). A bad sample raises the encoder's error naming it."""
    digest = hashlib.sha256()
    n = 0
    for sample in samples():
        parts, _ = encode_parts(sample, n)
        for part in parts:
            if type(part) is bytes:
                digest.update(part)
        n += 1
        yield sample
    into["fingerprint"] = f"{n}:{digest.hexdigest()}"


def stale_dataset(decl: Any, store: Store | str | None) -> str | None:
    """Why dataset ``decl.name`` in ``store`` no longer matches its declaration (a message
    that says how to re-migrate it), or None when it matches or its index has no fingerprint
    (migrated by an older BenchKit). Costs one pass over the declaration's samples."""
    store = open_store(store)
    index = load_index(store, decl.name)
    stored = index.extra.get("fingerprint")
    if not stored:
        return None
    now = declaration_fingerprint(decl)
    if now == stored:
        return None
    count = now.split(":", 1)[0]
    what = (
        f"it now gives {count} samples"
        if count != str(index.num_samples)
        else f"its {count} samples now differ"
    )
    module = index.extra.get("declared_in") or decl.module_file or "path/to/train.py"
    return (
        f"dataset '{decl.name}' in store {store.url} no longer matches its declaration in "
        f"{module}: the store holds {index.num_samples} samples migrated {index.created}, "
        f"{what}. Re-migrate it with `python -m benchkit migrate data {module} {decl.name} --yes`"
    )


def declaration_fingerprint(decl: Any) -> str:
    """The fingerprint of what ``decl`` declares now (iterates its samples, reads no file)."""
    into: dict[str, Any] = {}
    try:
        for _ in _fingerprinted(decl.samples, into):
            pass
    except BenchKitError as e:  # keeps its type: an unreachable store is not a data error
        raise _with_context(e, f"dataset '{decl.name}'") from e
    except Exception as e:
        raise DataError(f"dataset '{decl.name}': {type(e).__name__}: {e}") from e
    return into["fingerprint"]


def _with_context(e: BenchKitError, where: str) -> BenchKitError:
    """``e`` again, of the same type, its message prefixed with ``where``."""
    try:
        return type(e)(f"{where}: {e}")
    except TypeError:  # a subclass with its own constructor: keep the original as it is
        return e


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
    #: chunks the stored index listed that were sent again, with what was wrong with them
    damaged: list[tuple[str, str]] = field(default_factory=list)
    #: leftovers of interrupted uploads removed (hidden temporary files, orphaned parts)
    swept: int = 0
    verified: bool = False


def _upload_reason(
    store: Store, key: str, info: Any, existing: set[str], remote: dict[str, Any], verify: bool
) -> str | None:
    """Why chunk ``info`` must be sent, or None when the store holds it intact.

    A chunk's size is always checked (``has_size``: no download); its checksum is compared
    with ``verify``, and for small chunks the stored index does not list (the remains of an
    interrupted upload)."""
    if key not in existing:
        return "missing"
    try:
        if not store.has_size(key, info.bytes):
            return f"wrong size ({store.stat(key).size} bytes, expected {info.bytes})"
    except ObjectNotFound:
        return "missing"
    unknown = info.file not in remote
    if verify or (unknown and info.bytes <= HASH_CHECK_MAX):
        digest, _ = object_sha256(store, key)
        if digest != info.sha256:
            return "checksum mismatch"
    return None


def upload_dataset(
    name: str,
    staging: Store,
    store: Store | str | None,
    *,
    threads: int = UPLOAD_THREADS,
    progress: bool = False,
    verify: bool = False,
) -> UploadReport:
    """Copy dataset ``name`` from ``staging`` to ``store``: missing, wrong-sized (and with
    ``verify`` damaged) chunks, then ``index.json``, then stale chunks out and leftovers swept."""
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
    with ThreadPoolExecutor(max(1, min(threads, len(local.chunks) or 1))) as pool:
        reasons = list(
            pool.map(
                lambda c: _upload_reason(store, prefix + c.file, c, existing, remote, verify),
                local.chunks,
            )
        )
    todo = [c for c, why in zip(local.chunks, reasons, strict=True) if why is not None]
    damaged = [
        (c.file, why)
        for c, why in zip(local.chunks, reasons, strict=True)
        if why and c.file in remote
    ]
    for file, why in damaged:
        log.warning(
            "dataset '%s': chunk %s in %s is %s; sending it again", name, file, store.url, why
        )
    skipped = len(local.chunks) - len(todo)
    total = sum(c.bytes for c in todo)
    bar = _progress("uploading", name, total, progress and bool(todo))
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
        and remote_index.extra == local.extra
    )
    if not same_index or todo:
        # last: from this moment readers see the new version
        store.put(prefix + INDEX_FILE, staging.get(prefix + INDEX_FILE))
    keep = {prefix + c.file for c in local.chunks} | {prefix + INDEX_FILE}
    removed = 0
    for key in sorted(existing - keep):
        store.delete(key)
        removed += 1
    swept = store.sweep_leftovers(prefix)
    return UploadReport(
        name,
        store.url,
        len(todo),
        skipped,
        done_bytes,
        removed,
        not same_index or bool(todo),
        time.monotonic() - started,
        damaged,
        swept,
        verify,
    )


#: where :func:`probe_store` writes its probe objects (never a dataset's prefix)
PROBE_PREFIX = "_probe/"


def probe_store(store: Store) -> None:
    """Fail now when ``store`` cannot be reached or written, before any chunking: a small
    object is written, read back and deleted. The error keeps its type (connection,
    permission) and says that nothing was chunked or uploaded."""
    key = f"{PROBE_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    payload = b"benchkit write probe"
    try:
        store.put(key, payload)
        try:
            if store.get(key) != payload:
                raise StoreError(f"store {store.url} returned other bytes than were written")
        finally:
            store.delete(key)
    except (StoreConnectionError, StorePermissionError, StoreError) as e:
        if type(e) not in (StoreConnectionError, StorePermissionError, StoreError):
            raise
        raise type(e)(
            f"{e} (store checked before chunking: nothing was chunked or uploaded)"
        ) from e


def clean_staging(name: str, project_root: str | os.PathLike[str]) -> Path | None:
    """Drop the staged copy of dataset ``name``; returns its folder, or None if there was none."""
    folder = staging_root(project_root) / dataset_prefix(name).rstrip("/")
    if not folder.is_dir():
        return None
    shutil.rmtree(folder)
    return folder


def _progress(verb: str, name: str, total: int, enabled: bool) -> Any:
    """A started rich progress bar over ``total`` bytes on stderr, or None."""
    if not enabled:
        return None
    from benchkit.console import make_progress

    bar = make_progress(verb, unit="bytes")
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
    with migration_lock(staging_root(root), decl.name):
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
        probe_store(store)
        chunk(decl, progress=interactive, project_root=root)
        upload_dataset(decl.name, staging_store(root), store, progress=interactive)
    return True


def _in_store(store: Store, name: str) -> bool:
    try:
        load_index(store, name)
    except DatasetNotFound:
        return False
    return True


def migration_lock(staging: Path, name: str) -> Any:
    """The exclusive lock per dataset and staging area that chunking and uploading a dataset
    hold (so the ranks of a torchrun job, or two terminals, migrate it once)."""
    return exclusive_lock(staging / ".locks" / f"{name}.lock", what=f"migrating dataset '{name}'")
