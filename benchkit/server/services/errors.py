"""What a service can refuse, independent of HTTP (the API maps each to a status code)."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class; the message is safe to show to the client."""


class BadRequest(ServiceError):
    """The request itself is invalid (a key that escapes, a malformed value)."""


class Unauthorized(ServiceError):
    """No valid credentials."""


class Forbidden(ServiceError):
    """Valid credentials without the right to do this."""


class NotFound(ServiceError):
    """Nothing of that name in the caller's project."""


class Conflict(ServiceError):
    """The request clashes with the current state (an upload offset, a checksum)."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


class TooLarge(ServiceError):
    """The body is over a size limit."""


class InsufficientStorage(ServiceError):
    """The server has no room for the upload."""
