"""Small HTTP helpers shared by the management API, the logs and the invocation endpoint."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from wtpy.runtime import Principal, Runtime, presented_token

__all__ = [
    "JSON",
    "ApiError",
    "caller",
    "check_declared_length",
    "json_response",
    "read_body",
    "read_json_object",
    "runtime_of",
    "too_large",
    "where_raised",
]

JSON = "application/json"


class ApiError(Exception):
    """A request the HTTP layer refuses (body, headers, query), with its status, a stable
    code and a human message. The domain's refusals are wtpy.runtime._errors."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def caller(request: Request, *, key: str | None = None) -> Principal:
    """Who sent `request`: its Bearer token, or `key` (the logs endpoint's `?key=`) when it
    sent no Authorization header. Unauthorized or Forbidden when that is nobody."""
    token = presented_token(request.headers.get("authorization"), key)
    return runtime_of(request).authenticate(token)


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"Request body exceeds {limit} bytes")


def check_declared_length(declared: str | None, limit: int) -> None:
    """Refuse a body by its Content-Length before reading it: 400 not a number, 413 too big."""
    if declared is None:
        return
    try:
        declared_size = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", "Content-Length is not a number") from None
    if declared_size > limit:
        raise too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything above `limit` bytes without buffering it all."""
    check_declared_length(request.headers.get("content-length"), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """Parse a JSON object body for the management API, with clear errors for everything else."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media != JSON and not media.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "Send the webtask as application/json")
    raw = await read_body(request, limit)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_request", "Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "Request body must be a JSON object")
    return value


def where_raised(exc: BaseException) -> str:
    """`module.py:123 in function` of where an exception was raised: enough to find the bug,
    and nothing the exception carried (its message could hold hook arguments or secrets)."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown location"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name}"
