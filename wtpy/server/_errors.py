"""Errors to responses, in one place: the app's exception handlers and the invocation
endpoint both answer `{"error": code, "message": ...}` with the status chosen here."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from wtpy.runtime import (
    DomainError,
    Forbidden,
    Invalid,
    InvalidName,
    NotFound,
    TooLarge,
    Unauthorized,
)

from ._http import JSON, ApiError

__all__ = ["INTERNAL_ERROR", "error_answer", "error_body", "error_response", "exception_handlers"]

# The status of each domain error; a subclass answers with its nearest listed ancestor's.
_STATUS: dict[type[DomainError], int] = {
    InvalidName: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    TooLarge: 413,
    Invalid: 422,
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
INTERNAL_ERROR = ApiError(500, "internal_error", "Internal server error")


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


def error_answer(error: ApiError | DomainError) -> tuple[int, bytes]:
    """(status, body) for an error of the HTTP layer or of the domain."""
    if isinstance(error, ApiError):
        return error.status, error_body(error.code, error.message)
    status = next((_STATUS[cls] for cls in type(error).__mro__ if cls in _STATUS), 400)
    return status, error_body(error.code, error.message)


def error_response(error: ApiError | DomainError) -> Response:
    status, body = error_answer(error)
    return Response(body, status_code=status, media_type=JSON)


async def _known_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError | DomainError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request")
    return error_response(ApiError(exc.status_code, code, str(exc.detail)))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Logged by _App.__call__, where the exception ends up once this answer is sent.
    return error_response(INTERNAL_ERROR)


# For Starlette(exception_handlers=...): found by the exception's class or an ancestor.
exception_handlers = {
    HTTPException: _http_error,
    ApiError: _known_error,
    DomainError: _known_error,
    Exception: _server_error,
}
