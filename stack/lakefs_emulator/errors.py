"""API errors carrying the HTTP status lakeFS uses, so every layer can raise and the app renders one shape."""

from __future__ import annotations


class ApiError(Exception):
    """An error the API answers with `{"message": ...}` and this status."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    status = 412
