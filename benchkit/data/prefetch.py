"""Preparing chunks ahead of the reader: :class:`Prefetcher`.

A pass over an epoch knows, from the plan alone, which chunk it needs at which position
(:func:`benchkit.data.plan.chunk_spans`). The prefetcher prepares them (downloads them into
the cache, or verifies them) on a few threads, in that order, at most ``depth`` chunks ahead of
the reading position, and lets go of each one once the reader has passed it. It knows nothing
of stores or files: what "prepare" and "let go" mean is the chunk source's business
(:mod:`benchkit.data.source`).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Prefetcher"]


class Prefetcher:
    """Prepares chunks (download, or checksum) on background threads, ahead of the reader.

    ``entries`` are ``(first, until, chunk)`` in plan order: the plan position where the chunk
    is first needed and the one after which this reader no longer needs it. ``prepare(chunk)``
    does the work and may return a hold on the chunk (say, a pinned file descriptor) that
    ``release(result)`` drops once the reading position passes ``until``, so a prefetched chunk
    cannot be evicted before it is read. At most ``depth`` chunks beyond the reading position
    are prepared ahead.
    """

    def __init__(
        self,
        prepare: Callable[[int], Any],
        entries: Sequence[tuple[int, int, int]],
        *,
        depth: int = 8,
        threads: int = 4,
        release: Callable[[Any], None] | None = None,
        on_error: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        self._prepare = prepare
        self._release = release
        self._entries = list(entries)
        self._firsts = [e[0] for e in self._entries]
        self._depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="benchkit-prefetch")
        self._latest: dict[int, Future] = {}  # chunk -> its most recent preparation
        self._held: list[tuple[int, Future]] = []  # (until, future) not yet released
        self._next = 0
        self._lock = threading.Lock()
        self._on_error = on_error
        self._closed = False
        self.advance(0)

    def advance(self, position: int, ahead: int = 0) -> None:
        """The reader is at plan ``position`` (and may run ``ahead`` further): start what it will
        need soon, release what it has passed."""
        with self._lock:
            if self._closed:
                return
            horizon = position + ahead
            # entries are in plan order: those past the horizon that are already started
            started = max(0, self._next - bisect.bisect_right(self._firsts, horizon))
            while self._next < len(self._entries) and (
                self._entries[self._next][0] <= horizon or started < self._depth
            ):
                first, until, chunk = self._entries[self._next]
                fut = self._pool.submit(self._run, chunk)
                self._latest[chunk] = fut
                self._held.append((until, fut))
                if first > horizon:
                    started += 1
                self._next += 1
            keep = []
            for until, fut in self._held:
                if until <= position and fut.done():
                    self._drop(fut)
                else:
                    keep.append((until, fut))
            self._held = keep

    def _drop(self, fut: Future) -> None:
        if self._release is not None and not fut.cancelled() and fut.exception() is None:
            self._release(fut.result())

    def _run(self, chunk: int) -> Any:
        try:
            return self._prepare(chunk)
        except BaseException as e:
            if self._on_error is not None:
                self._on_error(chunk, e)
            raise

    def get(self, chunk: int) -> Any:
        """The result of preparing ``chunk`` (preparing it now if it was not started)."""
        with self._lock:
            fut = self._latest.get(chunk)
            if fut is None and not self._closed:
                fut = self._latest[chunk] = self._pool.submit(self._run, chunk)
                self._held.append((1 << 62, fut))
        if fut is None:
            raise RuntimeError("prefetcher is closed")
        return fut.result()

    def close(self) -> None:
        """Stop, wait for running work (no thread may hold a lock when the process next forks)
        and release every hold."""
        with self._lock:
            self._closed = True
            for _, fut in self._held:
                fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for _, fut in self._held:
                self._drop(fut)
            self._held = []
