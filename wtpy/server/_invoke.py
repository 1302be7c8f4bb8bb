"""Invocation endpoint: `ANY /api/run/{container}/{name}[/{path}]` -> wtpy.runtime._invoke.

A plain ASGI handler rather than a Starlette route: invocations are the hot path, and
Starlette's router, Request, Headers and Response objects cost more per call than the
rest of the server's own work for one (see bench/RESULTS.md). It answers everything under
`/api/run/` itself, errors included, with the same bodies the management API uses
(_errors.py). What happens to an invocation once its request is read is the runtime's
(Invocations); this module only reads the request and writes the answer.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from wtpy.compilers import HookRequest
from wtpy.compilers._body import node_headers
from wtpy.runtime import DomainError, Invocations, Runtime, new_request_id

from ._errors import INTERNAL_ERROR, error_answer
from ._http import ApiError, check_declared_length, too_large, where_raised

__all__ = ["INVOKE_PREFIX", "METHODS", "REQUEST_ID_HEADER", "Invoker"]

logger = logging.getLogger("wtpy.invoke")

INVOKE_PREFIX = "/api/run/"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REQUEST_ID_HEADER = "x-wtpy-request-id"
_ALLOW = ", ".join(METHODS).encode("latin-1")

_JSON = (b"content-type", b"application/json")
_REQUEST_ID = REQUEST_ID_HEADER.encode("latin-1")


class _ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


_Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]  # status, body, extra headers


def _envelope(body: bytes) -> _Answer:
    return 200, body, ()


def _refusal(error: ApiError | DomainError) -> _Answer:
    status, body = error_answer(error)
    return status, body, ()


class Invoker:
    """The ASGI app for everything under `/api/run/` (the app routes those paths here)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.invocations = Invocations(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        try:
            status, body, extra = await self._invoke(scope, receive, request_id)
        except _ClientGone:
            return
        except Exception as exc:
            # Never the message or a traceback: either could carry hook arguments or secrets.
            logger.error(
                "unhandled %s in an invocation (%s)", type(exc).__name__, where_raised(exc)
            )
            status, body, extra = _refusal(INTERNAL_ERROR)
        # Every answer carries the request id, errors included.
        headers = [
            _JSON,
            (b"content-length", b"%d" % len(body)),
            (_REQUEST_ID, request_id.encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _invoke(self, scope: Scope, receive: Receive, request_id: str) -> _Answer:
        started = time.perf_counter()
        method: str = scope["method"]
        if method not in METHODS:
            status, body, _ = _refusal(ApiError(405, "method_not_allowed", "Method Not Allowed"))
            return status, body, ((b"allow", _ALLOW),)
        container, _, rest = scope["path"][len(INVOKE_PREFIX) :].partition("/")
        name, _, sub_path = rest.partition("/")
        if not (container and name):
            return _refusal(ApiError(404, "not_found", "Not Found"))

        invocations = self.invocations
        try:
            webtask = await invocations.find(container, name)
        except DomainError as error:  # no such webtask
            return _refusal(error)
        headers = node_headers(scope["headers"])
        try:
            body = await _read_body(
                receive, headers.get("content-length"), self.runtime.settings.max_body_bytes
            )
        except ApiError as error:  # the webtask exists: its log shows the refused invocation
            invocations.refused(webtask, request_id, started, error.message)
            return _refusal(error)

        query: bytes = scope["query_string"]
        hook_request = HookRequest(
            method,
            headers,
            dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {},
            f"/{sub_path}" if sub_path else "",
            body,
        )
        return _envelope(await invocations.invoke(webtask, hook_request, request_id, started))


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body from ASGI messages, with the same limits as _http.read_body."""
    check_declared_length(declared, limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            body = body + chunk if body else chunk
            if len(body) > limit:
                raise too_large(limit)
        if not message.get("more_body", False):
            return body
