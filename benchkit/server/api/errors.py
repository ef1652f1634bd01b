"""Service errors as HTTP answers: ``{"detail": message}`` with the matching status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from benchkit.errors import InvalidKey, ObjectNotFound, StoreError
from benchkit.server.services import errors as e

log = logging.getLogger(__name__)

STATUS = {
    e.BadRequest: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.TooLarge: 413,
    e.InsufficientStorage: 507,
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.ServiceError)
    async def service_error(request: Request, exc: e.ServiceError) -> JSONResponse:
        status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
        body: dict[str, object] = {"detail": str(exc)}
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, e.Conflict):
            body.update(exc.details)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(InvalidKey)
    async def invalid_key(request: Request, exc: InvalidKey) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ObjectNotFound)
    async def not_found(request: Request, exc: ObjectNotFound) -> JSONResponse:
        return JSONResponse({"detail": "no such object"}, status_code=404)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        # the server's own store failed (disk, S3): retryable, and the message names no secret
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "the server's store failed; see the server's log"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
