"""Request bodies streamed into a service's sink, responses streamed out of an object, both
with bounded memory and the disk work overlapping the network; and byte ranges.

The event loop only moves bytes. Hashing and writing a block (or reading one) runs in the
``bench-io`` threads (both release the GIL), one block at a time per request, while the loop
receives the next block (or sends the previous one): a request holds at most two blocks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from anyio import to_thread
from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from benchkit.server.services.blobs import ReadPlan, Sink
from benchkit.server.services.errors import BadRequest

T = TypeVar("T")
R = TypeVar("R")

#: bytes gathered from the socket before one write+hash in a worker thread
FLUSH_BYTES = 1024 * 1024
#: a body up to this size is read whole and handled in one worker-thread call
SMALL_BODY = 1024 * 1024
#: an object (or range) up to this size is read in the route's thread call and sent at once
SMALL_OBJECT = 1024 * 1024
IO_THREADS = 32
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

#: the OpenAPI description of a raw body (so docs and schemathesis know to send bytes)
RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

_io: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _io
    if _io is None:
        _io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="bench-io")
    return _io


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"invalid Content-Length {value!r}")
    return int(value)


async def drain(request: Request, write: Callable[[list[bytes]], None]) -> None:
    """Feed the body to ``write`` in blocks of about ``FLUSH_BYTES`` (each the list of pieces
    the socket gave, not joined: a copy less), each in a worker thread while the loop receives
    the next one. When this returns or raises, no write is running (the caller may close the
    sink at once)."""
    pending: list[bytes] = []
    size = 0
    running: Future | None = None
    try:
        async for chunk in request.stream():
            pending.append(chunk)
            size += len(chunk)
            if size >= FLUSH_BYTES:
                if running is not None:
                    await asyncio.wrap_future(running)  # raises what write raised
                running = _executor().submit(write, pending)
                pending, size = [], 0
        if running is not None:
            await asyncio.wrap_future(running)
        if pending:
            running = _executor().submit(write, pending)
            await asyncio.wrap_future(running)
    finally:
        if running is not None and not running.done():
            wait([running])  # cancelled mid-write: at most one block's work


async def receive(
    request: Request,
    begin: Callable[[], T],
    sink: Callable[[T], Sink],
    abort: Callable[[T], None],
    finish: Callable[[T], R],
) -> R | Response:
    """The shape of every route that takes a large body: ``begin()`` (authenticate, open the
    sink) in a worker thread, :func:`drain` the body into ``sink(state)``, then ``finish(state)``
    in a worker thread. A client that goes away half way gets the work aborted and a 400; any
    other error (a cancel at shutdown, a body over the limit) aborts it and propagates."""
    state = await to_thread.run_sync(begin)
    try:
        await drain(request, sink(state).write)
    except ClientDisconnect:
        abort(state)
        return Response(status_code=400)
    except BaseException:
        abort(state)
        raise
    return await to_thread.run_sync(finish, state)


async def stream(plan: ReadPlan, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of ``plan`` in blocks, the next one read in a worker thread while
    the loop sends this one; the object is closed when the last read has finished, even when
    the client goes away half way."""
    loop = asyncio.get_running_loop()
    pos = start

    def fetch(at: int) -> Future | None:
        return _executor().submit(plan.read, at, min(plan.block, end - at)) if at < end else None

    ahead = fetch(pos)
    try:
        while ahead is not None:
            data = await asyncio.wrap_future(ahead, loop=loop)
            pos += len(data)
            ahead = fetch(pos) if data else None
            if data:
                yield data
    finally:
        if ahead is None:
            plan.close()
        else:
            ahead.add_done_callback(lambda _: plan.close())


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """``(start, end)`` (end exclusive) for one satisfiable range; None to send the whole
    object (no header, or one we ignore as RFC 9110 allows); False when unsatisfiable."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else False
    start = int(first)
    end = size if not last else int(last) + 1
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    return start, min(end, size)


__all__ = [
    "SMALL_BODY",
    "SMALL_OBJECT",
    "ClientDisconnect",
    "RAW_BODY",
    "content_length",
    "drain",
    "parse_range",
    "receive",
    "stream",
]
