"""Dependencies every route uses: the services, and who is calling.

``Reader``/``Writer`` authenticate in a worker thread before the route runs. The blob and
upload routes, which carry most of the traffic, take the bare ``Token`` instead and
authenticate inside the worker-thread call that does their work (one thread hop per request,
not two); they must call :meth:`~benchkit.server.services.keys.Keys.authenticate` before
touching anything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from benchkit.server.app import Services
from benchkit.server.services.errors import Unauthorized
from benchkit.server.services.keys import Principal

API = "/api/v1"

_bearer = HTTPBearer(
    auto_error=False,
    description="A project API key: `Authorization: Bearer bk_...` "
    "(`benchkit server create-project` or `keys create`)",
)


async def services(request: Request) -> Services:
    """The server's services (async: resolving it costs no thread hop)."""
    return request.app.state.services


async def token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token, not yet checked (async: no thread hop, no database)."""
    if credentials is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    return credentials.credentials


def reader(request: Request, key: Annotated[str, Depends(token)]) -> Principal:
    """The caller, from a valid key of any scope."""
    return request.app.state.services.keys.authenticate(key)


def writer(request: Request, key: Annotated[str, Depends(token)]) -> Principal:
    """The caller, from a valid read-write key."""
    return request.app.state.services.keys.authenticate(key, write=True)


ServicesDep = Annotated[Services, Depends(services)]
Token = Annotated[str, Depends(token)]
Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
