"""``/api/v1/blobs``: the store contract over HTTP, within the caller's project."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from benchkit.server.api.body import (
    RAW_BODY,
    SMALL_BODY,
    SMALL_OBJECT,
    ClientDisconnect,
    content_length,
    parse_range,
    receive,
    stream,
)
from benchkit.server.api.deps import API, ServicesDep, Token
from benchkit.server.services.blobs import Sink
from benchkit.server.services.errors import BadRequest

router = APIRouter(prefix=API, tags=["blobs"])

Prefix = Annotated[str, Query(description="a plain string prefix of keys")]


class Stored(BaseModel):
    key: str
    size: int


class KeyPage(BaseModel):
    keys: list[str]
    #: pass as ``after`` for the next page; null on the last one
    next: str | None


class Names(BaseModel):
    names: list[str]


class Deleted(BaseModel):
    deleted: bool


class DeletedCount(BaseModel):
    deleted: int


@router.put(
    "/blobs/{key:path}",
    response_model=Stored,
    responses={412: {"description": "If-None-Match: * and an object exists"}},
    openapi_extra=RAW_BODY,
)
async def put_blob(
    key: str,
    request: Request,
    token: Token,
    services: ServicesDep,
    x_content_sha256: Annotated[str | None, Header(description="SHA-256 of the body, hex")] = None,
    if_none_match: Annotated[
        str | None, Header(description="`*`: create only if no object is there, else 412")
    ] = None,
) -> Stored | Response:
    """Store the body under ``key``; it becomes visible only if it hashes to the declared
    SHA-256 (a replaced object is swapped atomically). With ``If-None-Match: *`` the object is
    only created, atomically: 412 when one is already there (a body of at most 1 MiB)."""
    blobs, keys, sha = services.blobs, services.keys, x_content_sha256
    length = content_length(request)
    create = if_none_match is not None
    if create:
        if if_none_match.strip() != "*":
            raise BadRequest("only `If-None-Match: *` (create if absent) is supported here")
        if length is None or length > SMALL_BODY:
            raise BadRequest(
                f"a conditional create takes a body of at most {SMALL_BODY} bytes, with its "
                "Content-Length"
            )
    if length is not None and length <= SMALL_BODY:
        # the key is checked before a byte of the body is read (an unknown caller costs no
        # memory), then the body (at most SMALL_BODY) is stored in one worker-thread call
        project_id = (await to_thread.run_sync(keys.authenticate, token, True)).project_id
        try:
            body = await request.body()  # the parser stops at Content-Length
        except ClientDisconnect:
            return Response(status_code=400)
        if create:
            if not await to_thread.run_sync(blobs.create_bytes, project_id, key, sha, body):
                return Response(status_code=412)
            return Stored(key=key, size=len(body))
        size = await to_thread.run_sync(blobs.put_bytes, project_id, key, sha, body)
        return Stored(key=key, size=size)

    def begin() -> tuple[str, Sink]:
        project_id = keys.authenticate(token, write=True).project_id
        return project_id, blobs.begin_put(project_id, key, sha, length)

    size = await receive(
        request,
        begin,
        sink=lambda st: st[1],
        abort=lambda st: blobs.abort(st[1]),  # nothing of a failed body is kept
        finish=lambda st: blobs.finish_put(st[0], key, st[1], sha, length),
    )
    if isinstance(size, Response):
        return size
    return Stored(key=key, size=size)


def _object_headers(size: int) -> dict[str, str]:
    return {
        "Accept-Ranges": "bytes",
        "X-Object-Size": str(size),
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "attachment",
    }


@router.get(
    "/blobs/{key:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 412: {}, 416: {}},
)
def get_blob(
    key: str,
    token: Token,
    services: ServicesDep,
    range: Annotated[str | None, Header(description="bytes=START-END (one range)")] = None,
    if_match: Annotated[str | None, Header(description="the ETag of an earlier read")] = None,
) -> Response:
    """The object's bytes, or one range of them (``Range: bytes=a-b``); with ``If-Match``,
    412 when the object is no longer the version that ETag names (ranges of one version)."""
    project_id = services.keys.authenticate(token).project_id
    plan = services.blobs.read(project_id, key)
    headers = _object_headers(plan.size)
    if plan.etag is not None:
        headers["ETag"] = plan.etag
        if if_match is not None and if_match.strip() not in (plan.etag, "*"):
            plan.close()
            return Response(status_code=412, headers=headers)
    wanted = parse_range(range, plan.size)
    if wanted is False:
        plan.close()
        headers["Content-Range"] = f"bytes */{plan.size}"
        return Response(status_code=416, headers=headers)
    if wanted is None:
        start, end, status = 0, plan.size, 200
    else:
        start, end = wanted
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{plan.size}"
    media = "application/octet-stream"
    if end - start <= SMALL_OBJECT:
        body = plan.read_all(start, end)
        return Response(body, status_code=status, headers=headers, media_type=media)
    headers["Content-Length"] = str(end - start)
    return StreamingResponse(
        stream(plan, start, end), status_code=status, headers=headers, media_type=media
    )


@router.head("/blobs/{key:path}")
def head_blob(key: str, token: Token, services: ServicesDep) -> Response:
    """The object's size (``Content-Length`` and ``X-Object-Size``); 404 when absent."""
    size = services.blobs.stat(services.keys.authenticate(token).project_id, key)
    headers = _object_headers(size)
    headers["Content-Length"] = str(size)
    return Response(status_code=200, headers=headers, media_type="application/octet-stream")


@router.delete("/blobs/{key:path}", response_model=Deleted)
def delete_blob(key: str, token: Token, services: ServicesDep) -> Deleted:
    """Delete one object; ``deleted`` is false when there was none."""
    project_id = services.keys.authenticate(token, write=True).project_id
    return Deleted(deleted=services.blobs.delete(project_id, key))


@router.get("/blobs", response_model=KeyPage)
def list_blobs(
    token: Token,
    services: ServicesDep,
    prefix: Prefix = "",
    after: Annotated[str, Query(description="the last key of the previous page")] = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> KeyPage:
    """Keys starting with ``prefix``, sorted, one page at a time."""
    project_id = services.keys.authenticate(token).project_id
    keys, nxt = services.blobs.list(project_id, prefix, after, limit)
    return KeyPage(keys=keys, next=nxt)


@router.delete("/blobs", response_model=DeletedCount)
def delete_blobs(token: Token, services: ServicesDep, prefix: Prefix) -> DeletedCount:
    """Delete every object whose key starts with ``prefix`` (which may not be empty), and
    the unfinished uploads of keys under it."""
    project_id = services.keys.authenticate(token, write=True).project_id
    return DeletedCount(deleted=services.blobs.delete_prefix(project_id, prefix))


@router.get("/blob-dirs", response_model=Names)
def list_dirs(token: Token, services: ServicesDep, prefix: Prefix = "") -> Names:
    """The distinct next path segments below ``prefix``."""
    project_id = services.keys.authenticate(token).project_id
    return Names(names=services.blobs.list_dirs(project_id, prefix))
