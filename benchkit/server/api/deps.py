"""Dependencies every route uses: the services, and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from benchkit.server.app import Services
from benchkit.server.services.errors import Forbidden, Unauthorized
from benchkit.server.services.keys import Principal

API = "/api/v1"

_bearer = HTTPBearer(
    auto_error=False,
    description="A project API key: `Authorization: Bearer bk_...` "
    "(`benchkit server create-project` or `keys create`)",
)


def services(request: Request) -> Services:
    return request.app.state.services


def reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from a valid key of any scope."""
    if credentials is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    return services(request).keys.authenticate(credentials.credentials)


def writer(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    """The caller, from a valid read-write key."""
    if not principal.can_write:
        raise Forbidden("this API key is read-only")
    return principal


ServicesDep = Annotated[Services, Depends(services)]
Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
