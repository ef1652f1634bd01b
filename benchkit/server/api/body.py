"""Request bodies streamed into a service's sink with bounded memory, and byte ranges."""

from __future__ import annotations

import re
from collections.abc import Callable

from anyio import to_thread
from fastapi import Request
from starlette.requests import ClientDisconnect

from benchkit.server.services.errors import BadRequest

#: bytes gathered from the socket before one write+hash in a worker thread
FLUSH_BYTES = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

#: the OpenAPI description of a raw body (so docs and schemathesis know to send bytes)
RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"invalid Content-Length {value!r}")
    return int(value)


async def drain(request: Request, write: Callable[[bytes], None]) -> None:
    """Feed the body to ``write`` in blocks of about 1 MiB, each in a worker thread (hashing
    and writing release the GIL, and the event loop keeps serving other requests)."""
    pending: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        pending.append(chunk)
        size += len(chunk)
        if size >= FLUSH_BYTES:
            await to_thread.run_sync(write, b"".join(pending))
            pending, size = [], 0
    if pending:
        await to_thread.run_sync(write, b"".join(pending))


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


__all__ = ["ClientDisconnect", "RAW_BODY", "content_length", "drain", "parse_range"]
