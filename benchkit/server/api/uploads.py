"""``/api/v1/uploads``: resumable upload sessions for large objects.

``POST /uploads {"key"}`` opens one; ``PUT /uploads/{id}?offset=N`` appends a part at the
offset the server holds (``GET /uploads/{id}`` says which); ``POST /uploads/{id}/complete
{"sha256", "size"}`` checks the whole and makes it the object; ``DELETE`` aborts.

A parallel session (``POST /uploads {"key", "part_size"}``) takes numbered parts instead,
several at once and in any order: ``PUT /uploads/{id}/parts/{n}`` writes bytes
``n * part_size`` on and answers the part's SHA-256 (checked against ``X-Content-SHA256`` when
sent); ``GET /uploads/{id}`` lists the parts held; ``complete {"size", "parts": [sha256, ...]}``
checks that every part is held with the digest the client computed, then commits.
"""

from __future__ import annotations

from datetime import datetime
from threading import Lock
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from benchkit.server.api.blobs import Prefix, Stored
from benchkit.server.api.body import RAW_BODY, content_length, receive
from benchkit.server.api.deps import API, Reader, ServicesDep, Token, Writer
from benchkit.server.services.blobs import Sink, UploadInfo

router = APIRouter(prefix=API, tags=["uploads"])

UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class NewUpload(BaseModel):
    key: str
    #: numbered parts of this size, sent in any order (a parallel session); none: in order
    part_size: int | None = Field(default=None, ge=1)


class Part(BaseModel):
    number: int
    size: int
    sha256: str


class Upload(BaseModel):
    id: str
    key: str
    received: int
    state: str
    created_at: datetime
    updated_at: datetime
    part_size: int | None = None
    parts: list[Part] | None = None


class Uploads(BaseModel):
    uploads: list[Upload]


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class Complete(BaseModel):
    #: the SHA-256 of the whole (a session in order)
    sha256: Sha256 | None = None
    size: int = Field(ge=0)
    #: the SHA-256 of each part, in order (a parallel session)
    parts: list[Sha256] | None = Field(default=None, max_length=1_000_000)


def _out(u: UploadInfo) -> Upload:
    fields = dict(u.__dict__)
    if u.parts is not None:
        fields["parts"] = [Part(**p.__dict__) for p in u.parts]
    return Upload(**fields)


@router.post("/uploads", response_model=Upload, status_code=201)
def create_upload(body: NewUpload, principal: Writer, services: ServicesDep) -> Upload:
    """Open an upload session for ``key``."""
    return _out(services.blobs.create_upload(principal.project_id, body.key, body.part_size))


@router.get("/uploads", response_model=Uploads)
def list_uploads(principal: Reader, services: ServicesDep, prefix: Prefix = "") -> Uploads:
    """Unfinished sessions of keys starting with ``prefix``."""
    return Uploads(
        uploads=[_out(u) for u in services.blobs.list_uploads(principal.project_id, prefix)]
    )


@router.get("/uploads/{upload_id}", response_model=Upload)
def get_upload(upload_id: UploadId, principal: Reader, services: ServicesDep) -> Upload:
    """A session, with the bytes the server holds (``received``): resume there."""
    return _out(services.blobs.get_upload(principal.project_id, upload_id))


@router.put("/uploads/{upload_id}", response_model=Upload, openapi_extra=RAW_BODY)
async def put_part(
    upload_id: UploadId,
    request: Request,
    token: Token,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0)],
) -> Upload | Response:
    """Write the body at ``offset`` (at most ``received``; 409 with ``received`` otherwise)."""
    blobs, keys = services.blobs, services.keys
    length = content_length(request)

    def begin() -> tuple[str, Sink, Lock]:
        project_id = keys.authenticate(token, write=True).project_id
        return project_id, *blobs.begin_part(project_id, upload_id, offset, length)

    info = await receive(
        request,
        begin,
        sink=lambda st: st[1],
        abort=lambda st: blobs.abort_part(st[1], st[2]),
        finish=lambda st: blobs.finish_part(st[0], upload_id, st[1], st[2], length),
    )
    return info if isinstance(info, Response) else _out(info)


@router.put("/uploads/{upload_id}/parts/{number}", response_model=Part, openapi_extra=RAW_BODY)
async def put_numbered_part(
    upload_id: UploadId,
    number: Annotated[int, Path(ge=0, le=1_000_000)],
    request: Request,
    token: Token,
    services: ServicesDep,
    x_content_sha256: Annotated[str | None, Header()] = None,
) -> Part | Response:
    """Write part ``number`` of a parallel session (other parts may be arriving at once)."""
    blobs, keys = services.blobs, services.keys
    length = content_length(request)

    def begin() -> tuple[str, Sink]:
        project_id = keys.authenticate(token, write=True).project_id
        return project_id, blobs.begin_numbered(project_id, upload_id, number, length)

    part = await receive(
        request,
        begin,
        sink=lambda st: st[1],
        abort=lambda st: blobs.abort_numbered(upload_id, number, st[1]),
        finish=lambda st: blobs.finish_numbered(
            st[0], upload_id, number, st[1], length, x_content_sha256
        ),
    )
    return part if isinstance(part, Response) else Part(**part.__dict__)


@router.post("/uploads/{upload_id}/complete", response_model=Stored)
def complete_upload(
    upload_id: UploadId, body: Complete, principal: Writer, services: ServicesDep
) -> Stored:
    """Check the size and SHA-256 of everything received and make it the object."""
    blobs = services.blobs
    key = blobs.get_upload(principal.project_id, upload_id).key
    size = blobs.complete_upload(
        principal.project_id, upload_id, body.sha256, body.size, body.parts
    )
    return Stored(key=key, size=size)


@router.delete("/uploads/{upload_id}", status_code=204)
def abort_upload(upload_id: UploadId, principal: Writer, services: ServicesDep) -> Response:
    """Abort a session and drop its bytes."""
    services.blobs.abort_upload(principal.project_id, upload_id)
    return Response(status_code=204)
