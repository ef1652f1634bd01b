"""``GET /api/v1/info`` (no key needed: the version handshake) and ``GET /api/v1/whoami``."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from benchkit._version import __version__
from benchkit.api_client import API_VERSION, CONDITIONAL_CREATE, SERVICE
from benchkit.server.api.deps import API, Reader

router = APIRouter(prefix=API, tags=["server"])


class Info(BaseModel):
    service: str
    api_version: int
    server_version: str
    features: list[str]


class WhoAmI(BaseModel):
    project_id: str
    project_name: str
    key_id: str
    scope: str


@router.get("/info", response_model=Info)
def info() -> Info:
    """What this server is and which API version it speaks (clients check it first)."""
    return Info(
        service=SERVICE,
        api_version=API_VERSION,
        server_version=__version__,
        features=["blobs", "uploads", "catalog", CONDITIONAL_CREATE],
    )


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Reader) -> WhoAmI:
    """The project and scope of the calling key."""
    return WhoAmI(
        project_id=principal.project_id,
        project_name=principal.project_name,
        key_id=principal.key_id,
        scope=principal.scope,
    )
